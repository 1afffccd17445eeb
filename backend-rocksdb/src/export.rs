//! Reading a native (incremental) RocksDB checkpoint without the job's
//! types, and converting it to the canonical keyed format.
//!
//! A native handle ([`IncrementalNativeStateHandle`]) is RocksDB's own files;
//! only this backend restores it. These functions open its files in a
//! temporary read-only instance and read its records in key-group order, as
//! canonical [`Record`]s: for tools that inspect a checkpoint, and to turn a
//! checkpoint into a savepoint that every backend restores.
//!
//! * [`for_each_native_record`] calls a function for every record of the
//!   key groups the handle covers.
//! * [`export_canonical`] writes them as one canonical keyed snapshot, the
//!   same bytes a savepoint of this backend holding that state writes (the
//!   two share the code that walks the instance).
//!
//! Both read only the handle's [`range`](IncrementalNativeStateHandle::range),
//! so a handle narrowed by [`KeyedStateHandle::intersection`] yields only its
//! own key groups. Every file's size and CRC32 are checked as a restore
//! checks them, and a damaged file or key is a typed error.
//!
//! ```
//! use std::path::Path;
//! use state_api::snapshot::handle::IncrementalNativeStateHandle;
//!
//! /// Counts the records of a native checkpoint, per state.
//! fn count(handle: &IncrementalNativeStateHandle, scratch: &Path) -> state_api::Result<Vec<u64>> {
//!     let mut counts = vec![0; handle.states.len()];
//!     backend_rocksdb::export::for_each_native_record(handle, scratch, &mut |_key_group, record| {
//!         counts[record.state as usize] += 1;
//!         Ok(())
//!     })?;
//!     Ok(counts)
//! }
//! ```

use std::path::Path;

use checkpoint_store::layout::unique_file_name;
use rocksdb::{Cache, ColumnFamilyDescriptor, ReadOptions};
use state_api::backend::registration::check_key_group;
use state_api::format::frame::Compression;
use state_api::format::keyed::{KeyedSnapshotMeta, KeyedSnapshotWriter, Record, RecordBody};
use state_api::snapshot::handle::{IncrementalNativeStateHandle, KeyedStateHandle};
use state_api::snapshot::stream::{CheckpointStreamFactory, LocalFiles, StreamScope};
use state_api::state::StorageShape;
use state_api::{Error, Result};

use crate::db::{column_family_options, rocks_err, Db, FolderGuard};
use crate::keys;
use crate::native;
use crate::options::RocksOptions;
use crate::snapshot::{scan_key_groups, write_entry, ScanEntry, Scanned};
use crate::store::list_elements;

/// Block cache of the temporary instance: reads are one sequential pass.
const SCAN_CACHE_BYTES: usize = 8 << 20;

/// The meta of the canonical snapshot [`export_canonical`] writes for
/// `handle`: its key codec, states (in the handle's order, so record state
/// indexes match) and max parallelism, for the key groups of
/// [`handle.range`](IncrementalNativeStateHandle::range).
pub fn canonical_meta(handle: &IncrementalNativeStateHandle) -> KeyedSnapshotMeta {
    KeyedSnapshotMeta {
        max_parallelism: handle.max_parallelism,
        range: handle.range,
        key_codec: handle.key_codec.clone(),
        states: handle.states.clone(),
        delta: false,
    }
}

/// Calls `f` for every record of the key groups of `handle.range`, in
/// key-group order, with the key group and the record as the canonical
/// format holds it: the state's index into `handle.states`, the encoded key
/// and namespace, and the body (a cell's value, a list's elements, or one
/// [`RecordBody::MapEntry`] per map entry). Within a key group, records come
/// state by state, each state's in RocksDB key order.
///
/// `work_dir` is a scratch folder the caller owns (created if missing): the
/// handle's files are placed into a new folder inside it (hard links where
/// possible) and opened read-only there; that folder is removed on return.
///
/// Errors, before any record: a handle of another backend or native format
/// version ([`Error::UnsupportedHandle`]); key-group ranges outside the max
/// parallelism (kind [`ErrorKind::InvalidArgument`]) or a `range` outside
/// `source_range`, a bad file name, a file whose size or CRC32 differs from
/// the handle's (kind [`ErrorKind::Corruption`]); a missing or unreadable
/// file (kind [`ErrorKind::Io`]); RocksDB failing to open the files. During
/// the walk: a damaged key, or a key stored under another key group than
/// its own (kind [`ErrorKind::Corruption`]), and any error `f` returns,
/// which stops the walk.
///
/// [`ErrorKind::InvalidArgument`]: state_api::ErrorKind::InvalidArgument
/// [`ErrorKind::Corruption`]: state_api::ErrorKind::Corruption
/// [`ErrorKind::Io`]: state_api::ErrorKind::Io
pub fn for_each_native_record(
    handle: &IncrementalNativeStateHandle,
    work_dir: &Path,
    f: &mut dyn FnMut(u32, Record<'_>) -> Result<()>,
) -> Result<()> {
    let native = NativeInstance::open(handle, work_dir)?;
    let name = native.name.as_str();
    native.scan(handle, &mut |item| match item {
        Scanned::KeyGroup(_) => Ok(()),
        Scanned::Entry(entry) => {
            let kg = entry.key.key_group;
            check_key_group(name, 0, entry.key.key, kg, handle.max_parallelism)?;
            f(kg, to_record(&entry, name)?)
        }
    })
}

/// Writes the key groups of `handle.range` as one canonical keyed snapshot
/// (the savepoint format) into a stream of `streams` of scope
/// [`StreamScope::Exclusive`], with `compression`, and returns its handle
/// ([`KeyedStateHandle::KeyGroups`], for `checkpoint_id`) with the meta of
/// [`canonical_meta`]. It restores on every backend, at any parallelism.
///
/// The bytes are those a savepoint of this backend holding the same state
/// writes with the same compression. `work_dir` and the errors are as for
/// [`for_each_native_record`]; the handle's files are checked before the
/// stream is created. A stream left unfinished by an error is not closed
/// (the factory's owner cleans up what it created).
pub fn export_canonical(
    handle: &IncrementalNativeStateHandle,
    work_dir: &Path,
    checkpoint_id: u64,
    streams: &dyn CheckpointStreamFactory,
    compression: Compression,
) -> Result<KeyedStateHandle> {
    let native = NativeInstance::open(handle, work_dir)?;
    let name = native.name.as_str();
    let out = streams.create_stream(StreamScope::Exclusive)?;
    let mut writer =
        KeyedSnapshotWriter::new(out, canonical_meta(handle), compression, checkpoint_id)?;
    native.scan(handle, &mut |item| match item {
        Scanned::KeyGroup(kg) => writer.start_key_group(kg),
        Scanned::Entry(entry) => {
            let kg = entry.key.key_group;
            check_key_group(name, 0, entry.key.key, kg, handle.max_parallelism)?;
            write_entry(&mut writer, &entry, name)
        }
    })?;
    Ok(writer.finish()?.into())
}

/// A scanned entry as a canonical record.
fn to_record<'a>(entry: &ScanEntry<'a>, db: &'a str) -> Result<Record<'a>> {
    let d = &entry.key;
    let body = match entry.shape {
        StorageShape::Cell => RecordBody::Cell(entry.value),
        StorageShape::List => {
            RecordBody::List(list_elements(entry.value, db).collect::<Result<Vec<_>>>()?)
        }
        StorageShape::Map => RecordBody::MapEntry {
            key: d.user_key,
            value: entry.value,
        },
    };
    Ok(Record {
        state: entry.state,
        key: d.key,
        namespace: d.namespace,
        body,
    })
}

/// A native checkpoint's files opened read-only in a scratch folder, which
/// is removed when this is dropped (after the instance closes).
struct NativeInstance {
    db: Db,
    /// Names the checkpoint in errors (its first file, as a restore does).
    name: String,
    _cache: Cache,
    _folder: FolderGuard,
}

impl NativeInstance {
    /// Checks `handle`, places its files into a new folder of `work_dir`
    /// and opens them.
    fn open(handle: &IncrementalNativeStateHandle, work_dir: &Path) -> Result<Self> {
        let name = handle
            .files()
            .next()
            .map(|f| f.data.describe())
            .unwrap_or_else(|| format!("native checkpoint {}", handle.checkpoint_id));
        check_handle(handle, &name)?;
        std::fs::create_dir_all(work_dir)
            .map_err(|e| Error::io(format!("creating {}", work_dir.display()), e))?;
        let folder = work_dir.join(format!(
            "native-{}-{}",
            handle.checkpoint_id,
            unique_file_name()
        ));
        let guard = FolderGuard(folder.clone());
        native::materialize(handle, &folder, &LocalFiles, &[])?;
        // Only reads: a small cache of its own, outside any memory budget.
        let options = RocksOptions::default().with_memory_per_instance();
        let cache = Cache::new_lru_cache(SCAN_CACHE_BYTES);
        let opts = column_family_options(&options, &cache);
        let names =
            Db::list_cf(&opts, &folder).map_err(rocks_err(&name, "listing column families"))?;
        let descriptors = names
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, column_family_options(&options, &cache)));
        let db = Db::open_cf_descriptors_read_only(&opts, &folder, descriptors, false)
            .map_err(rocks_err(&name, "opening a native checkpoint"))?;
        Ok(NativeInstance {
            db,
            name,
            _cache: cache,
            _folder: guard,
        })
    }

    /// Walks the key groups of `handle.range` (see
    /// [`crate::snapshot::scan_key_groups`]). A state without a column
    /// family holds nothing, as on restore.
    fn scan(
        &self,
        handle: &IncrementalNativeStateHandle,
        visit: &mut dyn FnMut(Scanned<'_>) -> Result<()>,
    ) -> Result<()> {
        let plen = keys::prefix_len(handle.max_parallelism);
        let upper = keys::prefix(handle.range.end_exclusive(), plen);
        let cfs: Vec<_> = handle
            .states
            .iter()
            .map(|s| self.db.cf_handle(&s.name))
            .collect();
        let mut iters: Vec<_> = cfs
            .iter()
            .map(|cf| {
                cf.as_ref().map(|cf| {
                    let mut read = ReadOptions::default();
                    read.fill_cache(false);
                    read.set_iterate_upper_bound(upper.clone());
                    self.db.raw_iterator_cf_opt(cf, read)
                })
            })
            .collect();
        scan_key_groups(
            &mut iters,
            &handle.states,
            handle.range,
            plen,
            &self.name,
            visit,
        )
    }
}

/// Checks the handle's kind, version, file names and key-group ranges.
fn check_handle(handle: &IncrementalNativeStateHandle, name: &str) -> Result<()> {
    native::check_native(handle, name)?;
    handle.source_range.check_within(handle.max_parallelism)?;
    if !handle.range.is_empty() && handle.range.intersection(&handle.source_range) != handle.range {
        return Err(Error::Corrupted {
            file: name.to_string(),
            offset: 0,
            reason: format!(
                "the handle covers key groups {} but its files hold {}",
                handle.range, handle.source_range
            ),
        });
    }
    Ok(())
}
