//! Restoring a job: from a completed checkpoint or savepoint (found by path)
//! and each operator's new parallelism, the handles every new subtask
//! restores.
//!
//! This is the coordinator-side work an engine does on every restore: find
//! the `_metadata`, check that the files it references are there, and deal
//! the old subtasks' handles to the new ones (keyed state by key-group range,
//! operator state by its distribution mode).
//!
//! ```
//! use checkpoint_store::{CheckpointStorage, CheckpointConfig, OperatorState, RestorePlan, SubtaskSpec};
//! use checkpoint_store::LocalStorage;
//!
//! # fn main() -> state_api::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let storage = CheckpointStorage::new(dir.path(), "job")?;
//! let mut coordinator = storage.coordinator(CheckpointConfig::default())?;
//! // A checkpoint of an operator "count" that ran with 2 subtasks and held no
//! // state yet (the subtasks' handles would go in `subtasks`).
//! let pending = coordinator.begin_checkpoint()?;
//! let count = OperatorState {
//!     operator_id: "count".into(),
//!     parallelism: 2,
//!     max_parallelism: 128,
//!     subtasks: vec![Default::default(); 2],
//! };
//! let completed = coordinator.complete_checkpoint(pending.id, vec![count])?;
//!
//! // Restore at parallelism 3: the job folder, the checkpoint folder or its
//! // `_metadata` all name the checkpoint.
//! let plan = RestorePlan::load(&LocalStorage, storage.layout().job_dir())?;
//! assert_eq!(plan.checkpoint_id(), completed.id);
//! plan.check_operators(&["count", "source"])?;
//! let subtasks = plan.subtasks(&SubtaskSpec::operator("count", 128, 3)?)?;
//! assert_eq!(subtasks.len(), 3);
//! assert_eq!(subtasks[2].spec.index, 2);
//! assert_eq!(subtasks[2].spec.key_group_range().start(), 86);
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use super::coordinator::verify_files;
use super::layout::{parse_checkpoint_dir_name, METADATA_FILE};
use super::metadata::{load_metadata, CheckpointMetadata, SubtaskState};
use super::storage::Storage;
use state_api::backend::KeyedBackendParams;
use state_api::codec::SharedCodec;
use state_api::error::{Error, Result};
use state_api::key_group::{check_parallelism, KeyGroupRange};
use state_api::snapshot::handle::{KeyedStateHandle, OperatorStateHandle};
use state_api::snapshot::rescale::{assign_keyed_state, assign_operator_state};

/// One subtask of an operator: what an engine needs to create its backends
/// and to route records to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubtaskSpec {
    /// The operator's id, stable across restores.
    pub operator_id: String,
    /// The operator's max parallelism (never changes across restores).
    pub max_parallelism: u32,
    /// The operator's parallelism.
    pub parallelism: u32,
    /// This subtask's index, `0..parallelism`.
    pub index: u32,
}

impl SubtaskSpec {
    /// Subtask `index` of operator `operator_id` at `parallelism`; the
    /// arguments are checked (`1 <= parallelism <= max_parallelism`,
    /// `index < parallelism`).
    pub fn new(
        operator_id: impl Into<String>,
        max_parallelism: u32,
        parallelism: u32,
        index: u32,
    ) -> Result<Self> {
        check_parallelism(max_parallelism, parallelism)?;
        if index >= parallelism {
            return Err(Error::InvalidOperatorIndex { index, parallelism });
        }
        Ok(SubtaskSpec {
            operator_id: operator_id.into(),
            max_parallelism,
            parallelism,
            index,
        })
    }

    /// Subtask 0 of operator `operator_id` at `parallelism`: a template for
    /// [`RestorePlan::subtasks`] and [`SubtaskSpec::all`].
    pub fn operator(
        operator_id: impl Into<String>,
        max_parallelism: u32,
        parallelism: u32,
    ) -> Result<Self> {
        SubtaskSpec::new(operator_id, max_parallelism, parallelism, 0)
    }

    /// Every subtask of this subtask's operator, in index order.
    pub fn all(&self) -> Vec<SubtaskSpec> {
        (0..self.parallelism)
            .map(|index| SubtaskSpec {
                index,
                ..self.clone()
            })
            .collect()
    }

    /// The key groups this subtask owns.
    pub fn key_group_range(&self) -> KeyGroupRange {
        // The constructor checked the arguments, so this cannot fail; an
        // empty range stands in for the impossible case.
        KeyGroupRange::for_operator(self.max_parallelism, self.parallelism, self.index)
            .unwrap_or_else(|_| KeyGroupRange::new(1, 0))
    }

    /// The parameters of this subtask's keyed backend, with `key_codec`.
    pub fn keyed_params<K>(&self, key_codec: SharedCodec<K>) -> KeyedBackendParams<K> {
        KeyedBackendParams {
            max_parallelism: self.max_parallelism,
            key_group_range: self.key_group_range(),
            key_codec,
            clock: Default::default(),
            files: None,
        }
    }
}

impl std::fmt::Display for SubtaskSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}/{})",
            self.operator_id,
            self.index + 1,
            self.parallelism
        )
    }
}

/// What one new subtask restores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubtaskRestore {
    /// The subtask.
    pub spec: SubtaskSpec,
    /// Managed keyed state: the parts of the old handles in its key groups.
    pub keyed: Vec<KeyedStateHandle>,
    /// Managed operator state, redistributed by each state's mode.
    pub operator: Vec<OperatorStateHandle>,
    /// Raw keyed state, by key group like managed keyed state.
    pub raw_keyed: Vec<KeyedStateHandle>,
    /// Raw operator state, redistributed like operator list state.
    pub raw_operator: Vec<OperatorStateHandle>,
}

impl SubtaskRestore {
    /// Whether the subtask starts with no state at all.
    pub fn is_empty(&self) -> bool {
        self.keyed.is_empty()
            && self.operator.is_empty()
            && self.raw_keyed.is_empty()
            && self.raw_operator.is_empty()
    }
}

/// A completed checkpoint or savepoint, loaded and checked, ready to be
/// dealt to the subtasks of a job at any parallelism.
#[derive(Clone, Debug)]
pub struct RestorePlan {
    metadata_path: PathBuf,
    metadata: CheckpointMetadata,
}

impl RestorePlan {
    /// Loads the checkpoint or savepoint at `path` and checks that every file
    /// it references exists with the size its handle records.
    ///
    /// `path` is a `_metadata` file, a folder holding one (`chk-N/` or a
    /// savepoint folder), or a job folder, which stands for its newest
    /// completed checkpoint whose files are all present.
    pub fn load(storage: &dyn Storage, path: &Path) -> Result<Self> {
        let mut first_error = None;
        for metadata_path in candidates(storage, path)? {
            let loaded = load_metadata(storage, &metadata_path)
                .and_then(|m| verify_files(storage, m.checkpoint_id, &m).map(|()| m));
            match loaded {
                Ok(metadata) => {
                    return Ok(RestorePlan {
                        metadata_path,
                        metadata,
                    })
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| not_a_snapshot(path)))
    }

    /// The `_metadata` file restored from.
    pub fn metadata_path(&self) -> &Path {
        &self.metadata_path
    }

    /// Its content, with absolute file paths.
    pub fn metadata(&self) -> &CheckpointMetadata {
        &self.metadata
    }

    /// The checkpoint (or savepoint) id; a job restored from it numbers its
    /// next checkpoints after it.
    pub fn checkpoint_id(&self) -> u64 {
        self.metadata.checkpoint_id
    }

    /// Fails with [`Error::NotFound`] when the snapshot holds state of an
    /// operator that is not in `operator_ids`: that state would be dropped
    /// silently, and usually means the snapshot belongs to another job.
    pub fn check_operators(&self, operator_ids: &[&str]) -> Result<()> {
        let unknown: Vec<&str> = self
            .metadata
            .operators
            .iter()
            .filter(|o| o.subtasks.iter().any(|s| !is_empty(s)))
            .map(|o| o.operator_id.as_str())
            .filter(|id| !operator_ids.contains(id))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(Error::NotFound {
            what: format!(
                "{} holds state of operator(s) {} that the job does not have (operators: {}); is it a snapshot of another job?",
                self.metadata_path.display(),
                unknown.join(", "),
                operator_ids.join(", ")
            ),
        })
    }

    /// What each subtask of `operator` (any subtask of the operator at its
    /// new parallelism) restores, in subtask order. An operator the snapshot
    /// does not hold starts empty. The max parallelism must be the one the
    /// snapshot was taken with.
    pub fn subtasks(&self, operator: &SubtaskSpec) -> Result<Vec<SubtaskRestore>> {
        let specs = operator.all();
        let Some(old) = self.metadata.operator(&operator.operator_id) else {
            return Ok(specs
                .into_iter()
                .map(|spec| SubtaskRestore {
                    spec,
                    keyed: Vec::new(),
                    operator: Vec::new(),
                    raw_keyed: Vec::new(),
                    raw_operator: Vec::new(),
                })
                .collect());
        };
        if old.max_parallelism != operator.max_parallelism {
            return Err(Error::MaxParallelismMismatch {
                file: format!(
                    "operator {} in {}",
                    operator.operator_id,
                    self.metadata_path.display()
                ),
                snapshot: old.max_parallelism,
                backend: operator.max_parallelism,
            });
        }
        let gather = |pick: fn(&SubtaskState) -> &Vec<KeyedStateHandle>| {
            old.subtasks
                .iter()
                .flat_map(|s| pick(s).iter().cloned())
                .collect::<Vec<_>>()
        };
        let gather_op = |pick: fn(&SubtaskState) -> &Vec<OperatorStateHandle>| {
            old.subtasks
                .iter()
                .flat_map(|s| pick(s).iter().cloned())
                .collect::<Vec<_>>()
        };
        let p = operator.parallelism;
        let max = operator.max_parallelism;
        let keyed = assign_keyed_state(&gather(|s| &s.keyed), max, p)?;
        let raw_keyed = assign_keyed_state(&gather(|s| &s.raw_keyed), max, p)?;
        let ops = assign_operator_state(&gather_op(|s| &s.operator), p)?;
        let raw_ops = assign_operator_state(&gather_op(|s| &s.raw_operator), p)?;
        Ok(specs
            .into_iter()
            .zip(keyed)
            .zip(raw_keyed)
            .zip(ops)
            .zip(raw_ops)
            .map(
                |((((spec, keyed), raw_keyed), operator), raw_operator)| SubtaskRestore {
                    spec,
                    keyed,
                    operator,
                    raw_keyed,
                    raw_operator,
                },
            )
            .collect())
    }
}

fn is_empty(s: &SubtaskState) -> bool {
    s.keyed.is_empty()
        && s.operator.is_empty()
        && s.raw_keyed.is_empty()
        && s.raw_operator.is_empty()
}

/// The `_metadata` file `path` names: the file itself, the one in the folder
/// `path`, or, for a job folder, the newest checkpoint's (whether or not its
/// files are all present: [`RestorePlan::load`] falls back to older ones,
/// a tool inspecting the folder wants the newest).
pub fn resolve_metadata_path(storage: &dyn Storage, path: &Path) -> Result<PathBuf> {
    candidates(storage, path)?
        .into_iter()
        .next()
        .ok_or_else(|| not_a_snapshot(path))
}

fn not_a_snapshot(path: &Path) -> Error {
    Error::NotFound {
        what: format!(
            "{} is not a checkpoint, a savepoint or a job folder with a completed checkpoint (no `{METADATA_FILE}`)",
            path.display()
        ),
    }
}

/// The `_metadata` files `path` may name, newest first.
fn candidates(storage: &dyn Storage, path: &Path) -> Result<Vec<PathBuf>> {
    if path.file_name().and_then(|n| n.to_str()) == Some(METADATA_FILE) {
        return Ok(vec![path.to_path_buf()]);
    }
    let direct = path.join(METADATA_FILE);
    if storage.exists(&direct) {
        return Ok(vec![direct]);
    }
    let names = storage.list_dir(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound {
                what: format!("{}: no such file or folder", path.display()),
            }
        } else {
            Error::io(format!("listing {}", path.display()), e)
        }
    })?;
    let mut ids: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_checkpoint_dir_name(n))
        .collect();
    ids.sort_unstable();
    Ok(ids
        .into_iter()
        .rev()
        .map(|id| path.join(format!("chk-{id}")).join(METADATA_FILE))
        .filter(|candidate| storage.exists(candidate))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_checked() {
        assert!(SubtaskSpec::new("op", 128, 0, 0).is_err());
        assert!(SubtaskSpec::new("op", 128, 129, 0).is_err());
        assert!(SubtaskSpec::new("op", 128, 4, 4).is_err());
        let spec = SubtaskSpec::new("op", 128, 4, 3).expect("valid");
        assert_eq!(spec.key_group_range(), KeyGroupRange::new(96, 127));
        let all = spec.all();
        assert_eq!(all.len(), 4);
        let covered: usize = all.iter().map(|s| s.key_group_range().len()).sum();
        assert_eq!(covered, 128);
        assert_eq!(spec.to_string(), "op (4/4)");
    }
}
