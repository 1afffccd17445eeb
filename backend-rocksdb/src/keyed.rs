//! The RocksDB keyed backend: one column family per state, keys laid out by
//! [`crate::keys`], values as the state's codec writes them, lists appended
//! through a merge operator.
//!
//! The backend keeps the current key, the registered states and the running
//! snapshots; the live instance is its store ([`crate::store`]), which also
//! implements fail-closed poisoning: see
//! [Failure handling](crate::store#failure-handling) for what each failure
//! point does.

use std::any::Any;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::{Arc, Mutex};

use state_api::backend::keyed::{CellSpec, KeyedStateBackend, ListSpec, MapSpec};
use state_api::backend::registration::{
    check_restored_registration, check_same_registration, codec_error, key_compatibility,
    value_compatibility,
};
use state_api::backend::KeyedBackendParams;
use state_api::codec::{Codec, CodecSchema, Compatibility, SharedCodec};
use state_api::format::bytes::put_bytes;
use state_api::format::frame::MAX_FRAME_PAYLOAD;
use state_api::format::keyed::KeyedSnapshotMeta;
use state_api::key_group::KeyLocator;
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::snapshot::stream::CheckpointStreamFactory;
use state_api::snapshot::task::{CancellationRegistry, SnapshotTask};
use state_api::snapshot::SnapshotOptions;
use state_api::state::handle::{
    next_backend_instance_id, CellHandle, HandleCore, ListHandle, MapHandle, StateHandle,
};
use state_api::state::ttl::{StateClock, StateTtlConfig};
use state_api::state::{Namespace, StateKey, StateMeta, StateValue};
use state_api::{Error, KeyGroupRange, Result};

use crate::db::rocks_err;
use crate::keys::{self, put_prefix};
use crate::native::Uploads;
use crate::options::RocksOptions;
use crate::restore;
use crate::snapshot;
use crate::store::{list_elements, RocksStore};
use crate::timers::TimerHeads;
use state_api::state::handle::TimerHandle;
use state_api::timers::{decode_timestamp, encode_timestamp, Timer, TimerSpec};

/// Value codecs of a registered state, by shape (the namespace type is part
/// of the type, so a handle of other types is refused).
struct CellCodecs<N, V> {
    value: SharedCodec<V>,
    _namespace: PhantomData<fn() -> N>,
}
struct ListCodecs<N, T> {
    element: SharedCodec<T>,
    _namespace: PhantomData<fn() -> N>,
}
struct MapCodecs<N, UK, UV> {
    user_key: SharedCodec<UK>,
    user_value: SharedCodec<UV>,
    _namespace: PhantomData<fn() -> N>,
}

struct TimerCodecs<N> {
    _namespace: PhantomData<fn() -> N>,
}

struct Registered {
    meta: StateMeta,
    /// Its time-to-live, with the cleanup strategies.
    ttl: Option<StateTtlConfig>,
    codecs: Box<dyn Any + Send + Sync>,
    /// The namespace codec, a `SharedCodec<N>`, for key listing.
    namespace: Box<dyn Any + Send + Sync>,
}

/// Keyed state of one subtask, in an embedded RocksDB instance.
pub struct RocksKeyedStateBackend<K: StateKey> {
    id: u64,
    max_parallelism: u32,
    locator: KeyLocator<K>,
    range: KeyGroupRange,
    prefix_len: usize,
    key_codec: SharedCodec<K>,
    /// The live instance; its column families are attached in the order of
    /// `states`, so a state's index is its column family's.
    store: RocksStore,
    current: Option<K>,
    current_group: u32,
    /// Key-group prefix, key length and key bytes of the current key.
    key_prefix: Vec<u8>,
    scratch: Vec<u8>,
    value_buf: Vec<u8>,
    /// Reused for a list element or a map entry's full key.
    item_buf: Vec<u8>,
    states: Vec<Registered>,
    /// Restored states not registered yet (their data is already in RocksDB).
    pending: Vec<StateMeta>,
    running: CancellationRegistry,
    /// SSTs uploaded by incremental checkpoints.
    uploads: Arc<Mutex<Uploads>>,
    /// The clock TTL is measured against.
    clock: StateClock,
    /// Cached heads of the registered timer states, by state index.
    timer_heads: std::collections::HashMap<usize, TimerHeads>,
}

impl<K: StateKey> RocksKeyedStateBackend<K> {
    /// Creates a backend with a fresh RocksDB instance in `folder`, restoring
    /// the key groups it owns from `restore`.
    pub fn open(
        folder: &Path,
        params: KeyedBackendParams<K>,
        restore: &[KeyedStateHandle],
        options: RocksOptions,
    ) -> Result<Self> {
        params
            .key_group_range
            .check_within(params.max_parallelism)?;
        if options.max_value_bytes > MAX_FRAME_PAYLOAD - 4096 {
            return Err(Error::InvalidArgument {
                what: format!(
                    "max_value_bytes {} exceeds the snapshot format's limit",
                    options.max_value_bytes
                ),
            });
        }
        let locator = KeyLocator::new(
            params.key_codec.clone(),
            params.max_parallelism,
            params.key_group_range,
        )?;
        let result = restore::open_store(folder, &params, restore, options);
        match result {
            Ok((store, pending)) => Ok(RocksKeyedStateBackend {
                id: next_backend_instance_id(),
                max_parallelism: params.max_parallelism,
                locator,
                range: params.key_group_range,
                prefix_len: keys::prefix_len(params.max_parallelism),
                key_codec: params.key_codec.clone(),
                store,
                current: None,
                current_group: 0,
                key_prefix: Vec::with_capacity(64),
                scratch: Vec::with_capacity(128),
                value_buf: Vec::with_capacity(128),
                item_buf: Vec::with_capacity(128),
                states: Vec::new(),
                pending,
                running: CancellationRegistry::default(),
                uploads: Arc::default(),
                clock: params.clock.clone(),
                timer_heads: std::collections::HashMap::new(),
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(folder);
                Err(e)
            }
        }
    }

    /// Compacts every registered state's column family whole, through the
    /// TTL compaction filter: expired entries of states whose TTL keeps the
    /// filter on (and lists whose every element expired) are dropped and
    /// their disk space reclaimed. RocksDB also runs the filter in its own
    /// background compactions; this forces one, for an engine that
    /// schedules it (and for tests).
    pub fn compact(&mut self) -> Result<()> {
        self.store.check_open()?;
        for s in &self.states {
            self.store.compact(&s.meta.name)?;
        }
        Ok(())
    }

    /// The instance's working folder (its SST files, for measuring disk use).
    pub fn instance_folder(&self) -> &Path {
        self.store.inst().folder()
    }

    /// Entries (whole lists) the TTL compaction filter dropped so far.
    pub fn ttl_filter_removed(&self) -> u64 {
        self.store.ttl_filters().removed()
    }

    /// Registers a state: the existing one after checking it matches, a
    /// restored one after checking (and if needed migrating) its codecs, or a
    /// new column family.
    fn register<C: Any + Send + Sync, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<StateTtlConfig>,
        compat: &[Compatibility],
        codecs: C,
        namespace: SharedCodec<N>,
        migrate: impl Fn(&StateMeta, &[u8]) -> Result<Vec<u8>>,
    ) -> Result<HandleCore> {
        self.store.check_open()?;
        if let Some(i) = self.states.iter().position(|s| s.meta.name == meta.name) {
            let existing = &self.states[i];
            check_same_registration(&existing.meta, &meta)?;
            if !existing.codecs.is::<C>() {
                return Err(Error::StateKindMismatch {
                    name: meta.name.clone(),
                    registered: format!("{} of other types", existing.meta.kind),
                    requested: format!("{} of {}", meta.kind, std::any::type_name::<C>()),
                });
            }
            return Ok(HandleCore::new(self.id, i as u32, &meta.name));
        }
        if let Some(p) = self.pending.iter().position(|m| m.name == meta.name) {
            let written = self.pending[p].clone();
            let namespace_compat = namespace.compatibility(&written.namespace);
            check_restored_registration(&written, &meta, namespace_compat, compat)?;
            if compat.contains(&Compatibility::AfterMigration) {
                self.store
                    .rewrite_values(&meta.name, |v| migrate(&written, v))?;
            }
            self.pending.remove(p);
        } else {
            self.store.create_cf(&meta.name)?;
        }
        let i = self.store.attach(&meta.name)?;
        debug_assert_eq!(i, self.states.len());
        if let (Some(ttl_meta), Some(config)) = (meta.ttl, &ttl) {
            if config.cleanup().compaction_filter {
                self.store
                    .ttl_filters()
                    .enable(&meta.name, ttl_meta, meta.kind.shape());
            }
        }
        self.states.push(Registered {
            ttl,
            meta: meta.clone(),
            codecs: Box::new(codecs),
            namespace: Box::new(namespace),
        });
        Ok(HandleCore::new(self.id, i as u32, &meta.name))
    }

    /// The registered state of a handle, its codecs, and the entry key of
    /// (current key, `namespace`) in `self.scratch`.
    fn locate<C: Any, N: Namespace>(&mut self, core: &HandleCore, namespace: &N) -> Result<usize> {
        self.store.check_open()?;
        if core.backend() != self.id {
            return Err(Error::ForeignHandle {
                name: core.name().to_string(),
            });
        }
        if self.current.is_none() {
            return Err(Error::NoCurrentKey);
        }
        let state = self
            .states
            .get(core.index())
            .ok_or_else(|| Error::ForeignHandle {
                name: core.name().to_string(),
            })?;
        let (true, Some(ns_codec)) = (
            state.codecs.is::<C>(),
            state.namespace.downcast_ref::<SharedCodec<N>>(),
        ) else {
            return Err(Error::ForeignHandle {
                name: core.name().to_string(),
            });
        };
        self.value_buf.clear();
        ns_codec
            .encode(namespace, &mut self.value_buf)
            .map_err(|e| codec_error(core.name(), "namespace", e))?;
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.key_prefix);
        put_bytes(&mut self.scratch, &self.value_buf);
        Ok(core.index())
    }

    fn codecs<C: Any>(&self, index: usize) -> &C {
        self.states[index]
            .codecs
            .downcast_ref::<C>()
            .expect("locate checked the codecs' type")
    }

    fn metas(&self) -> Vec<StateMeta> {
        self.states
            .iter()
            .map(|s| s.meta.clone())
            .chain(self.pending.iter().cloned())
            .collect()
    }
}

fn convert<T: 'static>(
    codec: &dyn Codec<T>,
    written: &CodecSchema,
    bytes: &[u8],
    state: &str,
    role: &'static str,
) -> Result<Vec<u8>> {
    let value = state_api::state::ttl::decode_written(codec, written, bytes)
        .map_err(|e| codec_error(state, role, e))?;
    let mut out = Vec::new();
    codec
        .encode(&value, &mut out)
        .map_err(|e| codec_error(state, role, e))?;
    Ok(out)
}

/// Encodes list elements, each length-prefixed, into `out` (cleared first);
/// `item` is scratch space.
fn encode_elements<N: Namespace, T: StateValue>(
    out: &mut Vec<u8>,
    item: &mut Vec<u8>,
    codec: &dyn state_api::codec::Codec<T>,
    elements: &[T],
    state: &ListHandle<N, T>,
) -> Result<()> {
    out.clear();
    for e in elements {
        item.clear();
        codec
            .encode(e, item)
            .map_err(|e| codec_error(state.core().name(), "element", e))?;
        put_bytes(out, item);
    }
    Ok(())
}

/// Writes the full key of `user_key`'s entry, the (key, namespace) prefix
/// followed by the encoded user key, into `out`.
fn user_entry_key<N: Namespace, UK: StateKey, UV: StateValue>(
    out: &mut Vec<u8>,
    prefix: &[u8],
    codec: &dyn state_api::codec::Codec<UK>,
    user_key: &UK,
    state: &MapHandle<N, UK, UV>,
) -> Result<()> {
    out.clear();
    out.extend_from_slice(prefix);
    codec
        .encode(user_key, out)
        .map_err(|e| codec_error(state.core().name(), "user key", e))
}

impl<K: StateKey> KeyedStateBackend for RocksKeyedStateBackend<K> {
    type Key = K;

    fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn set_current_key(&mut self, key: K) -> Result<()> {
        self.store.check_open()?;
        let (group, _) = self.locator.encode_and_locate(&key, &mut self.scratch)?;
        self.key_prefix.clear();
        put_prefix(&mut self.key_prefix, group, self.prefix_len);
        put_bytes(&mut self.key_prefix, &self.scratch);
        self.current = Some(key);
        self.current_group = group;
        Ok(())
    }

    fn current_key(&self) -> Option<&K> {
        self.current.as_ref()
    }

    fn current_key_group(&self) -> Option<u32> {
        self.current.as_ref().map(|_| self.current_group)
    }

    fn clock(&self) -> &StateClock {
        &self.clock
    }

    /// Deletes every expired entry (and trims every list) of the registered
    /// states with TTL in one batch per state, then compacts their column
    /// families, so the disk space is reclaimed too.
    fn cleanup_expired(&mut self) -> Result<u64> {
        self.store.check_open()?;
        let now = self.clock.instant();
        let mut removed = 0;
        for s in &self.states {
            if let Some(ttl) = s.meta.ttl {
                removed +=
                    self.store
                        .purge_expired(&s.meta.name, ttl, s.meta.kind.shape(), &now)?;
                self.store.compact(&s.meta.name)?;
            }
        }
        Ok(removed)
    }

    fn register_cell<N: Namespace, V: StateValue>(
        &mut self,
        spec: CellSpec<N, V>,
    ) -> Result<CellHandle<N, V>> {
        let compat = value_compatibility(&spec.value_codec, &self.pending, &spec.meta.name, 0);
        let value = spec.value_codec.clone();
        let name = spec.meta.name.clone();
        let core = self.register(
            spec.meta,
            spec.ttl.map(|t| t.config),
            &[compat],
            CellCodecs::<N, V> {
                value: spec.value_codec,
                _namespace: PhantomData,
            },
            spec.namespace_codec,
            |w, bytes| convert(&*value, &w.values[0], bytes, &name, "value"),
        )?;
        Ok(CellHandle::new(core))
    }

    fn register_list<N: Namespace, T: StateValue>(
        &mut self,
        spec: ListSpec<N, T>,
    ) -> Result<ListHandle<N, T>> {
        let compat = value_compatibility(&spec.element_codec, &self.pending, &spec.meta.name, 0);
        let element = spec.element_codec.clone();
        let name = spec.meta.name.clone();
        let db = self.store.db_name().to_string();
        let core = self.register(
            spec.meta,
            spec.ttl.map(|t| t.config),
            &[compat],
            ListCodecs::<N, T> {
                element: spec.element_codec,
                _namespace: PhantomData,
            },
            spec.namespace_codec,
            |w, bytes| {
                let mut out = Vec::new();
                for e in list_elements(bytes, &db) {
                    put_bytes(
                        &mut out,
                        &convert(&*element, &w.values[0], e?, &name, "element")?,
                    );
                }
                Ok(out)
            },
        )?;
        Ok(ListHandle::new(core))
    }

    fn register_map<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        spec: MapSpec<N, UK, UV>,
    ) -> Result<MapHandle<N, UK, UV>> {
        let name = &spec.meta.name;
        let key_compat = key_compatibility(value_compatibility(
            &spec.user_key_codec,
            &self.pending,
            name,
            0,
        ));
        let value_compat = value_compatibility(&spec.user_value_codec, &self.pending, name, 1);
        let uv = spec.user_value_codec.clone();
        let name = spec.meta.name.clone();
        let core = self.register(
            spec.meta,
            spec.ttl.map(|t| t.config),
            &[key_compat, value_compat],
            MapCodecs::<N, UK, UV> {
                user_key: spec.user_key_codec,
                user_value: spec.user_value_codec,
                _namespace: PhantomData,
            },
            spec.namespace_codec,
            |w, bytes| convert(&*uv, &w.values[1], bytes, &name, "user value"),
        )?;
        Ok(MapHandle::new(core))
    }

    fn register_timers<N: Namespace>(&mut self, spec: TimerSpec<N>) -> Result<TimerHandle<N>> {
        let compat = [Compatibility::AsIs; 2];
        let core = self.register(
            spec.meta,
            None,
            &compat,
            TimerCodecs::<N> {
                _namespace: PhantomData,
            },
            spec.namespace_codec,
            |_, bytes| Ok(bytes.to_vec()),
        )?;
        let i = core.index();
        if !self.timer_heads.contains_key(&i) {
            let heads = TimerHeads::load(&self.store, i, self.range, self.prefix_len)?;
            self.timer_heads.insert(i, heads);
        }
        Ok(TimerHandle::new(core))
    }

    fn timer_add<N: Namespace>(
        &mut self,
        timers: &TimerHandle<N>,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        let i = self.timer_key::<N>(timers.core(), namespace, timestamp)?;
        if self.store.get_raw(i, &self.item_buf)?.is_some() {
            return Ok(false);
        }
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(self.store.cf_at(i), &self.item_buf, []);
        self.store.write_now(batch, "registering a timer")?;
        if let Some(heads) = self.timer_heads.get_mut(&i) {
            heads.added(
                &self.store,
                i,
                self.current_group,
                timestamp,
                &self.item_buf,
            )?;
        }
        Ok(true)
    }

    fn timer_remove<N: Namespace>(
        &mut self,
        timers: &TimerHandle<N>,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        let i = self.timer_key::<N>(timers.core(), namespace, timestamp)?;
        if self.store.get_raw(i, &self.item_buf)?.is_none() {
            return Ok(false);
        }
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(self.store.cf_at(i), &self.item_buf);
        self.store.write_now(batch, "deleting a timer")?;
        if let Some(heads) = self.timer_heads.get_mut(&i) {
            heads.removed(&self.store, i, self.current_group, &self.item_buf)?;
        }
        Ok(true)
    }

    fn timer_peek<N: Namespace>(&mut self, timers: &TimerHandle<N>) -> Result<Option<i64>> {
        let i = self.timer_state::<N>(timers.core())?;
        Ok(self.timer_heads.get(&i).and_then(TimerHeads::first))
    }

    fn timer_poll<N: Namespace>(
        &mut self,
        timers: &TimerHandle<N>,
        up_to: i64,
    ) -> Result<Option<Timer<K, N>>> {
        let i = self.timer_state::<N>(timers.core())?;
        let ns_codec = self.namespace_codec::<N>(i)?;
        let Some(heads) = self.timer_heads.get_mut(&i) else {
            return Ok(None);
        };
        let Some((_, raw)) = heads.poll(&self.store, i, up_to)? else {
            return Ok(None);
        };
        let name = timers.core().name();
        let d = keys::decode_for(
            state_api::state::StateKind::Timers,
            &raw,
            self.prefix_len,
            self.store.db_name(),
        )?;
        let timestamp = decode_timestamp(d.user_key).ok_or_else(|| Error::Corrupted {
            file: self.store.db_name().to_string(),
            offset: 0,
            reason: format!("a timer of '{name}' without an 8-byte timestamp"),
        })?;
        Ok(Some(Timer {
            timestamp,
            key: self
                .key_codec
                .decode(d.key)
                .map_err(|e| codec_error(name, "key", e))?,
            namespace: ns_codec
                .decode(d.namespace)
                .map_err(|e| codec_error(name, "namespace", e))?,
        }))
    }

    fn state_metas(&self) -> Vec<StateMeta> {
        self.metas()
    }

    fn cell_get<N: Namespace, V: StateValue, R>(
        &mut self,
        state: &CellHandle<N, V>,
        namespace: &N,
        read: impl FnOnce(Option<&V>) -> R,
    ) -> Result<R> {
        let i = self.locate::<CellCodecs<N, V>, N>(state.core(), namespace)?;
        let value = self.store.with_value(i, &self.scratch, |raw| {
            raw.map(|bytes| {
                self.codecs::<CellCodecs<N, V>>(i)
                    .value
                    .decode(bytes)
                    .map_err(|e| codec_error(state.core().name(), "value", e))
            })
            .transpose()
        })?;
        Ok(read(value.as_ref()))
    }

    fn cell_put<N: Namespace, V: StateValue>(
        &mut self,
        state: &CellHandle<N, V>,
        namespace: &N,
        value: V,
    ) -> Result<()> {
        let i = self.locate::<CellCodecs<N, V>, N>(state.core(), namespace)?;
        let mut buf = std::mem::take(&mut self.value_buf);
        buf.clear();
        let r = self
            .codecs::<CellCodecs<N, V>>(i)
            .value
            .encode(&value, &mut buf)
            .map_err(|e| codec_error(state.core().name(), "value", e))
            .and_then(|()| self.store.put_raw(i, &self.scratch, &buf));
        self.value_buf = buf;
        r
    }

    fn cell_take<N: Namespace, V: StateValue>(
        &mut self,
        state: &CellHandle<N, V>,
        namespace: &N,
    ) -> Result<Option<V>> {
        let old = self.cell_get(state, namespace, |v| v.cloned())?;
        if old.is_some() {
            self.store.delete_raw(state.core().index(), &self.scratch)?;
        }
        Ok(old)
    }

    fn cell_upsert<N: Namespace, V: StateValue>(
        &mut self,
        state: &CellHandle<N, V>,
        namespace: &N,
        update: impl FnOnce(Option<&mut V>) -> Option<V>,
    ) -> Result<()> {
        let current = self.cell_get(state, namespace, |v| v.cloned())?;
        let next = match current {
            Some(mut v) => {
                update(Some(&mut v));
                Some(v)
            }
            None => update(None),
        };
        match next {
            Some(v) => self.cell_put(state, namespace, v),
            None => Ok(()),
        }
    }

    fn list_get<N: Namespace, T: StateValue, R>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
        read: impl FnOnce(&[T]) -> R,
    ) -> Result<R> {
        let i = self.locate::<ListCodecs<N, T>, N>(state.core(), namespace)?;
        let out = self.store.with_value(i, &self.scratch, |raw| {
            let mut out = Vec::new();
            if let Some(bytes) = raw {
                let codec = &self.codecs::<ListCodecs<N, T>>(i).element;
                for e in list_elements(bytes, self.store.db_name()) {
                    out.push(
                        codec
                            .decode(e?)
                            .map_err(|e| codec_error(state.core().name(), "element", e))?,
                    );
                }
            }
            Ok(out)
        })?;
        Ok(read(&out))
    }

    fn list_append<N: Namespace, T: StateValue>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
        elements: Vec<T>,
    ) -> Result<()> {
        self.list_append_slice(state, namespace, &elements)
    }

    fn list_push<N: Namespace, T: StateValue>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
        element: T,
    ) -> Result<()> {
        self.list_append_slice(state, namespace, std::slice::from_ref(&element))
    }

    fn list_replace<N: Namespace, T: StateValue>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
        elements: Vec<T>,
    ) -> Result<()> {
        let i = self.locate::<ListCodecs<N, T>, N>(state.core(), namespace)?;
        if elements.is_empty() {
            return self.store.delete_raw(i, &self.scratch);
        }
        let mut value = std::mem::take(&mut self.value_buf);
        let mut item = std::mem::take(&mut self.item_buf);
        let codec = &*self.codecs::<ListCodecs<N, T>>(i).element;
        let r = encode_elements(&mut value, &mut item, codec, &elements, state).and_then(|()| {
            self.store.put_raw(i, &self.scratch, &value)?;
            self.store.record_list(&self.scratch, value.len());
            Ok(())
        });
        self.value_buf = value;
        self.item_buf = item;
        r
    }

    fn list_take<N: Namespace, T: StateValue>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
    ) -> Result<Vec<T>> {
        let list = self.list_get(state, namespace, |l| l.to_vec())?;
        if !list.is_empty() {
            self.store.delete_raw(state.core().index(), &self.scratch)?;
        }
        Ok(list)
    }

    fn map_get<N: Namespace, UK: StateKey, UV: StateValue, R>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
        user_key: &UK,
        read: impl FnOnce(Option<&UV>) -> R,
    ) -> Result<R> {
        let i = self.locate::<MapCodecs<N, UK, UV>, N>(state.core(), namespace)?;
        let mut key = std::mem::take(&mut self.item_buf);
        let codecs = self.codecs::<MapCodecs<N, UK, UV>>(i);
        let value = user_entry_key(&mut key, &self.scratch, &*codecs.user_key, user_key, state)
            .and_then(|()| {
                self.store.with_value(i, &key, |raw| {
                    raw.map(|b| {
                        codecs
                            .user_value
                            .decode(b)
                            .map_err(|e| codec_error(state.core().name(), "user value", e))
                    })
                    .transpose()
                })
            });
        self.item_buf = key;
        Ok(read(value?.as_ref()))
    }

    fn map_put<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
        user_key: UK,
        user_value: UV,
    ) -> Result<()> {
        let i = self.locate::<MapCodecs<N, UK, UV>, N>(state.core(), namespace)?;
        let mut key = std::mem::take(&mut self.item_buf);
        let mut value = std::mem::take(&mut self.value_buf);
        let codecs = self.codecs::<MapCodecs<N, UK, UV>>(i);
        let r = user_entry_key(&mut key, &self.scratch, &*codecs.user_key, &user_key, state)
            .and_then(|()| {
                value.clear();
                codecs
                    .user_value
                    .encode(&user_value, &mut value)
                    .map_err(|e| codec_error(state.core().name(), "user value", e))
            })
            .and_then(|()| self.store.put_raw(i, &key, &value));
        self.item_buf = key;
        self.value_buf = value;
        r
    }

    fn map_remove<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
        user_key: &UK,
    ) -> Result<Option<UV>> {
        let old = self.map_get(state, namespace, user_key, |v| v.cloned())?;
        if old.is_some() {
            let i = state.core().index();
            let mut key = std::mem::take(&mut self.item_buf);
            let codecs = self.codecs::<MapCodecs<N, UK, UV>>(i);
            let r = user_entry_key(&mut key, &self.scratch, &*codecs.user_key, user_key, state)
                .and_then(|()| self.store.delete_raw(i, &key));
            self.item_buf = key;
            r?;
        }
        Ok(old)
    }

    fn map_entries<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
    ) -> Result<Vec<(UK, UV)>> {
        self.store.flush_buffer()?;
        let i = self.locate::<MapCodecs<N, UK, UV>, N>(state.core(), namespace)?;
        let codecs = self.codecs::<MapCodecs<N, UK, UV>>(i);
        let cf = self.store.cf_at(i);
        let prefix = self.scratch.clone();
        let mut it = self.store.db().raw_iterator_cf(cf);
        it.seek(&prefix);
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            let uk = codecs
                .user_key
                .decode(&k[prefix.len()..])
                .map_err(|e| codec_error(state.core().name(), "user key", e))?;
            let uv = codecs
                .user_value
                .decode(v)
                .map_err(|e| codec_error(state.core().name(), "user value", e))?;
            out.push((uk, uv));
            it.next();
        }
        it.status()
            .map_err(rocks_err(self.store.db_name(), "map iteration"))?;
        Ok(out)
    }

    fn map_is_empty<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
    ) -> Result<bool> {
        self.store.flush_buffer()?;
        let i = self.locate::<MapCodecs<N, UK, UV>, N>(state.core(), namespace)?;
        let cf = self.store.cf_at(i);
        let mut it = self.store.db().raw_iterator_cf(cf);
        it.seek(&self.scratch);
        let empty = !it.key().is_some_and(|k| k.starts_with(&self.scratch));
        it.status()
            .map_err(rocks_err(self.store.db_name(), "map iteration"))?;
        Ok(empty)
    }

    fn map_clear<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
    ) -> Result<()> {
        let i = self.locate::<MapCodecs<N, UK, UV>, N>(state.core(), namespace)?;
        let prefix = self.scratch.clone();
        self.store.delete_prefix(i, &prefix)
    }

    fn keys<H: StateHandle>(&mut self, state: &H, namespace: &H::Namespace) -> Result<Vec<K>> {
        let i = self.handle_index(state.core())?;
        let ns_codec = self.namespace_codec::<H::Namespace>(i)?;
        let mut want = Vec::new();
        ns_codec
            .encode(namespace, &mut want)
            .map_err(|e| codec_error(state.core().name(), "namespace", e))?;
        let key_codec = self.key_codec.clone();
        let mut out = Vec::new();
        self.store
            .scan_entries(i, self.states[i].meta.kind, self.prefix_len, |k, ns| {
                if ns == want.as_slice() {
                    out.push(
                        key_codec
                            .decode(k)
                            .map_err(|e| codec_error("<key>", "key", e))?,
                    );
                }
                Ok(())
            })?;
        Ok(out)
    }

    fn keys_and_namespaces<H: StateHandle>(&mut self, state: &H) -> Result<Vec<(K, H::Namespace)>> {
        let i = self.handle_index(state.core())?;
        let ns_codec = self.namespace_codec::<H::Namespace>(i)?;
        let key_codec = self.key_codec.clone();
        let mut out = Vec::new();
        self.store
            .scan_entries(i, self.states[i].meta.kind, self.prefix_len, |k, ns| {
                out.push((
                    key_codec
                        .decode(k)
                        .map_err(|e| codec_error("<key>", "key", e))?,
                    ns_codec
                        .decode(ns)
                        .map_err(|e| codec_error(state.core().name(), "namespace", e))?,
                ));
                Ok(())
            })?;
        Ok(out)
    }

    fn num_entries(&self) -> Result<usize> {
        self.store.check_open()?;
        self.store.flush_buffer()?;
        let mut n = 0;
        for (name, kind) in self.metas().iter().map(|m| (m.name.clone(), m.kind)) {
            let cf = self.store.cf(&name)?;
            let mut it = self.store.db().raw_iterator_cf(&cf);
            it.seek_to_first();
            let mut last: Vec<u8> = Vec::new();
            while let Some(k) = it.key() {
                let d = keys::decode_for(kind, k, self.prefix_len, self.store.db_name())?;
                if &k[..d.entry_len] != last.as_slice() {
                    n += 1;
                    last.clear();
                    last.extend_from_slice(&k[..d.entry_len]);
                }
                it.next();
            }
            it.status()
                .map_err(rocks_err(self.store.db_name(), "count"))?;
        }
        Ok(n)
    }

    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        streams: Arc<dyn CheckpointStreamFactory>,
        options: SnapshotOptions,
    ) -> Result<SnapshotTask<Option<KeyedStateHandle>>> {
        self.store.check_open()?;
        self.store.flush_buffer()?;
        let metas = self.metas();
        if metas.is_empty() {
            return Ok(SnapshotTask::ready(None));
        }
        let meta = KeyedSnapshotMeta {
            max_parallelism: self.max_parallelism,
            range: self.range,
            key_codec: self.key_codec.schema(),
            states: metas,
            delta: false,
        };
        let keep_expired: Vec<String> = self
            .states
            .iter()
            .filter(|s| s.ttl.as_ref().is_some_and(|t| !t.cleanup().full_snapshot))
            .map(|s| s.meta.name.clone())
            .collect();
        snapshot::snapshot(
            &self.store,
            checkpoint_id,
            streams,
            options,
            meta,
            (self.clock.instant(), keep_expired),
            &self.running,
            &self.uploads,
        )
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.store.check_open()?;
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .complete(checkpoint_id);
        Ok(())
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        self.store.check_open()?;
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort(checkpoint_id);
        Ok(())
    }

    fn close(&mut self) {
        self.store.close();
        self.running.cancel_all();
        self.current = None;
    }
}

impl<K: StateKey> RocksKeyedStateBackend<K> {
    /// How many list appends had to read the list's size to check it
    /// against [`RocksOptions::max_value_bytes`] (only appends near the limit
    /// should). For tests, with the `fault-injection` feature.
    #[cfg(feature = "fault-injection")]
    pub fn list_size_reads(&self) -> u64 {
        self.store.list_size_reads()
    }

    /// Appends encoded elements to the list of (current key, `namespace`).
    fn list_append_slice<N: Namespace, T: StateValue>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
        elements: &[T],
    ) -> Result<()> {
        if elements.is_empty() {
            return Ok(());
        }
        let i = self.locate::<ListCodecs<N, T>, N>(state.core(), namespace)?;
        let mut operand = std::mem::take(&mut self.value_buf);
        let mut item = std::mem::take(&mut self.item_buf);
        let codec = &*self.codecs::<ListCodecs<N, T>>(i).element;
        let r = encode_elements(&mut operand, &mut item, codec, elements, state).and_then(|()| {
            // Refuse now what would make the merged list too large, instead
            // of failing at the next read or snapshot; no read while the
            // list's size bound allows the append.
            self.store.check_append(i, &self.scratch, operand.len())?;
            // A buffered list takes the elements in place, else they are merged.
            self.store.append_raw(i, &self.scratch, &operand)
        });
        self.value_buf = operand;
        self.item_buf = item;
        r
    }

    fn handle_index(&self, core: &HandleCore) -> Result<usize> {
        self.store.check_open()?;
        if core.backend() != self.id || core.index() >= self.states.len() {
            return Err(Error::ForeignHandle {
                name: core.name().to_string(),
            });
        }
        Ok(core.index())
    }

    /// The index of a timer state's handle.
    fn timer_state<N: Namespace>(&self, core: &HandleCore) -> Result<usize> {
        let i = self.handle_index(core)?;
        if !self.states[i].codecs.is::<TimerCodecs<N>>() {
            return Err(Error::ForeignHandle {
                name: core.name().to_string(),
            });
        }
        Ok(i)
    }

    /// The timer key of (current key, `namespace`, `timestamp`) in
    /// `self.item_buf`; returns the timer state's index.
    fn timer_key<N: Namespace>(
        &mut self,
        core: &HandleCore,
        namespace: &N,
        timestamp: i64,
    ) -> Result<usize> {
        let i = self.locate::<TimerCodecs<N>, N>(core, namespace)?;
        // `locate` left the encoded namespace in `value_buf`, and the current
        // key's prefix, key length and key in `key_prefix`.
        self.item_buf.clear();
        let key = &self.key_prefix[self.prefix_len..];
        let mut r = state_api::format::bytes::ByteReader::new(key, "current key", 0);
        let encoded_key = r.bytes()?;
        keys::put_timer_key(
            &mut self.item_buf,
            self.current_group,
            self.prefix_len,
            &encode_timestamp(timestamp),
            encoded_key,
            &self.value_buf,
        );
        Ok(i)
    }

    /// The namespace codec of state `i`, whatever its shape.
    fn namespace_codec<N: Namespace>(&self, i: usize) -> Result<SharedCodec<N>> {
        self.states[i]
            .namespace
            .downcast_ref::<SharedCodec<N>>()
            .cloned()
            .ok_or_else(|| Error::ForeignHandle {
                name: self.states[i].meta.name.clone(),
            })
    }
}
