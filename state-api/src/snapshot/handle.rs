//! Snapshot handles: what a snapshot wrote, and how to find each piece of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::stream::StreamStateHandle;
use crate::codec::CodecSchema;
use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;
use crate::state::StateMeta;

/// One keyed snapshot file: the key groups it holds and the offset where each
/// key group starts. A full snapshot is one such file; an incremental heap
/// snapshot is a chain of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGroupsStateHandle {
    /// The checkpoint (or savepoint) id the snapshot was taken for.
    pub checkpoint_id: u64,
    /// The bytes.
    pub data: StreamStateHandle,
    /// The max parallelism the key groups were computed with.
    pub max_parallelism: u32,
    /// The key groups this handle covers (a sub-range of the file's own range
    /// after [`KeyedStateHandle::intersection`]).
    pub range: KeyGroupRange,
    /// `offsets[i]` is where key group `range.start() + i` starts;
    /// `offsets[range.len()]` is where the last one ends.
    pub offsets: Vec<u64>,
}

impl KeyGroupsStateHandle {
    /// The part of this handle that covers `range`, or `None` if they share no
    /// key group. The data is shared, not copied.
    pub fn intersection(&self, range: &KeyGroupRange) -> Option<KeyGroupsStateHandle> {
        let r = self.range.intersection(range);
        if r.is_empty() {
            return None;
        }
        let from = (r.start() - self.range.start()) as usize;
        let offsets = self.offsets.get(from..=from + r.len())?.to_vec();
        Some(KeyGroupsStateHandle {
            checkpoint_id: self.checkpoint_id,
            data: self.data.clone(),
            max_parallelism: self.max_parallelism,
            range: r,
            offsets,
        })
    }

    /// Bytes of the key groups this handle covers (excluding file envelope).
    ///
    /// A handle decoded from damaged metadata may list offsets out of order;
    /// its size is then 0, not a panic: the damage is reported when the
    /// file is opened and its index compared with the offsets.
    pub fn state_size(&self) -> u64 {
        match (self.offsets.first(), self.offsets.last()) {
            (Some(a), Some(b)) => b.saturating_sub(*a),
            _ => 0,
        }
    }

    /// What needs this file, for error messages: `checkpoint N`, the
    /// checkpoint it was written for.
    pub fn needed_by(&self) -> String {
        format!("checkpoint {}", self.checkpoint_id)
    }
}

/// An incremental heap snapshot: a full snapshot file (the base) and the delta
/// files written since, applied in order. Every file may be shared by several
/// checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementalKeyedStateHandle {
    /// The checkpoint the chain was completed for.
    pub checkpoint_id: u64,
    /// The key groups covered.
    pub range: KeyGroupRange,
    /// The full snapshot the chain starts from.
    pub base: KeyGroupsStateHandle,
    /// Delta files, oldest first.
    pub deltas: Vec<KeyGroupsStateHandle>,
}

/// One file of a backend's native snapshot, with its checksum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeFile {
    /// The file's name inside the backend's instance folder.
    pub name: String,
    /// Where its bytes are.
    pub data: StreamStateHandle,
    /// CRC32 (IEEE) of the bytes, checked on restore.
    pub crc32: u32,
}

/// An incremental snapshot in a backend's native format (RocksDB's
/// checkpoints): immutable data files shared between checkpoints, plus the
/// files describing one checkpoint. Only a backend of the same kind restores
/// it; savepoints are always canonical.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementalNativeStateHandle {
    /// The checkpoint the snapshot was taken for.
    pub checkpoint_id: u64,
    /// The backend kind that wrote it (`"rocksdb"`).
    pub backend: String,
    /// Version of the backend's native layout.
    pub format_version: u32,
    /// The max parallelism the key groups were computed with.
    pub max_parallelism: u32,
    /// The key groups this handle covers (a sub-range of `source_range` after
    /// [`KeyedStateHandle::intersection`]).
    pub range: KeyGroupRange,
    /// The key groups the files hold.
    pub source_range: KeyGroupRange,
    /// Schema of the key codec.
    pub key_codec: CodecSchema,
    /// The states the files hold.
    pub states: Vec<StateMeta>,
    /// Immutable files that later checkpoints may reference too (in `shared/`).
    pub shared: Vec<NativeFile>,
    /// Files of this checkpoint only.
    pub private: Vec<NativeFile>,
}

impl IncrementalNativeStateHandle {
    /// Every file, shared ones first.
    pub fn files(&self) -> impl Iterator<Item = &NativeFile> {
        self.shared.iter().chain(&self.private)
    }
}

/// What a keyed backend's snapshot produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// Exhaustive on purpose: each variant is a tag of the snapshot format, so a
// new one comes with a format version and every reader must handle it.
pub enum KeyedStateHandle {
    /// A full snapshot in the canonical format (also the savepoint format).
    KeyGroups(KeyGroupsStateHandle),
    /// An incremental heap snapshot.
    IncrementalHeap(IncrementalKeyedStateHandle),
    /// An incremental snapshot in a backend's native format.
    IncrementalNative(IncrementalNativeStateHandle),
}

impl From<KeyGroupsStateHandle> for KeyedStateHandle {
    fn from(h: KeyGroupsStateHandle) -> Self {
        KeyedStateHandle::KeyGroups(h)
    }
}

impl KeyedStateHandle {
    /// The checkpoint the handle was taken for.
    pub fn checkpoint_id(&self) -> u64 {
        match self {
            KeyedStateHandle::KeyGroups(h) => h.checkpoint_id,
            KeyedStateHandle::IncrementalHeap(h) => h.checkpoint_id,
            KeyedStateHandle::IncrementalNative(h) => h.checkpoint_id,
        }
    }

    /// The key groups covered.
    pub fn range(&self) -> KeyGroupRange {
        match self {
            KeyedStateHandle::KeyGroups(h) => h.range,
            KeyedStateHandle::IncrementalHeap(h) => h.range,
            KeyedStateHandle::IncrementalNative(h) => h.range,
        }
    }

    /// The max parallelism the key groups were computed with.
    pub fn max_parallelism(&self) -> u32 {
        match self {
            KeyedStateHandle::KeyGroups(h) => h.max_parallelism,
            KeyedStateHandle::IncrementalHeap(h) => h.base.max_parallelism,
            KeyedStateHandle::IncrementalNative(h) => h.max_parallelism,
        }
    }

    /// The canonical-format files (or in-memory streams) in the order a
    /// restore reads them; none for a native handle.
    pub fn pieces(&self) -> Vec<&KeyGroupsStateHandle> {
        match self {
            KeyedStateHandle::KeyGroups(h) => vec![h],
            KeyedStateHandle::IncrementalHeap(h) => {
                std::iter::once(&h.base).chain(&h.deltas).collect()
            }
            KeyedStateHandle::IncrementalNative(_) => Vec::new(),
        }
    }

    /// The canonical pieces, or an [`Error::UnsupportedHandle`] for a native
    /// handle (which only a backend of its kind restores).
    pub fn canonical_pieces(&self) -> Result<Vec<&KeyGroupsStateHandle>> {
        match self {
            KeyedStateHandle::IncrementalNative(h) => Err(Error::UnsupportedHandle {
                handle: self.describe(),
                reason: format!(
                    "an incremental checkpoint in {}'s native format restores only on that \
                     backend; take a savepoint (canonical format) to change backends",
                    h.backend
                ),
            }),
            _ => Ok(self.pieces()),
        }
    }

    /// Every stream the handle references.
    pub fn streams(&self) -> Vec<&StreamStateHandle> {
        match self {
            KeyedStateHandle::IncrementalNative(h) => h.files().map(|f| &f.data).collect(),
            _ => self.pieces().into_iter().map(|p| &p.data).collect(),
        }
    }

    /// Bytes of every stream the handle references (envelopes included),
    /// saturating at `u64::MAX` (sizes in damaged metadata are arbitrary).
    pub fn total_size(&self) -> u64 {
        self.streams()
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(s.size()))
    }

    /// What needs `piece` (one of this handle's pieces), for error messages:
    /// `checkpoint N` for this handle's checkpoint, and, for a piece of an
    /// incremental chain written for an earlier checkpoint, which one (the
    /// file lives on in `shared/` for as long as a later checkpoint needs it).
    pub fn needed_by(&self, piece: &KeyGroupsStateHandle) -> String {
        let id = self.checkpoint_id();
        if piece.checkpoint_id == id {
            format!("checkpoint {id}")
        } else {
            format!(
                "checkpoint {id} (it was written for checkpoint {})",
                piece.checkpoint_id
            )
        }
    }

    /// A short description for errors.
    pub fn describe(&self) -> String {
        self.streams()
            .first()
            .map(|s| s.describe())
            .unwrap_or_default()
    }

    /// The part of this handle that covers `range`, or `None` if they share no
    /// key group. Files are shared, not copied.
    pub fn intersection(&self, range: &KeyGroupRange) -> Option<KeyedStateHandle> {
        match self {
            KeyedStateHandle::KeyGroups(h) => {
                h.intersection(range).map(KeyedStateHandle::KeyGroups)
            }
            KeyedStateHandle::IncrementalHeap(h) => {
                let r = h.range.intersection(range);
                if r.is_empty() {
                    return None;
                }
                Some(KeyedStateHandle::IncrementalHeap(
                    IncrementalKeyedStateHandle {
                        checkpoint_id: h.checkpoint_id,
                        range: r,
                        base: h.base.intersection(&r)?,
                        deltas: h.deltas.iter().filter_map(|d| d.intersection(&r)).collect(),
                    },
                ))
            }
            KeyedStateHandle::IncrementalNative(h) => {
                let r = h.range.intersection(range);
                (!r.is_empty()).then(|| {
                    KeyedStateHandle::IncrementalNative(IncrementalNativeStateHandle {
                        range: r,
                        ..h.clone()
                    })
                })
            }
        }
    }

    /// Bytes of the key groups covered, over all pieces (of every file, for
    /// a native handle), saturating at `u64::MAX`.
    pub fn state_size(&self) -> u64 {
        match self {
            KeyedStateHandle::IncrementalNative(_) => self.total_size(),
            _ => self
                .pieces()
                .iter()
                .fold(0u64, |sum, p| sum.saturating_add(p.state_size())),
        }
    }
}

/// How an operator state is redistributed when the parallelism changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Distribution {
    /// List state: all elements of all subtasks, split evenly over the new subtasks.
    SplitDistribute,
    /// Union list state: every new subtask gets every element of every subtask.
    Union,
    /// Broadcast state: every new subtask gets a copy (all subtasks hold the same).
    Broadcast,
}

impl Distribution {
    /// The mode's tag in the canonical format.
    pub fn tag(self) -> u8 {
        match self {
            Distribution::SplitDistribute => 1,
            Distribution::Union => 2,
            Distribution::Broadcast => 3,
        }
    }

    /// The mode of a tag.
    pub fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            1 => Distribution::SplitDistribute,
            2 => Distribution::Union,
            3 => Distribution::Broadcast,
            _ => return None,
        })
    }
}

/// The elements of one operator state inside an operator snapshot file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStatePart {
    /// How the state is redistributed.
    pub distribution: Distribution,
    /// Offset of each element's frame (of each entry's, for broadcast state).
    pub offsets: Vec<u64>,
}

/// An operator snapshot: a canonical operator file and, per state, the offsets
/// of the elements this handle covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStateHandle {
    /// The checkpoint (or savepoint) id the snapshot was taken for.
    pub checkpoint_id: u64,
    /// The bytes.
    pub data: StreamStateHandle,
    /// The states by name.
    pub states: BTreeMap<String, OperatorStatePart>,
}

impl OperatorStateHandle {
    /// What needs this file, for error messages: `checkpoint N`.
    pub fn needed_by(&self) -> String {
        format!("checkpoint {}", self.checkpoint_id)
    }
}
