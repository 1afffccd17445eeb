//! Reading and writing savepoints outside a running job, with the job's own
//! types and codecs (the analogue of Flink's State Processor API).
//!
//! * [`SavepointReader`] restores one operator's keyed state into a backend
//!   that owns every key group, so that its states can be read with the
//!   ordinary state API: [`KeyedStateBackend::keys`], then `get` per key.
//!   Codecs, schema checks and migrations apply exactly as on a restore.
//! * [`SavepointWriter`] writes a new savepoint from backends filled with the
//!   ordinary state API (bootstrapping the state of a new job): one keyed
//!   backend per operator owning every key group, and operator state. A job
//!   restores it at any parallelism.
//!
//! ```text
//! // Bootstrap: one keyed backend owning every key group, filled as a job would.
//! let spec = SubtaskSpec::new("count", 128, 1, 0)?;
//! let mut keyed = backend.create_keyed_backend(spec.keyed_params(postcard::<u64>()), &[])?;
//! let count = keyed.value_state(&ValueStateDescriptor::<u64>::new("count"))?;
//! keyed.set_current_key(7)?;
//! count.on(&mut keyed).set(42)?;
//! let mut writer = SavepointWriter::create(&dir, 1)?;
//! writer.add_keyed("count", 128, &mut keyed)?;
//! let path = writer.finish()?;
//!
//! // Read: the same state API on a restored backend.
//! let reader = SavepointReader::open(&LocalStorage, &path)?;
//! let mut restored = reader.keyed(&backend, "count", postcard::<u64>())?;
//! let count = restored.value_state(&ValueStateDescriptor::<u64>::new("count"))?;
//! for key in restored.keys(count.handle(), &VoidNamespace)? { ... }
//! ```
//!
//! `backend-fs/tests/rewrite.rs` runs this on the heap backends.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::layout::METADATA_FILE;
use super::metadata::{publish_metadata, CheckpointMetadata, OperatorState, SubtaskState};
use super::restore::{RestorePlan, SubtaskSpec};
use super::storage::{LocalStorage, Storage};
use super::stream::{FsCheckpointStreamFactory, DEFAULT_INLINE_THRESHOLD};
use state_api::backend::keyed::KeyedStateBackend;
use state_api::backend::operator::OperatorStateBackend;
use state_api::backend::StateBackend;
use state_api::codec::SharedCodec;
use state_api::error::{Error, Result};
use state_api::format::frame::Compression;
use state_api::snapshot::{SnapshotKind, SnapshotOptions};
use state_api::state::StateKey;

/// Reads a checkpoint's or savepoint's state with the job's types.
#[derive(Clone, Debug)]
pub struct SavepointReader {
    plan: RestorePlan,
}

impl SavepointReader {
    /// Opens the snapshot at `path` (a `_metadata` file, its folder or a job
    /// folder) and checks its files.
    pub fn open(storage: &dyn Storage, path: &Path) -> Result<Self> {
        Ok(SavepointReader {
            plan: RestorePlan::load(storage, path)?,
        })
    }

    /// The snapshot's operators.
    pub fn operator_ids(&self) -> Vec<&str> {
        self.plan
            .metadata()
            .operators
            .iter()
            .map(|o| o.operator_id.as_str())
            .collect()
    }

    /// The keyed state of `operator_id`, restored on `backend` into one keyed
    /// backend owning every key group, with keys decoded by `key_codec`.
    /// Register each state with its descriptor to read it.
    pub fn keyed<S: StateBackend, K: StateKey>(
        &self,
        backend: &S,
        operator_id: &str,
        key_codec: SharedCodec<K>,
    ) -> Result<S::Keyed<K>> {
        let op = self.operator_state(operator_id)?;
        let spec = SubtaskSpec::new(operator_id, op.max_parallelism, 1, 0)?;
        let mut restore = self.plan.subtasks(&spec)?;
        let handles = restore.pop().map(|r| r.keyed).unwrap_or_default();
        backend.create_keyed_backend(spec.keyed_params(key_codec), &handles)
    }

    /// The operator state of `operator_id`, every subtask's merged into one
    /// backend (list state holds every element, union state every copy).
    pub fn operator<S: StateBackend>(
        &self,
        backend: &S,
        operator_id: &str,
    ) -> Result<state_api::DefaultOperatorStateBackend> {
        let op = self.operator_state(operator_id)?;
        let spec = SubtaskSpec::new(operator_id, op.max_parallelism, 1, 0)?;
        let mut restore = self.plan.subtasks(&spec)?;
        let handles = restore.pop().map(|r| r.operator).unwrap_or_default();
        backend.create_operator_backend(&handles)
    }

    fn operator_state(&self, operator_id: &str) -> Result<&OperatorState> {
        self.plan
            .metadata()
            .operator(operator_id)
            .ok_or_else(|| Error::NotFound {
                what: format!(
                    "operator {operator_id} in {} (it holds {})",
                    self.plan.metadata_path().display(),
                    self.operator_ids().join(", ")
                ),
            })
    }
}

/// Writes a new savepoint from backends filled with the state API.
pub struct SavepointWriter {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    streams: Arc<FsCheckpointStreamFactory>,
    checkpoint_id: u64,
    operators: Vec<OperatorState>,
    compression: Compression,
}

impl SavepointWriter {
    /// A savepoint with id `checkpoint_id` in the new folder `dir` (which
    /// must not exist or be empty), on the local file system.
    pub fn create(dir: &Path, checkpoint_id: u64) -> Result<Self> {
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage);
        if storage.exists(dir)
            && !storage
                .list_dir(dir)
                .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
                .is_empty()
        {
            return Err(Error::InvalidArgument {
                what: format!("{} exists and is not empty", dir.display()),
            });
        }
        storage
            .create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let streams = Arc::new(FsCheckpointStreamFactory::new(
            storage.clone(),
            dir.to_path_buf(),
            dir.to_path_buf(),
            DEFAULT_INLINE_THRESHOLD,
            format!("savepoint {checkpoint_id}"),
        )?);
        Ok(SavepointWriter {
            dir: dir.to_path_buf(),
            storage,
            streams,
            checkpoint_id,
            operators: Vec::new(),
            compression: Compression::Zstd { level: 3 },
        })
    }

    /// Compression of the keyed files (zstd level 3 by default).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    fn operator_entry(
        &mut self,
        operator_id: &str,
        max_parallelism: u32,
    ) -> Result<&mut SubtaskState> {
        if let Some(i) = self
            .operators
            .iter()
            .position(|o| o.operator_id == operator_id)
        {
            if self.operators[i].max_parallelism != max_parallelism {
                return Err(Error::InvalidArgument {
                    what: format!(
                        "operator {operator_id} was added with max parallelism {}, now {max_parallelism}",
                        self.operators[i].max_parallelism
                    ),
                });
            }
            return Ok(&mut self.operators[i].subtasks[0]);
        }
        self.operators.push(OperatorState {
            operator_id: operator_id.to_string(),
            parallelism: 1,
            max_parallelism,
            subtasks: vec![SubtaskState::default()],
        });
        let last = self.operators.len() - 1;
        Ok(&mut self.operators[last].subtasks[0])
    }

    /// Adds the keyed state of operator `operator_id`: `keyed` must own every
    /// key group of its max parallelism (a subtask 0 of parallelism 1).
    pub fn add_keyed<B: KeyedStateBackend>(
        &mut self,
        operator_id: &str,
        max_parallelism: u32,
        keyed: &mut B,
    ) -> Result<()> {
        let options = SnapshotOptions::savepoint(self.compression);
        let handle = keyed
            .snapshot(self.checkpoint_id, self.streams.clone(), options)?
            .run()?;
        if let Some(h) = &handle {
            if h.range().len() != max_parallelism as usize || h.max_parallelism() != max_parallelism
            {
                return Err(Error::InvalidArgument {
                    what: format!(
                        "the keyed backend of {operator_id} owns key groups {} of max parallelism {}; a savepoint writer needs one owning all {max_parallelism}",
                        h.range(),
                        h.max_parallelism()
                    ),
                });
            }
        }
        let entry = self.operator_entry(operator_id, max_parallelism)?;
        entry.keyed.extend(handle);
        Ok(())
    }

    /// Adds the operator state of operator `operator_id` (max parallelism
    /// `max_parallelism`, as its keyed state if it has any).
    pub fn add_operator<O: OperatorStateBackend>(
        &mut self,
        operator_id: &str,
        max_parallelism: u32,
        operator: &mut O,
    ) -> Result<()> {
        let handle = operator
            .snapshot(
                self.checkpoint_id,
                self.streams.clone(),
                SnapshotOptions::savepoint(self.compression),
            )?
            .run()?;
        let entry = self.operator_entry(operator_id, max_parallelism)?;
        entry.operator.extend(handle);
        Ok(())
    }

    /// Publishes the savepoint's `_metadata`; returns its folder.
    pub fn finish(self) -> Result<PathBuf> {
        let metadata = CheckpointMetadata {
            checkpoint_id: self.checkpoint_id,
            kind: SnapshotKind::Savepoint,
            timestamp_millis: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            operators: self.operators,
        };
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| Error::io(format!("syncing {}", self.dir.display()), e))?;
        publish_metadata(&*self.storage, &self.dir, &self.dir, &metadata)?;
        debug_assert!(self.storage.exists(&self.dir.join(METADATA_FILE)));
        Ok(self.dir)
    }
}
