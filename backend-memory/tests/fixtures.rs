//! Golden fixture of the heap backend, committed under
//! `testdata/fixtures/v<N>/savepoint-memory/` and restored forever after
//! (see `conformance_tests::fixtures`): a canonical savepoint whose state is
//! small enough to be inlined whole into its `_metadata`. (backend-fs
//! restores it too, and this backend restores backend-fs's savepoint.)
//!
//! Written once with `FLOWSTATE_WRITE_FIXTURES=1 cargo test -p
//! backend-memory --test fixtures` (an existing fixture is never rewritten).

use std::path::Path;
use std::sync::Arc;

use backend_memory::MemoryStateBackend;
use checkpoint_store::{
    load_metadata, CheckpointConfig, CheckpointCoordinator, LocalStorage, SnapshotKind,
};
use conformance_tests::fixtures::{check_fixture, restore_rounds, write_if_missing, KEYS};
use conformance_tests::rounds::{checkpoint, open, snapshot_all, write_round};
use state_api::format::frame::Compression;
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::snapshot::stream::StreamStateHandle;
use state_api::snapshot::SnapshotOptions;
use state_api::Result;

fn restore(metadata_path: &Path, rounds: u64) -> Result<()> {
    restore_rounds(&MemoryStateBackend::new(), metadata_path, rounds)
}

#[test]
fn memory_savepoint_fixture() -> Result<()> {
    write_if_missing("savepoint-memory", |root| {
        let backend = MemoryStateBackend::new();
        let mut coordinator = CheckpointCoordinator::open(
            Arc::new(LocalStorage),
            root,
            "job",
            CheckpointConfig::default(),
        )?;
        let mut job = open(&backend, 2, None)?;
        write_round(&mut job, 1, KEYS)?;
        checkpoint(&mut coordinator, &mut job)?;
        write_round(&mut job, 2, KEYS)?;
        let pending = coordinator.begin_savepoint(&root.join("savepoints"))?;
        let states = snapshot_all(
            &mut job,
            &pending,
            SnapshotOptions::savepoint(Compression::None),
        )?;
        let dir = coordinator.complete_savepoint(pending.id, states)?;
        Ok(dir.join("_metadata"))
    })?;
    check_fixture("savepoint-memory", |m| {
        let metadata = load_metadata(&LocalStorage, m)?;
        assert_eq!(metadata.kind, SnapshotKind::Savepoint);
        for s in &metadata.operators[0].subtasks {
            let [KeyedStateHandle::KeyGroups(h)] = &s.keyed[..] else {
                panic!("a canonical full snapshot: {:?}", s.keyed);
            };
            assert!(
                matches!(h.data, StreamStateHandle::InMemory { .. }),
                "inlined into the metadata"
            );
        }
        restore(m, 2)
    })
}

/// backend-fs's savepoint (files, zstd frames) restores on the heap backend.
#[test]
fn fs_savepoint_fixture_restores_on_the_heap_backend() -> Result<()> {
    check_fixture("savepoint-fs", |m| restore(m, 2))
}

/// A savepoint of states with TTL (format version 3 on): restored here, and
/// the file backend's restores here too, with their timestamps.
#[test]
fn ttl_savepoint_fixtures() -> Result<()> {
    use conformance_tests::fixtures::{restore_ttl_savepoint, write_ttl_savepoint};
    write_if_missing("savepoint-ttl-memory", |root| {
        write_ttl_savepoint(&MemoryStateBackend::new(), root)
    })?;
    check_fixture("savepoint-ttl-memory", |m| {
        restore_ttl_savepoint(&MemoryStateBackend::new(), m)
    })?;
    check_fixture("savepoint-ttl-fs", |m| {
        restore_ttl_savepoint(&MemoryStateBackend::new(), m)
    })
}

/// A savepoint holding timers (format version 3 on): restored here, with
/// the file backend's and RocksDB's; every timer fires once.
#[test]
fn timer_savepoint_fixtures() -> Result<()> {
    use conformance_tests::fixtures::{restore_timer_savepoint, write_timer_savepoint};
    write_if_missing("savepoint-timers-memory", |root| {
        write_timer_savepoint(&MemoryStateBackend::new(), root)
    })?;
    for name in [
        "savepoint-timers-memory",
        "savepoint-timers-fs",
        "savepoint-timers-rocksdb",
    ] {
        check_fixture(name, |m| {
            restore_timer_savepoint(&MemoryStateBackend::new(), m)
        })?;
    }
    Ok(())
}
