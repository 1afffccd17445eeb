//! The heap state backend (Flink's `MemoryStateBackend`, without its JVM costs).
//!
//! * Keyed state lives in typed tables, one persistent hash map per key group
//!   per state: no serialization on access.
//! * Snapshots are asynchronous through copy-on-write: the synchronous part
//!   shares the tables' maps (one reference count per key group); a write made
//!   while a snapshot runs copies only the path to the entry it touches.
//! * Snapshot bytes are in the canonical format, held in memory up to a size
//!   limit (5 MiB by default). Going over it fails that snapshot with
//!   [`state_api::ErrorKind::StateSizeExceeded`]; the backend keeps working.
//! * Restore takes handles of any key-group ranges (rescaling) and keeps only
//!   the backend's own key groups.
//!
//! ```
//! use backend_memory::MemoryStateBackend;
//! use state_api::backend::KeyedBackendParams;
//! use state_api::snapshot::SnapshotOptions;
//! use state_api::state::access::KeyedStateBackendExt;
//! use state_api::state::descriptor::ReducingStateDescriptor;
//! use state_api::{codec, KeyedStateBackend, StateBackend};
//!
//! # fn main() -> state_api::Result<()> {
//! let backend = MemoryStateBackend::new();
//! let params = KeyedBackendParams::for_subtask(128, 1, 0, codec::postcard::<String>())?;
//! let mut keyed = backend.create_keyed_backend(params.clone(), &[])?;
//! let count = keyed.reducing_state(&ReducingStateDescriptor::new("count", |a: &u64, b: &u64| a + b))?;
//! keyed.set_current_key("apple".into())?;
//! count.on(&mut keyed).add(3)?;
//!
//! let task = backend.snapshot_keyed(&mut keyed, 1, SnapshotOptions::default())?;
//! count.on(&mut keyed).add(100)?; // after the synchronous part: not in the snapshot
//! let handle = task.run()?.expect("state was written");
//!
//! let mut restored = backend.create_keyed_backend(params, &[handle])?;
//! let count = restored.reducing_state(&ReducingStateDescriptor::new("count", |a: &u64, b: &u64| a + b))?;
//! restored.set_current_key("apple".into())?;
//! assert_eq!(count.on(&mut restored).get()?, Some(3));
//! # Ok(()) }
//! ```

pub mod heap;

use std::sync::Arc;

use state_api::backend::KeyedBackendParams;
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::snapshot::stream::{
    CheckpointStreamFactory, MemoryCheckpointStreamFactory, DEFAULT_MAX_IN_MEMORY_STATE_SIZE,
};
use state_api::state::StateKey;
use state_api::{Result, StateBackend};

pub use heap::HeapKeyedStateBackend;

/// Configuration of the heap backend with in-memory snapshots.
#[derive(Clone, Debug)]
pub struct MemoryStateBackend {
    max_state_size: usize,
}

impl Default for MemoryStateBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStateBackend {
    /// The backend with the default snapshot size limit (5 MiB).
    pub fn new() -> Self {
        MemoryStateBackend {
            max_state_size: DEFAULT_MAX_IN_MEMORY_STATE_SIZE,
        }
    }

    /// Sets the largest snapshot (per stream, in bytes) kept in memory.
    pub fn with_max_state_size(mut self, bytes: usize) -> Self {
        self.max_state_size = bytes;
        self
    }

    /// The snapshot size limit.
    pub fn max_state_size(&self) -> usize {
        self.max_state_size
    }
}

impl StateBackend for MemoryStateBackend {
    type Keyed<K: StateKey> = HeapKeyedStateBackend<K>;

    fn name(&self) -> &'static str {
        "memory"
    }

    fn create_keyed_backend<K: StateKey>(
        &self,
        params: KeyedBackendParams<K>,
        restore: &[KeyedStateHandle],
    ) -> Result<HeapKeyedStateBackend<K>> {
        HeapKeyedStateBackend::new(params, restore)
    }

    fn stream_factory(&self, checkpoint_id: u64) -> Result<Arc<dyn CheckpointStreamFactory>> {
        Ok(Arc::new(MemoryCheckpointStreamFactory::new(
            self.max_state_size,
            format!("in-memory snapshot of checkpoint {checkpoint_id}"),
        )))
    }
}
