//! Heap state with durable file checkpoints (Flink's `FsStateBackend`), plus
//! incremental checkpoints of heap state, which Flink never shipped.
//!
//! * Keyed state lives in `backend-memory`'s typed, copy-on-write tables.
//! * Snapshots are written as files into the checkpoint directory layout of
//!   [`checkpoint_store`]: `<dir>/<job>/chk-N/` for full snapshots,
//!   `shared/` for incremental pieces; state below the inline threshold goes
//!   into the checkpoint's metadata instead of a file.
//! * With incremental checkpoints on, a checkpoint writes only the entries
//!   changed since the last *completed* checkpoint (a delta file), and
//!   references the earlier pieces; a chain is compacted into a new full
//!   snapshot when it grows too long or too large. Savepoints are always full.
//!
//! ```
//! use backend_fs::FsStateBackend;
//! use state_api::backend::KeyedBackendParams;
//! use checkpoint_store::{CheckpointConfig, OperatorState, SubtaskState};
//! use state_api::snapshot::SnapshotOptions;
//! use state_api::state::access::KeyedStateBackendExt;
//! use state_api::state::descriptor::ValueStateDescriptor;
//! use state_api::{codec, KeyedStateBackend, StateBackend};
//!
//! # fn main() -> state_api::Result<()> {
//! # let dir = tempfile::tempdir().map_err(|e| state_api::Error::io("tempdir", e))?;
//! let backend = FsStateBackend::new(dir.path(), "job-1")?.with_incremental(true);
//! let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
//! let params = KeyedBackendParams::for_subtask(128, 1, 0, codec::postcard::<u64>())?;
//! let mut keyed = backend.create_keyed_backend(params.clone(), &[])?;
//! let total = keyed.value_state(&ValueStateDescriptor::<u64>::new("total"))?;
//! keyed.set_current_key(7)?;
//! total.on(&mut keyed).update(Some(42))?;
//!
//! let pending = coordinator.begin_checkpoint()?;
//! let handle = keyed.snapshot(pending.id, pending.streams.clone(), SnapshotOptions::default())?.run()?;
//! let subtask = SubtaskState { keyed: handle.into_iter().collect(), ..Default::default() };
//! let operators = vec![OperatorState { operator_id: "sum".into(), parallelism: 1, max_parallelism: 128, subtasks: vec![subtask] }];
//! let completed = coordinator.complete_checkpoint(pending.id, operators)?;
//! keyed.notify_checkpoint_complete(pending.id)?;
//!
//! // After a failure: restore from the latest completed checkpoint.
//! let restore = &completed.metadata.operators[0].subtasks[0].keyed;
//! let mut restored = backend.create_keyed_backend(params, restore)?;
//! let total = restored.value_state(&ValueStateDescriptor::<u64>::new("total"))?;
//! restored.set_current_key(7)?;
//! assert_eq!(total.on(&mut restored).get()?, Some(42));
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;

use backend_memory::heap::{HeapOptions, IncrementalOptions};
use backend_memory::HeapKeyedStateBackend;
use checkpoint_store::{
    CheckpointConfig, CheckpointCoordinator, CheckpointStorage, JobLayout, Storage,
};
use state_api::backend::KeyedBackendParams;
use state_api::snapshot::handle::{KeyedStateHandle, OperatorStateHandle};
use state_api::snapshot::stream::CheckpointStreamFactory;
use state_api::state::StateKey;
use state_api::{DefaultOperatorStateBackend, Result, StateBackend};

/// Configuration of the file-checkpointing heap backend for one job.
#[derive(Clone, Debug)]
pub struct FsStateBackend {
    storage: CheckpointStorage,
    incremental: Option<IncrementalOptions>,
}

impl FsStateBackend {
    /// Checkpoints of job `job_id` go under `checkpoint_dir/job_id`; full
    /// snapshots, 20 KiB inline threshold, the local file system.
    pub fn new(checkpoint_dir: &Path, job_id: &str) -> Result<Self> {
        Ok(Self::with_checkpoint_storage(CheckpointStorage::new(
            checkpoint_dir,
            job_id,
        )?))
    }

    /// Checkpoints go to `storage`, such as
    /// `CheckpointStorage::open("s3://bucket/prefix", job_id)`.
    pub fn with_checkpoint_storage(storage: CheckpointStorage) -> Self {
        FsStateBackend {
            storage,
            incremental: None,
        }
    }

    /// Turns incremental checkpoints on (default options) or off.
    pub fn with_incremental(mut self, on: bool) -> Self {
        self.incremental = on.then(IncrementalOptions::default);
        self
    }

    /// Incremental checkpoints with explicit compaction options.
    pub fn with_incremental_options(mut self, options: IncrementalOptions) -> Self {
        self.incremental = Some(options);
        self
    }

    /// Streams up to `bytes` (at most 1 MiB) are inlined into the metadata.
    pub fn with_inline_threshold(mut self, bytes: usize) -> Result<Self> {
        self.storage = self.storage.with_inline_threshold(bytes)?;
        Ok(self)
    }

    /// Uses `storage` for every file operation (for fault injection in tests).
    pub fn with_storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = self.storage.with_storage(storage);
        self
    }

    /// Where the job's checkpoints go.
    pub fn checkpoint_storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// The job's checkpoint layout.
    pub fn layout(&self) -> &JobLayout {
        self.storage.layout()
    }

    /// Whether incremental checkpoints are on.
    pub fn is_incremental(&self) -> bool {
        self.incremental.is_some()
    }

    /// The checkpoint coordinator of this job, with this backend's storage
    /// and inline threshold.
    pub fn coordinator(&self, config: CheckpointConfig) -> Result<CheckpointCoordinator> {
        self.storage.coordinator(config)
    }
}

impl StateBackend for FsStateBackend {
    type Keyed<K: StateKey> = HeapKeyedStateBackend<K>;

    fn name(&self) -> &'static str {
        if self.incremental.is_some() {
            "fs-incremental"
        } else {
            "fs"
        }
    }

    fn create_keyed_backend<K: StateKey>(
        &self,
        params: KeyedBackendParams<K>,
        restore: &[KeyedStateHandle],
    ) -> Result<HeapKeyedStateBackend<K>> {
        let options = HeapOptions {
            incremental: self.incremental.clone(),
        };
        let params = match params.files {
            Some(_) => params,
            None => params.with_files(self.storage.files()),
        };
        HeapKeyedStateBackend::with_options(params, restore, options)
    }

    /// Restores through this backend's checkpoint storage.
    fn create_operator_backend(
        &self,
        restore: &[OperatorStateHandle],
    ) -> Result<DefaultOperatorStateBackend> {
        DefaultOperatorStateBackend::restore_with(restore, &*self.storage.files())
    }

    /// Streams of checkpoint `checkpoint_id` without a coordinator: exclusive
    /// files in `chk-<id>/`, shared ones in `shared/` (both created here).
    fn stream_factory(&self, checkpoint_id: u64) -> Result<Arc<dyn CheckpointStreamFactory>> {
        self.storage.stream_factory(checkpoint_id)
    }
}
