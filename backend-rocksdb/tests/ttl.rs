//! TTL cleanup reclaims disk space on RocksDB: 10,000 keys in a value, a
//! list and a map state expire, and a compaction through the TTL filter (or
//! `cleanup_expired`) brings the entries and the bytes of the instance's SST
//! files down by at least 99%. Run with `--nocapture` to see the figures.

use backend_rocksdb::keyed::RocksKeyedStateBackend;
use backend_rocksdb::RocksDbStateBackend;
use conformance_tests::cases::ttl::reclamation;
use state_api::state::ttl::TtlCleanup;
use state_api::{Error, KeyedStateBackend, Result};

const KEYS: u64 = 10_000;

fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| Error::io("tempdir", e))
}

/// Bytes of the SST files in the instance folder, after a compaction has
/// flushed every memtable.
fn sst_bytes(b: &mut RocksKeyedStateBackend<u64>) -> Result<u64> {
    b.compact()?;
    let mut total = 0;
    let dir = b.instance_folder();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("listing", e))? {
        let entry = entry.map_err(|e| Error::io("listing", e))?;
        if entry.path().extension().is_some_and(|e| e == "sst") {
            total += entry.metadata().map_err(|e| Error::io("stat", e))?.len();
        }
    }
    Ok(total)
}

fn only_filter(on: bool) -> TtlCleanup {
    TtlCleanup {
        full_snapshot: false,
        incremental: None,
        compaction_filter: on,
    }
}

#[test]
fn compaction_filter_reclaims_disk() -> Result<()> {
    let dir = tempdir()?;
    let backend =
        RocksDbStateBackend::new(&dir.path().join("work"), &dir.path().join("cp"), "job")?;
    let r = reclamation(
        &backend,
        KEYS,
        only_filter(true),
        |b, _| {
            b.compact()?;
            assert_eq!(
                b.ttl_filter_removed(),
                KEYS * 4,
                "values, lists and two map entries per key"
            );
            Ok(())
        },
        |b, _| sst_bytes(b),
    )?;
    println!("rocksdb, compaction filter: {r}");
    r.assert_reclaimed("compaction filter");
    Ok(())
}

#[test]
fn without_the_filter_compaction_keeps_expired_entries() -> Result<()> {
    let dir = tempdir()?;
    let backend =
        RocksDbStateBackend::new(&dir.path().join("work"), &dir.path().join("cp"), "job")?;
    let r = reclamation(
        &backend,
        1_000,
        only_filter(false),
        |b, _| b.compact(),
        |b, _| sst_bytes(b),
    )?;
    assert_eq!(r.entries_after, r.entries_before, "{r}");
    Ok(())
}

#[test]
fn explicit_cleanup_reclaims_disk() -> Result<()> {
    let dir = tempdir()?;
    let backend =
        RocksDbStateBackend::new(&dir.path().join("work"), &dir.path().join("cp"), "job")?;
    let r = reclamation(
        &backend,
        KEYS,
        only_filter(false),
        |b, _| {
            assert_eq!(b.cleanup_expired()?, KEYS * 5);
            Ok(())
        },
        |b, _| sst_bytes(b),
    )?;
    println!("rocksdb, cleanup_expired: {r}");
    r.assert_reclaimed("cleanup_expired");
    Ok(())
}
