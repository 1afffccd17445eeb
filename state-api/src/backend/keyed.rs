//! The keyed state backend contract.
//!
//! A keyed backend holds the state of one subtask: the key groups of its
//! [`KeyGroupRange`]. Every access is scoped by the *current key* (set with
//! [`KeyedStateBackend::set_current_key`]) and a namespace. Backends implement
//! three storage shapes — cells, lists and maps — and the user-facing state
//! kinds are built on them once, in [`crate::state::access`].
//!
//! Contract common to every method:
//! * Methods that touch state fail with [`crate::Error::NoCurrentKey`] before a
//!   key is set, with [`crate::Error::ForeignHandle`] for a handle of another
//!   backend instance, and with [`crate::Error::Closed`] after
//!   [`KeyedStateBackend::close`].
//! * A write is visible to every later read of the same backend at once.
//! * Writes made after [`KeyedStateBackend::snapshot`] returned never appear in
//!   that snapshot; writes made before always do.

use std::sync::Arc;

use crate::codec::SharedCodec;
use crate::error::Result;
use crate::key_group::KeyGroupRange;
use crate::snapshot::handle::KeyedStateHandle;
use crate::snapshot::stream::CheckpointStreamFactory;
use crate::snapshot::task::SnapshotTask;
use crate::snapshot::SnapshotOptions;
use crate::state::handle::{
    CellHandle, HandleCore, ListHandle, MapHandle, StateHandle, TimerHandle,
};
use crate::state::ttl::{StateClock, StateTtlConfig};
use crate::state::{Namespace, StateKey, StateMeta, StateValue};
use crate::timers::{Timer, TimerSpec};

/// What a backend needs to reclaim the expired entries of a state with
/// time-to-live (see [`crate::state::ttl`]). Its stored values (cells, list
/// elements, map user values) are [`crate::state::ttl::TtlValue`]s.
pub struct TtlSpec<V> {
    /// The state's TTL, with its cleanup strategies.
    pub config: StateTtlConfig,
    /// The timestamp of a stored value.
    pub timestamp: fn(&V) -> i64,
}

impl<V> Clone for TtlSpec<V> {
    fn clone(&self) -> Self {
        TtlSpec {
            config: self.config.clone(),
            timestamp: self.timestamp,
        }
    }
}

/// What registering a cell-shaped state needs.
pub struct CellSpec<N, V> {
    /// The state's meta (name, kind, codec schemas).
    pub meta: StateMeta,
    /// The namespace codec.
    pub namespace_codec: SharedCodec<N>,
    /// The value codec.
    pub value_codec: SharedCodec<V>,
    /// The state's TTL, if it has one.
    pub ttl: Option<TtlSpec<V>>,
}

/// What registering a list-shaped state needs.
pub struct ListSpec<N, T> {
    /// The state's meta.
    pub meta: StateMeta,
    /// The namespace codec.
    pub namespace_codec: SharedCodec<N>,
    /// The element codec.
    pub element_codec: SharedCodec<T>,
    /// The state's TTL (per element), if it has one.
    pub ttl: Option<TtlSpec<T>>,
}

/// What registering a map-shaped state needs.
pub struct MapSpec<N, UK, UV> {
    /// The state's meta.
    pub meta: StateMeta,
    /// The namespace codec.
    pub namespace_codec: SharedCodec<N>,
    /// The user key codec.
    pub user_key_codec: SharedCodec<UK>,
    /// The user value codec.
    pub user_value_codec: SharedCodec<UV>,
    /// The state's TTL (per user entry), if it has one.
    pub ttl: Option<TtlSpec<UV>>,
}

/// The keyed state of one subtask.
pub trait KeyedStateBackend: Send + Sized {
    /// The key type.
    type Key: StateKey;

    /// The max parallelism key groups are computed with.
    fn max_parallelism(&self) -> u32;

    /// The key groups this backend owns.
    fn key_group_range(&self) -> KeyGroupRange;

    /// Sets the key that following state accesses are scoped by. Fails with
    /// [`crate::Error::KeyGroupOutOfRange`] (and keeps the previous key) when
    /// the key's group is not owned by this backend.
    fn set_current_key(&mut self, key: Self::Key) -> Result<()>;

    /// The current key, if one is set.
    fn current_key(&self) -> Option<&Self::Key>;

    /// The current key's group, if a key is set.
    fn current_key_group(&self) -> Option<u32>;

    /// The clock state time-to-live is measured against (the one given in
    /// [`crate::backend::KeyedBackendParams`]). The engine advances its
    /// watermark for event-time TTL.
    fn clock(&self) -> &StateClock;

    /// Removes every expired entry (list element, map entry) of every
    /// registered state with a time-to-live, now, whatever its cleanup
    /// strategies, and returns how many were removed. The heap backends scan
    /// their tables; the RocksDB backend compacts the states' column families
    /// through its TTL compaction filter, reclaiming the disk space too.
    fn cleanup_expired(&mut self) -> Result<u64>;

    /// One step of incremental TTL cleanup for `state`: checks up to
    /// `budget` more entries, resuming where the last step stopped, and
    /// removes the expired ones; returns how many were removed. Called by
    /// the typed states after each access of a state whose TTL asks for it.
    /// The default (backends that reclaim otherwise) does nothing.
    fn cleanup_expired_step(&mut self, state: &HandleCore, budget: usize) -> Result<u64> {
        let _ = (state, budget);
        Ok(0)
    }

    /// Registers (or returns the existing) cell-shaped state. Registering a
    /// name again with another kind, other types or another codec schema fails
    /// with [`crate::ErrorKind::IncompatibleState`]. For a restored state the
    /// codecs are checked against the snapshot's schemas and the data is
    /// decoded (migrated where the codec says so).
    fn register_cell<N: Namespace, V: StateValue>(
        &mut self,
        spec: CellSpec<N, V>,
    ) -> Result<CellHandle<N, V>>;

    /// Registers (or returns the existing) list-shaped state.
    fn register_list<N: Namespace, T: StateValue>(
        &mut self,
        spec: ListSpec<N, T>,
    ) -> Result<ListHandle<N, T>>;

    /// Registers (or returns the existing) map-shaped state.
    fn register_map<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        spec: MapSpec<N, UK, UV>,
    ) -> Result<MapHandle<N, UK, UV>>;

    /// Registers (or returns the existing) timer state: timers on (key,
    /// namespace, timestamp) of one time domain (see [`crate::timers`]).
    fn register_timers<N: Namespace>(&mut self, spec: TimerSpec<N>) -> Result<TimerHandle<N>>;

    /// Adds a timer of the current key; false (and no change) when it is
    /// there already.
    fn timer_add<N: Namespace>(
        &mut self,
        timers: &TimerHandle<N>,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool>;

    /// Removes a timer of the current key; false when there was none.
    fn timer_remove<N: Namespace>(
        &mut self,
        timers: &TimerHandle<N>,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool>;

    /// The earliest timestamp of any timer of `timers` (of any key), if any.
    /// Does not need a current key.
    fn timer_peek<N: Namespace>(&mut self, timers: &TimerHandle<N>) -> Result<Option<i64>>;

    /// Removes and returns the earliest timer of `timers` if its timestamp is
    /// at most `up_to` (equal timestamps: the smaller key group first). Does
    /// not need a current key, and does not change it.
    fn timer_poll<N: Namespace>(
        &mut self,
        timers: &TimerHandle<N>,
        up_to: i64,
    ) -> Result<Option<Timer<Self::Key, N>>>;

    /// Metas of every state this backend knows: registered ones, and restored
    /// ones not registered yet (these are kept and written to snapshots).
    fn state_metas(&self) -> Vec<StateMeta>;

    /// Reads the cell of (current key, `namespace`).
    fn cell_get<N: Namespace, V: StateValue, R>(
        &mut self,
        state: &CellHandle<N, V>,
        namespace: &N,
        read: impl FnOnce(Option<&V>) -> R,
    ) -> Result<R>;

    /// Sets the cell of (current key, `namespace`).
    fn cell_put<N: Namespace, V: StateValue>(
        &mut self,
        state: &CellHandle<N, V>,
        namespace: &N,
        value: V,
    ) -> Result<()>;

    /// Removes the cell of (current key, `namespace`) and returns its value.
    fn cell_take<N: Namespace, V: StateValue>(
        &mut self,
        state: &CellHandle<N, V>,
        namespace: &N,
    ) -> Result<Option<V>>;

    /// Updates the cell in place: `update` gets `Some(&mut value)` when the cell
    /// exists (its return value is then ignored), or `None`, and then returns
    /// the value to insert (`None` inserts nothing).
    fn cell_upsert<N: Namespace, V: StateValue>(
        &mut self,
        state: &CellHandle<N, V>,
        namespace: &N,
        update: impl FnOnce(Option<&mut V>) -> Option<V>,
    ) -> Result<()>;

    /// Replaces the cell of (current key, `namespace`) with what `modify`
    /// makes of it: `modify` gets the current value (`None` when absent)
    /// and returns the new one (`None` removes the cell, or writes nothing).
    /// The default reads, then writes or removes; backends override it to do
    /// it in one lookup. On an error the cell keeps its value.
    fn cell_modify<N: Namespace, V: StateValue>(
        &mut self,
        state: &CellHandle<N, V>,
        namespace: &N,
        modify: impl FnOnce(Option<V>) -> Option<V>,
    ) -> Result<()> {
        let current = self.cell_get(state, namespace, |v| v.cloned())?;
        let existed = current.is_some();
        match modify(current) {
            Some(v) => self.cell_put(state, namespace, v),
            None if existed => self.cell_take(state, namespace).map(drop),
            None => Ok(()),
        }
    }

    /// Reads the list of (current key, `namespace`); empty when absent.
    fn list_get<N: Namespace, T: StateValue, R>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
        read: impl FnOnce(&[T]) -> R,
    ) -> Result<R>;

    /// Appends elements (none is a no-op).
    fn list_append<N: Namespace, T: StateValue>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
        elements: Vec<T>,
    ) -> Result<()>;

    /// Appends one element. The default appends a one-element batch;
    /// backends override it to skip that allocation.
    fn list_push<N: Namespace, T: StateValue>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
        element: T,
    ) -> Result<()> {
        self.list_append(state, namespace, vec![element])
    }

    /// Replaces the list; an empty list removes the entry.
    fn list_replace<N: Namespace, T: StateValue>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
        elements: Vec<T>,
    ) -> Result<()>;

    /// Removes the list and returns its elements.
    fn list_take<N: Namespace, T: StateValue>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
    ) -> Result<Vec<T>>;

    /// Reads one entry of the map of (current key, `namespace`).
    fn map_get<N: Namespace, UK: StateKey, UV: StateValue, R>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
        user_key: &UK,
        read: impl FnOnce(Option<&UV>) -> R,
    ) -> Result<R>;

    /// Puts one entry.
    fn map_put<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
        user_key: UK,
        user_value: UV,
    ) -> Result<()>;

    /// Removes one entry and returns its value. The map's entry for (key,
    /// namespace) disappears with its last user entry.
    fn map_remove<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
        user_key: &UK,
    ) -> Result<Option<UV>>;

    /// Copies out every entry of the map (in no particular order).
    fn map_entries<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
    ) -> Result<Vec<(UK, UV)>>;

    /// Whether the map of (current key, `namespace`) has no entry.
    fn map_is_empty<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
    ) -> Result<bool>;

    /// Removes the whole map of (current key, `namespace`).
    fn map_clear<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
    ) -> Result<()>;

    /// Every key that has an entry of `state` in `namespace` (each once, in no
    /// particular order). Does not need a current key.
    fn keys<H: StateHandle>(
        &mut self,
        state: &H,
        namespace: &H::Namespace,
    ) -> Result<Vec<Self::Key>>;

    /// Every (key, namespace) pair that has an entry of `state`.
    fn keys_and_namespaces<H: StateHandle>(
        &mut self,
        state: &H,
    ) -> Result<Vec<(Self::Key, H::Namespace)>>;

    /// The number of (key, namespace) entries over all states, restored but
    /// unregistered states included.
    fn num_entries(&self) -> Result<usize>;

    /// Takes a snapshot. This is the synchronous part: it must be short (no
    /// copy of the state) and returns the asynchronous part as a task that may
    /// run on any thread. The task yields `None` when the backend has no state
    /// at all (nothing registered, nothing restored).
    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        streams: Arc<dyn CheckpointStreamFactory>,
        options: SnapshotOptions,
    ) -> Result<SnapshotTask<Option<KeyedStateHandle>>>;

    /// Tells the backend that checkpoint `checkpoint_id` completed (its
    /// metadata is durable). Incremental backends build later checkpoints on
    /// the newest completed checkpoint; a backend that writes full snapshots
    /// has nothing to do.
    ///
    /// The contract, the same on every backend:
    /// * Completing `id` subsumes every older checkpoint: the backend never
    ///   builds on a checkpoint older than the newest one it was told
    ///   completed, so a late notification of an older id changes nothing.
    /// * The backend builds on `id` only if its own snapshot task for `id`
    ///   finished before the notification and `id` was a checkpoint (not a
    ///   savepoint). Any other id (never taken, a savepoint, aborted, older
    ///   than the newest completed, or whose asynchronous part has not
    ///   finished) is ignored: it returns `Ok(())` and later checkpoints stay
    ///   built on what they were built on before, which is always correct,
    ///   only possibly larger.
    /// * On a closed (or failed) backend it returns the error every call
    ///   returns there ([`crate::Error::Closed`]).
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        let _ = checkpoint_id;
        Ok(())
    }

    /// Tells the backend that checkpoint `checkpoint_id` was aborted (or
    /// subsumed): nothing it wrote may be referenced by later checkpoints.
    /// Unknown ids are ignored (`Ok(())`); on a closed backend it returns
    /// [`crate::Error::Closed`], like
    /// [`KeyedStateBackend::notify_checkpoint_complete`].
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        let _ = checkpoint_id;
        Ok(())
    }

    /// Closes the backend: running snapshot tasks fail with
    /// [`crate::Error::Cancelled`], and every later call with
    /// [`crate::Error::Closed`]. Closing twice is harmless.
    fn close(&mut self);
}

/// Calls `f` with the backend and each key that has an entry of `state` in
/// `namespace`, with that key set as the current key. `f` may modify state,
/// including the state being iterated: the keys are collected first.
pub fn apply_to_all_keys<B: KeyedStateBackend, H: StateHandle>(
    backend: &mut B,
    state: &H,
    namespace: &H::Namespace,
    mut f: impl FnMut(&mut B, &B::Key) -> Result<()>,
) -> Result<()> {
    let keys = backend.keys(state, namespace)?;
    for key in keys {
        backend.set_current_key(key.clone())?;
        f(backend, &key)?;
    }
    Ok(())
}
