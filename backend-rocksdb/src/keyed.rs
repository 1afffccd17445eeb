//! The RocksDB keyed backend: one column family per state, keys laid out by
//! [`crate::keys`], values as the state's codec writes them, lists appended
//! through a merge operator.
//!
//! # Failure handling
//!
//! A write into the live instance that fails may have lost state: the write
//! buffer is drained into the batch before the batch is written, a merge or
//! range delete may or may not have been applied, and a RocksDB instance that
//! failed to write its files stops accepting writes anyway. So the first
//! failed write *poisons* the backend (as redb's `PreviousIo` does): the
//! failing call returns its error, and every later state access, registration
//! and snapshot returns [`Error::Poisoned`] naming that first failure, until
//! the backend is dropped and restored from the last completed checkpoint.
//! Checking for it costs nothing extra: it is the flag a closed backend sets.
//!
//! Per failure point:
//!
//! | where | what fails | effect |
//! | --- | --- | --- |
//! | write buffer flush | the sorted batch of buffered writes | poisons |
//! | list append | a merge written straight into RocksDB | poisons |
//! | map clear | a range delete | poisons |
//! | registration | creating a column family, or the batch of a schema migration | poisons |
//! | checkpoint, synchronous part | switching the memtables out for flushing | poisons: the live memtables cannot be made into files |
//! | checkpoint, asynchronous part | waiting for that flush, linking the files, uploading them, writing a canonical snapshot | fails that checkpoint only: it reads the live instance and writes elsewhere |
//! | restore | writing records, clipping key groups, ingesting files | fails the restore; no backend exists, its folder is removed |
//!
//! A failed background flush is not a failure of the task's write: RocksDB
//! keeps the memtable readable, retries what it can, and rejects the next
//! write if it cannot, which then poisons the backend. Failed reads change
//! nothing and poison nothing. A snapshot whose synchronous part completed
//! before the backend was poisoned still holds exactly the state at its
//! barrier, so it is not cancelled.

use std::any::Any;
use std::cell::{Cell, OnceCell, RefCell};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rocksdb::{Cache, ColumnFamilyDescriptor, ReadOptions, WriteBatch, WriteOptions};
use state_api::backend::keyed::{CellSpec, KeyedStateBackend, ListSpec, MapSpec};
use state_api::backend::registration::{
    accept_restored_file, check_key_group, check_restored_registration, check_same_registration,
    codec_error, key_compatibility, value_compatibility,
};
use state_api::backend::KeyedBackendParams;
use state_api::checkpoint::layout::unique_file_name;
use state_api::codec::{Codec, CodecSchema, Compatibility, SharedCodec};
use state_api::format::bytes::{put_bytes, ByteReader};
use state_api::format::frame::MAX_FRAME_PAYLOAD;
use state_api::format::keyed::{
    KeyedSnapshotMeta, KeyedSnapshotReader, KeyedSnapshotWriter, RecordBody,
};
use state_api::key_group::locate_key;
use state_api::snapshot::handle::{IncrementalNativeStateHandle, KeyedStateHandle};
use state_api::snapshot::stream::{CheckpointStreamFactory, StreamScope};
use state_api::snapshot::task::{CancellationRegistry, SnapshotTask};
use state_api::snapshot::{SnapshotKind, SnapshotOptions};
use state_api::state::handle::{
    next_backend_instance_id, CellHandle, HandleCore, ListHandle, MapHandle, StateHandle,
};
use state_api::state::{Namespace, StateKey, StateMeta, StateValue, StorageShape};
use state_api::{Error, KeyGroupRange, Result};

use crate::buffer::WriteBuffer;
use crate::db::{
    column_family_options, open_instance, rocks_err, Db, DbHandles, DbInstance, DbSnapshot,
    FolderGuard,
};
use crate::fault::FailPoint;
use crate::keys::{self, decode, put_entry_key, put_prefix};
use crate::memory::BudgetMember;
use crate::native::{self, Capture, CaptureGate, NativeSnapshot, Uploads};
use crate::options::RocksOptions;

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

struct Registered {
    meta: StateMeta,
    codecs: Box<dyn Any + Send + Sync>,
    /// The namespace codec, a `SharedCodec<N>`, for key listing.
    namespace: Box<dyn Any + Send + Sync>,
}

/// Keyed state of one subtask, in an embedded RocksDB instance.
pub struct RocksKeyedStateBackend<K: StateKey> {
    id: u64,
    max_parallelism: u32,
    range: KeyGroupRange,
    prefix_len: usize,
    key_codec: SharedCodec<K>,
    inst: Arc<DbInstance>,
    /// Column-family handles of `states`, by index.
    handles: DbHandles,
    cache: Cache,
    options: RocksOptions,
    write_options: WriteOptions,
    /// Read options of point lookups, made once (not per access).
    read_options: ReadOptions,
    /// Writes not yet in RocksDB; reads see them first.
    buffer: RefCell<WriteBuffer>,
    current: Option<K>,
    current_group: u32,
    /// Key-group prefix, key length and key bytes of the current key.
    key_prefix: Vec<u8>,
    scratch: Vec<u8>,
    value_buf: Vec<u8>,
    states: Vec<Registered>,
    /// Restored states not registered yet (their data is already in RocksDB).
    pending: Vec<StateMeta>,
    running: CancellationRegistry,
    /// The memory budget the instance shares, if any.
    memory: Option<BudgetMember>,
    /// Set when the backend refuses every call: closed, or poisoned.
    refusing: Cell<bool>,
    /// Set by [`KeyedStateBackend::close`].
    closed: bool,
    /// The first failed write (see the module documentation).
    failure: OnceCell<String>,
    /// Closed while an incremental checkpoint captures its files.
    gate: Arc<CaptureGate>,
    /// Estimated memtable bytes written while the gate is closed.
    held_bytes: AtomicUsize,
    /// SSTs uploaded by incremental checkpoints.
    uploads: Arc<Mutex<Uploads>>,
}

/// Iterates the elements of a stored list value.
fn list_elements<'a>(value: &'a [u8], db: &'a str) -> impl Iterator<Item = Result<&'a [u8]>> + 'a {
    let mut r = ByteReader::new(value, db, 0);
    std::iter::from_fn(move || (!r.is_empty()).then(|| r.bytes()))
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
        let result = Self::open_restoring(folder, params, restore, options);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(folder);
        }
        result
    }

    fn open_restoring(
        folder: &Path,
        params: KeyedBackendParams<K>,
        restore: &[KeyedStateHandle],
        options: RocksOptions,
    ) -> Result<Self> {
        let own = params.key_group_range;
        let plen = keys::prefix_len(params.max_parallelism);
        let mut metas: Vec<StateMeta> = Vec::new();
        let mut natives: Vec<(&IncrementalNativeStateHandle, String)> = Vec::new();
        let mut canonical: Vec<KeyedStateHandle> = Vec::new();
        for h in restore {
            match h {
                KeyedStateHandle::IncrementalNative(n) => {
                    let file = h.describe();
                    native::check_native(n, &file)?;
                    accept_restored_file(&file, &native_meta(n), &params, &mut metas)?;
                    natives.push((n, file));
                }
                other => canonical.push(other.clone()),
            }
        }
        // The native handle covering most of this backend's key groups is
        // opened in place; the others are copied in.
        let base = (0..natives.len())
            .filter(|&i| !natives[i].0.range.intersection(&own).is_empty())
            .max_by_key(|&i| natives[i].0.range.intersection(&own).len());
        let budget = options.memory.budget();
        let (inst, cache) = match base {
            Some(i) => {
                let b = natives[i].0;
                native::materialize(b, folder)?;
                let (inst, cache) = open_instance(folder, &options, budget.as_ref(), true)?;
                let keep = b.range.intersection(&own);
                if keep != b.source_range {
                    let names = b.states.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
                    native::clip(&inst, &names, keep, plen)?;
                }
                (inst, cache)
            }
            None => open_instance(folder, &options, budget.as_ref(), false)?,
        };
        let memory = budget.map(|b| b.join());
        let mut buffer = WriteBuffer::default();
        if let Some(m) = &memory {
            buffer.set_limit(m.budget().task_buffer_bytes());
        }
        let mut write_options = WriteOptions::default();
        // Durability comes from checkpoints, not from RocksDB's log.
        write_options.disable_wal(true);
        let handles = DbHandles::new(inst.clone(), |_| Vec::new());
        let mut backend = RocksKeyedStateBackend {
            handles,
            id: next_backend_instance_id(),
            max_parallelism: params.max_parallelism,
            range: params.key_group_range,
            prefix_len: keys::prefix_len(params.max_parallelism),
            key_codec: params.key_codec.clone(),
            inst,
            cache,
            options,
            write_options,
            read_options: ReadOptions::default(),
            buffer: RefCell::new(buffer),
            current: None,
            current_group: 0,
            key_prefix: Vec::with_capacity(64),
            scratch: Vec::with_capacity(128),
            value_buf: Vec::with_capacity(128),
            states: Vec::new(),
            pending: Vec::new(),
            running: CancellationRegistry::default(),
            memory,
            refusing: Cell::new(false),
            closed: false,
            failure: OnceCell::new(),
            gate: Arc::default(),
            held_bytes: AtomicUsize::new(0),
            uploads: Arc::default(),
        };
        for (i, (n, file)) in natives.iter().enumerate() {
            if Some(i) != base {
                backend.merge_native(n, file, i)?;
            }
        }
        if !canonical.is_empty() {
            backend.restore(&canonical, &params, &mut metas)?;
        }
        // Every restored state has its column family, even with no data here.
        for m in &metas {
            backend.create_cf(&m.name)?;
        }
        backend.pending = metas;
        Ok(backend)
    }

    /// Copies the key groups this backend owns out of another backend's
    /// native checkpoint (scaling in), through a temporary read-only instance.
    fn merge_native(&self, n: &IncrementalNativeStateHandle, file: &str, i: usize) -> Result<()> {
        let range = n.range.intersection(&self.range);
        if range.is_empty() {
            return Ok(());
        }
        let tmp = PathBuf::from(format!("{}.restore-{i}", self.inst.folder().display()));
        let _guard = FolderGuard(tmp.clone());
        native::materialize(n, &tmp)?;
        let cache = Cache::new_lru_cache(8 << 20);
        let opts = column_family_options(&self.options, &cache);
        let names = Db::list_cf(&opts, &tmp).map_err(rocks_err(file, "listing column families"))?;
        let descriptors = names
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, column_family_options(&self.options, &cache)));
        let source = Db::open_cf_descriptors_read_only(&opts, &tmp, descriptors, false)
            .map_err(rocks_err(file, "opening a restored checkpoint"))?;
        let states = n.states.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        for name in &states {
            self.create_cf(name)?;
        }
        let scratch = PathBuf::from(format!("{}.ingest-{i}", self.inst.folder().display()));
        std::fs::create_dir_all(&scratch)
            .map_err(|e| Error::io(format!("creating {}", scratch.display()), e))?;
        let _scratch_guard = FolderGuard(scratch.clone());
        native::copy_key_groups(
            &source,
            file,
            &self.inst,
            &states,
            range,
            self.prefix_len,
            &column_family_options(&self.options, &self.cache),
            &scratch,
        )
    }

    fn db_name(&self) -> &str {
        &self.inst.name
    }

    #[inline]
    fn check_open(&self) -> Result<()> {
        if self.refusing.get() {
            Err(self.refusal())
        } else {
            Ok(())
        }
    }

    /// Why the backend refuses calls: closed by the caller, or poisoned.
    #[cold]
    fn refusal(&self) -> Error {
        match self.failure.get() {
            Some(first) if !self.closed => Error::Poisoned {
                first: first.clone(),
            },
            _ => Error::Closed,
        }
    }

    /// The outcome of a write into the live instance: a failure poisons the
    /// backend (see the module documentation).
    #[inline]
    fn live<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.poison(e);
        }
        result
    }

    #[cold]
    fn poison(&self, error: &Error) {
        let _ = self.failure.set(error.to_string());
        self.refusing.set(true);
        // Nothing buffered will ever be written.
        if let Ok(mut buffer) = self.buffer.try_borrow_mut() {
            buffer.clear();
        }
    }

    fn create_cf(&self, name: &str) -> Result<()> {
        if self.inst.db.cf_handle(name).is_none() {
            let what = format!("creating column family '{name}'");
            let opts = column_family_options(&self.options, &self.cache);
            self.live(
                self.inst
                    .faults
                    .check(FailPoint::CreateColumnFamily, self.db_name(), &what)
                    .and_then(|()| {
                        self.inst
                            .db
                            .create_cf(name, &opts)
                            .map_err(rocks_err(self.db_name(), &what))
                    }),
            )?;
        }
        Ok(())
    }

    /// The column family of registered state `index`.
    #[inline]
    fn cf_at(&self, index: usize) -> &Arc<rocksdb::BoundColumnFamily<'_>> {
        &self.handles.borrow_dependent()[index]
    }

    fn cf(&self, name: &str) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>> {
        self.inst
            .db
            .cf_handle(name)
            .ok_or_else(|| Error::Corrupted {
                file: self.inst.name.clone(),
                offset: 0,
                reason: format!("column family '{name}' is missing"),
            })
    }

    /// Reads restored handles into RocksDB: every record of the key groups
    /// this backend owns, applied in order (puts and deletes of chains).
    fn restore(
        &mut self,
        handles: &[KeyedStateHandle],
        params: &KeyedBackendParams<K>,
        metas: &mut Vec<StateMeta>,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        let pieces = handles
            .iter()
            .map(|h| Ok(h.canonical_pieces()?.into_iter().map(move |p| (h, p))))
            .collect::<Result<Vec<_>>>()?;
        for (top, piece) in pieces.into_iter().flatten() {
            let reader = KeyedSnapshotReader::open_for(piece, &top.needed_by(piece))?;
            let file = reader.file_name().to_string();
            let meta = reader.meta().clone();
            for name in accept_restored_file(&file, &meta, params, metas)? {
                self.create_cf(&name)?;
            }
            let cfs = meta
                .states
                .iter()
                .map(|s| self.cf(&s.name))
                .collect::<Result<Vec<_>>>()?;
            for kg in piece.range.intersection(&self.range).iter() {
                let mut entry = Vec::new();
                reader.for_each_record(kg, |r| {
                    check_key_group(&file, 0, r.key, kg, self.max_parallelism)?;
                    let cf = &cfs[r.state as usize];
                    entry.clear();
                    put_entry_key(&mut entry, kg, self.prefix_len, r.key, r.namespace);
                    match &r.body {
                        RecordBody::Cell(v) => batch.put_cf(cf, &entry, v),
                        RecordBody::List(elements) => {
                            let mut value =
                                Vec::with_capacity(elements.iter().map(|e| e.len() + 2).sum());
                            for e in elements {
                                put_bytes(&mut value, e);
                            }
                            batch.put_cf(cf, &entry, value)
                        }
                        RecordBody::MapEntry { key, value } => {
                            let mut full = entry.clone();
                            full.extend_from_slice(key);
                            batch.put_cf(cf, full, value)
                        }
                        RecordBody::Delete => {
                            if meta.states[r.state as usize].kind.shape() == StorageShape::Map {
                                if let Some(end) = keys::successor(&entry) {
                                    batch.delete_range_cf(cf, &entry, &end);
                                }
                            } else {
                                batch.delete_cf(cf, &entry);
                            }
                        }
                    }
                    Ok(())
                })?;
                if batch.size_in_bytes() > 4 << 20 {
                    self.restore_write(std::mem::take(&mut batch))?;
                }
            }
            drop(cfs);
            self.restore_write(std::mem::take(&mut batch))?;
        }
        Ok(())
    }

    /// Writes a batch of restored records (a failure fails the restore).
    fn restore_write(&self, batch: WriteBatch) -> Result<()> {
        self.inst
            .faults
            .check(FailPoint::RestoreWrite, self.db_name(), "restoring")?;
        self.inst
            .db
            .write_opt(batch, &self.write_options)
            .map_err(rocks_err(&self.inst.name, "restoring"))
    }

    /// Registers a state: the existing one after checking it matches, a
    /// restored one after checking (and if needed migrating) its codecs, or a
    /// new column family.
    fn register<C: Any + Send + Sync, N: Namespace>(
        &mut self,
        meta: StateMeta,
        compat: &[Compatibility],
        codecs: C,
        namespace: SharedCodec<N>,
        migrate: impl Fn(&StateMeta, &[u8]) -> Result<Vec<u8>>,
    ) -> Result<HandleCore> {
        self.check_open()?;
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
                self.rewrite_values(&meta.name, |v| migrate(&written, v))?;
            }
            self.pending.remove(p);
        } else {
            self.create_cf(&meta.name)?;
        }
        let name = meta.name.clone();
        let mut missing = false;
        self.handles
            .with_dependent_mut(|inst, cfs| match inst.db.cf_handle(&name) {
                Some(cf) => cfs.push(cf),
                None => missing = true,
            });
        if missing {
            return Err(Error::Corrupted {
                file: self.inst.name.clone(),
                offset: 0,
                reason: format!("column family '{name}' is missing"),
            });
        }
        let i = self.states.len();
        self.states.push(Registered {
            meta: meta.clone(),
            codecs: Box::new(codecs),
            namespace: Box::new(namespace),
        });
        Ok(HandleCore::new(self.id, i as u32, &meta.name))
    }

    /// Rewrites every value of a column family (schema migration).
    fn rewrite_values(
        &self,
        cf_name: &str,
        convert: impl Fn(&[u8]) -> Result<Vec<u8>>,
    ) -> Result<()> {
        self.flush_buffer()?;
        let cf = self.cf(cf_name)?;
        let mut batch = WriteBatch::default();
        let mut it = self.inst.db.raw_iterator_cf(&cf);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            batch.put_cf(&cf, k, convert(v)?);
            it.next();
        }
        it.status()
            .map_err(rocks_err(self.db_name(), "migrating"))?;
        drop(it);
        // Like any write, it must not reach an SST while a checkpoint's
        // files are being captured.
        self.before_write(batch.size_in_bytes(), batch.len());
        self.live(
            self.inst
                .faults
                .check(FailPoint::Migrate, self.db_name(), "migrating")
                .and_then(|()| {
                    self.inst
                        .db
                        .write_opt(batch, &self.write_options)
                        .map_err(rocks_err(self.db_name(), "migrating"))
                }),
        )
    }

    /// The registered state of a handle, its codecs, and the entry key of
    /// (current key, `namespace`) in `self.scratch`.
    fn locate<C: Any, N: Namespace>(&mut self, core: &HandleCore, namespace: &N) -> Result<usize> {
        self.check_open()?;
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

    fn get_raw(&self, index: usize, key: &[u8]) -> Result<Option<rocksdb::DBPinnableSlice<'_>>> {
        self.inst
            .db
            .get_pinned_cf_opt(self.cf_at(index), key, &self.read_options)
            .map_err(rocks_err(self.db_name(), "get"))
    }

    fn check_size(&self, index: usize, size: usize) -> Result<()> {
        if size > self.options.max_value_bytes {
            return Err(Error::SizeLimitExceeded {
                what: format!("a value of state '{}'", self.states[index].meta.name),
                size: size as u64,
                limit: self.options.max_value_bytes as u64,
            });
        }
        Ok(())
    }

    /// Accounts for a write while an incremental checkpoint captures its
    /// files, waiting for the capture before the new memtable could fill.
    #[inline]
    fn before_write(&self, bytes: usize, entries: usize) {
        if self.gate.is_pending() {
            self.hold(bytes, entries);
        }
    }

    #[cold]
    fn hold(&self, bytes: usize, entries: usize) {
        if self.memory.is_some() {
            // A budget's write buffer manager may flush the new memtable at
            // any write once the memtables it counts (of every instance) pass
            // its limit, and RocksDB may pick a column family whose switched
            // memtable has just been flushed: no write may reach RocksDB
            // before the capture is taken.
            self.gate.settle();
            return;
        }
        let add = bytes + entries * native::MEMTABLE_ENTRY_OVERHEAD;
        let held = self.held_bytes.fetch_add(add, Ordering::Relaxed) + add;
        if held > self.options.write_buffer_bytes / 4 {
            self.gate.settle();
            self.held_bytes.store(0, Ordering::Relaxed);
        }
    }

    /// Calls `f` with the current value of `key`: the buffered write, else
    /// what RocksDB holds.
    fn with_value<R>(
        &self,
        index: usize,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> Result<R>,
    ) -> Result<R> {
        if let Some(slot) = self.buffer.borrow().get(index, key) {
            return f(slot);
        }
        let raw = self.get_raw(index, key)?;
        f(raw.as_deref())
    }

    fn put_raw(&self, index: usize, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_size(index, value.len())?;
        let full = self.buffer.borrow_mut().put(index, key, Some(value));
        if full {
            self.flush_buffer()?;
        }
        Ok(())
    }

    fn delete_raw(&self, index: usize, key: &[u8]) -> Result<()> {
        let full = self.buffer.borrow_mut().put(index, key, None);
        if full {
            self.flush_buffer()?;
        }
        Ok(())
    }

    /// Writes the buffered writes into RocksDB as one batch, sorted by key
    /// (sorted inserts are what RocksDB's memtable does fastest).
    /// The buffered writes leave the buffer before the batch is written, so a
    /// failed write poisons the backend.
    fn flush_buffer(&self) -> Result<()> {
        self.check_open()?;
        let mut buffer = self.buffer.borrow_mut();
        if buffer.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        let (bytes, count) = buffer.drain_into(&mut batch, self.handles.borrow_dependent());
        if let Some(m) = &self.memory {
            // The budget's share follows the number of instances sharing it.
            buffer.set_limit(m.budget().task_buffer_bytes());
        }
        drop(buffer);
        self.before_write(bytes, count);
        self.live(
            self.inst
                .faults
                .check(FailPoint::BufferWrite, self.db_name(), "write")
                .and_then(|()| {
                    self.inst
                        .db
                        .write_opt(batch, &self.write_options)
                        .map_err(rocks_err(self.db_name(), "write"))
                }),
        )
    }

    fn delete_prefix(&self, index: usize, prefix: &[u8]) -> Result<()> {
        self.flush_buffer()?;
        let Some(end) = keys::successor(prefix) else {
            return Ok(());
        };
        self.before_write(2 * prefix.len(), 1);
        let cf = self.cf_at(index);
        self.live(
            self.inst
                .faults
                .check(FailPoint::DeleteRange, self.db_name(), "delete range")
                .and_then(|()| {
                    self.inst
                        .db
                        .delete_range_cf_opt(cf, prefix, &end, &self.write_options)
                        .map_err(rocks_err(self.db_name(), "delete range"))
                }),
        )
    }

    /// Every (key, namespace) entry of a state, decoded with `f`.
    fn scan_entries(
        &self,
        index: usize,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.flush_buffer()?;
        let cf = self.cf_at(index);
        let mut it = self.inst.db.raw_iterator_cf(cf);
        it.seek_to_first();
        let mut last: Vec<u8> = Vec::new();
        while let Some(k) = it.key() {
            let d = decode(k, self.prefix_len, self.db_name())?;
            let entry = &k[..d.entry_len];
            if entry != last.as_slice() {
                f(d.key, d.namespace)?;
                last.clear();
                last.extend_from_slice(entry);
            }
            it.next();
        }
        it.status().map_err(rocks_err(self.db_name(), "scan"))
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
    let value = codec
        .decode_written(written, bytes)
        .map_err(|e| codec_error(state, role, e))?;
    let mut out = Vec::new();
    codec
        .encode(&value, &mut out)
        .map_err(|e| codec_error(state, role, e))?;
    Ok(out)
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
        self.check_open()?;
        let (group, _) = locate_key(
            &*self.key_codec,
            &key,
            &mut self.scratch,
            self.max_parallelism,
            &self.range,
        )?;
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

    fn register_cell<N: Namespace, V: StateValue>(
        &mut self,
        spec: CellSpec<N, V>,
    ) -> Result<CellHandle<N, V>> {
        let compat = value_compatibility(&spec.value_codec, &self.pending, &spec.meta.name, 0);
        let value = spec.value_codec.clone();
        let name = spec.meta.name.clone();
        let core = self.register(
            spec.meta,
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
        let db = self.inst.name.clone();
        let core = self.register(
            spec.meta,
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
        let value = self.with_value(i, &self.scratch, |raw| {
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
            .and_then(|()| self.put_raw(i, &self.scratch, &buf));
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
            self.delete_raw(state.core().index(), &self.scratch)?;
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
        let out = self.with_value(i, &self.scratch, |raw| {
            let mut out = Vec::new();
            if let Some(bytes) = raw {
                let codec = &self.codecs::<ListCodecs<N, T>>(i).element;
                for e in list_elements(bytes, self.db_name()) {
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
        if elements.is_empty() {
            return Ok(());
        }
        let i = self.locate::<ListCodecs<N, T>, N>(state.core(), namespace)?;
        let mut operand = Vec::new();
        let mut item = Vec::new();
        {
            let codec = &self.codecs::<ListCodecs<N, T>>(i).element;
            for e in &elements {
                item.clear();
                codec
                    .encode(e, &mut item)
                    .map_err(|e| codec_error(state.core().name(), "element", e))?;
                put_bytes(&mut operand, &item);
            }
        }
        // Refuse now what would make the merged list too large, instead of
        // failing at the next read or snapshot.
        let existing = self.with_value(i, &self.scratch, |v| Ok(v.map_or(0, <[u8]>::len)))?;
        self.check_size(i, existing + operand.len())?;
        // A buffered list takes the elements in place (appending to the
        // encoded list is what the merge operator does).
        if self.buffer.borrow_mut().append(i, &self.scratch, &operand) {
            return Ok(());
        }
        self.before_write(self.scratch.len() + operand.len(), 1);
        let cf = self.cf_at(i);
        self.live(
            self.inst
                .faults
                .check(FailPoint::Merge, self.db_name(), "merge")
                .and_then(|()| {
                    self.inst
                        .db
                        .merge_cf_opt(cf, &self.scratch, operand, &self.write_options)
                        .map_err(rocks_err(self.db_name(), "merge"))
                }),
        )
    }

    fn list_replace<N: Namespace, T: StateValue>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
        elements: Vec<T>,
    ) -> Result<()> {
        let i = self.locate::<ListCodecs<N, T>, N>(state.core(), namespace)?;
        if elements.is_empty() {
            return self.delete_raw(i, &self.scratch);
        }
        let mut value = Vec::new();
        let mut item = Vec::new();
        {
            let codec = &self.codecs::<ListCodecs<N, T>>(i).element;
            for e in &elements {
                item.clear();
                codec
                    .encode(e, &mut item)
                    .map_err(|e| codec_error(state.core().name(), "element", e))?;
                put_bytes(&mut value, &item);
            }
        }
        self.put_raw(i, &self.scratch, &value)
    }

    fn list_take<N: Namespace, T: StateValue>(
        &mut self,
        state: &ListHandle<N, T>,
        namespace: &N,
    ) -> Result<Vec<T>> {
        let list = self.list_get(state, namespace, |l| l.to_vec())?;
        if !list.is_empty() {
            self.delete_raw(state.core().index(), &self.scratch)?;
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
        let codecs = self.codecs::<MapCodecs<N, UK, UV>>(i);
        let mut key = self.scratch.clone();
        codecs
            .user_key
            .encode(user_key, &mut key)
            .map_err(|e| codec_error(state.core().name(), "user key", e))?;
        let value = self.with_value(i, &key, |raw| {
            raw.map(|b| {
                codecs
                    .user_value
                    .decode(b)
                    .map_err(|e| codec_error(state.core().name(), "user value", e))
            })
            .transpose()
        })?;
        Ok(read(value.as_ref()))
    }

    fn map_put<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
        user_key: UK,
        user_value: UV,
    ) -> Result<()> {
        let i = self.locate::<MapCodecs<N, UK, UV>, N>(state.core(), namespace)?;
        let codecs = self.codecs::<MapCodecs<N, UK, UV>>(i);
        let mut key = self.scratch.clone();
        codecs
            .user_key
            .encode(&user_key, &mut key)
            .map_err(|e| codec_error(state.core().name(), "user key", e))?;
        let mut value = Vec::new();
        codecs
            .user_value
            .encode(&user_value, &mut value)
            .map_err(|e| codec_error(state.core().name(), "user value", e))?;
        self.put_raw(i, &key, &value)
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
            let mut key = self.scratch.clone();
            self.codecs::<MapCodecs<N, UK, UV>>(i)
                .user_key
                .encode(user_key, &mut key)
                .map_err(|e| codec_error(state.core().name(), "user key", e))?;
            self.delete_raw(i, &key)?;
        }
        Ok(old)
    }

    fn map_entries<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
    ) -> Result<Vec<(UK, UV)>> {
        self.flush_buffer()?;
        let i = self.locate::<MapCodecs<N, UK, UV>, N>(state.core(), namespace)?;
        let codecs = self.codecs::<MapCodecs<N, UK, UV>>(i);
        let cf = self.cf_at(i);
        let prefix = self.scratch.clone();
        let mut it = self.inst.db.raw_iterator_cf(cf);
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
            .map_err(rocks_err(self.db_name(), "map iteration"))?;
        Ok(out)
    }

    fn map_is_empty<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
    ) -> Result<bool> {
        self.flush_buffer()?;
        let i = self.locate::<MapCodecs<N, UK, UV>, N>(state.core(), namespace)?;
        let cf = self.cf_at(i);
        let mut it = self.inst.db.raw_iterator_cf(cf);
        it.seek(&self.scratch);
        let empty = !it.key().is_some_and(|k| k.starts_with(&self.scratch));
        it.status()
            .map_err(rocks_err(self.db_name(), "map iteration"))?;
        Ok(empty)
    }

    fn map_clear<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        state: &MapHandle<N, UK, UV>,
        namespace: &N,
    ) -> Result<()> {
        let i = self.locate::<MapCodecs<N, UK, UV>, N>(state.core(), namespace)?;
        let prefix = self.scratch.clone();
        self.delete_prefix(i, &prefix)
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
        self.scan_entries(i, |k, ns| {
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
        self.scan_entries(i, |k, ns| {
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
        self.check_open()?;
        self.flush_buffer()?;
        let mut n = 0;
        for name in self.metas().iter().map(|m| m.name.clone()) {
            let cf = self.cf(&name)?;
            let mut it = self.inst.db.raw_iterator_cf(&cf);
            it.seek_to_first();
            let mut last: Vec<u8> = Vec::new();
            while let Some(k) = it.key() {
                let d = decode(k, self.prefix_len, self.db_name())?;
                if &k[..d.entry_len] != last.as_slice() {
                    n += 1;
                    last.clear();
                    last.extend_from_slice(&k[..d.entry_len]);
                }
                it.next();
            }
            it.status().map_err(rocks_err(self.db_name(), "count"))?;
        }
        Ok(n)
    }

    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        streams: Arc<dyn CheckpointStreamFactory>,
        options: SnapshotOptions,
    ) -> Result<SnapshotTask<Option<KeyedStateHandle>>> {
        self.check_open()?;
        self.flush_buffer()?;
        let metas = self.metas();
        if metas.is_empty() {
            return Ok(SnapshotTask::ready(None));
        }
        if self.options.incremental && options.kind == SnapshotKind::Checkpoint {
            return self.native_snapshot(checkpoint_id, streams, metas);
        }
        // The synchronous part: a RocksDB snapshot (a sequence number), no copy.
        let snapshot = DbSnapshot::new(self.inst.clone(), |inst| inst.db.snapshot());
        let meta = KeyedSnapshotMeta {
            max_parallelism: self.max_parallelism,
            range: self.range,
            key_codec: self.key_codec.schema(),
            states: metas,
            delta: false,
        };
        let prefix_len = self.prefix_len;
        Ok(SnapshotTask::new(self.running.register(), move |cancel| {
            let out = streams.create_stream(StreamScope::Exclusive)?;
            let mut writer =
                KeyedSnapshotWriter::new(out, meta.clone(), options.compression, checkpoint_id)?;
            snapshot.with_dependent(|inst, snap| -> Result<()> {
                let db = inst.name.as_str();
                let cfs = meta
                    .states
                    .iter()
                    .map(|s| {
                        inst.db.cf_handle(&s.name).ok_or_else(|| Error::Corrupted {
                            file: db.to_string(),
                            offset: 0,
                            reason: format!("column family '{}' is missing", s.name),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let mut iters: Vec<_> = cfs
                    .iter()
                    .map(|cf| {
                        let mut it = snap.raw_iterator_cf_opt(cf, ReadOptions::default());
                        it.seek(keys::prefix(meta.range.start(), prefix_len));
                        it
                    })
                    .collect();
                for kg in meta.range.iter() {
                    cancel.check("keyed state snapshot")?;
                    writer.start_key_group(kg)?;
                    for (si, it) in iters.iter_mut().enumerate() {
                        let shape = meta.states[si].kind.shape();
                        while let (Some(k), Some(v)) = (it.key(), it.value()) {
                            let d = decode(k, prefix_len, db)?;
                            if d.key_group != kg {
                                break;
                            }
                            match shape {
                                StorageShape::Cell => {
                                    writer.write_cell(si as u32, d.key, d.namespace, v)?
                                }
                                StorageShape::List => {
                                    let count = list_elements(v, db)
                                        .try_fold(0usize, |n, e| e.map(|_| n + 1))?;
                                    writer.write_list(si as u32, d.key, d.namespace, count, v)?
                                }
                                StorageShape::Map => writer.write_map_entry(
                                    si as u32,
                                    d.key,
                                    d.namespace,
                                    d.user_key,
                                    v,
                                )?,
                            }
                            it.next();
                        }
                        it.status().map_err(rocks_err(db, "snapshot iteration"))?;
                    }
                }
                Ok(())
            })?;
            writer.finish().map(|h| Some(h.into()))
        }))
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.check_open()?;
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .complete(checkpoint_id);
        Ok(())
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        self.check_open()?;
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort(checkpoint_id);
        Ok(())
    }

    fn close(&mut self) {
        self.buffer.borrow_mut().clear();
        self.closed = true;
        self.refusing.set(true);
        self.running.cancel_all();
        self.current = None;
    }
}

impl<K: StateKey> RocksKeyedStateBackend<K> {
    /// An incremental checkpoint: the synchronous part switches memtables
    /// out and closes the capture gate; see [`crate::native`].
    fn native_snapshot(
        &mut self,
        checkpoint_id: u64,
        streams: Arc<dyn CheckpointStreamFactory>,
        states: Vec<StateMeta>,
    ) -> Result<SnapshotTask<Option<KeyedStateHandle>>> {
        let cfs: Vec<String> = states.iter().map(|s| s.name.clone()).collect();
        let capture_dir = PathBuf::from(format!(
            "{}.chk-{checkpoint_id}-{}",
            self.inst.folder().display(),
            unique_file_name()
        ));
        // The memtable switch is a write into the live instance.
        let capture = self.live(Capture::start(
            self.inst.clone(),
            &self.gate,
            cfs,
            capture_dir,
        ))?;
        self.held_bytes.store(0, Ordering::Relaxed);
        let job = NativeSnapshot {
            capture,
            meta: KeyedSnapshotMeta {
                max_parallelism: self.max_parallelism,
                range: self.range,
                key_codec: self.key_codec.schema(),
                states,
                delta: false,
            },
            uploads: self.uploads.clone(),
            checkpoint_id,
        };
        Ok(SnapshotTask::new(self.running.register(), move |cancel| {
            job.run(&*streams, cancel)
                .map(|h| Some(KeyedStateHandle::IncrementalNative(h)))
        }))
    }

    fn handle_index(&self, core: &HandleCore) -> Result<usize> {
        self.check_open()?;
        if core.backend() != self.id || core.index() >= self.states.len() {
            return Err(Error::ForeignHandle {
                name: core.name().to_string(),
            });
        }
        Ok(core.index())
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

/// The snapshot meta a native handle stands for, to check it like a file.
fn native_meta(n: &IncrementalNativeStateHandle) -> KeyedSnapshotMeta {
    KeyedSnapshotMeta {
        max_parallelism: n.max_parallelism,
        range: n.source_range,
        key_codec: n.key_codec.clone(),
        states: n.states.clone(),
        delta: false,
    }
}
