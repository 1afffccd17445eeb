//! Checkpoint storage: the job's layout, file streams with small-state
//! inlining, atomic and exclusive publishing of `_metadata`, the coordinator
//! (retention, shared files, cancellation policies, savepoints), restore
//! plans and inspection. Used by every backend that writes files and by
//! engines that coordinate checkpoints.
//!
//! The state layer's contract (handles, streams, the canonical format) is in
//! `state-api`; this crate decides where the bytes go, behind the [`Storage`]
//! trait.

pub mod coordinator;
#[cfg(feature = "test-support")]
pub mod faulty;
#[cfg(all(feature = "object-store", feature = "test-support"))]
mod flaky_http;
pub mod inspect;
pub mod layout;
pub mod location;
pub mod metadata;
#[cfg(feature = "object-store")]
pub mod object;
#[cfg(all(feature = "object-store", feature = "test-support"))]
pub mod object_faults;
pub mod processor;
pub mod restore;
pub mod rewrite;
pub mod storage;
pub mod stream;

pub use coordinator::{
    dispose_savepoint, verify_files, CancellationPolicy, CheckpointConfig, CheckpointCoordinator,
    CompletedCheckpoint, JobStatus, PendingCheckpoint, RestoreMode, SkippedCheckpoint,
};
#[cfg(feature = "test-support")]
pub use faulty::FaultyStorage;
#[cfg(all(feature = "object-store", feature = "test-support"))]
pub use flaky_http::FlakyHttpConnector;
pub use inspect::{
    inspect_snapshot, list_snapshots, verify_snapshot, Problem, SnapshotListing, SnapshotSummary,
    VerifyReport,
};
pub use layout::JobLayout;
#[cfg(feature = "object-store")]
pub use location::open_object_store_with;
pub use location::{open_storage, Location};
pub use metadata::{load_metadata, CheckpointMetadata, OperatorState, SnapshotKind, SubtaskState};
#[cfg(feature = "object-store")]
pub use object::{ObjectStoreOptions, ObjectStoreStorage};
pub use restore::{resolve_metadata_path, RestorePlan, SubtaskRestore, SubtaskSpec};
pub use storage::{LocalStorage, Storage, StorageFile, StorageFiles};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_api::error::{Error, Result};
use state_api::snapshot::stream::CheckpointStreamFactory;
use stream::{check_inline_threshold, FsCheckpointStreamFactory, DEFAULT_INLINE_THRESHOLD};

/// Where one job's checkpoints go: the storage, the job's layout and the
/// inline threshold. Backends that write files hold one and hand out its
/// stream factories; engines open its coordinator.
#[derive(Clone)]
pub struct CheckpointStorage {
    storage: Arc<dyn Storage>,
    checkpoint_dir: PathBuf,
    layout: JobLayout,
    inline_threshold: usize,
}

impl std::fmt::Debug for CheckpointStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStorage")
            .field("job_dir", &self.layout.job_dir())
            .field("inline_threshold", &self.inline_threshold)
            .finish()
    }
}

impl CheckpointStorage {
    /// Checkpoints of job `job_id` under `checkpoint_dir/job_id`, on the local
    /// file system, with the default inline threshold (20 KiB).
    pub fn new(checkpoint_dir: &Path, job_id: &str) -> Result<Self> {
        Ok(CheckpointStorage {
            storage: Arc::new(LocalStorage),
            checkpoint_dir: checkpoint_dir.to_path_buf(),
            layout: JobLayout::new(checkpoint_dir, job_id)?,
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
        })
    }

    /// Checkpoints of job `job_id` under `location`: a local path or
    /// `file://` URL, or (with the `object-store` feature) an object-store
    /// URL such as `s3://bucket/prefix` or `memory://name` (see
    /// [`Location`]).
    pub fn open(location: &str, job_id: &str) -> Result<Self> {
        let location = Location::parse(location)?;
        Self::at(&location, open_storage(&location)?, job_id)
    }

    /// Checkpoints of job `job_id` under `location`, through `storage`.
    pub fn at(location: &Location, storage: Arc<dyn Storage>, job_id: &str) -> Result<Self> {
        let root = location.root();
        Ok(CheckpointStorage {
            storage,
            layout: JobLayout::new(&root, job_id)?,
            checkpoint_dir: root,
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
        })
    }

    /// Streams up to `bytes` (at most 1 MiB) are inlined into the metadata.
    pub fn with_inline_threshold(mut self, bytes: usize) -> Result<Self> {
        check_inline_threshold(bytes)?;
        self.inline_threshold = bytes;
        Ok(self)
    }

    /// Uses `storage` for every file operation (for fault injection in tests).
    pub fn with_storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// The job's layout.
    pub fn layout(&self) -> &JobLayout {
        &self.layout
    }

    /// The storage in use.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// A reader of state files through this storage, for restores.
    pub fn files(&self) -> state_api::snapshot::stream::SharedFileReader {
        Arc::new(StorageFiles(self.storage.clone()))
    }

    /// The inline threshold.
    pub fn inline_threshold(&self) -> usize {
        self.inline_threshold
    }

    /// The job's checkpoint coordinator, with this storage and inline threshold.
    pub fn coordinator(&self, mut config: CheckpointConfig) -> Result<CheckpointCoordinator> {
        config.inline_threshold = self.inline_threshold;
        CheckpointCoordinator::open(
            self.storage.clone(),
            &self.checkpoint_dir,
            self.layout.job_id(),
            config,
        )
    }

    /// Streams of checkpoint `checkpoint_id` without a coordinator: exclusive
    /// files in `chk-<id>/`, shared ones in `shared/` (both created here).
    pub fn stream_factory(&self, checkpoint_id: u64) -> Result<Arc<dyn CheckpointStreamFactory>> {
        let exclusive = self.layout.checkpoint_dir(checkpoint_id);
        let shared = self.layout.shared_dir();
        for dir in [&exclusive, &shared] {
            self.storage
                .create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(Arc::new(FsCheckpointStreamFactory::new(
            self.storage.clone(),
            exclusive,
            shared,
            self.inline_threshold,
            format!("checkpoint {checkpoint_id}"),
        )?))
    }
}
