//! The checkpoint coordinator of one job: begins checkpoints, publishes or
//! aborts them, keeps the newest `num_retained`, deletes what nothing
//! references any more, and finds the latest completed checkpoint on startup.
//!
//! Checkpoints complete in id order, as in Flink: completing checkpoint N
//! aborts every pending checkpoint (not savepoint) below N as subsumed, and
//! completing a checkpoint below the newest completed one is refused with
//! [`Error::CheckpointSubsumed`]. So the latest completed checkpoint never
//! goes back in time and retention never drops a newer checkpoint for an
//! older one.
//!
//! On startup a checkpoint whose `_metadata` fails its checksums, or that
//! references a missing file or a file of another size, is skipped: recovery
//! falls back to the newest checkpoint that verifies and reports what it
//! skipped ([`CheckpointCoordinator::skipped_on_recovery`]).
//!
//! Shared files (`shared/`) are counted: a file is deleted only once no
//! retained checkpoint references it, and never while a checkpoint that began
//! before it became unreferenced is still pending (that checkpoint may
//! reference it). Files written for a checkpoint that was aborted are deleted
//! unless a retained checkpoint references them; backends never reuse them
//! because they only build on completed checkpoints.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::layout::{parse_checkpoint_dir_name, JobLayout, METADATA_FILE};
use super::metadata::{
    load_metadata, publish_metadata, CheckpointMetadata, OperatorState, SnapshotKind,
};
use super::storage::Storage;
use super::stream::{
    check_inline_threshold, CreatedFiles, FsCheckpointStreamFactory, DEFAULT_INLINE_THRESHOLD,
};
use state_api::backend::keyed::KeyedStateBackend;
use state_api::backend::operator::OperatorStateBackend;
use state_api::error::{Error, Result};
use state_api::snapshot::handle::{KeyedStateHandle, OperatorStateHandle};
use state_api::snapshot::stream::CheckpointStreamFactory;
use state_api::snapshot::task::SnapshotTask;
use state_api::snapshot::SnapshotOptions;

/// What happens to checkpoints when the job is cancelled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CancellationPolicy {
    /// Keep the retained checkpoints (externalized checkpoints).
    RetainOnCancellation,
    /// Delete every checkpoint and the job's folder.
    #[default]
    DeleteOnCancellation,
}

/// How a job ended, for [`CheckpointCoordinator::shutdown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Finished normally: checkpoints are cleaned up like a cancellation.
    Finished,
    /// Cancelled by a user: the cancellation policy applies.
    Cancelled,
    /// Failed: everything is kept for a restore.
    Failed,
}

/// Configuration of a coordinator.
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    /// How many completed checkpoints to keep (at least 1).
    pub num_retained: usize,
    /// What to do on cancellation.
    pub cancellation: CancellationPolicy,
    /// Streams up to this many bytes are inlined into the metadata.
    pub inline_threshold: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            num_retained: 1,
            cancellation: CancellationPolicy::default(),
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
        }
    }
}

/// A completed checkpoint the coordinator retains.
#[derive(Clone, Debug)]
pub struct CompletedCheckpoint {
    /// Its id.
    pub id: u64,
    /// Where its `_metadata` is.
    pub metadata_path: PathBuf,
    /// Its content, with absolute paths.
    pub metadata: CheckpointMetadata,
    /// Whether its files belong to this job (false for a checkpoint restored
    /// without claiming it: its files are never deleted).
    owned: bool,
}

/// A checkpoint found on startup that failed verification and was skipped.
/// Its folder stays in place (for inspection) until `num_retained` newer
/// checkpoints have completed; then it is deleted like a subsumed one.
#[derive(Debug)]
pub struct SkippedCheckpoint {
    /// Its id.
    pub id: u64,
    /// Its `_metadata`.
    pub metadata_path: PathBuf,
    /// Why it was skipped.
    pub error: Error,
}

/// A checkpoint that began and is not yet completed or aborted.
pub struct PendingCheckpoint {
    /// Its id.
    pub id: u64,
    /// Where its snapshots write.
    pub streams: Arc<dyn CheckpointStreamFactory>,
    created: CreatedFiles,
}

impl PendingCheckpoint {
    /// Takes the synchronous part of `keyed`'s snapshot for this checkpoint
    /// (its id and streams given once, here) and returns the asynchronous
    /// part. For a savepoint pass [`SnapshotOptions::savepoint`].
    pub fn snapshot_keyed<B: KeyedStateBackend>(
        &self,
        keyed: &mut B,
        options: SnapshotOptions,
    ) -> Result<SnapshotTask<Option<KeyedStateHandle>>> {
        keyed.snapshot(self.id, self.streams.clone(), options)
    }

    /// Like [`PendingCheckpoint::snapshot_keyed`], for operator state.
    pub fn snapshot_operator<O: OperatorStateBackend>(
        &self,
        operator: &mut O,
        options: SnapshotOptions,
    ) -> Result<SnapshotTask<Option<OperatorStateHandle>>> {
        operator.snapshot(self.id, self.streams.clone(), options)
    }
}

struct PendingEntry {
    created: CreatedFiles,
    /// The savepoint folder, for a savepoint.
    savepoint_dir: Option<PathBuf>,
}

/// How a restored checkpoint's files are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreMode {
    /// The job takes ownership: the checkpoint joins the retained ones and its
    /// files are deleted when it is subsumed.
    Claim,
    /// The files stay untouched; the job never deletes them.
    NoClaim,
}

/// Coordinates the checkpoints of one job.
pub struct CheckpointCoordinator {
    storage: Arc<dyn Storage>,
    layout: JobLayout,
    config: CheckpointConfig,
    completed: VecDeque<CompletedCheckpoint>,
    pending: BTreeMap<u64, PendingEntry>,
    next_id: u64,
    /// Shared files no longer referenced, waiting for older pending checkpoints
    /// to finish: (file, highest pending id when it became unreferenced).
    deferred: Vec<(PathBuf, u64)>,
    /// Damaged checkpoints found on startup, oldest first.
    skipped: Vec<SkippedCheckpoint>,
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} {}", path.display());
    move |e| Error::io(context, e)
}

impl CheckpointCoordinator {
    /// Opens the coordinator of job `job_id` under `checkpoint_dir`: creates the
    /// layout, loads every completed checkpoint (the newest `num_retained` are
    /// retained, older ones deleted), and removes what a crash left behind
    /// (folders of checkpoints that never completed, unreferenced shared files).
    pub fn open(
        storage: Arc<dyn Storage>,
        checkpoint_dir: &Path,
        job_id: &str,
        config: CheckpointConfig,
    ) -> Result<Self> {
        if config.num_retained == 0 {
            return Err(Error::InvalidArgument {
                what: "num_retained must be at least 1".into(),
            });
        }
        check_inline_threshold(config.inline_threshold)?;
        let layout = JobLayout::new(checkpoint_dir, job_id)?;
        for dir in [
            layout.job_dir().to_path_buf(),
            layout.shared_dir(),
            layout.task_owned_dir(),
        ] {
            storage
                .create_dir_all(&dir)
                .map_err(io_err("creating", &dir))?;
        }
        storage
            .sync_dir(layout.job_dir())
            .map_err(io_err("syncing", layout.job_dir()))?;
        let mut coordinator = CheckpointCoordinator {
            storage,
            layout,
            config,
            completed: VecDeque::new(),
            pending: BTreeMap::new(),
            next_id: 1,
            deferred: Vec::new(),
            skipped: Vec::new(),
        };
        coordinator.recover()?;
        Ok(coordinator)
    }

    fn recover(&mut self) -> Result<()> {
        let job_dir = self.layout.job_dir().to_path_buf();
        let names = self
            .storage
            .list_dir(&job_dir)
            .map_err(io_err("listing", &job_dir))?;
        let mut ids: Vec<u64> = names
            .iter()
            .filter_map(|n| parse_checkpoint_dir_name(n))
            .collect();
        ids.sort_unstable();
        let mut incomplete = Vec::new();
        for id in ids {
            self.next_id = self.next_id.max(id + 1);
            let path = self.layout.metadata_path(id);
            if !self.storage.exists(&path) {
                incomplete.push(id);
                continue;
            }
            match load_metadata(&*self.storage, &path)
                .and_then(|m| verify_files(&*self.storage, id, &m).map(|()| m))
            {
                Ok(metadata) => self.completed.push_back(CompletedCheckpoint {
                    id,
                    metadata_path: path,
                    metadata,
                    owned: true,
                }),
                Err(error) if is_damage(&error) => self.skipped.push(SkippedCheckpoint {
                    id,
                    metadata_path: path,
                    error,
                }),
                Err(error) => return Err(error),
            }
        }
        for id in incomplete {
            let dir = self.layout.checkpoint_dir(id);
            self.storage
                .remove_dir_all(&dir)
                .map_err(io_err("removing incomplete", &dir))?;
        }
        self.enforce_retention()?;
        self.collect_shared_garbage()
    }

    /// The job's layout.
    pub fn layout(&self) -> &JobLayout {
        &self.layout
    }

    /// The retained completed checkpoints, oldest first.
    pub fn completed(&self) -> impl Iterator<Item = &CompletedCheckpoint> {
        self.completed.iter()
    }

    /// The newest completed checkpoint.
    pub fn latest_completed(&self) -> Option<&CompletedCheckpoint> {
        self.completed.back()
    }

    /// Checkpoints found on startup that failed verification (damaged
    /// `_metadata`, a missing or resized file) and were skipped, oldest first.
    /// Recovery uses the newest checkpoint that verified.
    pub fn skipped_on_recovery(&self) -> &[SkippedCheckpoint] {
        &self.skipped
    }

    /// Ids of checkpoints begun and not yet completed or aborted.
    pub fn pending_ids(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }

    /// Registers a checkpoint restored from `metadata_path` (of this or another
    /// job). With [`RestoreMode::Claim`] it joins the retained checkpoints and
    /// its files are deleted once subsumed; with [`RestoreMode::NoClaim`] its
    /// files are never touched. Later checkpoint ids follow its id.
    pub fn restore_from(
        &mut self,
        metadata_path: &Path,
        mode: RestoreMode,
    ) -> Result<CheckpointMetadata> {
        let metadata = load_metadata(&*self.storage, metadata_path)?;
        verify_files(&*self.storage, metadata.checkpoint_id, &metadata)?;
        self.next_id = self.next_id.max(metadata.checkpoint_id + 1);
        if mode == RestoreMode::Claim && metadata.kind == SnapshotKind::Checkpoint {
            let id = metadata.checkpoint_id;
            if !self.completed.iter().any(|c| c.id == id) {
                self.completed.push_back(CompletedCheckpoint {
                    id,
                    metadata_path: metadata_path.to_path_buf(),
                    metadata: metadata.clone(),
                    owned: true,
                });
                self.completed.make_contiguous().sort_by_key(|c| c.id);
            }
        }
        Ok(metadata)
    }

    /// Begins the next checkpoint: creates its folder and returns its id and
    /// the streams its snapshots write to.
    pub fn begin_checkpoint(&mut self) -> Result<PendingCheckpoint> {
        let id = self.next_id;
        let dir = self.layout.checkpoint_dir(id);
        self.begin(id, dir, self.layout.shared_dir(), None)
    }

    /// Creates the exclusive folder of pending checkpoint (or savepoint) `id`
    /// and the streams that write into it and `shared_dir`.
    fn begin(
        &mut self,
        id: u64,
        dir: PathBuf,
        shared_dir: PathBuf,
        savepoint_dir: Option<PathBuf>,
    ) -> Result<PendingCheckpoint> {
        self.next_id = id + 1;
        self.storage
            .create_dir_all(&dir)
            .map_err(io_err("creating", &dir))?;
        let kind = if savepoint_dir.is_some() {
            "savepoint"
        } else {
            "checkpoint"
        };
        let factory = FsCheckpointStreamFactory::new(
            self.storage.clone(),
            dir,
            shared_dir,
            self.config.inline_threshold,
            format!("{kind} {id}"),
        )?;
        let created = factory.created_files();
        self.pending.insert(
            id,
            PendingEntry {
                created: created.clone(),
                savepoint_dir,
            },
        );
        Ok(PendingCheckpoint {
            id,
            streams: Arc::new(factory),
            created,
        })
    }

    /// Completes checkpoint `id` with the operators' snapshots: publishes its
    /// metadata durably, aborts every pending checkpoint below `id` as
    /// subsumed, then applies retention.
    ///
    /// A checkpoint below the newest completed one is refused with
    /// [`Error::CheckpointSubsumed`] (and aborted if it was still pending):
    /// the engine then tells its backends the checkpoint was aborted.
    ///
    /// If another coordinator of the job published `id` first, the error
    /// says its `_metadata` already exists and `id` is no longer pending here
    /// (aborting it does nothing: the published checkpoint is left whole).
    pub fn complete_checkpoint(
        &mut self,
        id: u64,
        operators: Vec<OperatorState>,
    ) -> Result<CompletedCheckpoint> {
        if let Some(latest) = self.completed.back().map(|c| c.id).filter(|&l| l >= id) {
            if self
                .pending
                .get(&id)
                .is_some_and(|e| e.savepoint_dir.is_none())
            {
                self.abort(id)?;
            }
            return Err(Error::CheckpointSubsumed {
                checkpoint_id: id,
                latest,
            });
        }
        let Some(entry) = self.pending.get(&id) else {
            return Err(Error::NotFound {
                what: format!("pending checkpoint {id}"),
            });
        };
        if entry.savepoint_dir.is_some() {
            return Err(Error::InvalidArgument {
                what: format!("{id} is a savepoint: use complete_savepoint"),
            });
        }
        let metadata = CheckpointMetadata {
            checkpoint_id: id,
            kind: SnapshotKind::Checkpoint,
            timestamp_millis: now_millis(),
            operators,
        };
        let dir = self.layout.checkpoint_dir(id);
        // The state files' folder entries must be durable before the metadata
        // that references them.
        for d in [dir.clone(), self.layout.shared_dir()] {
            self.storage.sync_dir(&d).map_err(io_err("syncing", &d))?;
        }
        let path = match publish_metadata(&*self.storage, &dir, self.layout.job_dir(), &metadata) {
            Ok(path) => path,
            Err(e) => match load_metadata(&*self.storage, &dir) {
                // Our own put reached the store but its answer was lost and
                // the retried conditional put found it: published.
                Ok(ours) if ours == metadata => dir.join(METADATA_FILE),
                // Another coordinator of this job published this checkpoint
                // first: the folder now holds its checkpoint, which `abort`
                // (removing the folder) must not delete. Ours is forgotten;
                // its files go with the folder or as unreferenced shared files.
                Ok(_) => {
                    self.pending.remove(&id);
                    return Err(e);
                }
                Err(_) => return Err(e),
            },
        };
        self.pending.remove(&id);
        let completed = CompletedCheckpoint {
            id,
            metadata_path: path,
            metadata,
            owned: true,
        };
        self.completed.push_back(completed.clone());
        let subsumed: Vec<u64> = self
            .pending
            .range(..id)
            .filter(|(_, e)| e.savepoint_dir.is_none())
            .map(|(&pending, _)| pending)
            .collect();
        for pending in subsumed {
            self.abort(pending)?;
        }
        self.enforce_retention()?;
        self.collect_shared_garbage()?;
        Ok(completed)
    }

    /// Aborts a pending checkpoint or savepoint: deletes what it wrote (shared
    /// files only if no retained checkpoint references them).
    pub fn abort(&mut self, id: u64) -> Result<()> {
        let Some(entry) = self.pending.remove(&id) else {
            return Ok(());
        };
        match &entry.savepoint_dir {
            Some(dir) => self
                .storage
                .remove_dir_all(dir)
                .map_err(io_err("removing", dir))?,
            None => {
                let dir = self.layout.checkpoint_dir(id);
                self.storage
                    .remove_dir_all(&dir)
                    .map_err(io_err("removing", &dir))?;
            }
        }
        let referenced = self.referenced_files();
        let created: Vec<PathBuf> = entry
            .created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let shared = self.layout.shared_dir();
        for file in created
            .into_iter()
            .filter(|f| f.starts_with(&shared) && !referenced.contains(f))
        {
            self.storage
                .remove_file(&file)
                .map_err(io_err("removing", &file))?;
        }
        self.collect_shared_garbage()
    }

    /// Begins a savepoint in a new folder under `savepoint_dir`. Its files are
    /// all in that folder (self-contained); complete it with
    /// [`CheckpointCoordinator::complete_savepoint`]. Backends must take full
    /// canonical snapshots for it.
    pub fn begin_savepoint(&mut self, savepoint_dir: &Path) -> Result<PendingCheckpoint> {
        let id = self.next_id;
        let dir = self.layout.new_savepoint_dir(savepoint_dir);
        // Every file of a savepoint, shared-scope ones included, stays in its folder.
        self.begin(id, dir.clone(), dir.clone(), Some(dir))
    }

    /// Completes a savepoint; returns its folder. Savepoints are never
    /// removed by retention, only by [`dispose_savepoint`].
    pub fn complete_savepoint(
        &mut self,
        id: u64,
        operators: Vec<OperatorState>,
    ) -> Result<PathBuf> {
        let Some(dir) = self.pending.get(&id).and_then(|e| e.savepoint_dir.clone()) else {
            return Err(Error::NotFound {
                what: format!("pending savepoint {id}"),
            });
        };
        let metadata = CheckpointMetadata {
            checkpoint_id: id,
            kind: SnapshotKind::Savepoint,
            timestamp_millis: now_millis(),
            operators,
        };
        self.storage
            .sync_dir(&dir)
            .map_err(io_err("syncing", &dir))?;
        publish_metadata(&*self.storage, &dir, &dir, &metadata)?;
        self.pending.remove(&id);
        Ok(dir)
    }

    /// Stop with savepoint: takes a savepoint (the snapshots are taken by
    /// `take`, which gets the pending savepoint's streams and returns the
    /// operators' states), then shuts down as cancelled. Returns the
    /// savepoint's folder. If the savepoint fails it is aborted and the job
    /// is not cancelled.
    pub fn stop_with_savepoint(
        mut self,
        savepoint_dir: &Path,
        take: impl FnOnce(&PendingCheckpoint) -> Result<Vec<OperatorState>>,
    ) -> Result<PathBuf> {
        let pending = self.begin_savepoint(savepoint_dir)?;
        let operators = match take(&pending) {
            Ok(o) => o,
            Err(e) => {
                self.abort(pending.id)?;
                return Err(e);
            }
        };
        let path = self.complete_savepoint(pending.id, operators)?;
        self.shutdown(JobStatus::Cancelled)?;
        Ok(path)
    }

    /// Ends the coordinator. `Failed` keeps everything; `Cancelled` applies
    /// the cancellation policy; `Finished` deletes like a cancellation with
    /// [`CancellationPolicy::DeleteOnCancellation`] unless checkpoints are
    /// retained on cancellation. Savepoints are never touched.
    pub fn shutdown(mut self, status: JobStatus) -> Result<()> {
        let pending: Vec<u64> = self.pending.keys().copied().collect();
        if status == JobStatus::Failed {
            return Ok(());
        }
        for id in pending {
            self.abort(id)?;
        }
        if self.config.cancellation == CancellationPolicy::RetainOnCancellation {
            return Ok(());
        }
        for c in std::mem::take(&mut self.completed) {
            if c.owned {
                self.remove_checkpoint_folder(&c)?;
            }
        }
        let referenced = self.referenced_files();
        let shared = self.layout.shared_dir();
        for name in self
            .storage
            .list_dir(&shared)
            .map_err(io_err("listing", &shared))?
        {
            let file = shared.join(name);
            if !referenced.contains(&file) {
                self.storage
                    .remove_file(&file)
                    .map_err(io_err("removing", &file))?;
            }
        }
        Ok(())
    }

    fn remove_checkpoint_folder(&self, c: &CompletedCheckpoint) -> Result<()> {
        let Some(dir) = c.metadata_path.parent() else {
            return Ok(());
        };
        // Unpublish first, so that a crash in the middle never leaves a
        // `_metadata` whose files are half gone.
        let meta = dir.join(METADATA_FILE);
        self.storage
            .remove_file(&meta)
            .map_err(io_err("removing", &meta))?;
        self.storage
            .remove_dir_all(dir)
            .map_err(io_err("removing", dir))
    }

    fn enforce_retention(&mut self) -> Result<()> {
        while self.completed.len() > self.config.num_retained {
            let Some(old) = self.completed.pop_front() else {
                break;
            };
            if old.owned {
                self.remove_checkpoint_folder(&old)?;
                let highest_pending = self.pending.keys().next_back().copied().unwrap_or(0);
                let shared = self.layout.shared_dir();
                for f in old
                    .metadata
                    .files()
                    .into_iter()
                    .filter(|f| f.starts_with(&shared))
                {
                    self.deferred.push((f, highest_pending));
                }
            }
        }
        // A damaged checkpoint skipped on startup goes once `num_retained`
        // newer ones have completed, like the checkpoint it would have been.
        if self.completed.len() >= self.config.num_retained {
            if let Some(oldest) = self.completed.front().map(|c| c.id) {
                let (gone, kept) = std::mem::take(&mut self.skipped)
                    .into_iter()
                    .partition(|s| s.id < oldest);
                self.skipped = kept;
                for s in gone {
                    if let Some(dir) = s.metadata_path.parent() {
                        self.storage
                            .remove_dir_all(dir)
                            .map_err(io_err("removing damaged", dir))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Files referenced by retained checkpoints.
    fn referenced_files(&self) -> HashSet<PathBuf> {
        self.completed
            .iter()
            .flat_map(|c| c.metadata.files())
            .collect()
    }

    /// Deletes shared files that no retained checkpoint references, once every
    /// checkpoint pending when they became unreferenced has finished. On
    /// startup (no pending checkpoint) this also removes orphans a crash left.
    fn collect_shared_garbage(&mut self) -> Result<()> {
        let referenced = self.referenced_files();
        let lowest_pending = self.pending.keys().next().copied();
        let mut keep = Vec::new();
        for (file, pending_at) in std::mem::take(&mut self.deferred) {
            let blocked = lowest_pending.is_some_and(|low| low <= pending_at);
            if referenced.contains(&file) {
                continue;
            }
            if blocked {
                keep.push((file, pending_at));
            } else {
                self.storage
                    .remove_file(&file)
                    .map_err(io_err("removing", &file))?;
            }
        }
        self.deferred = keep;
        if self.pending.is_empty() {
            let shared = self.layout.shared_dir();
            for name in self
                .storage
                .list_dir(&shared)
                .map_err(io_err("listing", &shared))?
            {
                let file = shared.join(&name);
                if !referenced.contains(&file) {
                    self.storage
                        .remove_file(&file)
                        .map_err(io_err("removing orphan", &file))?;
                }
            }
        }
        Ok(())
    }
}

impl PendingCheckpoint {
    /// Files this checkpoint's streams created so far.
    pub fn created_files(&self) -> Vec<PathBuf> {
        self.created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Checks that every file `metadata` references exists with the size its
/// handle records (the files' contents are checked by their checksums when
/// a backend restores them). A missing file's error names the checkpoint.
pub fn verify_files(storage: &dyn Storage, id: u64, metadata: &CheckpointMetadata) -> Result<()> {
    for (path, size) in metadata.file_sizes() {
        let name = path.display().to_string();
        let actual = storage.len(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Corrupted {
                    file: name.clone(),
                    offset: 0,
                    reason: format!("the file is missing; checkpoint {id} references it"),
                }
            } else {
                Error::io(format!("checking {name} of checkpoint {id}"), e)
            }
        })?;
        state_api::snapshot::stream::check_file_size(&name, size, actual)?;
    }
    Ok(())
}

/// Whether an error found while loading a checkpoint on startup means the
/// checkpoint is damaged (skip it) rather than unreadable now (fail).
fn is_damage(error: &Error) -> bool {
    error.kind() == state_api::ErrorKind::Corruption
}

/// Deletes a savepoint folder after checking that it holds a savepoint's
/// `_metadata` (never a checkpoint's).
pub fn dispose_savepoint(storage: &dyn Storage, savepoint_dir: &Path) -> Result<()> {
    let metadata = load_metadata(storage, savepoint_dir)?;
    if metadata.kind != SnapshotKind::Savepoint {
        return Err(Error::InvalidArgument {
            what: format!(
                "{} holds a checkpoint, not a savepoint",
                savepoint_dir.display()
            ),
        });
    }
    let meta = savepoint_dir.join(METADATA_FILE);
    storage
        .remove_file(&meta)
        .map_err(io_err("removing", &meta))?;
    storage
        .remove_dir_all(savepoint_dir)
        .map_err(io_err("removing", savepoint_dir))
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
