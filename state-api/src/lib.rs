//! The contract of the state layer for stream processing: key groups, codecs,
//! the five keyed state kinds, keyed and operator backends, asynchronous
//! snapshots, the canonical snapshot format, and rescaling.
//!
//! Backends (`backend-memory`, `backend-fs`, `backend-rocksdb`) implement
//! [`KeyedStateBackend`] and [`StateBackend`]; engine code uses the typed
//! states of [`state::access`]:
//!
//! ```
//! use state_api::backend::KeyedBackendParams;
//! use state_api::state::access::KeyedStateBackendExt;
//! use state_api::state::descriptor::ValueStateDescriptor;
//! use state_api::{codec, KeyedStateBackend, StateBackend};
//!
//! fn count_event<S: StateBackend>(backend: &S) -> state_api::Result<()> {
//!     let params = KeyedBackendParams::for_subtask(128, 1, 0, codec::postcard::<u64>())?;
//!     let mut keyed = backend.create_keyed_backend(params, &[])?;
//!     let seen = keyed.value_state(&ValueStateDescriptor::<u32>::new("seen").with_default(0))?;
//!     keyed.set_current_key(42)?;
//!     let n = seen.on(&mut keyed).get()?.unwrap_or(0);
//!     seen.on(&mut keyed).update(Some(n + 1))?;
//!     Ok(())
//! }
//! ```

pub mod backend;
pub mod codec;
pub mod error;
pub mod format;
pub mod key_group;
pub mod snapshot;
pub mod state;
pub mod timers;

pub use backend::keyed::KeyedStateBackend;
pub use backend::operator::{DefaultOperatorStateBackend, OperatorStateBackend};
pub use backend::StateBackend;
pub use error::{Error, ErrorKind, Result};
pub use key_group::KeyGroupRange;
