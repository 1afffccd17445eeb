//! Keyed state in embedded RocksDB (Flink's `RocksDBStateBackend`, without the
//! JNI hop): state larger than memory, one column family per state.
//!
//! * Keys are laid out by key group ([`keys`]), so snapshots read key groups
//!   in order and rescaling keeps only a backend's own key groups.
//! * List state appends through a merge operator; a value or merged list
//!   larger than [`RocksOptions::max_value_bytes`] is refused when written.
//! * Writes go through a write buffer ([`buffer`]) that the task reads first
//!   and that reaches RocksDB as sorted batches.
//! * Checkpoints are incremental by default ([`native`]): RocksDB's own files,
//!   each SST uploaded once into `shared/`, with a synchronous part that only
//!   switches memtables. Savepoints (and checkpoints with
//!   [`RocksOptions::incremental`] off) take a RocksDB snapshot in the
//!   synchronous part and write the canonical format from it on any thread,
//!   so they restore on every backend and back.
//! * Restore opens native checkpoint files in place (clipping other key groups
//!   with `delete_range`, merging other handles by SST ingestion) and reads
//!   canonical and heap-incremental handles of any key-group ranges.
//! * [`export`] reads a native checkpoint's records without the job's types
//!   and converts it to the canonical format (a savepoint's bytes).
//! * A failed write into RocksDB poisons the keyed backend: every later call
//!   returns [`state_api::Error::Poisoned`] until it is restored from the last
//!   completed checkpoint (see [`store`]).
//! * Memory is bounded per process, not per instance ([`memory`]): by default
//!   every instance shares one [`MemoryBudget`] of 256 MiB covering the block
//!   cache, the memtables, index and filter blocks and the write buffers.
//! * Operator state uses the shared heap operator backend.
//!
//! ```
//! use backend_rocksdb::RocksDbStateBackend;
//! use state_api::backend::KeyedBackendParams;
//! use state_api::state::access::KeyedStateBackendExt;
//! use state_api::state::descriptor::ListStateDescriptor;
//! use state_api::{codec, KeyedStateBackend, StateBackend};
//!
//! # fn main() -> state_api::Result<()> {
//! # let dir = tempfile::tempdir().map_err(|e| state_api::Error::io("tempdir", e))?;
//! let backend = RocksDbStateBackend::new(&dir.path().join("work"), &dir.path().join("checkpoints"), "job")?;
//! let params = KeyedBackendParams::for_subtask(128, 1, 0, codec::postcard::<String>())?;
//! let mut keyed = backend.create_keyed_backend(params, &[])?;
//! let seen = keyed.list_state(&ListStateDescriptor::<u32>::new("seen"))?;
//! keyed.set_current_key("user-1".into())?;
//! seen.on(&mut keyed).add(7)?;
//! seen.on(&mut keyed).add(8)?;
//! assert_eq!(seen.on(&mut keyed).get()?, Some(vec![7, 8]));
//! # Ok(()) }
//! ```

pub mod buffer;
mod db;
pub mod export;
#[doc(hidden)]
pub mod fault;
pub mod keyed;
pub mod keys;
mod list_bound;
pub mod memory;
pub mod native;
pub mod options;
mod restore;
mod snapshot;
pub mod store;
mod timers;
mod ttl;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use checkpoint_store::layout::unique_file_name;
use checkpoint_store::{CheckpointConfig, CheckpointCoordinator, CheckpointStorage, Storage};
use state_api::backend::KeyedBackendParams;
use state_api::snapshot::handle::{KeyedStateHandle, OperatorStateHandle};
use state_api::snapshot::stream::CheckpointStreamFactory;
use state_api::state::StateKey;
use state_api::{DefaultOperatorStateBackend, Result, StateBackend};

pub use db::{engine_options, engine_write_options};
pub use keyed::RocksKeyedStateBackend;
pub use memory::{MemoryBudget, MemoryBudgetConfig, MemoryMode, MemoryUsage};
pub use options::RocksOptions;

/// Configuration of the RocksDB backend for one job.
#[derive(Clone, Debug)]
pub struct RocksDbStateBackend {
    local_dir: PathBuf,
    storage: CheckpointStorage,
    options: RocksOptions,
}

impl RocksDbStateBackend {
    /// RocksDB instances live under `local_dir` (one folder per keyed
    /// backend, removed when it is dropped); checkpoints of job `job_id` go
    /// under `checkpoint_dir/job_id`.
    pub fn new(local_dir: &Path, checkpoint_dir: &Path, job_id: &str) -> Result<Self> {
        Ok(Self::with_checkpoint_storage(
            local_dir,
            CheckpointStorage::new(checkpoint_dir, job_id)?,
        ))
    }

    /// Instances work in `local_dir`; checkpoints go to `storage`, such as
    /// `CheckpointStorage::open("s3://bucket/prefix", job_id)` (SSTs are
    /// uploaded once to the job's `shared/` there, and downloaded into
    /// `local_dir` on restore unless an earlier instance's folder there
    /// still holds them).
    pub fn with_checkpoint_storage(local_dir: &Path, storage: CheckpointStorage) -> Self {
        RocksDbStateBackend {
            local_dir: local_dir.to_path_buf(),
            storage,
            options: RocksOptions::default(),
        }
    }

    /// Tunes the RocksDB instances.
    pub fn with_options(mut self, options: RocksOptions) -> Self {
        self.options = options;
        self
    }

    /// Streams up to `bytes` (at most 1 MiB) are inlined into the metadata.
    pub fn with_inline_threshold(mut self, bytes: usize) -> Result<Self> {
        self.storage = self.storage.with_inline_threshold(bytes)?;
        Ok(self)
    }

    /// Uses `storage` for every checkpoint file operation (for fault
    /// injection in tests); RocksDB's own files stay local.
    pub fn with_storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = self.storage.with_storage(storage);
        self
    }

    /// Where the job's checkpoints go.
    pub fn checkpoint_storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// The job's checkpoint coordinator.
    pub fn coordinator(&self, config: CheckpointConfig) -> Result<CheckpointCoordinator> {
        self.storage.coordinator(config)
    }
}

impl StateBackend for RocksDbStateBackend {
    type Keyed<K: StateKey> = RocksKeyedStateBackend<K>;

    fn name(&self) -> &'static str {
        "rocksdb"
    }

    fn create_keyed_backend<K: StateKey>(
        &self,
        params: KeyedBackendParams<K>,
        restore: &[KeyedStateHandle],
    ) -> Result<RocksKeyedStateBackend<K>> {
        let folder = self.local_dir.join(format!(
            "{}-kg{}-{}",
            self.storage.layout().job_id(),
            params.key_group_range.start(),
            unique_file_name()
        ));
        let params = match params.files {
            Some(_) => params,
            None => params.with_files(self.storage.files()),
        };
        RocksKeyedStateBackend::open(&folder, params, restore, self.options.clone())
    }

    /// Restores through this backend's checkpoint storage.
    fn create_operator_backend(
        &self,
        restore: &[OperatorStateHandle],
    ) -> Result<DefaultOperatorStateBackend> {
        DefaultOperatorStateBackend::restore_with(restore, &*self.storage.files())
    }

    fn stream_factory(&self, checkpoint_id: u64) -> Result<Arc<dyn CheckpointStreamFactory>> {
        self.storage.stream_factory(checkpoint_id)
    }
}
