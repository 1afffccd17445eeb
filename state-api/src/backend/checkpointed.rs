//! The checkpointed-function hook (Flink's `CheckpointedFunction`): a user
//! function that keeps its own state in operator (and keyed) state.

use super::keyed::KeyedStateBackend;
use super::operator::OperatorStateBackend;
use crate::error::Result;

/// What `initialize_state` gets: the backends, and whether this is a restore.
pub struct FunctionInitializationContext<'a, O, K> {
    /// The operator state backend.
    pub operator: &'a mut O,
    /// The keyed state backend, when the function runs on a keyed stream.
    pub keyed: Option<&'a mut K>,
    restored: bool,
}

impl<'a, O: OperatorStateBackend, K: KeyedStateBackend> FunctionInitializationContext<'a, O, K> {
    /// A context; `restored` is true when the backends were restored from a snapshot.
    pub fn new(operator: &'a mut O, keyed: Option<&'a mut K>, restored: bool) -> Self {
        FunctionInitializationContext {
            operator,
            keyed,
            restored,
        }
    }

    /// Whether the function starts from a snapshot rather than fresh.
    pub fn is_restored(&self) -> bool {
        self.restored
    }
}

/// What `snapshot_state` gets.
pub struct FunctionSnapshotContext<'a, O, K> {
    /// The checkpoint being taken.
    pub checkpoint_id: u64,
    /// The operator state backend.
    pub operator: &'a mut O,
    /// The keyed state backend, when the function runs on a keyed stream.
    pub keyed: Option<&'a mut K>,
}

/// A function whose own state is checkpointed with the operator's.
pub trait CheckpointedFunction<O: OperatorStateBackend, K: KeyedStateBackend> {
    /// Registers the function's state, reading it back when
    /// [`FunctionInitializationContext::is_restored`].
    fn initialize_state(&mut self, ctx: &mut FunctionInitializationContext<'_, O, K>)
        -> Result<()>;

    /// Makes the state current before a snapshot's synchronous part (and
    /// flushes to external systems where needed).
    fn snapshot_state(&mut self, ctx: &mut FunctionSnapshotContext<'_, O, K>) -> Result<()>;
}
