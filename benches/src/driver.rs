//! The drivers: one per backend or baseline, each running a workload's
//! operations on its own state and reading the state back for verification.
//!
//! * [`StateDriver`] drives any [`KeyedStateBackend`] through the public
//!   state API, exactly as an operator would.
//! * [`HashMapDriver`] is `raw-hashmap`: one hash map per key group with the
//!   heap backend's hasher (foldhash), typed keys and values, no encoding.
//!   The key group is chosen the way a hand-written router would: Java's
//!   `Long.hashCode` (or Murmur3 of a string's bytes) through Flink's
//!   key-group formula. It is the upper limit for the heap backends.
//! * [`KvDriver`] runs the same logical work on a byte store: values and
//!   list elements encoded with postcard as the backend encodes them, list
//!   elements length-prefixed and appended with a merge, map entries under
//!   the key followed by the user key. Over [`RawRocks`] (`raw-rocksdb` with
//!   plain keys, `raw-rocksdb-layout` with the backend's key bytes) and
//!   [`SledStore`] (`sled`, the backend's key bytes).

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use hashbrown::HashMap;
use state_api::format::bytes::{put_bytes, put_varint};
use state_api::key_group::{key_group_for_bytes, key_group_for_hash};
use state_api::state::access::{KeyedStateBackendExt, ListState, MapState, ValueState};
use state_api::state::descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use state_api::KeyedStateBackend;

use crate::workload::{
    populated_list, populated_map_value, populated_value, written, AccessStream, BenchKey, Kind,
    Observed, Workload, USER_KEYS,
};
use crate::{BenchError, Result, MAX_PARALLELISM};

/// A backend or baseline set up for one workload: state populated, ready
/// to run rounds of the access stream.
pub trait Driver {
    /// Untimed: brings the state to the start of round `round` (`list.add`
    /// starts every round from a one-element list per key).
    fn prepare_round(&mut self, round: u32) -> Result<()>;

    /// Timed: runs the operations at `range` of the stream as round
    /// `round`. Returns the wrapping sum of every value read (0 for writes).
    fn run(&mut self, round: u32, range: Range<usize>) -> Result<i64>;

    /// Reads back what key `k` holds in the workload's state.
    fn observe(&mut self, k: u32) -> Result<Observed>;

    /// Switches to `workload` on the same state when the state left by the
    /// current one is `workload`'s populated state: only `value.get` to
    /// `value.update`, which saves populating large state twice. Returns
    /// whether it switched.
    fn switch_to(&mut self, workload: Workload) -> bool;
}

/// Moves a driver's `current` workload to `to` if it may go on as `to`
/// ([`Driver::switch_to`]).
fn switch(current: &mut Workload, to: Workload) -> bool {
    let ok = *current == Workload::ValueGet && to == Workload::ValueUpdate;
    if ok {
        *current = to;
    }
    ok
}

/// What every driver is built from.
pub struct Setup<K> {
    /// The workload.
    pub workload: Workload,
    /// The key of every index.
    pub keys: Arc<[K]>,
    /// The access stream.
    pub stream: Arc<AccessStream>,
    /// The order in which keys are populated.
    pub population: Arc<[u32]>,
}

impl<K: BenchKey> Setup<K> {
    /// A setup with keys `K::make(0..stream.keys)`.
    pub fn new(workload: Workload, stream: Arc<AccessStream>, population: Arc<[u32]>) -> Self {
        let keys = (0..stream.keys).map(K::make).collect();
        Setup {
            workload,
            keys,
            stream,
            population,
        }
    }

    /// The same keys and stream for another workload.
    pub fn for_workload(&self, workload: Workload) -> Self {
        Setup {
            workload,
            keys: self.keys.clone(),
            stream: self.stream.clone(),
            population: self.population.clone(),
        }
    }
}

impl<K> Clone for Setup<K> {
    fn clone(&self) -> Self {
        Setup {
            workload: self.workload,
            keys: self.keys.clone(),
            stream: self.stream.clone(),
            population: self.population.clone(),
        }
    }
}

// ---------------------------------------------------------------------------
// Backends of this crate family.

enum States {
    Value(ValueState<i64>),
    List(ListState<i64>),
    Map(MapState<i64, f64>),
}

/// Drives a keyed backend through the public state API.
pub struct StateDriver<B: KeyedStateBackend> {
    setup: Setup<B::Key>,
    backend: B,
    state: States,
    /// Folders the backend works in, removed with the driver.
    _dirs: Vec<tempfile::TempDir>,
}

impl<B: KeyedStateBackend> StateDriver<B>
where
    B::Key: BenchKey,
{
    /// Registers the workload's state on `backend` and populates it.
    /// `dirs` are removed when the driver is dropped (after the backend).
    pub fn new(setup: Setup<B::Key>, mut backend: B, dirs: Vec<tempfile::TempDir>) -> Result<Self> {
        let state = match setup.workload.kind() {
            Kind::Value => States::Value(
                backend.value_state(&ValueStateDescriptor::<i64>::new("bench-value"))?,
            ),
            Kind::List => {
                States::List(backend.list_state(&ListStateDescriptor::<i64>::new("bench-list"))?)
            }
            Kind::Map => {
                States::Map(backend.map_state(&MapStateDescriptor::<i64, f64>::new("bench-map"))?)
            }
        };
        let mut d = StateDriver {
            setup,
            backend,
            state,
            _dirs: dirs,
        };
        d.populate()?;
        Ok(d)
    }

    fn populate(&mut self) -> Result<()> {
        let population = self.setup.population.clone();
        for &k in population.iter() {
            self.backend
                .set_current_key(self.setup.keys[k as usize].clone())?;
            match (&self.state, self.setup.workload) {
                (States::Value(v), _) => {
                    v.on(&mut self.backend).update(Some(populated_value(k)))?
                }
                (States::List(l), Workload::ListGet) => l
                    .on(&mut self.backend)
                    .update(populated_list(k).collect())?,
                // list.add populates at the start of every round.
                (States::List(_), _) => {}
                (States::Map(m), _) => {
                    let mut m = m.on(&mut self.backend);
                    for u in 0..USER_KEYS {
                        m.put(i64::from(u), populated_map_value(k, u))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The backend, e.g. to snapshot it.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }
}

impl<B: KeyedStateBackend> Driver for StateDriver<B>
where
    B::Key: BenchKey,
{
    fn prepare_round(&mut self, _round: u32) -> Result<()> {
        if let (States::List(l), Workload::ListAdd) = (&self.state, self.setup.workload) {
            for &k in self.setup.population.iter() {
                self.backend
                    .set_current_key(self.setup.keys[k as usize].clone())?;
                l.on(&mut self.backend).update(vec![populated_value(k)])?;
            }
        }
        Ok(())
    }

    fn run(&mut self, round: u32, range: Range<usize>) -> Result<i64> {
        let stream = &*self.setup.stream;
        let keys = &*self.setup.keys;
        let b = &mut self.backend;
        let mut sum = 0i64;
        match (&self.state, self.setup.workload) {
            (States::Value(v), Workload::ValueUpdate) => {
                for j in range {
                    b.set_current_key(keys[stream.key_indexes[j] as usize].clone())?;
                    v.on(b).update(Some(written(round, j)))?;
                }
            }
            (States::Value(v), _) => {
                for j in range {
                    b.set_current_key(keys[stream.key_indexes[j] as usize].clone())?;
                    sum = sum.wrapping_add(v.on(b).get()?.unwrap_or(0));
                }
            }
            (States::List(l), Workload::ListAdd) => {
                for j in range {
                    b.set_current_key(keys[stream.key_indexes[j] as usize].clone())?;
                    l.on(b).add(written(round, j))?;
                }
            }
            (States::List(l), _) => {
                for j in range {
                    b.set_current_key(keys[stream.key_indexes[j] as usize].clone())?;
                    let s = l
                        .on(b)
                        .read(|xs| xs.iter().fold(0i64, |a, x| a.wrapping_add(*x)))?;
                    sum = sum.wrapping_add(s);
                }
            }
            (States::Map(m), Workload::MapPut) => {
                for j in range {
                    b.set_current_key(keys[stream.key_indexes[j] as usize].clone())?;
                    let u = i64::from(stream.user_keys[j]);
                    m.on(b).put(u, written(round, j) as f64)?;
                }
            }
            (States::Map(m), _) => {
                for j in range {
                    b.set_current_key(keys[stream.key_indexes[j] as usize].clone())?;
                    let u = i64::from(stream.user_keys[j]);
                    sum = sum.wrapping_add(m.on(b).get(&u)?.unwrap_or(0.0) as i64);
                }
            }
        }
        Ok(sum)
    }

    fn switch_to(&mut self, workload: Workload) -> bool {
        switch(&mut self.setup.workload, workload)
    }

    fn observe(&mut self, k: u32) -> Result<Observed> {
        self.backend
            .set_current_key(self.setup.keys[k as usize].clone())?;
        Ok(match &self.state {
            States::Value(v) => Observed::Value(v.on(&mut self.backend).get()?),
            States::List(l) => Observed::List(l.on(&mut self.backend).get()?.unwrap_or_default()),
            States::Map(m) => {
                let mut m = m.on(&mut self.backend);
                let mut out = Vec::with_capacity(USER_KEYS as usize);
                for u in 0..USER_KEYS {
                    out.push(m.get(&i64::from(u))?);
                }
                Observed::Map(out)
            }
        })
    }
}

// ---------------------------------------------------------------------------
// raw-hashmap.

type Hasher = foldhash::fast::RandomState;
type Table<K, V> = HashMap<K, V, Hasher>;

enum Tables<K> {
    Value(Vec<Table<K, i64>>),
    List(Vec<Table<K, Vec<i64>>>),
    Map(Vec<Table<K, Table<i64, f64>>>),
}

fn tables<K, V>() -> Vec<Table<K, V>> {
    (0..MAX_PARALLELISM)
        .map(|_| Table::with_hasher(Hasher::default()))
        .collect()
}

/// `raw-hashmap`: one hash map per key group, typed, with foldhash.
pub struct HashMapDriver<K> {
    setup: Setup<K>,
    tables: Tables<K>,
}

/// The key group a hand-written router picks for `key`.
#[inline]
fn route<K: BenchKey>(key: &K) -> usize {
    key_group_for_hash(key.route_hash(), MAX_PARALLELISM) as usize
}

/// Sets `key`'s entry in `table` to `value`, cloning the key only when the
/// entry is new.
#[inline]
fn set<K: BenchKey, V>(table: &mut Table<K, V>, key: &K, value: V) {
    match table.get_mut(key) {
        Some(slot) => *slot = value,
        None => {
            table.insert(key.clone(), value);
        }
    }
}

impl<K: BenchKey> HashMapDriver<K> {
    /// Populates the maps for `setup`'s workload.
    pub fn new(setup: Setup<K>) -> Self {
        let mut tables = match setup.workload.kind() {
            Kind::Value => Tables::Value(tables()),
            Kind::List => Tables::List(tables()),
            Kind::Map => Tables::Map(tables()),
        };
        for &k in setup.population.iter() {
            let key = &setup.keys[k as usize];
            let g = route(key);
            match (&mut tables, setup.workload) {
                (Tables::Value(t), _) => set(&mut t[g], key, populated_value(k)),
                (Tables::List(t), Workload::ListGet) => {
                    set(&mut t[g], key, populated_list(k).collect())
                }
                (Tables::List(_), _) => {}
                (Tables::Map(t), _) => {
                    let mut m = Table::with_hasher(Hasher::default());
                    for u in 0..USER_KEYS {
                        m.insert(i64::from(u), populated_map_value(k, u));
                    }
                    set(&mut t[g], key, m);
                }
            }
        }
        HashMapDriver { setup, tables }
    }

    /// Entries held, over all key groups.
    pub fn len(&self) -> usize {
        match &self.tables {
            Tables::Value(t) => t.iter().map(Table::len).sum(),
            Tables::List(t) => t.iter().map(Table::len).sum(),
            Tables::Map(t) => t.iter().map(Table::len).sum(),
        }
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: BenchKey> Driver for HashMapDriver<K> {
    fn prepare_round(&mut self, _round: u32) -> Result<()> {
        if let (Tables::List(t), Workload::ListAdd) = (&mut self.tables, self.setup.workload) {
            for &k in self.setup.population.iter() {
                let key = &self.setup.keys[k as usize];
                set(&mut t[route(key)], key, vec![populated_value(k)]);
            }
        }
        Ok(())
    }

    fn run(&mut self, round: u32, range: Range<usize>) -> Result<i64> {
        let stream = &*self.setup.stream;
        let keys = &*self.setup.keys;
        let mut sum = 0i64;
        match (&mut self.tables, self.setup.workload) {
            (Tables::Value(t), Workload::ValueUpdate) => {
                for j in range {
                    let key = &keys[stream.key_indexes[j] as usize];
                    set(&mut t[route(key)], key, written(round, j));
                }
            }
            (Tables::Value(t), _) => {
                for j in range {
                    let key = &keys[stream.key_indexes[j] as usize];
                    sum = sum.wrapping_add(t[route(key)].get(key).copied().unwrap_or(0));
                }
            }
            (Tables::List(t), Workload::ListAdd) => {
                for j in range {
                    let key = &keys[stream.key_indexes[j] as usize];
                    let table = &mut t[route(key)];
                    match table.get_mut(key) {
                        Some(list) => list.push(written(round, j)),
                        None => {
                            table.insert(key.clone(), vec![written(round, j)]);
                        }
                    }
                }
            }
            (Tables::List(t), _) => {
                for j in range {
                    let key = &keys[stream.key_indexes[j] as usize];
                    let s = t[route(key)]
                        .get(key)
                        .map_or(0, |xs| xs.iter().fold(0i64, |a, x| a.wrapping_add(*x)));
                    sum = sum.wrapping_add(s);
                }
            }
            (Tables::Map(t), Workload::MapPut) => {
                for j in range {
                    let key = &keys[stream.key_indexes[j] as usize];
                    let table = &mut t[route(key)];
                    let u = i64::from(stream.user_keys[j]);
                    let v = written(round, j) as f64;
                    match table.get_mut(key) {
                        Some(m) => {
                            m.insert(u, v);
                        }
                        None => {
                            let mut m = Table::with_hasher(Hasher::default());
                            m.insert(u, v);
                            table.insert(key.clone(), m);
                        }
                    }
                }
            }
            (Tables::Map(t), _) => {
                for j in range {
                    let key = &keys[stream.key_indexes[j] as usize];
                    let u = i64::from(stream.user_keys[j]);
                    let v = t[route(key)]
                        .get(key)
                        .and_then(|m| m.get(&u))
                        .copied()
                        .unwrap_or(0.0);
                    sum = sum.wrapping_add(v as i64);
                }
            }
        }
        Ok(sum)
    }

    fn switch_to(&mut self, workload: Workload) -> bool {
        switch(&mut self.setup.workload, workload)
    }

    fn observe(&mut self, k: u32) -> Result<Observed> {
        let key = &self.setup.keys[k as usize];
        let g = route(key);
        Ok(match &self.tables {
            Tables::Value(t) => Observed::Value(t[g].get(key).copied()),
            Tables::List(t) => Observed::List(t[g].get(key).cloned().unwrap_or_default()),
            Tables::Map(t) => Observed::Map(
                (0..USER_KEYS)
                    .map(|u| t[g].get(key).and_then(|m| m.get(&i64::from(u))).copied())
                    .collect(),
            ),
        })
    }
}

// ---------------------------------------------------------------------------
// Byte stores: raw RocksDB and sled.

/// A key-value store of bytes with an appending merge.
pub trait KvStore {
    /// Sets `key` to `value`.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Appends `operand` to `key`'s value (creating it).
    fn merge(&mut self, key: &[u8], operand: &[u8]) -> Result<()>;
    /// Calls `f` with `key`'s value.
    fn with<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R>;
}

/// Name of the column family of the raw RocksDB baseline.
const RAW_CF: &str = "bench";

/// rust-rocksdb opened with exactly the backend's options
/// ([`backend_rocksdb::engine_options`]: compression, bloom filter, the
/// memory budget's block cache and write buffer manager, memtable size,
/// merge operator), one column family with the options of a state's column
/// family, written without WAL like the backend.
pub struct RawRocks {
    db: rocksdb::DB,
    write: rocksdb::WriteOptions,
}

impl RawRocks {
    /// Opens a fresh instance in `dir` with the backend's default options.
    pub fn open(dir: &Path) -> Result<Self> {
        let (db_opts, cf_opts) =
            backend_rocksdb::engine_options(&backend_rocksdb::RocksOptions::default());
        let db = rocksdb::DB::open_cf_descriptors(
            &db_opts,
            dir,
            [rocksdb::ColumnFamilyDescriptor::new(RAW_CF, cf_opts)],
        )?;
        Ok(RawRocks {
            db,
            write: backend_rocksdb::engine_write_options(),
        })
    }

    fn cf(&self) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(RAW_CF)
            .ok_or_else(|| BenchError::Store("RocksDB: the bench column family is gone".into()))
    }
}

impl KvStore for RawRocks {
    #[inline]
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self.db.put_cf_opt(self.cf()?, key, value, &self.write)?)
    }
    #[inline]
    fn merge(&mut self, key: &[u8], operand: &[u8]) -> Result<()> {
        Ok(self
            .db
            .merge_cf_opt(self.cf()?, key, operand, &self.write)?)
    }
    #[inline]
    fn with<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R> {
        let v = self.db.get_pinned_cf(self.cf()?, key)?;
        Ok(f(v.as_deref()))
    }
}

/// sled 0.34 with its default configuration and an appending merge
/// operator.
pub struct SledStore {
    tree: sled::Db,
}

fn sled_append(_key: &[u8], old: Option<&[u8]>, operand: &[u8]) -> Option<Vec<u8>> {
    let mut v = old.map_or_else(Vec::new, <[u8]>::to_vec);
    v.extend_from_slice(operand);
    Some(v)
}

impl SledStore {
    /// Opens a fresh database in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let tree = sled::Config::new().path(dir).open()?;
        tree.set_merge_operator(sled_append);
        Ok(SledStore { tree })
    }
}

impl KvStore for SledStore {
    #[inline]
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree.insert(key, value)?;
        Ok(())
    }
    #[inline]
    fn merge(&mut self, key: &[u8], operand: &[u8]) -> Result<()> {
        self.tree.merge(key, operand)?;
        Ok(())
    }
    #[inline]
    fn with<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R> {
        let v = self.tree.get(key)?;
        Ok(f(v.as_deref()))
    }
}

/// How a byte store's keys are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyLayout {
    /// What a plain key-value user writes: the key's plain bytes
    /// ([`BenchKey::plain_bytes`]), a map's user key as 8 big-endian bytes
    /// after it.
    Plain,
    /// The RocksDB backend's key bytes ([`backend_rocksdb::keys`]): the key
    /// group, the length-prefixed canonical key and (empty) namespace, a
    /// map's canonical user key after them.
    Backend,
}

/// Runs the workloads on a [`KvStore`].
pub struct KvDriver<S, K> {
    setup: Setup<K>,
    store: S,
    layout: KeyLayout,
    key: Vec<u8>,
    scratch: Vec<u8>,
    value: Vec<u8>,
    /// Folders the store works in, removed with the driver (after it).
    _dirs: Vec<tempfile::TempDir>,
}

fn encode<T: serde::Serialize>(v: &T, out: &mut Vec<u8>) -> Result<()> {
    let mut buf = std::mem::take(out);
    buf.clear();
    *out = postcard::to_extend(v, buf).map_err(|e| BenchError::Store(format!("postcard: {e}")))?;
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| BenchError::Store(format!("postcard: {e}")))
}

/// Decodes a merged list: length-prefixed postcard `i64` elements.
fn decode_list(bytes: &[u8], mut each: impl FnMut(i64)) -> Result<()> {
    let mut r = state_api::format::bytes::ByteReader::new(bytes, "list", 0);
    while !r.is_empty() {
        let len = r.varint()? as usize;
        each(decode::<i64>(r.take(len)?)?);
    }
    Ok(())
}

impl<S: KvStore, K: BenchKey> KvDriver<S, K> {
    /// Populates `store` for `setup`'s workload; `dirs` are removed when
    /// the driver is dropped.
    pub fn new(
        setup: Setup<K>,
        store: S,
        layout: KeyLayout,
        dirs: Vec<tempfile::TempDir>,
    ) -> Result<Self> {
        let mut d = KvDriver {
            setup,
            store,
            layout,
            key: Vec::new(),
            scratch: Vec::new(),
            value: Vec::new(),
            _dirs: dirs,
        };
        let population = d.setup.population.clone();
        for &k in population.iter() {
            match d.setup.workload {
                Workload::ValueUpdate | Workload::ValueGet => {
                    d.entry_key(k)?;
                    encode(&populated_value(k), &mut d.value)?;
                    d.store.put(&d.key, &d.value)?;
                }
                Workload::ListGet => {
                    d.entry_key(k)?;
                    d.list_value(populated_list(k))?;
                    d.store.put(&d.key, &d.value)?;
                }
                Workload::ListAdd => {}
                Workload::MapPut | Workload::MapGet => {
                    for u in 0..USER_KEYS {
                        d.map_key(k, i64::from(u))?;
                        encode(&populated_map_value(k, u), &mut d.value)?;
                        d.store.put(&d.key, &d.value)?;
                    }
                }
            }
        }
        Ok(d)
    }

    /// `self.key` = the entry key of key index `k`.
    #[inline]
    fn entry_key(&mut self, k: u32) -> Result<()> {
        let key = &self.setup.keys[k as usize];
        self.key.clear();
        match self.layout {
            KeyLayout::Plain => key.plain_bytes(&mut self.key),
            KeyLayout::Backend => {
                encode(key, &mut self.scratch)?;
                let group = key_group_for_bytes(&self.scratch, MAX_PARALLELISM)?;
                let prefix = backend_rocksdb::keys::prefix_len(MAX_PARALLELISM);
                backend_rocksdb::keys::put_entry_key(
                    &mut self.key,
                    group,
                    prefix,
                    &self.scratch,
                    &[],
                );
            }
        }
        Ok(())
    }

    /// `self.key` = the key of user key `u` of key index `k`.
    #[inline]
    fn map_key(&mut self, k: u32, u: i64) -> Result<()> {
        self.entry_key(k)?;
        match self.layout {
            KeyLayout::Plain => self.key.extend_from_slice(&u.to_be_bytes()),
            KeyLayout::Backend => {
                encode(&u, &mut self.scratch)?;
                self.key.extend_from_slice(&self.scratch);
            }
        }
        Ok(())
    }

    /// `self.value` = a list of `elements`, each length-prefixed.
    fn list_value(&mut self, elements: impl Iterator<Item = i64>) -> Result<()> {
        let mut out = std::mem::take(&mut self.value);
        out.clear();
        for e in elements {
            encode(&e, &mut self.scratch)?;
            put_bytes(&mut out, &self.scratch);
        }
        self.value = out;
        Ok(())
    }
}

impl<S: KvStore, K: BenchKey> Driver for KvDriver<S, K> {
    fn prepare_round(&mut self, _round: u32) -> Result<()> {
        if self.setup.workload == Workload::ListAdd {
            let population = self.setup.population.clone();
            for &k in population.iter() {
                self.entry_key(k)?;
                self.list_value(std::iter::once(populated_value(k)))?;
                self.store.put(&self.key, &self.value)?;
            }
        }
        Ok(())
    }

    fn run(&mut self, round: u32, range: Range<usize>) -> Result<i64> {
        let stream = self.setup.stream.clone();
        let mut sum = 0i64;
        match self.setup.workload {
            Workload::ValueUpdate => {
                for j in range {
                    self.entry_key(stream.key_indexes[j])?;
                    encode(&written(round, j), &mut self.value)?;
                    self.store.put(&self.key, &self.value)?;
                }
            }
            Workload::ValueGet => {
                for j in range {
                    self.entry_key(stream.key_indexes[j])?;
                    let v = self
                        .store
                        .with(&self.key, |v| v.map(decode::<i64>).transpose())??;
                    sum = sum.wrapping_add(v.unwrap_or(0));
                }
            }
            Workload::ListAdd => {
                for j in range {
                    self.entry_key(stream.key_indexes[j])?;
                    encode(&written(round, j), &mut self.scratch)?;
                    self.value.clear();
                    put_varint(&mut self.value, self.scratch.len() as u64);
                    self.value.extend_from_slice(&self.scratch);
                    self.store.merge(&self.key, &self.value)?;
                }
            }
            Workload::ListGet => {
                for j in range {
                    self.entry_key(stream.key_indexes[j])?;
                    let s = self.store.with(&self.key, |v| {
                        let mut s = 0i64;
                        if let Some(bytes) = v {
                            decode_list(bytes, |x| s = s.wrapping_add(x))?;
                        }
                        Ok::<_, BenchError>(s)
                    })??;
                    sum = sum.wrapping_add(s);
                }
            }
            Workload::MapPut => {
                for j in range {
                    self.map_key(stream.key_indexes[j], i64::from(stream.user_keys[j]))?;
                    encode(&(written(round, j) as f64), &mut self.value)?;
                    self.store.put(&self.key, &self.value)?;
                }
            }
            Workload::MapGet => {
                for j in range {
                    self.map_key(stream.key_indexes[j], i64::from(stream.user_keys[j]))?;
                    let v = self
                        .store
                        .with(&self.key, |v| v.map(decode::<f64>).transpose())??;
                    sum = sum.wrapping_add(v.unwrap_or(0.0) as i64);
                }
            }
        }
        Ok(sum)
    }

    fn switch_to(&mut self, workload: Workload) -> bool {
        switch(&mut self.setup.workload, workload)
    }

    fn observe(&mut self, k: u32) -> Result<Observed> {
        Ok(match self.setup.workload.kind() {
            Kind::Value => {
                self.entry_key(k)?;
                Observed::Value(
                    self.store
                        .with(&self.key, |v| v.map(decode::<i64>).transpose())??,
                )
            }
            Kind::List => {
                self.entry_key(k)?;
                let list = self.store.with(&self.key, |v| {
                    let mut out = Vec::new();
                    if let Some(bytes) = v {
                        decode_list(bytes, |x| out.push(x))?;
                    }
                    Ok::<_, BenchError>(out)
                })??;
                Observed::List(list)
            }
            Kind::Map => {
                let mut out = Vec::with_capacity(USER_KEYS as usize);
                for u in 0..USER_KEYS {
                    self.map_key(k, i64::from(u))?;
                    out.push(
                        self.store
                            .with(&self.key, |v| v.map(decode::<f64>).transpose())??,
                    );
                }
                Observed::Map(out)
            }
        })
    }
}
