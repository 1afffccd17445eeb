//! The heap keyed state backend: typed state tables partitioned by key group,
//! copy-on-write asynchronous snapshots in the canonical format, and restore
//! with rescaling. Snapshot bytes go to whatever
//! [`CheckpointStreamFactory`] the caller passes, so file-based backends reuse
//! this backend as it is.
//!
//! The parts (private modules): `store` holds the tables and the restored
//! state, `registration` builds a table per storage shape, `snapshot` writes
//! snapshots and keeps the incremental bookkeeping, and this module is the
//! backend an engine calls, with the per-record state access.

pub mod cow_map;
mod registration;
mod restore;
mod snapshot;
mod store;
pub mod table;
pub mod timer_queue;
mod timers;

use std::any::Any;
use std::sync::Arc;

use state_api::backend::keyed::{CellSpec, KeyedStateBackend, ListSpec, MapSpec};
use state_api::backend::KeyedBackendParams;
use state_api::key_group::KeyLocator;
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::snapshot::stream::CheckpointStreamFactory;
use state_api::snapshot::task::{CancellationRegistry, SnapshotTask};
use state_api::snapshot::{SnapshotKind, SnapshotOptions};
use state_api::state::handle::{
    next_backend_instance_id, CellHandle, HandleCore, ListHandle, MapHandle, StateHandle,
    TimerHandle,
};
use state_api::state::ttl::StateClock;
use state_api::state::{Namespace, StateKey, StateMeta, StateValue};
use state_api::timers::{Timer, TimerSpec};
use state_api::{Error, KeyGroupRange, Result};
use timers::TimerTable;

use registration::{CellTable, ListTable, MapTable};
pub use snapshot::IncrementalOptions;
use snapshot::{full_snapshot_task, Incremental};
use store::{HeapStore, Registered};
use table::{EntryKey, EntryRef, MapValue, TableHasher};

/// Options of the heap keyed backend.
#[derive(Clone, Debug, Default)]
pub struct HeapOptions {
    /// Incremental checkpoints; `None` (the default) writes full snapshots.
    pub incremental: Option<IncrementalOptions>,
}

/// Keyed state of one subtask, on the heap.
pub struct HeapKeyedStateBackend<K: StateKey> {
    id: u64,
    /// `id` while open, 0 once closed (no backend has id 0).
    open_id: u64,
    current: Option<K>,
    current_group: u32,
    current_index: usize,
    locator: KeyLocator<K>,
    store: HeapStore<K>,
    running: CancellationRegistry,
    closed: bool,
    incremental: Option<Incremental>,
    /// The clock TTL is measured against.
    clock: StateClock,
    /// States whose TTL cleans up per record: (state index, entries per step).
    per_record_cleanup: Vec<(usize, usize)>,
}

impl<K: StateKey> HeapKeyedStateBackend<K> {
    /// Creates the backend for `params`, restoring the key groups it owns from
    /// `restore` (handles of any key-group ranges).
    pub fn new(params: KeyedBackendParams<K>, restore: &[KeyedStateHandle]) -> Result<Self> {
        Self::with_options(params, restore, HeapOptions::default())
    }

    /// Like [`HeapKeyedStateBackend::new`], with options.
    pub fn with_options(
        params: KeyedBackendParams<K>,
        restore: &[KeyedStateHandle],
        options: HeapOptions,
    ) -> Result<Self> {
        if let Some(inc) = &options.incremental {
            if inc.max_delta_ratio.is_nan() || inc.max_delta_ratio < 0.0 {
                return Err(Error::InvalidArgument {
                    what: format!(
                        "max_delta_ratio {} must be a non-negative number",
                        inc.max_delta_ratio
                    ),
                });
            }
        }
        let locator = KeyLocator::new(
            params.key_codec.clone(),
            params.max_parallelism,
            params.key_group_range,
        )?;
        let clock = params.clock.clone();
        let store = HeapStore::new(params, restore, options.incremental.is_some())?;
        let id = next_backend_instance_id();
        Ok(HeapKeyedStateBackend {
            id,
            open_id: id,
            current: None,
            current_group: 0,
            current_index: 0,
            locator,
            store,
            running: CancellationRegistry::default(),
            closed: false,
            incremental: options.incremental.map(Incremental::new),
            clock,
            per_record_cleanup: Vec::new(),
        })
    }

    /// Notes a newly registered state's per-record TTL cleanup.
    fn registered(&mut self, core: &HandleCore) {
        let index = core.index();
        let per_record = self.store.states.get(index).and_then(|s| {
            let incremental = s.ttl.as_ref()?.cleanup().incremental?;
            incremental
                .per_record
                .then_some((index, incremental.entries_per_access))
        });
        if let Some(p) = per_record {
            if !self.per_record_cleanup.contains(&p) {
                self.per_record_cleanup.push(p);
            }
        }
    }

    #[cold]
    fn cleanup_per_record(&mut self) {
        let now = self.clock.instant();
        for &(index, budget) in &self.per_record_cleanup {
            if let Some(s) = self.store.states.get_mut(index) {
                s.table.cleanup_expired(Some(budget), &now);
            }
        }
    }

    /// Whether incremental checkpoints are on.
    pub fn is_incremental(&self) -> bool {
        self.incremental.is_some()
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn entry(&self, core: &HandleCore) -> Result<&Registered<K>> {
        self.check_open()?;
        if core.backend() != self.id {
            return Err(Error::ForeignHandle {
                name: core.name().to_string(),
            });
        }
        self.store
            .states
            .get(core.index())
            .ok_or_else(|| Error::ForeignHandle {
                name: core.name().to_string(),
            })
    }

    /// The typed table of a handle, the current key and its key-group index.
    /// The per-record path: one comparison covers "closed" and "another
    /// backend's handle" (`open_id` is 0 once closed, and ids start at 1),
    /// and the table is reached with one virtual call (its type id).
    #[inline]
    fn access<T: 'static>(&mut self, core: &HandleCore) -> Result<(&mut T, &K, usize)> {
        if core.backend() != self.open_id {
            return Err(self.refusal(core));
        }
        let Some(key) = self.current.as_ref() else {
            return Err(Error::NoCurrentKey);
        };
        let table = self
            .store
            .states
            .get_mut(core.index())
            .and_then(|s| (&mut *s.table as &mut dyn Any).downcast_mut::<T>());
        match table {
            Some(table) => Ok((table, key, self.current_index)),
            None => Err(foreign(core)),
        }
    }

    /// The typed table of a handle, without a current key.
    fn table_mut<T: 'static>(&mut self, core: &HandleCore) -> Result<&mut T> {
        self.entry(core)?;
        (&mut *self.store.states[core.index()].table as &mut dyn Any)
            .downcast_mut::<T>()
            .ok_or_else(|| foreign(core))
    }

    /// Why a handle is refused: the backend is closed, or the handle is
    /// another backend's.
    #[cold]
    fn refusal(&self, core: &HandleCore) -> Error {
        if self.closed {
            Error::Closed
        } else {
            foreign(core)
        }
    }
}

#[cold]
fn foreign(core: &HandleCore) -> Error {
    Error::ForeignHandle {
        name: core.name().to_string(),
    }
}

impl<K: StateKey> KeyedStateBackend for HeapKeyedStateBackend<K> {
    type Key = K;

    fn max_parallelism(&self) -> u32 {
        self.store.max_parallelism
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.store.range
    }

    #[inline]
    fn set_current_key(&mut self, key: K) -> Result<()> {
        self.check_open()?;
        let (group, index) = self.locator.locate(&key)?;
        self.current = Some(key);
        self.current_group = group;
        self.current_index = index;
        if !self.per_record_cleanup.is_empty() {
            self.cleanup_per_record();
        }
        Ok(())
    }

    fn clock(&self) -> &StateClock {
        &self.clock
    }

    fn cleanup_expired(&mut self) -> Result<u64> {
        self.check_open()?;
        let now = self.clock.instant();
        Ok(self
            .store
            .states
            .iter_mut()
            .map(|s| s.table.cleanup_expired(None, &now))
            .sum())
    }

    fn cleanup_expired_step(&mut self, state: &HandleCore, budget: usize) -> Result<u64> {
        self.entry(state)?;
        let now = self.clock.instant();
        Ok(self.store.states[state.index()]
            .table
            .cleanup_expired(Some(budget), &now))
    }

    fn current_key(&self) -> Option<&K> {
        self.current.as_ref()
    }

    fn current_key_group(&self) -> Option<u32> {
        self.current.as_ref().map(|_| self.current_group)
    }

    fn register_cell<N: Namespace, V: StateValue>(
        &mut self,
        spec: CellSpec<N, V>,
    ) -> Result<CellHandle<N, V>> {
        self.check_open()?;
        let core = self.store.register_cell(self.id, spec)?;
        self.registered(&core);
        Ok(CellHandle::new(core))
    }

    fn register_list<N: Namespace, T: StateValue>(
        &mut self,
        spec: ListSpec<N, T>,
    ) -> Result<ListHandle<N, T>> {
        self.check_open()?;
        let core = self.store.register_list(self.id, spec)?;
        self.registered(&core);
        Ok(ListHandle::new(core))
    }

    fn register_map<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        spec: MapSpec<N, UK, UV>,
    ) -> Result<MapHandle<N, UK, UV>> {
        self.check_open()?;
        let core = self.store.register_map(self.id, spec)?;
        self.registered(&core);
        Ok(MapHandle::new(core))
    }

    fn register_timers<N: Namespace>(&mut self, spec: TimerSpec<N>) -> Result<TimerHandle<N>> {
        self.check_open()?;
        let core = self.store.register_timers(self.id, spec)?;
        Ok(TimerHandle::new(core))
    }

    fn timer_add<N: Namespace>(
        &mut self,
        timers: &TimerHandle<N>,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        let key_group = self.current_group;
        let (table, key, _) = self.access::<TimerTable<K, N>>(timers.core())?;
        let timer = Timer {
            timestamp,
            key: key.clone(),
            namespace: namespace.clone(),
        };
        let added = table.queue.add(key_group, timer)?;
        if added {
            table.touch(key_group, key, namespace);
        }
        Ok(added)
    }

    fn timer_remove<N: Namespace>(
        &mut self,
        timers: &TimerHandle<N>,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        let key_group = self.current_group;
        let (table, key, _) = self.access::<TimerTable<K, N>>(timers.core())?;
        let timer = Timer {
            timestamp,
            key: key.clone(),
            namespace: namespace.clone(),
        };
        let removed = table.queue.remove(key_group, &timer)?;
        if removed {
            table.touch(key_group, key, namespace);
        }
        Ok(removed)
    }

    fn timer_peek<N: Namespace>(&mut self, timers: &TimerHandle<N>) -> Result<Option<i64>> {
        let table = self.table_mut::<TimerTable<K, N>>(timers.core())?;
        Ok(table.queue.peek().map(|(_, t)| t.timestamp))
    }

    fn timer_poll<N: Namespace>(
        &mut self,
        timers: &TimerHandle<N>,
        up_to: i64,
    ) -> Result<Option<Timer<K, N>>> {
        let table = self.table_mut::<TimerTable<K, N>>(timers.core())?;
        let Some((key_group, timer)) = table.queue.poll_due(up_to) else {
            return Ok(None);
        };
        table.touch(key_group, &timer.key, &timer.namespace);
        Ok(Some(timer))
    }

    fn state_metas(&self) -> Vec<StateMeta> {
        self.store.metas()
    }

    #[inline]
    fn cell_get<N: Namespace, V: StateValue, R>(
        &mut self,
        state: &CellHandle<N, V>,
        namespace: &N,
        read: impl FnOnce(Option<&V>) -> R,
    ) -> Result<R> {
        let (table, key, index) = self.access::<CellTable<K, N, V>>(state.core())?;
        Ok(read(table.groups[index].get(&EntryRef(key, namespace))))
    }

    #[inline]
    fn cell_put<N: Namespace, V: StateValue>(
        &mut self,
        state: &CellHandle<N, V>,
        namespace: &N,
        value: V,
    ) -> Result<()> {
        let (table, key, index) = self.access::<CellTable<K, N, V>>(state.core())?;
        table.touch(index, key, namespace);
        let group = &mut table.groups[index];
        match group.get_mut(&EntryRef(key, namespace)) {
            Some(slot) => *slot = value,
            None => {
                group.insert(EntryKey(key.clone(), namespace.clone()), value);
            }
        }
        Ok(())
    }

    fn cell_take<N: Namespace, V: StateValue>(
        &mut self,
        state: &CellHandle<N, V>,
        namespace: &N,
    ) -> Result<Option<V>> {
        let (table, key, index) = self.access::<CellTable<K, N, V>>(state.core())?;
        table.touch(index, key, namespace);
        Ok(table.groups[index].remove(&EntryRef(key, namespace)))
    }

    #[inline]
    fn cell_upsert<N: Namespace, V: StateValue>(
        &mut self,
        state: &CellHandle<N, V>,
        namespace: &N,
        update: impl FnOnce(Option<&mut V>) -> Option<V>,
    ) -> Result<()> {
        let (table, key, index) = self.access::<CellTable<K, N, V>>(state.core())?;
        table.touch(index, key, namespace);
        let group = &mut table.groups[index];
        match group.get_mut(&EntryRef(key, namespace)) {
            Some(slot) => {
                update(Some(slot));
            }
            None => {
                if let Some(v) = update(None) {
                    group.insert(EntryKey(key.clone(), namespace.clone()), v);
                }
            }
        }
        Ok(())
    }

    #[inline]
    fn cell_modify<N: Namespace, V: StateValue>(
        &mut self,
        state: &CellHandle<N, V>,
        namespace: &N,
        modify: impl FnOnce(Option<V>) -> Option<V>,
    ) -> Result<()> {
        let (table, key, index) = self.access::<CellTable<K, N, V>>(state.core())?;
        table.touch(index, key, namespace);
        table.groups[index].modify(
            &EntryRef(key, namespace),
            || EntryKey(key.clone(), namespace.clone()),
            modify,
        );
        Ok(())
    }

    fn list_get<N: Namespace, T: StateValue, R>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
        read: impl FnOnce(&[T]) -> R,
    ) -> Result<R> {
        let (table, key, index) = self.access::<ListTable<K, N, T>>(state.core())?;
        Ok(match table.groups[index].get(&EntryRef(key, namespace)) {
            Some(list) => read(list),
            None => read(&[]),
        })
    }

    fn list_append<N: Namespace, T: StateValue>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
        elements: Vec<T>,
    ) -> Result<()> {
        if elements.is_empty() {
            return Ok(());
        }
        let (table, key, index) = self.access::<ListTable<K, N, T>>(state.core())?;
        table.touch(index, key, namespace);
        let group = &mut table.groups[index];
        match group.get_mut(&EntryRef(key, namespace)) {
            Some(list) => Arc::make_mut(list).extend(elements),
            None => {
                group.insert(EntryKey(key.clone(), namespace.clone()), Arc::new(elements));
            }
        }
        Ok(())
    }

    #[inline]
    fn list_push<N: Namespace, T: StateValue>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
        element: T,
    ) -> Result<()> {
        let (table, key, index) = self.access::<ListTable<K, N, T>>(state.core())?;
        table.touch(index, key, namespace);
        let group = &mut table.groups[index];
        match group.get_mut(&EntryRef(key, namespace)) {
            Some(list) => Arc::make_mut(list).push(element),
            None => {
                group.insert(
                    EntryKey(key.clone(), namespace.clone()),
                    Arc::new(vec![element]),
                );
            }
        }
        Ok(())
    }

    fn list_replace<N: Namespace, T: StateValue>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
        elements: Vec<T>,
    ) -> Result<()> {
        let (table, key, index) = self.access::<ListTable<K, N, T>>(state.core())?;
        table.touch(index, key, namespace);
        let group = &mut table.groups[index];
        if elements.is_empty() {
            group.remove(&EntryRef(key, namespace));
        } else {
            group.insert(EntryKey(key.clone(), namespace.clone()), Arc::new(elements));
        }
        Ok(())
    }

    fn list_take<N: Namespace, T: StateValue>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
    ) -> Result<Vec<T>> {
        let (table, key, index) = self.access::<ListTable<K, N, T>>(state.core())?;
        table.touch(index, key, namespace);
        Ok(table.groups[index]
            .remove(&EntryRef(key, namespace))
            .map(|list| Arc::try_unwrap(list).unwrap_or_else(|shared| (*shared).clone()))
            .unwrap_or_default())
    }

    fn map_get<N: Namespace, UK: StateKey, UV: StateValue, R>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
        user_key: &UK,
        read: impl FnOnce(Option<&UV>) -> R,
    ) -> Result<R> {
        let (table, key, index) = self.access::<MapTable<K, N, UK, UV>>(state.core())?;
        Ok(read(
            table.groups[index]
                .get(&EntryRef(key, namespace))
                .and_then(|m| m.get(user_key)),
        ))
    }

    fn map_put<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
        user_key: UK,
        user_value: UV,
    ) -> Result<()> {
        let (table, key, index) = self.access::<MapTable<K, N, UK, UV>>(state.core())?;
        table.touch(index, key, namespace);
        let group = &mut table.groups[index];
        match group.get_mut(&EntryRef(key, namespace)) {
            Some(map) => {
                map.insert(user_key, user_value);
            }
            None => {
                let mut map = MapValue::with_hasher(TableHasher::default());
                map.insert(user_key, user_value);
                group.insert(EntryKey(key.clone(), namespace.clone()), map);
            }
        }
        Ok(())
    }

    fn map_remove<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
        user_key: &UK,
    ) -> Result<Option<UV>> {
        let (table, key, index) = self.access::<MapTable<K, N, UK, UV>>(state.core())?;
        table.touch(index, key, namespace);
        let group = &mut table.groups[index];
        let entry = EntryRef(key, namespace);
        let Some(map) = group.get_mut(&entry) else {
            return Ok(None);
        };
        let removed = map.remove(user_key);
        if map.is_empty() {
            group.remove(&entry);
        }
        Ok(removed)
    }

    fn map_entries<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
    ) -> Result<Vec<(UK, UV)>> {
        let (table, key, index) = self.access::<MapTable<K, N, UK, UV>>(state.core())?;
        Ok(table.groups[index]
            .get(&EntryRef(key, namespace))
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    fn map_is_empty<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
    ) -> Result<bool> {
        let (table, key, index) = self.access::<MapTable<K, N, UK, UV>>(state.core())?;
        Ok(table.groups[index]
            .get(&EntryRef(key, namespace))
            .is_none_or(|m| m.is_empty()))
    }

    fn map_clear<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
    ) -> Result<()> {
        let (table, key, index) = self.access::<MapTable<K, N, UK, UV>>(state.core())?;
        table.touch(index, key, namespace);
        table.groups[index].remove(&EntryRef(key, namespace));
        Ok(())
    }

    fn keys<H: StateHandle>(&mut self, state: &H, namespace: &H::Namespace) -> Result<Vec<K>> {
        let entry = self.entry(state.core())?;
        entry
            .table
            .keys(namespace as &dyn Any)
            .ok_or_else(|| Error::ForeignHandle {
                name: state.core().name().to_string(),
            })
    }

    fn keys_and_namespaces<H: StateHandle>(&mut self, state: &H) -> Result<Vec<(K, H::Namespace)>> {
        let entry = self.entry(state.core())?;
        entry
            .table
            .keys_and_namespaces()
            .downcast::<Vec<(K, H::Namespace)>>()
            .map(|b| *b)
            .map_err(|_| Error::ForeignHandle {
                name: state.core().name().to_string(),
            })
    }

    fn num_entries(&self) -> Result<usize> {
        self.check_open()?;
        self.store.num_entries()
    }

    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        streams: Arc<dyn CheckpointStreamFactory>,
        options: SnapshotOptions,
    ) -> Result<SnapshotTask<Option<KeyedStateHandle>>> {
        self.check_open()?;
        if self.store.is_empty() {
            return Ok(SnapshotTask::ready(None));
        }
        // The synchronous part: share every table's key-group maps (one
        // reference count per key group) and the restored bytes; copy nothing.
        let full = self.store.snapshot_parts(self.clock.instant());
        match (&mut self.incremental, options.kind) {
            (Some(inc), SnapshotKind::Checkpoint) => {
                let period = self.store.take_changes();
                Ok(inc.snapshot_task(&self.running, full, period, checkpoint_id, streams, options))
            }
            _ => Ok(full_snapshot_task(
                &self.running,
                full,
                checkpoint_id,
                streams,
                options,
            )),
        }
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.check_open()?;
        if let Some(inc) = &mut self.incremental {
            inc.complete(checkpoint_id);
        }
        Ok(())
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        self.check_open()?;
        if let Some(inc) = &mut self.incremental {
            inc.abort(checkpoint_id);
        }
        Ok(())
    }

    fn close(&mut self) {
        self.closed = true;
        self.open_id = 0;
        self.running.cancel_all();
        self.store.clear();
        self.current = None;
    }
}
