//! The RocksDB engine layer the backend and its checkpoints share: an
//! instance and its folder, column-family options (merge operator, bloom
//! filters, the memory budget's cache), opening an instance, handles that
//! borrow it, and RocksDB errors classified by their status.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, MergeOperands,
    MultiThreaded, Options,
};
use state_api::{Error, ErrorKind, Result};

use crate::fault::Faults;
use crate::memory::{MemoryBudget, MemoryMode};
use crate::options::RocksOptions;
use crate::ttl::TtlFilters;

pub(crate) type Db = rocksdb::DBWithThreadMode<MultiThreaded>;

/// Name of the merge operator that appends list elements.
const LIST_MERGE_OPERATOR: &str = "flowstate-list-append";

/// A RocksDB instance and its working folder, removed when the last user
/// (the backend or a running snapshot) drops it.
pub(crate) struct DbInstance {
    pub(crate) db: Db,
    /// Options of the column families created after opening. RocksDB keeps
    /// a raw pointer to their compaction filter (owned by the options), so
    /// they must outlive `db`, which is dropped first (declared first).
    pub(crate) created_cf_options: std::sync::Mutex<Vec<Options>>,
    pub(crate) name: String,
    /// Failure points of tests.
    pub(crate) faults: Faults,
    folder: FolderGuard,
}

impl DbInstance {
    /// The instance's working folder.
    pub(crate) fn folder(&self) -> &Path {
        &self.folder.0
    }
}

pub(crate) type Snap<'a> = rocksdb::SnapshotWithThreadMode<'a, Db>;

pub(crate) type CfList<'a> = Vec<Arc<rocksdb::BoundColumnFamily<'a>>>;

self_cell::self_cell!(
    /// The database with the column-family handles of the registered states,
    /// in registration order, so an access does not look a handle up by name.
    pub(crate) struct DbHandles {
        owner: Arc<DbInstance>,
        #[covariant]
        dependent: CfList,
    }
);

self_cell::self_cell!(
    /// A RocksDB snapshot that owns a reference to its database, so that the
    /// asynchronous part of a snapshot can run on another thread.
    pub(crate) struct DbSnapshot {
        owner: Arc<DbInstance>,
        #[covariant]
        dependent: Snap,
    }
);

/// Wraps a RocksDB error; the message is only formatted when there is one
/// (this sits on every access).
pub(crate) fn rocks_err<'a>(
    db: &'a str,
    what: &'a str,
) -> impl FnOnce(rocksdb::Error) -> Error + 'a {
    move |e| {
        let kind = e.kind();
        engine_error(db, what, &kind, e.into_string())
    }
}

/// The error of a failed RocksDB call: the instance, the operation and
/// RocksDB's status text, classified by [`status_kind`].
#[cold]
pub(crate) fn engine_error(
    db: &str,
    what: &str,
    kind: &rocksdb::ErrorKind,
    status: String,
) -> Error {
    Error::Engine {
        engine: "RocksDB",
        instance: db.to_string(),
        operation: what.to_string(),
        status,
        kind: status_kind(kind),
    }
}

/// What a caller can do about a RocksDB status.
///
/// * `Corruption`, and a column family that was dropped under the backend:
///   the instance's files are damaged or incomplete, so restore from a
///   checkpoint ([`ErrorKind::Corruption`]).
/// * `InvalidArgument`: RocksDB refused the request itself, e.g. options it
///   cannot honour ([`ErrorKind::InvalidArgument`]).
/// * `NotSupported`: intact files that need something this build lacks (a
///   table format version, a compression library). The backend never issues
///   an operation a mode does not support (it writes only to instances it
///   opened for writing), so this comes from opening files written elsewhere
///   ([`ErrorKind::IncompatibleFormat`]).
/// * `ShutdownInProgress`: the instance is closing ([`ErrorKind::Closed`]).
/// * `IOError`, `NotFound` (a file RocksDB expected is gone), and the
///   transient statuses `Busy`, `Incomplete`, `TimedOut`, `TryAgain`,
///   `Aborted`, `Expired`, plus any status RocksDB adds later:
///   [`ErrorKind::Io`]. The transient ones are failures of the storage layer
///   that are neither damage nor the caller's mistake, and the caller's
///   choice is the one it has for I/O: retry, or fail over to the last
///   checkpoint; [`ErrorKind`] has no separate transient kind.
pub(crate) fn status_kind(kind: &rocksdb::ErrorKind) -> ErrorKind {
    use rocksdb::ErrorKind as Status;
    match kind {
        Status::Corruption | Status::ColumnFamilyDropped => ErrorKind::Corruption,
        Status::InvalidArgument => ErrorKind::InvalidArgument,
        Status::NotSupported => ErrorKind::IncompatibleFormat,
        Status::ShutdownInProgress => ErrorKind::Closed,
        Status::IOError
        | Status::NotFound
        | Status::Busy
        | Status::Incomplete
        | Status::TimedOut
        | Status::TryAgain
        | Status::Aborted
        | Status::Expired
        | Status::MergeInProgress
        | Status::CompactionTooLarge
        | Status::Unknown => ErrorKind::Io,
    }
}

fn list_append(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let extra: usize = operands.iter().map(<[u8]>::len).sum();
    let mut out = Vec::with_capacity(existing.map_or(0, <[u8]>::len) + extra);
    if let Some(e) = existing {
        out.extend_from_slice(e);
    }
    for op in operands.iter() {
        out.extend_from_slice(op);
    }
    Some(out)
}

pub(crate) fn column_family_options(options: &RocksOptions, cache: &Cache) -> Options {
    let mut o = Options::default();
    o.set_merge_operator_associative(LIST_MERGE_OPERATOR, list_append);
    o.set_compression_type(DBCompressionType::Lz4);
    o.set_write_buffer_size(options.write_buffer_bytes);
    if options.memtable_bloom_ratio > 0.0 {
        o.set_memtable_prefix_bloom_ratio(options.memtable_bloom_ratio);
        o.set_memtable_whole_key_filtering(true);
    }
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    if !matches!(options.memory, MemoryMode::PerInstance) {
        // Under a budget, index and filter blocks live in the shared cache
        // too (counted and evictable) instead of in each table reader; those
        // of L0 files, read by every lookup, stay pinned there.
        table.set_cache_index_and_filter_blocks(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        // Partitioned: a file's index and filter are split into blocks of
        // about 4 KiB under a small top level that stays pinned. Whole, the
        // filter of one large SST is megabytes, and once data blocks evict
        // it every lookup in that file reads it back from disk (9 MB per get
        // was seen at 20,000,000 keys).
        table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
    }
    if options.bloom_bits_per_key > 0.0 {
        table.set_bloom_filter(options.bloom_bits_per_key, false);
    }
    o.set_block_based_table_factory(&table);
    o
}

/// The database options of an instance and the block cache its column
/// families use: the budget's cache and write buffer manager with `budget`,
/// else a cache of its own.
fn instance_options(options: &RocksOptions, budget: Option<&MemoryBudget>) -> (Options, Cache) {
    let cache = match budget {
        Some(b) => b.cache().clone(),
        None => Cache::new_lru_cache(options.block_cache_bytes),
    };
    let mut db_opts = column_family_options(options, &cache);
    if let Some(b) = budget {
        db_opts.set_write_buffer_manager(b.write_buffer_manager());
    }
    db_opts.create_missing_column_families(true);
    // Checkpoints flush without waiting; leave room for a switched memtable.
    db_opts.set_max_write_buffer_number(4);
    (db_opts, cache)
}

/// The options an instance of the backend opens RocksDB with under
/// `options`, and the options of its column families (one per state).
///
/// For baselines and tools that must run RocksDB exactly as the backend
/// does: same compression, bloom filters, block cache (the memory budget's
/// under [`MemoryMode::ProcessDefault`] or [`MemoryMode::Budget`]), memtable
/// size, merge operator and write buffer manager. The backend writes with
/// [`engine_write_options`]. The database options create missing databases
/// and column families.
pub fn engine_options(options: &RocksOptions) -> (Options, Options) {
    let budget = options.memory.budget();
    let (mut db, cache) = instance_options(options, budget.as_ref());
    db.create_if_missing(true);
    let cf = column_family_options(options, &cache);
    (db, cf)
}

/// The write options of every write of the backend: no write-ahead log,
/// since durability comes from checkpoints.
pub fn engine_write_options() -> rocksdb::WriteOptions {
    let mut w = rocksdb::WriteOptions::default();
    w.disable_wal(true);
    w
}

/// Opens the instance in `folder`: a fresh one, or with `existing` the
/// database already placed there (a restored checkpoint), with all its
/// column families; with `budget` its cache and memtables are the budget's.
pub(crate) fn open_instance(
    folder: &Path,
    options: &RocksOptions,
    budget: Option<&MemoryBudget>,
    existing: bool,
    filters: &TtlFilters,
) -> Result<(Arc<DbInstance>, Cache)> {
    std::fs::create_dir_all(folder)
        .map_err(|e| Error::io(format!("creating {}", folder.display()), e))?;
    let name = folder.display().to_string();
    let (mut db_opts, cache) = instance_options(options, budget);
    db_opts.create_if_missing(!existing);
    let cfs = if existing {
        Db::list_cf(&db_opts, folder).map_err(rocks_err(&name, "listing column families"))?
    } else {
        Vec::new()
    };
    let descriptors = cfs.into_iter().map(|n| {
        let mut o = column_family_options(options, &cache);
        filters.install(&mut o, &n);
        ColumnFamilyDescriptor::new(n, o)
    });
    let db =
        Db::open_cf_descriptors(&db_opts, folder, descriptors).map_err(rocks_err(&name, "open"))?;
    Ok((
        Arc::new(DbInstance {
            db,
            created_cf_options: std::sync::Mutex::default(),
            name,
            faults: options.faults.clone(),
            folder: FolderGuard(folder.to_path_buf()),
        }),
        cache,
    ))
}

/// Removes a folder when dropped.
pub(crate) struct FolderGuard(pub(crate) PathBuf);

impl Drop for FolderGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rocksdb_status_has_the_documented_kind() {
        use rocksdb::ErrorKind as Status;
        let table = [
            (Status::Corruption, ErrorKind::Corruption),
            (Status::ColumnFamilyDropped, ErrorKind::Corruption),
            (Status::InvalidArgument, ErrorKind::InvalidArgument),
            (Status::NotSupported, ErrorKind::IncompatibleFormat),
            (Status::ShutdownInProgress, ErrorKind::Closed),
            (Status::IOError, ErrorKind::Io),
            (Status::NotFound, ErrorKind::Io),
            (Status::Busy, ErrorKind::Io),
            (Status::Incomplete, ErrorKind::Io),
            (Status::TimedOut, ErrorKind::Io),
            (Status::TryAgain, ErrorKind::Io),
            (Status::Aborted, ErrorKind::Io),
            (Status::Expired, ErrorKind::Io),
            (Status::MergeInProgress, ErrorKind::Io),
            (Status::CompactionTooLarge, ErrorKind::Io),
            (Status::Unknown, ErrorKind::Io),
        ];
        for (status, kind) in table {
            assert_eq!(status_kind(&status), kind, "{status:?}");
            let e = engine_error("db", "op", &status, "text".into());
            assert_eq!(e.kind(), kind, "{status:?}");
        }
    }

    /// The error of a RocksDB call keeps the instance, the operation and the
    /// status text apart.
    fn check(result: std::result::Result<Db, rocksdb::Error>, kind: ErrorKind, prefix: &str) {
        let Err(e) = result.map(drop).map_err(rocks_err("inst", "open")) else {
            panic!("expected a {prefix} status");
        };
        assert_eq!(e.kind(), kind, "{e}");
        match &e {
            Error::Engine {
                engine,
                instance,
                operation,
                status,
                ..
            } => {
                assert_eq!(
                    (*engine, instance.as_str(), operation.as_str()),
                    ("RocksDB", "inst", "open")
                );
                assert!(status.starts_with(prefix), "{status}");
            }
            other => panic!("expected Error::Engine, got {other:?}"),
        }
        assert!(
            e.to_string().starts_with("RocksDB inst: open failed: "),
            "{e}"
        );
    }

    #[test]
    fn statuses_of_real_rocksdb_failures_are_classified() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("db");
        let mut opts = Options::default();

        // Opening a missing instance without create_if_missing.
        check(
            Db::open(&opts, &path),
            ErrorKind::InvalidArgument,
            "Invalid argument",
        );

        // Opening an instance another handle holds: its lock file is taken.
        opts.create_if_missing(true);
        let held = Db::open(&opts, &path).expect("opens");
        check(Db::open(&opts, &path), ErrorKind::Io, "IO error");
        drop(held);

        // A damaged CURRENT file.
        std::fs::write(path.join("CURRENT"), b"MANIFEST-garbage").expect("writes");
        check(Db::open(&opts, &path), ErrorKind::Corruption, "Corruption");
    }
}
