//! Snapshot handles: what a snapshot wrote, and how to find each piece of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::stream::StreamStateHandle;
use crate::key_group::KeyGroupRange;

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
    pub fn state_size(&self) -> u64 {
        match (self.offsets.first(), self.offsets.last()) {
            (Some(a), Some(b)) => b - a,
            _ => 0,
        }
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

/// What a keyed backend's snapshot produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyedStateHandle {
    /// A full snapshot in the canonical format (also the savepoint format).
    KeyGroups(KeyGroupsStateHandle),
    /// An incremental heap snapshot.
    IncrementalHeap(IncrementalKeyedStateHandle),
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
        }
    }

    /// The key groups covered.
    pub fn range(&self) -> KeyGroupRange {
        match self {
            KeyedStateHandle::KeyGroups(h) => h.range,
            KeyedStateHandle::IncrementalHeap(h) => h.range,
        }
    }

    /// The max parallelism the key groups were computed with.
    pub fn max_parallelism(&self) -> u32 {
        match self {
            KeyedStateHandle::KeyGroups(h) => h.max_parallelism,
            KeyedStateHandle::IncrementalHeap(h) => h.base.max_parallelism,
        }
    }

    /// The files (or in-memory streams) in the order a restore reads them.
    pub fn pieces(&self) -> Vec<&KeyGroupsStateHandle> {
        match self {
            KeyedStateHandle::KeyGroups(h) => vec![h],
            KeyedStateHandle::IncrementalHeap(h) => {
                std::iter::once(&h.base).chain(&h.deltas).collect()
            }
        }
    }

    /// Every stream the handle references.
    pub fn streams(&self) -> Vec<&StreamStateHandle> {
        self.pieces().into_iter().map(|p| &p.data).collect()
    }

    /// Bytes of every stream the handle references (envelopes included).
    pub fn total_size(&self) -> u64 {
        self.streams().iter().map(|s| s.size()).sum()
    }

    /// A short description for errors.
    pub fn describe(&self) -> String {
        self.pieces()
            .first()
            .map(|p| p.data.describe())
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
        }
    }

    /// Bytes of the key groups covered, over all pieces.
    pub fn state_size(&self) -> u64 {
        self.pieces().iter().map(|p| p.state_size()).sum()
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
