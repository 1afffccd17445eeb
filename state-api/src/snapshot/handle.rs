//! Snapshot handles: what a snapshot wrote, and how to find each piece of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::stream::StreamStateHandle;
use crate::key_group::KeyGroupRange;

/// A keyed snapshot: a canonical keyed file, the key groups it holds, and the
/// offset where each key group starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedStateHandle {
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

impl KeyedStateHandle {
    /// The part of this handle that covers `range`, or `None` if they share no
    /// key group. The data is shared, not copied.
    pub fn intersection(&self, range: &KeyGroupRange) -> Option<KeyedStateHandle> {
        let r = self.range.intersection(range);
        if r.is_empty() {
            return None;
        }
        let from = (r.start() - self.range.start()) as usize;
        let offsets = self.offsets.get(from..=from + r.len())?.to_vec();
        Some(KeyedStateHandle {
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
