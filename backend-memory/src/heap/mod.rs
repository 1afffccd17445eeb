//! The heap keyed state backend: typed state tables partitioned by key group,
//! copy-on-write asynchronous snapshots in the canonical format, and restore
//! with rescaling. Snapshot bytes go to whatever
//! [`CheckpointStreamFactory`] the caller passes, so file-based backends reuse
//! this backend as it is.

pub mod cow_map;
mod restore;
pub mod table;

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use state_api::backend::keyed::{CellSpec, KeyedStateBackend, ListSpec, MapSpec};
use state_api::backend::registration::{
    check_restored_registration, check_same_registration, decode_restored, key_compatibility,
    value_compatibility,
};
use state_api::backend::KeyedBackendParams;
use state_api::codec::{Compatibility, SharedCodec};
use state_api::format::keyed::{KeyedSnapshotMeta, KeyedSnapshotWriter, RecordBody};
use state_api::key_group::locate_key;
use state_api::snapshot::handle::{
    IncrementalKeyedStateHandle, KeyGroupsStateHandle, KeyedStateHandle,
};
use state_api::snapshot::stream::{CheckpointStreamFactory, StreamScope};
use state_api::snapshot::task::{CancellationRegistry, SnapshotTask};
use state_api::snapshot::{SnapshotKind, SnapshotOptions};
use state_api::state::handle::{
    next_backend_instance_id, CellHandle, HandleCore, ListHandle, MapHandle, StateHandle,
};
use state_api::state::{Namespace, StateKey, StateMeta, StateValue};
use state_api::{Error, KeyGroupRange, Result};

use restore::{PendingSnapshot, RestoredData};
use table::{
    codec_error, CellCodec, EntryKey, EntryRef, ErasedTable, ListCodec, ListValue, MapCodec,
    MapValue, Scratch, StateTable, TableHasher,
};

type CellTable<K, N, V> = StateTable<K, N, V, CellCodec<V>>;
type ListTable<K, N, T> = StateTable<K, N, ListValue<T>, ListCodec<T>>;
type MapTable<K, N, UK, UV> = StateTable<K, N, MapValue<UK, UV>, MapCodec<UK, UV>>;

struct Registered<K> {
    meta: StateMeta,
    table: Box<dyn ErasedTable<K>>,
}

/// Options of the heap keyed backend.
#[derive(Clone, Debug, Default)]
pub struct HeapOptions {
    /// Incremental checkpoints; `None` (the default) writes full snapshots.
    pub incremental: Option<IncrementalOptions>,
}

/// When an incremental chain is compacted into a new full snapshot.
#[derive(Clone, Debug)]
pub struct IncrementalOptions {
    /// At most this many delta files follow a full snapshot.
    pub max_deltas: usize,
    /// A new full snapshot is written once the deltas' bytes exceed this
    /// fraction of the full snapshot's bytes (restore reads at most
    /// `1 + max_delta_ratio` times the state).
    pub max_delta_ratio: f64,
}

impl Default for IncrementalOptions {
    fn default() -> Self {
        IncrementalOptions {
            max_deltas: 16,
            max_delta_ratio: 1.0,
        }
    }
}

/// Change periods per state (indexed like `states`): the changes recorded
/// between two incremental snapshots.
type ChangePeriod = Vec<Option<Arc<dyn Any + Send + Sync>>>;

/// The incremental-checkpoint state of a backend.
struct Incremental {
    options: IncrementalOptions,
    /// The chain of the newest completed checkpoint this backend took.
    base: Option<IncrementalKeyedStateHandle>,
    /// Change periods cut by incremental snapshots not yet confirmed, oldest first.
    unconfirmed: Vec<(u64, ChangePeriod)>,
    /// Handles of finished incremental snapshot tasks, until confirmed or aborted.
    results: Arc<Mutex<BTreeMap<u64, IncrementalKeyedStateHandle>>>,
}

/// Keyed state of one subtask, on the heap.
pub struct HeapKeyedStateBackend<K: StateKey> {
    id: u64,
    max_parallelism: u32,
    range: KeyGroupRange,
    key_codec: SharedCodec<K>,
    current: Option<K>,
    current_group: u32,
    current_index: usize,
    key_buf: Vec<u8>,
    states: Vec<Registered<K>>,
    restored: Option<Arc<RestoredData>>,
    /// Restored states not registered yet.
    pending: Vec<StateMeta>,
    running: CancellationRegistry,
    closed: bool,
    incremental: Option<Incremental>,
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
        params
            .key_group_range
            .check_within(params.max_parallelism)?;
        let (restored, pending) = if restore.is_empty() {
            (None, Vec::new())
        } else {
            let (data, metas) = RestoredData::read(restore, &params)?;
            (Some(Arc::new(data)), metas)
        };
        Ok(HeapKeyedStateBackend {
            id: next_backend_instance_id(),
            max_parallelism: params.max_parallelism,
            range: params.key_group_range,
            key_codec: params.key_codec,
            current: None,
            current_group: 0,
            current_index: 0,
            key_buf: Vec::with_capacity(64),
            states: Vec::new(),
            restored,
            pending,
            running: CancellationRegistry::default(),
            closed: false,
            incremental: options.incremental.map(|options| Incremental {
                options,
                base: None,
                unconfirmed: Vec::new(),
                results: Arc::default(),
            }),
        })
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
        self.states
            .get(core.index())
            .ok_or_else(|| Error::ForeignHandle {
                name: core.name().to_string(),
            })
    }

    /// The typed table of a handle, the current key and its key-group index.
    #[inline]
    fn access<T: 'static>(&mut self, core: &HandleCore) -> Result<(&mut T, &K, usize)> {
        if self.closed {
            return Err(Error::Closed);
        }
        if core.backend() != self.id {
            return Err(Error::ForeignHandle {
                name: core.name().to_string(),
            });
        }
        let key = self.current.as_ref().ok_or(Error::NoCurrentKey)?;
        let table = self
            .states
            .get_mut(core.index())
            .and_then(|s| s.table.as_any_mut().downcast_mut::<T>())
            .ok_or_else(|| Error::ForeignHandle {
                name: core.name().to_string(),
            })?;
        Ok((table, key, self.current_index))
    }

    /// Registers a state: returns the existing one after checking it matches,
    /// decodes a restored one, or creates an empty one.
    ///
    /// `insert` adds one restored record, with its key and namespace decoded,
    /// to the table at a key-group index.
    fn register<N: Namespace, T: ErasedTable<K> + 'static>(
        &mut self,
        meta: StateMeta,
        compat: &[Compatibility],
        namespace_codec: &SharedCodec<N>,
        make: impl FnOnce(usize) -> T,
        mut insert: impl FnMut(&mut T, usize, EntryKey<K, N>, &RecordBody<'_>, &StateMeta) -> Result<()>,
    ) -> Result<HandleCore> {
        self.check_open()?;
        if let Some(i) = self.states.iter().position(|s| s.meta.name == meta.name) {
            let existing = &self.states[i];
            check_same_registration(&existing.meta, &meta)?;
            if !existing.table.as_any().is::<T>() {
                return Err(Error::StateKindMismatch {
                    name: meta.name.clone(),
                    registered: format!("{} of other types", existing.meta.kind),
                    requested: format!("{} of {}", meta.kind, std::any::type_name::<T>()),
                });
            }
            return Ok(HandleCore::new(self.id, i as u32, &meta.name));
        }
        let mut table = make(self.range.len());
        if let Some(p) = self.pending.iter().position(|m| m.name == meta.name) {
            let written = &self.pending[p];
            let namespace = namespace_codec.compatibility(&written.namespace);
            check_restored_registration(written, &meta, namespace, compat)?;
            let data = self.restored.clone().ok_or_else(|| Error::Corrupted {
                file: "restored state".into(),
                offset: 0,
                reason: format!("state '{}' is pending without restored data", meta.name),
            })?;
            let name = &meta.name;
            data.for_each_record_of(name, |index, r| {
                let key = self
                    .key_codec
                    .decode(r.key)
                    .map_err(|e| codec_error(name, "key", e))?;
                let ns = namespace_codec
                    .decode(r.namespace)
                    .map_err(|e| codec_error(name, "namespace", e))?;
                insert(&mut table, index, EntryKey(key, ns), &r.body, written)
            })?;
            self.pending.remove(p);
            if self.pending.is_empty() {
                self.restored = None;
            }
        }
        if self.incremental.is_some() {
            table.track_changes();
        }
        let i = self.states.len();
        self.states.push(Registered {
            meta: meta.clone(),
            table: Box::new(table),
        });
        Ok(HandleCore::new(self.id, i as u32, &meta.name))
    }
}

/// What the asynchronous part of a snapshot needs: shared copies of the
/// tables and of the restored-but-unregistered states.
struct SnapshotParts<K: StateKey> {
    tables: Vec<Box<dyn table::ErasedTableSnapshot<K>>>,
    pending: Option<PendingSnapshot>,
    meta: KeyedSnapshotMeta,
    key_codec: SharedCodec<K>,
}

impl<K: StateKey> SnapshotParts<K> {
    /// Writes every entry: a full snapshot in the canonical format.
    fn write(
        &self,
        out: Box<dyn state_api::snapshot::stream::CheckpointOutputStream>,
        options: SnapshotOptions,
        checkpoint_id: u64,
        cancel: &state_api::snapshot::task::Cancellation,
    ) -> Result<KeyGroupsStateHandle> {
        let mut writer =
            KeyedSnapshotWriter::new(out, self.meta.clone(), options.compression, checkpoint_id)?;
        let mut scratch = Scratch::default();
        for (index, kg) in self.meta.range.iter().enumerate() {
            cancel.check("keyed state snapshot")?;
            writer.start_key_group(kg)?;
            for (state, table) in self.tables.iter().enumerate() {
                table.write_key_group(
                    index,
                    state as u32,
                    &*self.key_codec,
                    &mut writer,
                    &mut scratch,
                )?;
            }
            if let Some(p) = &self.pending {
                p.write_key_group(index, &mut writer)?;
            }
        }
        writer.finish()
    }

    /// Writes the current value (or a delete) of every entry in `changes`
    /// (per state, the unconfirmed change periods): a delta file.
    fn write_delta(
        &self,
        out: Box<dyn state_api::snapshot::stream::CheckpointOutputStream>,
        changes: &[Vec<Arc<dyn Any + Send + Sync>>],
        options: SnapshotOptions,
        checkpoint_id: u64,
        cancel: &state_api::snapshot::task::Cancellation,
    ) -> Result<KeyGroupsStateHandle> {
        let mut meta = self.meta.clone();
        meta.delta = true;
        let mut writer = KeyedSnapshotWriter::new(out, meta, options.compression, checkpoint_id)?;
        let mut scratch = Scratch::default();
        for (index, kg) in self.meta.range.iter().enumerate() {
            cancel.check("keyed state snapshot")?;
            writer.start_key_group(kg)?;
            for (state, (table, periods)) in self.tables.iter().zip(changes).enumerate() {
                if !periods.is_empty() {
                    table.write_changes(
                        index,
                        state as u32,
                        periods,
                        &*self.key_codec,
                        &mut writer,
                        &mut scratch,
                    )?;
                }
            }
        }
        writer.finish()
    }
}

impl<K: StateKey> HeapKeyedStateBackend<K> {
    /// The synchronous part of a full snapshot.
    fn snapshot_parts(&self) -> SnapshotParts<K> {
        let tables: Vec<_> = self.states.iter().map(|s| s.table.snapshot()).collect();
        let mut metas: Vec<StateMeta> = self.states.iter().map(|s| s.meta.clone()).collect();
        let pending = match &self.restored {
            Some(data) if !self.pending.is_empty() => {
                let indices: HashMap<String, u32> = self
                    .pending
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.name.clone(), (metas.len() + i) as u32))
                    .collect();
                metas.extend(self.pending.iter().cloned());
                Some(PendingSnapshot::new(data.clone(), &indices))
            }
            _ => None,
        };
        SnapshotParts {
            tables,
            pending,
            meta: KeyedSnapshotMeta {
                max_parallelism: self.max_parallelism,
                range: self.range,
                key_codec: self.key_codec.schema(),
                states: metas,
                delta: false,
            },
            key_codec: self.key_codec.clone(),
        }
    }
}

impl<K: StateKey> KeyedStateBackend for HeapKeyedStateBackend<K> {
    type Key = K;

    fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    #[inline]
    fn set_current_key(&mut self, key: K) -> Result<()> {
        self.check_open()?;
        let (group, index) = locate_key(
            &*self.key_codec,
            &key,
            &mut self.key_buf,
            self.max_parallelism,
            &self.range,
        )?;
        self.current = Some(key);
        self.current_group = group;
        self.current_index = index;
        Ok(())
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
        let compat = value_compatibility(&spec.value_codec, &self.pending, &spec.meta.name, 0);
        let codec = spec.value_codec;
        let name = spec.meta.name.clone();
        let core = self.register(
            spec.meta,
            &[compat],
            &spec.namespace_codec,
            |groups| {
                CellTable::<K, N, V>::new(
                    &name,
                    groups,
                    spec.namespace_codec.clone(),
                    CellCodec(codec.clone()),
                )
            },
            |table, index, entry, body, written| {
                match body {
                    RecordBody::Cell(v) => {
                        let value = decode_restored(
                            &codec,
                            compat,
                            &written.values[0],
                            v,
                            &written.name,
                            "value",
                        )?;
                        table.groups[index].insert(entry, value);
                    }
                    RecordBody::Delete => {
                        table.groups[index].remove(&entry);
                    }
                    _ => {}
                }
                Ok(())
            },
        )?;
        Ok(CellHandle::new(core))
    }

    fn register_list<N: Namespace, T: StateValue>(
        &mut self,
        spec: ListSpec<N, T>,
    ) -> Result<ListHandle<N, T>> {
        let compat = value_compatibility(&spec.element_codec, &self.pending, &spec.meta.name, 0);
        let codec = spec.element_codec;
        let name = spec.meta.name.clone();
        let core = self.register(
            spec.meta,
            &[compat],
            &spec.namespace_codec,
            |groups| {
                ListTable::<K, N, T>::new(
                    &name,
                    groups,
                    spec.namespace_codec.clone(),
                    ListCodec(codec.clone()),
                )
            },
            |table, index, entry, body, written| {
                if let RecordBody::List(elements) = body {
                    let list = elements
                        .iter()
                        .map(|e| {
                            decode_restored(
                                &codec,
                                compat,
                                &written.values[0],
                                e,
                                &written.name,
                                "element",
                            )
                        })
                        .collect::<Result<Vec<T>>>()?;
                    if list.is_empty() {
                        table.groups[index].remove(&entry);
                    } else {
                        table.groups[index].insert(entry, Arc::new(list));
                    }
                } else if *body == RecordBody::Delete {
                    table.groups[index].remove(&entry);
                }
                Ok(())
            },
        )?;
        Ok(ListHandle::new(core))
    }

    fn register_map<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        spec: MapSpec<N, UK, UV>,
    ) -> Result<MapHandle<N, UK, UV>> {
        let name = spec.meta.name.clone();
        let key_compat = key_compatibility(value_compatibility(
            &spec.user_key_codec,
            &self.pending,
            &name,
            0,
        ));
        let value_compat = value_compatibility(&spec.user_value_codec, &self.pending, &name, 1);
        let (uk_codec, uv_codec) = (spec.user_key_codec, spec.user_value_codec);
        let core = self.register(
            spec.meta,
            &[key_compat, value_compat],
            &spec.namespace_codec,
            |groups| {
                MapTable::<K, N, UK, UV>::new(
                    &name,
                    groups,
                    spec.namespace_codec.clone(),
                    MapCodec(uk_codec.clone(), uv_codec.clone()),
                )
            },
            |table, index, entry, body, written| {
                let RecordBody::MapEntry { key: uk, value: uv } = body else {
                    if *body == RecordBody::Delete {
                        table.groups[index].remove(&entry);
                    }
                    return Ok(());
                };
                let uk = uk_codec
                    .decode(uk)
                    .map_err(|e| codec_error(&written.name, "user key", e))?;
                let uv = decode_restored(
                    &uv_codec,
                    value_compat,
                    &written.values[1],
                    uv,
                    &written.name,
                    "user value",
                )?;
                let group = &mut table.groups[index];
                match group.get_mut(&entry) {
                    Some(map) => {
                        map.insert(uk, uv);
                    }
                    None => {
                        let mut map = MapValue::with_hasher(TableHasher::default());
                        map.insert(uk, uv);
                        group.insert(entry, map);
                    }
                }
                Ok(())
            },
        )?;
        Ok(MapHandle::new(core))
    }

    fn state_metas(&self) -> Vec<StateMeta> {
        self.states
            .iter()
            .map(|s| s.meta.clone())
            .chain(self.pending.iter().cloned())
            .collect()
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
        let registered: usize = self.states.iter().map(|s| s.table.entries()).sum();
        let pending = match &self.restored {
            Some(data) if !self.pending.is_empty() => data.count_entries(&self.pending)?,
            _ => 0,
        };
        Ok(registered + pending)
    }

    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        streams: Arc<dyn CheckpointStreamFactory>,
        options: SnapshotOptions,
    ) -> Result<SnapshotTask<Option<KeyedStateHandle>>> {
        self.check_open()?;
        if self.states.is_empty() && self.pending.is_empty() {
            return Ok(SnapshotTask::ready(None));
        }
        // The synchronous part: share every table's key-group maps (one
        // reference count per key group) and the restored bytes; copy nothing.
        let full = self.snapshot_parts();
        let incremental = match (&mut self.incremental, options.kind) {
            (Some(inc), SnapshotKind::Checkpoint) => inc,
            _ => {
                return Ok(SnapshotTask::new(self.running.register(), move |cancel| {
                    let out = streams.create_stream(StreamScope::Exclusive)?;
                    full.write(out, options, checkpoint_id, cancel)
                        .map(|h| Some(h.into()))
                }))
            }
        };
        // Incremental: cut the change period, then write either a delta of
        // everything changed since the base, or a new full base.
        let period: ChangePeriod = self
            .states
            .iter_mut()
            .map(|s| s.table.take_changes())
            .collect();
        incremental.unconfirmed.push((checkpoint_id, period));
        let base = incremental.base.clone().filter(|b| {
            let base_bytes = b.base.state_size() as f64;
            let delta_bytes: u64 = b.deltas.iter().map(|d| d.state_size()).sum();
            b.deltas.len() < incremental.options.max_deltas
                && delta_bytes as f64 <= base_bytes * incremental.options.max_delta_ratio
        });
        let changes: Vec<Vec<Arc<dyn Any + Send + Sync>>> = (0..self.states.len())
            .map(|i| {
                incremental
                    .unconfirmed
                    .iter()
                    .filter_map(|(_, period)| period.get(i).cloned().flatten())
                    .collect()
            })
            .collect();
        let results = incremental.results.clone();
        let range = self.range;
        Ok(SnapshotTask::new(self.running.register(), move |cancel| {
            let out = streams.create_stream(StreamScope::Shared)?;
            let handle = match base {
                None => IncrementalKeyedStateHandle {
                    checkpoint_id,
                    range,
                    base: full.write(out, options, checkpoint_id, cancel)?,
                    deltas: Vec::new(),
                },
                Some(base) => {
                    let delta = full.write_delta(out, &changes, options, checkpoint_id, cancel)?;
                    let mut deltas = base.deltas;
                    deltas.push(delta);
                    IncrementalKeyedStateHandle {
                        checkpoint_id,
                        range,
                        base: base.base,
                        deltas,
                    }
                }
            };
            results
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(checkpoint_id, handle.clone());
            Ok(Some(KeyedStateHandle::IncrementalHeap(handle)))
        }))
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.check_open()?;
        let Some(inc) = &mut self.incremental else {
            return Ok(());
        };
        let mut results = inc.results.lock().unwrap_or_else(|p| p.into_inner());
        let base_id = inc.base.as_ref().map_or(0, |b| b.checkpoint_id);
        // Builds on `checkpoint_id` only if it is newer than the base and its
        // task finished; never taken, a savepoint, aborted, older, or not
        // finished yet: later deltas stay built on the current base (see the
        // trait's contract).
        if checkpoint_id > base_id {
            if let Some(handle) = results.remove(&checkpoint_id) {
                inc.unconfirmed.retain(|(id, _)| *id > checkpoint_id);
                inc.base = Some(handle);
            }
        }
        // Results of subsumed checkpoints are never used.
        let base_id = inc.base.as_ref().map_or(0, |b| b.checkpoint_id);
        results.retain(|id, _| *id > base_id && *id >= checkpoint_id);
        Ok(())
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        self.check_open()?;
        if let Some(inc) = &mut self.incremental {
            // Its changes stay in the unconfirmed periods, so the next delta
            // carries them; its files are never referenced.
            inc.results
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&checkpoint_id);
        }
        Ok(())
    }

    fn close(&mut self) {
        self.closed = true;
        self.running.cancel_all();
        self.states.clear();
        self.restored = None;
        self.pending.clear();
        self.current = None;
    }
}
