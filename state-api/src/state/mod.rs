//! State kinds, their descriptors, handles and the typed access API.
//!
//! Keyed state is addressed by (current key, namespace[, map user key]). A
//! backend stores three shapes of state ([`StorageShape`]): a single value per
//! (key, namespace) — used by Value, Reducing and Aggregating state —, a list,
//! and a map. The user-facing kinds are built on those shapes in [`access`],
//! once, for every backend.

pub mod access;
pub mod descriptor;
pub mod handle;
pub mod ttl;
mod ttl_ops;

use std::fmt;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::codec::CodecSchema;

/// Bounds every key type satisfies.
pub trait StateKey: Clone + Eq + Hash + Send + Sync + fmt::Debug + 'static {}
impl<T: Clone + Eq + Hash + Send + Sync + fmt::Debug + 'static> StateKey for T {}

/// Bounds every namespace type satisfies.
pub trait Namespace: Clone + Eq + Hash + Send + Sync + fmt::Debug + 'static {}
impl<T: Clone + Eq + Hash + Send + Sync + fmt::Debug + 'static> Namespace for T {}

/// Bounds every stored value type satisfies. Values are cloned when a snapshot
/// still needs an older version of an entry (copy-on-write); wrap large values
/// in an `Arc` to make that cheap.
pub trait StateValue: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> StateValue for T {}

/// The default namespace: a unit "void" namespace for state that is not scoped
/// by windows.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct VoidNamespace;

/// The user-facing kind of a state, recorded in snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StateKind {
    /// [`access::ValueState`].
    Value,
    /// [`access::ListState`].
    List,
    /// [`access::ReducingState`].
    Reducing,
    /// [`access::AggregatingState`].
    Aggregating,
    /// [`access::MapState`].
    Map,
    /// The timers of one time domain of a [`crate::timers::TimerService`]
    /// (format version 3 on).
    Timers,
}

impl StateKind {
    /// How the state is stored.
    pub fn shape(self) -> StorageShape {
        match self {
            StateKind::Value | StateKind::Reducing | StateKind::Aggregating => StorageShape::Cell,
            StateKind::List => StorageShape::List,
            StateKind::Map | StateKind::Timers => StorageShape::Map,
        }
    }

    /// The kind's tag in the canonical format.
    pub fn tag(self) -> u8 {
        match self {
            StateKind::Value => 1,
            StateKind::List => 2,
            StateKind::Reducing => 3,
            StateKind::Aggregating => 4,
            StateKind::Map => 5,
            StateKind::Timers => 6,
        }
    }

    /// The kind of a tag, if it is one.
    pub fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            1 => StateKind::Value,
            2 => StateKind::List,
            3 => StateKind::Reducing,
            4 => StateKind::Aggregating,
            5 => StateKind::Map,
            6 => StateKind::Timers,
            _ => return None,
        })
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            StateKind::Value => "value state",
            StateKind::List => "list state",
            StateKind::Reducing => "reducing state",
            StateKind::Aggregating => "aggregating state",
            StateKind::Map => "map state",
            StateKind::Timers => "timers",
        };
        f.write_str(s)
    }
}

/// How a backend stores a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StorageShape {
    /// One value per (key, namespace).
    Cell,
    /// A list of elements per (key, namespace).
    List,
    /// A map of user keys to user values per (key, namespace).
    Map,
}

/// What a snapshot records about one keyed state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMeta {
    /// The state's unique name.
    pub name: String,
    /// Its kind.
    pub kind: StateKind,
    /// Schema of the namespace codec.
    pub namespace: CodecSchema,
    /// Schemas of the value codecs: `[value]` for cells, `[element]` for
    /// lists, `[user key, user value]` for maps.
    pub values: Vec<CodecSchema>,
    /// Its time-to-live, when it has one: its values (cells, list elements,
    /// map user values) then start with a timestamp ([`ttl`]).
    #[serde(default)]
    pub ttl: Option<ttl::TtlMeta>,
}

impl StateMeta {
    /// The role names of [`StateMeta::values`], for error messages.
    pub fn value_roles(&self) -> &'static [&'static str] {
        match self.kind.shape() {
            StorageShape::Cell => &["value"],
            StorageShape::List => &["element"],
            StorageShape::Map => &["user key", "user value"],
        }
    }
}
