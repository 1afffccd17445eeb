//! The live RocksDB instance of a keyed backend and everything about reading
//! and writing it: the column families of the registered states, the write
//! buffer, the memory budget, the capture gate of incremental checkpoints,
//! and fail-closed poisoning.
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

use std::cell::{Cell, OnceCell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rocksdb::{Cache, ReadOptions, WriteBatch, WriteOptions};
use state_api::format::bytes::ByteReader;
use state_api::{Error, Result};

use crate::buffer::WriteBuffer;
use crate::db::{column_family_options, rocks_err, Db, DbHandles, DbInstance};
use crate::fault::FailPoint;
use crate::keys;
use crate::list_bound::ListBounds;
use crate::memory::BudgetMember;
use crate::native::{self, CaptureGate};
use crate::options::RocksOptions;
use crate::ttl::TtlFilters;
use state_api::state::ttl::{TtlInstant, TtlMeta};
use state_api::state::StorageShape;

/// The live instance of one keyed backend (see the module documentation).
pub(crate) struct RocksStore {
    inst: Arc<DbInstance>,
    /// Column-family handles of the attached states, by index.
    handles: DbHandles,
    cache: Cache,
    options: RocksOptions,
    write_options: WriteOptions,
    /// Read options of point lookups, made once (not per access).
    read_options: ReadOptions,
    /// Writes not yet in RocksDB; reads see them first.
    buffer: RefCell<WriteBuffer>,
    /// The memory budget the instance shares, if any.
    memory: Option<BudgetMember>,
    /// Set when the store refuses every call: closed, or poisoned.
    refusing: Cell<bool>,
    /// Set by [`RocksStore::close`].
    closed: bool,
    /// The first failed write (see the module documentation).
    failure: OnceCell<String>,
    /// Closed while an incremental checkpoint captures its files.
    gate: Arc<CaptureGate>,
    /// Estimated memtable bytes written while the gate is closed.
    held_bytes: AtomicUsize,
    /// Names of the column families of `handles`, by index.
    names: Vec<String>,
    /// Upper bounds of list sizes, for appends without reads.
    list_bounds: RefCell<ListBounds>,
    /// Appends that had to read their list's size (near the limit).
    list_size_reads: Cell<u64>,
    /// The TTL compaction filters of the column families.
    ttl_filters: Arc<TtlFilters>,
}

/// Iterates the elements of a stored list value.
pub(crate) fn list_elements<'a>(
    value: &'a [u8],
    db: &'a str,
) -> impl Iterator<Item = Result<&'a [u8]>> + 'a {
    let mut r = ByteReader::new(value, db, 0);
    std::iter::from_fn(move || (!r.is_empty()).then(|| r.bytes()))
}

impl RocksStore {
    /// A store over a freshly opened instance, with no column family
    /// attached yet.
    pub(crate) fn new(
        inst: Arc<DbInstance>,
        cache: Cache,
        options: RocksOptions,
        memory: Option<BudgetMember>,
        list_bound: u64,
        ttl_filters: Arc<TtlFilters>,
    ) -> Self {
        let mut buffer = WriteBuffer::default();
        if let Some(m) = &memory {
            buffer.set_limit(m.budget().task_buffer_bytes());
        }
        let write_options = crate::db::engine_write_options();
        let handles = DbHandles::new(inst.clone(), |_| Vec::new());
        RocksStore {
            handles,
            inst,
            cache,
            options,
            write_options,
            read_options: ReadOptions::default(),
            buffer: RefCell::new(buffer),
            memory,
            refusing: Cell::new(false),
            closed: false,
            failure: OnceCell::new(),
            gate: Arc::default(),
            held_bytes: AtomicUsize::new(0),
            names: Vec::new(),
            list_bounds: RefCell::new(ListBounds::new(list_bound)),
            list_size_reads: Cell::new(0),
            ttl_filters,
        }
    }

    /// The TTL compaction filters of the column families.
    pub(crate) fn ttl_filters(&self) -> &TtlFilters {
        &self.ttl_filters
    }

    /// Writes `batch` into the live instance now, past the write buffer
    /// (timers: their column families are read by iterators, which do not
    /// see the buffer). A failure poisons the store, like any write.
    pub(crate) fn write_now(&self, batch: WriteBatch, what: &str) -> Result<()> {
        self.check_open()?;
        self.before_write(batch.size_in_bytes(), batch.len());
        self.live(self.write_batch(batch, FailPoint::TimerWrite, what))
    }

    /// Deletes the expired entries of a state with TTL and trims its lists
    /// (at `now`), in one batch; returns the entries, list elements and map
    /// entries removed. The disk space is reclaimed by the next compaction.
    pub(crate) fn purge_expired(
        &self,
        cf_name: &str,
        meta: TtlMeta,
        shape: StorageShape,
        now: &TtlInstant,
    ) -> Result<u64> {
        self.flush_buffer()?;
        let cf = self.cf(cf_name)?;
        let mut batch = WriteBatch::default();
        let mut removed = 0;
        let mut it = self.inst.db.raw_iterator_cf(&cf);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (action, n) = crate::ttl::purge(meta, shape, v, now, self.db_name())?;
            match action {
                None => {}
                Some(None) => batch.delete_cf(&cf, k),
                Some(Some(kept)) => batch.put_cf(&cf, k, kept),
            }
            removed += n;
            it.next();
        }
        it.status()
            .map_err(rocks_err(self.db_name(), "reading expired state"))?;
        drop(it);
        if !batch.is_empty() {
            self.before_write(batch.size_in_bytes(), batch.len());
            self.live(self.write_batch(batch, FailPoint::TtlCleanup, "removing expired state"))?;
        }
        Ok(removed)
    }

    /// Compacts a column family whole: its memtable is flushed and every
    /// file rewritten, through the TTL filter, reclaiming the space of
    /// deleted and expired entries. A pending checkpoint capture is taken
    /// first, so the flush cannot reach its files.
    pub(crate) fn compact(&self, cf_name: &str) -> Result<()> {
        self.check_open()?;
        self.flush_buffer()?;
        self.gate.settle();
        let cf = self.cf(cf_name)?;
        self.inst
            .db
            .compact_range_cf(&cf, None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    /// The live instance.
    pub(crate) fn inst(&self) -> &Arc<DbInstance> {
        &self.inst
    }

    /// The live database.
    #[inline]
    pub(crate) fn db(&self) -> &Db {
        &self.inst.db
    }

    pub(crate) fn options(&self) -> &RocksOptions {
        &self.options
    }

    pub(crate) fn cache(&self) -> &Cache {
        &self.cache
    }

    pub(crate) fn gate(&self) -> &Arc<CaptureGate> {
        &self.gate
    }

    /// Forgets the bytes held back for the previous capture.
    pub(crate) fn reset_held(&self) {
        self.held_bytes.store(0, Ordering::Relaxed);
    }

    pub(crate) fn db_name(&self) -> &str {
        &self.inst.name
    }

    #[inline]
    pub(crate) fn check_open(&self) -> Result<()> {
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
    pub(crate) fn live<T>(&self, result: Result<T>) -> Result<T> {
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

    pub(crate) fn create_cf(&self, name: &str) -> Result<()> {
        if self.inst.db.cf_handle(name).is_none() {
            let what = format!("creating column family '{name}'");
            let mut opts = column_family_options(&self.options, &self.cache);
            self.ttl_filters.install(&mut opts, name);
            self.live(self.engine_write(FailPoint::CreateColumnFamily, &what, || {
                self.inst.db.create_cf(name, &opts)
            }))?;
            self.inst
                .created_cf_options
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(opts);
        }
        Ok(())
    }

    /// The column family of attached state `index`.
    #[inline]
    pub(crate) fn cf_at(&self, index: usize) -> &Arc<rocksdb::BoundColumnFamily<'_>> {
        &self.handles.borrow_dependent()[index]
    }

    pub(crate) fn cf(&self, name: &str) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>> {
        self.inst
            .db
            .cf_handle(name)
            .ok_or_else(|| Error::Corrupted {
                file: self.inst.name.clone(),
                offset: 0,
                reason: format!("column family '{name}' is missing"),
            })
    }

    /// Attaches the (existing) column family of a newly registered state;
    /// returns its index, which [`RocksStore::cf_at`] takes.
    pub(crate) fn attach(&mut self, name: &str) -> Result<usize> {
        let mut missing = false;
        self.handles
            .with_dependent_mut(|inst, cfs| match inst.db.cf_handle(name) {
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
        self.names.push(name.to_string());
        Ok(self.names.len() - 1)
    }

    /// Writes `batch` into the instance (`point` is where tests inject a
    /// failure, `what` names the operation in errors). Callers decide whether
    /// a failure poisons the backend.
    fn write_batch(&self, batch: WriteBatch, point: FailPoint, what: &str) -> Result<()> {
        self.engine_write(point, what, || {
            self.inst.db.write_opt(batch, &self.write_options)
        })
    }

    /// Runs one write into the instance: the failure point `point` first
    /// (tests inject failures there), then `write`, its error classified
    /// and named `what`.
    #[inline]
    fn engine_write(
        &self,
        point: FailPoint,
        what: &str,
        write: impl FnOnce() -> std::result::Result<(), rocksdb::Error>,
    ) -> Result<()> {
        self.inst.faults.check(point, self.db_name(), what)?;
        write().map_err(rocks_err(self.db_name(), what))
    }

    /// Writes a batch of restored records (a failure fails the restore).
    pub(crate) fn restore_write(&self, batch: WriteBatch) -> Result<()> {
        self.write_batch(batch, FailPoint::RestoreWrite, "restoring")
    }

    /// Rewrites every value of a column family (schema migration).
    pub(crate) fn rewrite_values(
        &self,
        cf_name: &str,
        convert: impl Fn(&[u8]) -> Result<Vec<u8>>,
    ) -> Result<()> {
        self.flush_buffer()?;
        let cf = self.cf(cf_name)?;
        let mut batch = WriteBatch::default();
        let mut it = self.inst.db.raw_iterator_cf(&cf);
        it.seek_to_first();
        let mut largest = 0;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let converted = convert(v)?;
            largest = largest.max(converted.len());
            batch.put_cf(&cf, k, converted);
            it.next();
        }
        // A migrated list may have grown.
        self.list_bounds.borrow_mut().raise_all(largest as u64);
        it.status()
            .map_err(rocks_err(self.db_name(), "migrating"))?;
        drop(it);
        // Like any write, it must not reach an SST while a checkpoint's
        // files are being captured.
        self.before_write(batch.size_in_bytes(), batch.len());
        self.live(self.write_batch(batch, FailPoint::Migrate, "migrating"))
    }

    pub(crate) fn get_raw(
        &self,
        index: usize,
        key: &[u8],
    ) -> Result<Option<rocksdb::DBPinnableSlice<'_>>> {
        self.inst
            .db
            .get_pinned_cf_opt(self.cf_at(index), key, &self.read_options)
            .map_err(rocks_err(self.db_name(), "get"))
    }

    pub(crate) fn check_size(&self, index: usize, size: usize) -> Result<()> {
        if size > self.options.max_value_bytes {
            return Err(Error::SizeLimitExceeded {
                what: format!("a value of state '{}'", self.names[index]),
                size: size as u64,
                limit: self.options.max_value_bytes as u64,
            });
        }
        Ok(())
    }

    /// Checks that appending `added` bytes to the list at `key` of state
    /// `index` keeps it within the size limit: from the list's size bound
    /// while that allows it, else by reading the list (see
    /// [`crate::list_bound`]).
    #[inline]
    pub(crate) fn check_append(&self, index: usize, key: &[u8], added: usize) -> Result<()> {
        let limit = self.options.max_value_bytes;
        if self.list_bounds.borrow_mut().admit(key, added, limit) {
            return Ok(());
        }
        self.check_append_by_reading(index, key, added)
    }

    #[cold]
    fn check_append_by_reading(&self, index: usize, key: &[u8], added: usize) -> Result<()> {
        self.list_size_reads.set(self.list_size_reads.get() + 1);
        let existing = self.with_value(index, key, |v| Ok(v.map_or(0, <[u8]>::len)))?;
        self.check_size(index, existing + added)?;
        self.list_bounds.borrow_mut().record(key, existing + added);
        Ok(())
    }

    /// Records that the list at `key` was written whole with `size` bytes.
    #[inline]
    pub(crate) fn record_list(&self, key: &[u8], size: usize) {
        self.list_bounds.borrow_mut().record(key, size);
    }

    /// Raises every list size bound to at least `bound` (restored lists).
    pub(crate) fn raise_list_bound(&self, bound: u64) {
        self.list_bounds.borrow_mut().raise_all(bound);
    }

    /// The largest list size bound: no list in the instance is larger.
    pub(crate) fn list_bound(&self) -> u64 {
        self.list_bounds.borrow().max()
    }

    /// Appends that had to read their list's size.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn list_size_reads(&self) -> u64 {
        self.list_size_reads.get()
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
    pub(crate) fn with_value<R>(
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

    pub(crate) fn put_raw(&self, index: usize, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_size(index, value.len())?;
        let full = self.buffer.borrow_mut().put(index, key, Some(value));
        if full {
            self.flush_buffer()?;
        }
        Ok(())
    }

    pub(crate) fn delete_raw(&self, index: usize, key: &[u8]) -> Result<()> {
        let full = self.buffer.borrow_mut().put(index, key, None);
        if full {
            self.flush_buffer()?;
        }
        Ok(())
    }

    /// Appends encoded list elements to the list at `key`: in place if the
    /// list is buffered (appending to the encoded list is what the merge
    /// operator does), else as a merge written straight into RocksDB.
    #[inline]
    pub(crate) fn append_raw(&self, index: usize, key: &[u8], operand: &[u8]) -> Result<()> {
        if self.buffer.borrow_mut().append(index, key, operand) {
            return Ok(());
        }
        self.before_write(key.len() + operand.len(), 1);
        let cf = self.cf_at(index);
        self.live(self.engine_write(FailPoint::Merge, "merge", || {
            self.inst
                .db
                .merge_cf_opt(cf, key, operand, &self.write_options)
        }))
    }

    /// Writes the buffered writes into RocksDB as one batch, sorted by key
    /// (sorted inserts are what RocksDB's memtable does fastest).
    /// The buffered writes leave the buffer before the batch is written, so a
    /// failed write poisons the backend.
    pub(crate) fn flush_buffer(&self) -> Result<()> {
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
        self.live(self.write_batch(batch, FailPoint::BufferWrite, "write"))
    }

    pub(crate) fn delete_prefix(&self, index: usize, prefix: &[u8]) -> Result<()> {
        self.flush_buffer()?;
        let Some(end) = keys::successor(prefix) else {
            return Ok(());
        };
        self.before_write(2 * prefix.len(), 1);
        let cf = self.cf_at(index);
        self.live(
            self.engine_write(FailPoint::DeleteRange, "delete range", || {
                self.inst
                    .db
                    .delete_range_cf_opt(cf, prefix, &end, &self.write_options)
            }),
        )
    }

    /// Every (key, namespace) entry of a state, decoded with `f`; keys carry
    /// key-group prefixes of `prefix_len` bytes.
    pub(crate) fn scan_entries(
        &self,
        index: usize,
        kind: state_api::state::StateKind,
        prefix_len: usize,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.flush_buffer()?;
        let cf = self.cf_at(index);
        let mut it = self.inst.db.raw_iterator_cf(cf);
        it.seek_to_first();
        let mut last: Vec<u8> = Vec::new();
        // Timers are entries of their own: one (key, namespace) may have
        // several, not next to each other.
        let mut seen: std::collections::HashSet<(Vec<u8>, Vec<u8>)> = Default::default();
        while let Some(k) = it.key() {
            let d = keys::decode_for(kind, k, prefix_len, self.db_name())?;
            if kind == state_api::state::StateKind::Timers {
                if seen.insert((d.key.to_vec(), d.namespace.to_vec())) {
                    f(d.key, d.namespace)?;
                }
            } else {
                let entry = &k[..d.entry_len];
                if entry != last.as_slice() {
                    f(d.key, d.namespace)?;
                    last.clear();
                    last.extend_from_slice(entry);
                }
            }
            it.next();
        }
        it.status().map_err(rocks_err(self.db_name(), "scan"))
    }

    /// Refuses every later call with [`Error::Closed`]; buffered writes are
    /// dropped.
    pub(crate) fn close(&mut self) {
        self.buffer.borrow_mut().clear();
        self.closed = true;
        self.refusing.set(true);
    }
}
