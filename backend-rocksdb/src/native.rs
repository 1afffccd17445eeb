//! Incremental checkpoints in RocksDB's native format, and their restore.
//!
//! **Snapshot.** The synchronous part asks RocksDB to flush every column
//! family *without waiting* (a memtable switch, no I/O) and closes the
//! capture gate. The asynchronous part waits until those memtables are
//! flushed, then takes a RocksDB checkpoint without another flush: hard links
//! of the SST files live at that moment plus a copy of the MANIFEST. That file
//! set holds exactly the state at the barrier:
//!
//! * every write before the barrier was in a memtable that was switched out
//!   and has been flushed;
//! * no write after the barrier can be in an SST yet: the only way it could
//!   reach one is a flush of the new memtable, which only a full memtable
//!   would start, and the gate stops the task before it writes a quarter of
//!   the memtable budget while a capture is pending (in practice the capture
//!   takes milliseconds and the task never waits). Under a
//!   [`crate::memory::MemoryBudget`] the write buffer manager may also start
//!   that flush at any write, so there the task takes the capture before its
//!   first write reaches RocksDB;
//! * background compactions only rewrite SSTs of the captured state.
//!
//! SST files are immutable, so each is uploaded once into `shared/` and
//! referenced by later checkpoints; the MANIFEST, CURRENT and OPTIONS files are
//! written per checkpoint. Only SSTs of a *completed* checkpoint are reused, so
//! a file uploaded for a failed checkpoint is never referenced. Every file
//! carries a CRC32 that restore checks.
//!
//! **Restore.** Files are placed into the new instance's folder (SSTs as hard
//! links when the checkpoint folder is on the same file system, else copied)
//! and RocksDB opens them: no record is re-inserted. At another parallelism the
//! handle overlapping most becomes the base and key groups outside the
//! backend's range are dropped with `delete_file_in_range` and `delete_range`;
//! the other handles' key groups are copied in from temporary instances.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocksdb::checkpoint::Checkpoint;
use rocksdb::properties::{PropName, BACKGROUND_ERRORS, NUM_IMMUTABLE_MEM_TABLE};
use rocksdb::{
    FlushOptions, IngestExternalFileOptions, Options, ReadOptions, SstFileWriter, WriteOptions,
};
use state_api::format::keyed::KeyedSnapshotMeta;
use state_api::snapshot::handle::{IncrementalNativeStateHandle, NativeFile};
use state_api::snapshot::stream::{
    check_file_size, CheckpointStreamFactory, StateFileReader, StreamScope, StreamStateHandle,
};
use state_api::snapshot::task::Cancellation;
use state_api::{Error, ErrorKind, KeyGroupRange, Result};

use crate::db::{rocks_err, Db, DbInstance, FolderGuard};
use crate::fault::FailPoint;
use crate::keys;

/// The backend kind recorded in native handles.
pub const BACKEND_KIND: &str = "rocksdb";
/// Version of the native layout (key layout, merge operator, file set).
pub const NATIVE_FORMAT_VERSION: u32 = 1;

/// Estimated memtable bytes per write on top of its key and value (skip-list
/// node, sequence number, lengths); deliberately high.
pub(crate) const MEMTABLE_ENTRY_OVERHEAD: usize = 96;

/// Keeps the task's writes from reaching an SST while a checkpoint's file set
/// is being captured (see the module documentation).
#[derive(Default)]
pub(crate) struct CaptureGate {
    pending: AtomicBool,
    current: Mutex<Option<Arc<Capture>>>,
}

impl CaptureGate {
    /// Whether a capture is waiting to be taken.
    #[inline]
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Makes `capture` the pending one.
    fn open(&self, capture: Arc<Capture>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(capture);
        self.pending.store(true, Ordering::Release);
    }

    fn finish(&self, capture: &Capture) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_deref().is_some_and(|c| std::ptr::eq(c, capture)) {
            *current = None;
            self.pending.store(false, Ordering::Release);
        }
    }

    /// Takes the pending capture now, on the calling thread (the task's,
    /// when it would otherwise fill the new memtable, or when a later
    /// checkpoint starts before the earlier one ran its asynchronous part).
    pub(crate) fn settle(&self) {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(c) = current {
            // A failed capture fails its own checkpoint; the task goes on.
            let _ = c.take(None);
        }
    }
}

enum CaptureState {
    Waiting,
    Taken,
    /// The capture failed: the error's kind and text.
    Failed(ErrorKind, String),
    Abandoned,
}

/// The file set of one incremental checkpoint, captured at most once by
/// whichever thread gets there first.
pub(crate) struct Capture {
    inst: Arc<DbInstance>,
    gate: Arc<CaptureGate>,
    cfs: Vec<String>,
    dir: FolderGuard,
    state: Mutex<CaptureState>,
}

impl Capture {
    /// Switches the memtables of `cfs` out (without waiting for the flush)
    /// and makes the capture into `dir` pending on `gate`.
    pub(crate) fn start(
        inst: Arc<DbInstance>,
        gate: &Arc<CaptureGate>,
        cfs: Vec<String>,
        dir: PathBuf,
    ) -> Result<Arc<Capture>> {
        gate.settle();
        start_flush(&inst, &cfs)?;
        let capture = Arc::new(Capture {
            inst,
            gate: gate.clone(),
            cfs,
            dir: FolderGuard(dir),
            state: Mutex::new(CaptureState::Waiting),
        });
        gate.open(capture.clone());
        Ok(capture)
    }

    /// Waits for the switched memtables to be flushed and links the live
    /// files into the capture folder, once.
    fn take(&self, cancel: Option<&Cancellation>) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*state, CaptureState::Waiting) {
            let result = self
                .inst
                .faults
                .check(
                    FailPoint::CheckpointCapture,
                    &self.inst.name,
                    "creating a checkpoint",
                )
                .and_then(|()| wait_flushed(&self.inst, &self.cfs, cancel))
                .and_then(|()| {
                    Checkpoint::new(&self.inst.db)
                        .and_then(|c| c.create_checkpoint_with_log_size(&self.dir.0, u64::MAX))
                        .map_err(rocks_err(&self.inst.name, "creating a checkpoint"))
                });
            *state = match &result {
                Ok(()) => CaptureState::Taken,
                Err(e) => CaptureState::Failed(e.kind(), e.to_string()),
            };
            self.gate.finish(self);
            return result;
        }
        match &*state {
            CaptureState::Taken => Ok(()),
            CaptureState::Failed(kind, e) => Err(Error::Engine {
                engine: "RocksDB",
                instance: self.inst.name.clone(),
                operation: "capturing a checkpoint".into(),
                status: e.clone(),
                kind: *kind,
            }),
            _ => Err(Error::Cancelled {
                reason: "the checkpoint was abandoned".into(),
            }),
        }
    }

    /// Nobody will use the capture: let the task write freely.
    fn abandon(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*state, CaptureState::Waiting) {
            *state = CaptureState::Abandoned;
            self.gate.finish(self);
        }
    }
}

/// SST files uploaded by this backend: those of the last completed checkpoint
/// (reusable) and those of checkpoints still pending.
#[derive(Default)]
pub(crate) struct Uploads {
    confirmed: HashMap<String, NativeFile>,
    pending: BTreeMap<u64, Vec<NativeFile>>,
    /// The newest checkpoint the backend was told completed: it and every
    /// older one are subsumed, whatever finishes or is notified later.
    latest_completed: u64,
}

impl Uploads {
    /// Checkpoint `id` completed: its SSTs are the ones later checkpoints
    /// reuse (if its upload finished); it and every older checkpoint are
    /// subsumed. A notification older than the newest one changes nothing.
    pub(crate) fn complete(&mut self, id: u64) {
        if id <= self.latest_completed {
            return;
        }
        self.latest_completed = id;
        if let Some(files) = self.pending.remove(&id) {
            self.confirmed = files.into_iter().map(|f| (f.name.clone(), f)).collect();
        }
        self.pending.retain(|&k, _| k > id);
    }

    /// The upload of checkpoint `id` finished with `files`; kept until it
    /// completes or is aborted, unless it is already subsumed.
    fn finished(&mut self, id: u64, files: Vec<NativeFile>) {
        if id > self.latest_completed {
            self.pending.insert(id, files);
        }
    }

    /// Checkpoint `id` failed: nothing it uploaded is reused.
    pub(crate) fn abort(&mut self, id: u64) {
        self.pending.remove(&id);
    }
}

/// Switches the memtables of `cfs` out for flushing, without waiting.
fn start_flush(inst: &DbInstance, cfs: &[String]) -> Result<()> {
    let handles = cfs
        .iter()
        .filter_map(|n| inst.db.cf_handle(n))
        .collect::<Vec<_>>();
    let mut opts = FlushOptions::default();
    opts.set_wait(false);
    inst.faults
        .check(FailPoint::CheckpointFlush, &inst.name, "flushing")?;
    inst.db
        .flush_cfs_opt(&handles.iter().collect::<Vec<_>>(), &opts)
        .map_err(rocks_err(&inst.name, "flushing"))
}

/// Waits until no column family of `cfs` has an immutable memtable left.
fn wait_flushed(inst: &DbInstance, cfs: &[String], cancel: Option<&Cancellation>) -> Result<()> {
    fn prop(
        inst: &DbInstance,
        cf: &impl rocksdb::AsColumnFamilyRef,
        name: &PropName,
    ) -> Result<u64> {
        inst.db
            .property_int_value_cf(cf, name)
            .map_err(rocks_err(&inst.name, "reading a property"))
            .map(Option::unwrap_or_default)
    }
    let mut pause = Duration::from_micros(100);
    for name in cfs {
        let Some(cf) = inst.db.cf_handle(name) else {
            continue;
        };
        while prop(inst, &cf, NUM_IMMUTABLE_MEM_TABLE)? > 0 {
            if let Some(c) = cancel {
                c.check("RocksDB checkpoint")?;
            }
            if prop(inst, &cf, BACKGROUND_ERRORS)? > 0 {
                return Err(Error::Engine {
                    engine: "RocksDB",
                    instance: inst.name.clone(),
                    operation: "flushing for a checkpoint".into(),
                    status: "a background flush or compaction failed".into(),
                    kind: ErrorKind::Io,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }
    Ok(())
}

/// What the asynchronous part of a native snapshot needs.
pub(crate) struct NativeSnapshot {
    pub(crate) capture: Arc<Capture>,
    pub(crate) meta: KeyedSnapshotMeta,
    pub(crate) uploads: Arc<Mutex<Uploads>>,
    pub(crate) checkpoint_id: u64,
    /// The largest list size bound at the barrier ([`crate::list_bound`]).
    pub(crate) list_bound: u64,
}

impl Drop for NativeSnapshot {
    fn drop(&mut self) {
        self.capture.abandon();
    }
}

impl NativeSnapshot {
    /// Captures the file set (unless the task already did) and uploads what
    /// is new.
    pub(crate) fn run(
        self,
        streams: &dyn CheckpointStreamFactory,
        cancel: &Cancellation,
    ) -> Result<IncrementalNativeStateHandle> {
        self.capture.take(Some(cancel))?;
        let dir = &self.capture.dir.0;
        crate::list_bound::write_file(dir, self.list_bound)?;
        let mut names = list_files(dir)?;
        names.sort();
        let confirmed: HashMap<String, NativeFile> = self
            .uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .confirmed
            .clone();
        let mut shared = Vec::new();
        let mut private = Vec::new();
        for name in names {
            cancel.check("RocksDB checkpoint upload")?;
            let path = dir.join(&name);
            if name.ends_with(".sst") {
                match confirmed.get(&name) {
                    Some(f) => shared.push(f.clone()),
                    None => shared.push(upload(&path, &name, streams, StreamScope::Shared)?),
                }
            } else {
                private.push(upload(&path, &name, streams, StreamScope::Exclusive)?);
            }
        }
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finished(self.checkpoint_id, shared.clone());
        let meta = &self.meta;
        Ok(IncrementalNativeStateHandle {
            checkpoint_id: self.checkpoint_id,
            backend: BACKEND_KIND.to_string(),
            format_version: NATIVE_FORMAT_VERSION,
            max_parallelism: meta.max_parallelism,
            range: meta.range,
            source_range: meta.range,
            key_codec: meta.key_codec.clone(),
            states: meta.states.clone(),
            shared,
            private,
        })
    }
}

fn list_files(dir: &Path) -> Result<Vec<String>> {
    let io = |e| Error::io(format!("listing {}", dir.display()), e);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

const COPY_CHUNK: usize = 256 * 1024;

/// Streams a local file into a checkpoint stream, computing its CRC32.
fn upload(
    path: &Path,
    name: &str,
    streams: &dyn CheckpointStreamFactory,
    scope: StreamScope,
) -> Result<NativeFile> {
    let mut out = streams.create_stream(scope)?;
    let crc32 = read_with_crc(path, |chunk| out.write_all(chunk))?;
    Ok(NativeFile {
        name: name.to_string(),
        data: out.close_and_get_handle()?,
        crc32,
    })
}

/// Checks a native handle's kind and version.
pub(crate) fn check_native(handle: &IncrementalNativeStateHandle, describe: &str) -> Result<()> {
    if handle.backend != BACKEND_KIND || handle.format_version != NATIVE_FORMAT_VERSION {
        return Err(Error::UnsupportedHandle {
            handle: describe.to_string(),
            reason: format!(
                "a native checkpoint of backend '{}' version {}; this backend reads '{}' version {}",
                handle.backend, handle.format_version, BACKEND_KIND, NATIVE_FORMAT_VERSION
            ),
        });
    }
    for f in handle.files() {
        if f.name.is_empty() || f.name.contains(['/', '\\']) || f.name.starts_with('.') {
            return Err(Error::Corrupted {
                file: f.data.describe(),
                offset: 0,
                reason: format!("invalid native file name '{}'", f.name),
            });
        }
    }
    Ok(())
}

/// Places the files of `handle` into `folder` (created), checking sizes and
/// checksums. Files are read through `files`; local SSTs are hard-linked
/// when possible, other files copied (RocksDB may rewrite them), remote ones
/// downloaded. A file of the same name, size and CRC32 already in one of the
/// local folders `reuse` (previous instances' folders on the same host) is
/// linked from there instead of being read again: local recovery.
pub(crate) fn materialize(
    handle: &IncrementalNativeStateHandle,
    folder: &Path,
    files: &dyn StateFileReader,
    reuse: &[PathBuf],
) -> Result<()> {
    std::fs::create_dir_all(folder)
        .map_err(|e| Error::io(format!("creating {}", folder.display()), e))?;
    for f in handle.files() {
        let dest = folder.join(&f.name);
        let needed_by = format!("checkpoint {}", handle.checkpoint_id);
        let source = match &f.data {
            StreamStateHandle::File { path, .. } => files.describe(path),
            other => other.describe(),
        };
        let unreadable = |source_error| Error::StateFileUnreadable {
            file: source.clone(),
            needed_by: needed_by.clone(),
            source: source_error,
        };
        match &f.data {
            StreamStateHandle::File { path, size } => {
                let reused = f.name.ends_with(".sst")
                    && reuse
                        .iter()
                        .any(|dir| reuse_local(&dir.join(&f.name), *size, f.crc32, &dest));
                if reused {
                    continue;
                }
                if let Some(local) = files.local_path(path) {
                    let actual = std::fs::metadata(&local).map_err(unreadable)?.len();
                    check_file_size(&source, *size, actual)?;
                    let linked =
                        f.name.ends_with(".sst") && std::fs::hard_link(&local, &dest).is_ok();
                    if !linked {
                        std::fs::copy(&local, &dest)
                            .map_err(|e| Error::io(format!("copying {source}"), e))?;
                    }
                } else {
                    let actual = files.download(path, &dest).map_err(unreadable)?;
                    check_file_size(&source, *size, actual)?;
                }
            }
            _ => {
                let bytes = f.data.read_with(files, &needed_by)?;
                let mut out = File::create(&dest)
                    .map_err(|e| Error::io(format!("writing {}", dest.display()), e))?;
                out.write_all(bytes.bytes())
                    .map_err(|e| Error::io(format!("writing {}", dest.display()), e))?;
            }
        }
        let actual = crc_of(&dest)?;
        if actual != f.crc32 {
            return Err(Error::ChecksumMismatch {
                file: source,
                offset: 0,
                expected: f.crc32,
                actual,
            });
        }
    }
    Ok(())
}

/// The other folders beside `folder`: earlier instances' working folders,
/// whose SSTs a restore on this host may reuse.
pub(crate) fn sibling_folders(folder: &Path) -> Vec<PathBuf> {
    let Some(parent) = folder.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.as_path() != folder && p.is_dir())
        .collect()
}

/// Links `candidate` to `dest` if it has `size` bytes and CRC32 `crc`.
fn reuse_local(candidate: &Path, size: u64, crc: u32, dest: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(candidate) else {
        return false;
    };
    meta.len() == size
        && crc_of(candidate).is_ok_and(|c| c == crc)
        && std::fs::hard_link(candidate, dest).is_ok()
}

fn crc_of(path: &Path) -> Result<u32> {
    read_with_crc(path, |_| Ok(()))
}

/// Reads a file in chunks, passing each to `sink`; returns its CRC32.
fn read_with_crc(path: &Path, mut sink: impl FnMut(&[u8]) -> Result<()>) -> Result<u32> {
    let io = |e| Error::io(format!("reading {}", path.display()), e);
    let mut file = File::open(path).map_err(io)?;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(crc.finalize());
        }
        crc.update(&buf[..n]);
        sink(&buf[..n])?;
    }
}

/// Drops every key group outside `keep` from the column families `cfs`:
/// whole SST files first, then a range tombstone for the rest.
pub(crate) fn clip(
    inst: &DbInstance,
    cfs: &[String],
    keep: KeyGroupRange,
    plen: usize,
) -> Result<()> {
    let below_upper = keys::prefix(keep.start(), plen);
    let above_lower = keys::prefix(keep.end_exclusive(), plen);
    // Every key starts with a key-group prefix below 0x80.
    let end = [0xFFu8];
    let mut opts = WriteOptions::default();
    opts.disable_wal(true);
    for name in cfs {
        let Some(cf) = inst.db.cf_handle(name) else {
            continue;
        };
        inst.faults.check(
            FailPoint::RestoreClip,
            &inst.name,
            "dropping key groups outside the range",
        )?;
        if keep.start() > 0 {
            inst.db
                .delete_file_in_range_cf(&cf, &[][..], &below_upper[..])
                .map_err(rocks_err(&inst.name, "dropping files outside the range"))?;
            inst.db
                .delete_range_cf_opt(&cf, &[][..], &below_upper[..], &opts)
                .map_err(rocks_err(
                    &inst.name,
                    "dropping key groups outside the range",
                ))?;
        }
        inst.db
            .delete_file_in_range_cf(&cf, &above_lower[..], &end[..])
            .map_err(rocks_err(&inst.name, "dropping files outside the range"))?;
        inst.db
            .delete_range_cf_opt(&cf, &above_lower[..], &end[..], &opts)
            .map_err(rocks_err(
                &inst.name,
                "dropping key groups outside the range",
            ))?;
    }
    Ok(())
}

/// Copies the key groups `range` of every column family of `source` into
/// `target`: each column family's entries (already sorted) are written into
/// one SST file in `scratch` with `sst_options` and ingested, which skips the
/// memtable and its flush.
#[allow(clippy::too_many_arguments)]
pub(crate) fn copy_key_groups(
    source: &Db,
    source_name: &str,
    target: &DbInstance,
    cfs: &[String],
    range: KeyGroupRange,
    plen: usize,
    sst_options: &Options,
    scratch: &Path,
) -> Result<()> {
    let lower = keys::prefix(range.start(), plen);
    let upper = keys::prefix(range.end_exclusive(), plen);
    for (i, name) in cfs.iter().enumerate() {
        let (Some(from), Some(to)) = (source.cf_handle(name), target.db.cf_handle(name)) else {
            continue;
        };
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(upper.clone());
        read.fill_cache(false);
        let mut it = source.raw_iterator_cf_opt(&from, read);
        it.seek(&lower);
        let path = scratch.join(format!("ingest-{i}.sst"));
        let mut writer = SstFileWriter::create(sst_options);
        let written = rocks_err(&target.name, "writing an SST to ingest");
        writer.open(&path).map_err(written)?;
        let mut any = false;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            writer
                .put(k, v)
                .map_err(rocks_err(&target.name, "writing an SST to ingest"))?;
            any = true;
            it.next();
        }
        it.status()
            .map_err(rocks_err(source_name, "reading a restored checkpoint"))?;
        if !any {
            continue;
        }
        writer
            .finish()
            .map_err(rocks_err(&target.name, "writing an SST to ingest"))?;
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        target.faults.check(
            FailPoint::RestoreIngest,
            &target.name,
            "ingesting restored key groups",
        )?;
        target
            .db
            .ingest_external_file_cf_opts(&to, &ingest, vec![&path])
            .map_err(rocks_err(&target.name, "ingesting restored key groups"))?;
    }
    Ok(())
}
