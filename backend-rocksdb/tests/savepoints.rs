//! Canonical savepoints move state between every backend: memory -> rocksdb
//! -> fs -> rocksdb -> memory, at changing parallelism, with equal contents
//! at each step.

use backend_fs::FsStateBackend;
use backend_memory::MemoryStateBackend;
use backend_rocksdb::RocksDbStateBackend;
use checkpoint_store::{load_metadata, CheckpointConfig, LocalStorage, OperatorState};
use conformance_tests::rounds::{model_after, open, read, snapshot_all, write_round, OPERATOR};
use state_api::snapshot::SnapshotOptions;
use state_api::{Error, KeyedStateBackend, Result, StateBackend};

const KEYS: u64 = 300;

fn savepoint<S: StateBackend>(
    backend: &S,
    coordinator: &mut checkpoint_store::CheckpointCoordinator,
    dir: &std::path::Path,
    job: &mut [conformance_tests::rounds::Subtask<S::Keyed<u64>>],
) -> Result<Vec<OperatorState>> {
    let _ = backend;
    let pending = coordinator.begin_savepoint(dir)?;
    let states = snapshot_all(
        job,
        &pending,
        SnapshotOptions::savepoint(Default::default()),
    )?;
    let path = coordinator.complete_savepoint(pending.id, states)?;
    Ok(load_metadata(&LocalStorage, &path)?.operators)
}

#[test]
fn savepoints_move_state_through_every_backend() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
    let sp = dir.path().join("savepoints");
    let fs = FsStateBackend::new(&dir.path().join("chk"), "fs")?.with_incremental(true);
    let rocks =
        RocksDbStateBackend::new(&dir.path().join("rocks"), &dir.path().join("chk"), "rocks")?;
    let memory = MemoryStateBackend::new();
    let mut coordinator = fs.coordinator(CheckpointConfig::default())?;

    let mut job = open(&memory, 2, None)?;
    write_round(&mut job, 1, KEYS)?;
    let ops = savepoint(&memory, &mut coordinator, &sp, &mut job)?;

    let mut job = open(&rocks, 3, ops.iter().find(|o| o.operator_id == OPERATOR))?;
    assert_eq!(
        read(&mut job, KEYS)?,
        model_after(1, KEYS),
        "memory -> rocksdb"
    );
    write_round(&mut job, 2, KEYS)?;
    let ops = savepoint(&rocks, &mut coordinator, &sp, &mut job)?;

    let mut job = open(&fs, 1, ops.iter().find(|o| o.operator_id == OPERATOR))?;
    assert_eq!(read(&mut job, KEYS)?, model_after(2, KEYS), "rocksdb -> fs");
    write_round(&mut job, 3, KEYS)?;
    let ops = savepoint(&fs, &mut coordinator, &sp, &mut job)?;

    let mut job = open(&rocks, 2, ops.iter().find(|o| o.operator_id == OPERATOR))?;
    assert_eq!(read(&mut job, KEYS)?, model_after(3, KEYS), "fs -> rocksdb");
    write_round(&mut job, 4, KEYS)?;
    let ops = savepoint(&rocks, &mut coordinator, &sp, &mut job)?;

    let mut job = open(&memory, 4, ops.iter().find(|o| o.operator_id == OPERATOR))?;
    assert_eq!(
        read(&mut job, KEYS)?,
        model_after(4, KEYS),
        "rocksdb -> memory"
    );
    for s in job.iter_mut() {
        s.keyed.close();
    }
    Ok(())
}
