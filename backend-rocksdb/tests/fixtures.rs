//! Golden fixtures of the RocksDB backend, committed under
//! `testdata/fixtures/v<N>/` and restored forever after (see
//! `conformance_tests::fixtures`): a native incremental checkpoint (SST files
//! shared between two checkpoints, plus the MANIFEST, CURRENT and OPTIONS
//! files of the second) and a canonical savepoint, which the heap backend
//! restores too; and the heap backends' savepoint fixtures restore here.
//!
//! Written once with `FLOWSTATE_WRITE_FIXTURES=1 cargo test -p
//! backend-rocksdb --test fixtures` (an existing fixture is never rewritten).

use std::path::{Path, PathBuf};

use backend_memory::MemoryStateBackend;
use backend_rocksdb::{RocksDbStateBackend, RocksOptions};
use checkpoint_store::{load_metadata, CheckpointConfig, LocalStorage, SnapshotKind};
use conformance_tests::fixtures::{check_fixture, restore_rounds, write_if_missing, KEYS};
use conformance_tests::rounds::{checkpoint, open, snapshot_all, write_round};
use state_api::format::frame::Compression;
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::snapshot::SnapshotOptions;
use state_api::{Error, Result};

fn rocks(dir: &Path) -> Result<RocksDbStateBackend> {
    RocksDbStateBackend::new(&dir.join("work"), &dir.join("checkpoints"), "job")?
        .with_options(RocksOptions::default())
        .with_inline_threshold(0)
}

fn restore_rocks(metadata_path: &Path, rounds: u64) -> Result<()> {
    let scratch = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
    restore_rounds(&rocks(scratch.path())?, metadata_path, rounds)
}

/// Rounds 1 and 2 at parallelism 1, checkpointed after each; returns the
/// second checkpoint's `_metadata`, or with `savepoint`, the `_metadata` of a
/// savepoint taken instead of the second checkpoint.
fn write_job(root: &Path, savepoint: bool) -> Result<PathBuf> {
    let backend = rocks(root)?;
    let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
    let mut job = open(&backend, 1, None)?;
    write_round(&mut job, 1, KEYS)?;
    checkpoint(&mut coordinator, &mut job)?;
    write_round(&mut job, 2, KEYS)?;
    if !savepoint {
        return Ok(checkpoint(&mut coordinator, &mut job)?.metadata_path);
    }
    let pending = coordinator.begin_savepoint(&root.join("savepoints"))?;
    let options = SnapshotOptions::savepoint(Compression::Zstd { level: 3 });
    let states = snapshot_all(&mut job, &pending, options)?;
    let dir = coordinator.complete_savepoint(pending.id, states)?;
    Ok(dir.join("_metadata"))
}

#[test]
fn native_incremental_checkpoint_fixture() -> Result<()> {
    write_if_missing("rocksdb-incremental", |root| write_job(root, false))?;
    check_fixture("rocksdb-incremental", |m| {
        let metadata = load_metadata(&LocalStorage, m)?;
        let [KeyedStateHandle::IncrementalNative(native)] =
            &metadata.operators[0].subtasks[0].keyed[..]
        else {
            panic!("a native handle");
        };
        assert_eq!(native.checkpoint_id, 2);
        assert!(
            !native.shared.is_empty() && !native.private.is_empty(),
            "shared SSTs and private files"
        );
        restore_rocks(m, 2)
    })
}

#[test]
fn rocksdb_savepoint_fixture() -> Result<()> {
    write_if_missing("savepoint-rocksdb", |root| write_job(root, true))?;
    check_fixture("savepoint-rocksdb", |m| {
        let metadata = load_metadata(&LocalStorage, m)?;
        assert_eq!(metadata.kind, SnapshotKind::Savepoint);
        for s in &metadata.operators[0].subtasks {
            assert!(matches!(s.keyed[..], [KeyedStateHandle::KeyGroups(_)]));
        }
        restore_rocks(m, 2)?;
        restore_rounds(&MemoryStateBackend::new(), m, 2)
    })
}

/// The heap backends' savepoints restore on RocksDB.
#[test]
fn heap_savepoint_fixtures_restore_on_rocksdb() -> Result<()> {
    check_fixture("savepoint-memory", |m| restore_rocks(m, 2))?;
    check_fixture("savepoint-fs", |m| restore_rocks(m, 2))
}

/// A savepoint of states with TTL (format version 3 on), written by
/// RocksDB: restored here (with the heap backends' too), timestamps intact.
#[test]
fn ttl_savepoint_fixtures() -> Result<()> {
    use conformance_tests::fixtures::{restore_ttl_savepoint, write_ttl_savepoint};
    write_if_missing("savepoint-ttl-rocksdb", |root| {
        write_ttl_savepoint(&rocks(&root.join("work"))?, root)
    })?;
    for name in [
        "savepoint-ttl-rocksdb",
        "savepoint-ttl-memory",
        "savepoint-ttl-fs",
    ] {
        check_fixture(name, |m| {
            let scratch = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
            restore_ttl_savepoint(&rocks(scratch.path())?, m)
        })?;
    }
    Ok(())
}

/// A savepoint holding timers (format version 3 on), written by RocksDB:
/// restored here, with the heap backends'; every timer fires once.
#[test]
fn timer_savepoint_fixtures() -> Result<()> {
    use conformance_tests::fixtures::{restore_timer_savepoint, write_timer_savepoint};
    write_if_missing("savepoint-timers-rocksdb", |root| {
        write_timer_savepoint(&rocks(&root.join("work"))?, root)
    })?;
    for name in [
        "savepoint-timers-rocksdb",
        "savepoint-timers-memory",
        "savepoint-timers-fs",
    ] {
        check_fixture(name, |m| {
            let scratch = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
            restore_timer_savepoint(&rocks(scratch.path())?, m)
        })?;
    }
    Ok(())
}
