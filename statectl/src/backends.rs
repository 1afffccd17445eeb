//! The backends by name, each with its checkpoint coordinator on local files.

use std::path::{Path, PathBuf};

use backend_fs::FsStateBackend;
use backend_memory::MemoryStateBackend;
use backend_rocksdb::RocksDbStateBackend;
use checkpoint_store::{CheckpointConfig, CheckpointCoordinator, CheckpointStorage};
use state_api::{Result, StateBackend};

/// A backend, as `--backend` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// Heap state; snapshots written through the job's checkpoint storage.
    Memory,
    /// Heap state with file checkpoints (full, or incremental on request).
    Fs,
    /// Embedded RocksDB with incremental native checkpoints.
    RocksDb,
}

impl BackendKind {
    /// The name `--backend` takes.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Fs => "fs",
            BackendKind::RocksDb => "rocksdb",
        }
    }
}

/// Where a job keeps its state and checkpoints.
#[derive(Clone, Debug)]
pub struct BackendSettings {
    /// The backend.
    pub kind: BackendKind,
    /// The checkpoint root: the job's folder is `checkpoint_dir/job_id`.
    pub checkpoint_dir: PathBuf,
    /// The job's id.
    pub job_id: String,
    /// Incremental checkpoints on the fs backend.
    pub incremental: bool,
    /// RocksDB's working folder.
    pub local_dir: PathBuf,
    /// The coordinator's configuration.
    pub checkpoints: CheckpointConfig,
    /// Streams up to this many bytes go into `_metadata` instead of a file.
    pub inline_threshold: usize,
}

impl BackendSettings {
    /// The job's folder.
    pub fn job_dir(&self) -> PathBuf {
        self.checkpoint_dir.join(&self.job_id)
    }
}

/// Work to do with a backend of any type.
pub trait WithBackend {
    /// What the work returns.
    type Output;
    /// Does the work with `backend` and the job's coordinator.
    fn run<S: StateBackend>(
        self,
        backend: &S,
        coordinator: CheckpointCoordinator,
    ) -> Result<Self::Output>;
}

/// Builds the backend `settings` name and runs `work` with it.
pub fn with_backend<W: WithBackend>(settings: &BackendSettings, work: W) -> Result<W::Output> {
    let dir: &Path = &settings.checkpoint_dir;
    let job = settings.job_id.as_str();
    let config = settings.checkpoints.clone();
    match settings.kind {
        BackendKind::Memory => {
            let storage = CheckpointStorage::new(dir, job)?
                .with_inline_threshold(settings.inline_threshold)?;
            // Snapshots go to the checkpoint storage's files, so the
            // in-memory size limit of the backend's own streams is moot.
            let backend = MemoryStateBackend::new().with_max_state_size(usize::MAX);
            work.run(&backend, storage.coordinator(config)?)
        }
        BackendKind::Fs => {
            let backend = FsStateBackend::new(dir, job)?
                .with_incremental(settings.incremental)
                .with_inline_threshold(settings.inline_threshold)?;
            let coordinator = backend.coordinator(config)?;
            work.run(&backend, coordinator)
        }
        BackendKind::RocksDb => {
            let backend = RocksDbStateBackend::new(&settings.local_dir, dir, job)?
                .with_inline_threshold(settings.inline_threshold)?;
            let coordinator = backend.coordinator(config)?;
            work.run(&backend, coordinator)
        }
    }
}
