//! Golden fixtures of the file backend, committed under
//! `testdata/fixtures/v<N>/` and restored forever after (see
//! `conformance_tests::fixtures`): a full checkpoint, an incremental chain
//! (a base and two deltas in `shared/`), a canonical savepoint, and a
//! checkpoint of operator state in every distribution mode (list, union,
//! broadcast) with raw keyed and raw operator state. The savepoints of both
//! heap backends restore on both.
//!
//! Written once with `FLOWSTATE_WRITE_FIXTURES=1 cargo test -p backend-fs
//! --test fixtures` (an existing fixture is never rewritten).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use backend_fs::FsStateBackend;
use backend_memory::heap::IncrementalOptions;
use backend_memory::MemoryStateBackend;
use checkpoint_store::{
    load_metadata, CheckpointConfig, LocalStorage, OperatorState, SnapshotKind, SubtaskState,
};
use conformance_tests::fixtures::{check_fixture, restore_rounds, write_if_missing, KEYS};
use conformance_tests::rounds::{checkpoint, open, snapshot_all, write_round};
use state_api::format::frame::Compression;
use state_api::snapshot::handle::{KeyedStateHandle, OperatorStateHandle};
use state_api::snapshot::raw::{
    read_raw_keyed_state, read_raw_operator_state, write_raw_operator_state, RawKeyedStateWriter,
};
use state_api::snapshot::rescale::{assign_keyed_state, assign_operator_state};
use state_api::snapshot::SnapshotOptions;
use state_api::state::descriptor::{ListStateDescriptor, MapStateDescriptor};
use state_api::{
    DefaultOperatorStateBackend, Error, KeyGroupRange, OperatorStateBackend, Result, StateBackend,
};

fn fs(dir: &Path, incremental: bool) -> Result<FsStateBackend> {
    let backend = FsStateBackend::new(dir, "job")?.with_inline_threshold(0)?;
    Ok(if incremental {
        // Deltas stay deltas however much of the small state a round changes.
        backend.with_incremental_options(IncrementalOptions {
            max_deltas: 4,
            max_delta_ratio: 100.0,
        })
    } else {
        backend.with_incremental(false)
    })
}

fn restore_fs(metadata_path: &Path, rounds: u64) -> Result<()> {
    let scratch = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
    restore_rounds(&fs(scratch.path(), true)?, metadata_path, rounds)
}

fn restore_memory(metadata_path: &Path, rounds: u64) -> Result<()> {
    restore_rounds(&MemoryStateBackend::new(), metadata_path, rounds)
}

/// Rounds 1..=`rounds` at parallelism 2, checkpointed after each; returns
/// the last checkpoint's `_metadata`.
fn write_checkpoints(root: &Path, incremental: bool, rounds: u64) -> Result<PathBuf> {
    let backend = fs(root, incremental)?;
    let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
    let mut job = open(&backend, 2, None)?;
    let mut last = None;
    for r in 1..=rounds {
        write_round(&mut job, r, KEYS)?;
        last = Some(checkpoint(&mut coordinator, &mut job)?.metadata_path);
    }
    last.ok_or_else(|| Error::InvalidArgument {
        what: "no round".into(),
    })
}

#[test]
fn full_fs_checkpoint_fixture() -> Result<()> {
    write_if_missing("fs-full", |root| write_checkpoints(root, false, 2))?;
    check_fixture("fs-full", |m| {
        let metadata = load_metadata(&LocalStorage, m)?;
        assert_eq!(metadata.kind, SnapshotKind::Checkpoint);
        for s in &metadata.operators[0].subtasks {
            assert!(matches!(s.keyed[..], [KeyedStateHandle::KeyGroups(_)]));
        }
        restore_fs(m, 2)
    })
}

#[test]
fn incremental_fs_chain_fixture() -> Result<()> {
    write_if_missing("fs-incremental", |root| write_checkpoints(root, true, 3))?;
    check_fixture("fs-incremental", |m| {
        let metadata = load_metadata(&LocalStorage, m)?;
        for s in &metadata.operators[0].subtasks {
            let [KeyedStateHandle::IncrementalHeap(chain)] = &s.keyed[..] else {
                panic!("an incremental chain: {:?}", s.keyed);
            };
            assert_eq!(chain.checkpoint_id, 3);
            assert_eq!(chain.base.checkpoint_id, 1, "the base is checkpoint 1's");
            let deltas: Vec<u64> = chain.deltas.iter().map(|d| d.checkpoint_id).collect();
            assert_eq!(deltas, vec![2, 3], "a delta per later checkpoint");
        }
        restore_fs(m, 3)
    })
}

#[test]
fn fs_savepoint_fixture() -> Result<()> {
    write_if_missing("savepoint-fs", |root| {
        let backend = fs(root, true)?;
        let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
        let mut job = open(&backend, 2, None)?;
        write_round(&mut job, 1, KEYS)?;
        checkpoint(&mut coordinator, &mut job)?;
        write_round(&mut job, 2, KEYS)?;
        let pending = coordinator.begin_savepoint(&root.join("savepoints"))?;
        let options = SnapshotOptions::savepoint(Compression::Zstd { level: 3 });
        let states = snapshot_all(&mut job, &pending, options)?;
        let dir = coordinator.complete_savepoint(pending.id, states)?;
        Ok(dir.join("_metadata"))
    })?;
    check_fixture("savepoint-fs", |m| {
        let metadata = load_metadata(&LocalStorage, m)?;
        assert_eq!(metadata.kind, SnapshotKind::Savepoint);
        restore_fs(m, 2)?;
        restore_memory(m, 2)
    })
}

/// The heap backend's savepoint (written by backend-memory's fixture test)
/// restores on the file backend too.
#[test]
fn memory_savepoint_fixture_restores_on_the_file_backend() -> Result<()> {
    check_fixture("savepoint-memory", |m| restore_fs(m, 2))
}

/// The operator of the operator-and-raw fixture.
const RAW_OPERATOR: &str = "operator-and-raw";
const RAW_MAX_P: u32 = 128;

fn rules() -> HashMap<String, u32> {
    HashMap::from([("rule1".to_string(), 1), ("rule2".to_string(), 2)])
}

/// Split list state of old subtask `i`.
fn offsets_of(i: u32) -> Vec<(u32, u64)> {
    (0..3u64).map(|j| (i, j * 10 + 5)).collect()
}

/// Raw keyed state: two chunks in every 16th key group.
fn raw_keyed_expected() -> BTreeMap<u32, Vec<Vec<u8>>> {
    (0..RAW_MAX_P)
        .step_by(16)
        .map(|kg| (kg, vec![format!("kg{kg}").into_bytes(), vec![kg as u8; 3]]))
        .collect()
}

/// Raw operator state of old subtask `i`.
fn raw_operator_of(i: u32) -> Vec<Vec<u8>> {
    vec![
        format!("raw-{i}-a").into_bytes(),
        format!("raw-{i}-b").into_bytes(),
    ]
}

#[test]
fn operator_and_raw_state_fixture() -> Result<()> {
    write_if_missing("operator-and-raw", |root| {
        let backend = fs(root, false)?;
        let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
        let pending = coordinator.begin_checkpoint()?;
        let mut subtasks = Vec::new();
        for i in 0..2u32 {
            let mut op = backend.create_operator_backend(&[])?;
            let offsets = op.list_state(&ListStateDescriptor::<(u32, u64)>::new("offsets"))?;
            op.list(&offsets)?.extend(offsets_of(i));
            let seen = op.union_list_state(&ListStateDescriptor::<String>::new("seen"))?;
            op.list(&seen)?.push(format!("seen-by-{i}"));
            let broadcast = op.broadcast_state(&MapStateDescriptor::<String, u32>::new("rules"))?;
            op.broadcast(&broadcast)?.extend(rules());
            let operator = op
                .snapshot(
                    pending.id,
                    pending.streams.clone(),
                    SnapshotOptions::default(),
                )?
                .run()?;
            let range = KeyGroupRange::for_operator(RAW_MAX_P, 2, i)?;
            let mut raw = RawKeyedStateWriter::new(
                &*pending.streams,
                RAW_MAX_P,
                range,
                pending.id,
                Compression::None,
            )?;
            for (kg, chunks) in raw_keyed_expected() {
                if range.contains(kg) {
                    raw.start_key_group(kg)?;
                    for c in chunks {
                        raw.write(&c)?;
                    }
                }
            }
            let raw_operator =
                write_raw_operator_state(&*pending.streams, raw_operator_of(i), pending.id)?;
            subtasks.push(SubtaskState {
                operator: operator.into_iter().collect(),
                raw_keyed: vec![raw.finish()?],
                raw_operator: raw_operator.into_iter().collect(),
                ..Default::default()
            });
        }
        let state = OperatorState {
            operator_id: RAW_OPERATOR.into(),
            parallelism: 2,
            max_parallelism: RAW_MAX_P,
            subtasks,
        };
        Ok(coordinator
            .complete_checkpoint(pending.id, vec![state])?
            .metadata_path)
    })?;
    check_fixture("operator-and-raw", restore_operator_and_raw)
}

/// Restores the operator-and-raw fixture at 1, 2 and 3 subtasks and checks
/// each distribution mode and the raw state.
fn restore_operator_and_raw(metadata_path: &Path) -> Result<()> {
    let metadata = load_metadata(&LocalStorage, metadata_path)?;
    let state = metadata
        .operator(RAW_OPERATOR)
        .ok_or_else(|| Error::InvalidArgument {
            what: format!("{} has no operator {RAW_OPERATOR}", metadata_path.display()),
        })?;
    let handles = |f: fn(&SubtaskState) -> &Vec<OperatorStateHandle>| -> Vec<OperatorStateHandle> {
        state.subtasks.iter().flat_map(|s| f(s).clone()).collect()
    };
    let operator = handles(|s| &s.operator);
    let raw_operator = handles(|s| &s.raw_operator);
    let raw_keyed: Vec<KeyedStateHandle> = state
        .subtasks
        .iter()
        .flat_map(|s| s.raw_keyed.clone())
        .collect();
    for p in [1u32, 2, 3] {
        let mut all_offsets = Vec::new();
        for assigned in assign_operator_state(&operator, p)? {
            let mut op = DefaultOperatorStateBackend::restore(&assigned)?;
            let offsets = op.list_state(&ListStateDescriptor::<(u32, u64)>::new("offsets"))?;
            all_offsets.extend(op.list(&offsets)?.iter().copied());
            let seen = op.union_list_state(&ListStateDescriptor::<String>::new("seen"))?;
            assert_eq!(
                op.list(&seen)?.clone(),
                vec!["seen-by-0".to_string(), "seen-by-1".to_string()],
                "union state at parallelism {p}"
            );
            let broadcast = op.broadcast_state(&MapStateDescriptor::<String, u32>::new("rules"))?;
            assert_eq!(
                op.broadcast(&broadcast)?.clone(),
                rules(),
                "broadcast at {p}"
            );
        }
        all_offsets.sort();
        let mut want: Vec<_> = (0..2).flat_map(offsets_of).collect();
        want.sort();
        assert_eq!(all_offsets, want, "split list state at parallelism {p}");

        let mut keyed_chunks = BTreeMap::new();
        for (i, assigned) in assign_keyed_state(&raw_keyed, RAW_MAX_P, p)?
            .iter()
            .enumerate()
        {
            let range = KeyGroupRange::for_operator(RAW_MAX_P, p, i as u32)?;
            keyed_chunks.extend(read_raw_keyed_state(assigned, range)?);
        }
        assert_eq!(keyed_chunks, raw_keyed_expected(), "raw keyed state at {p}");

        let mut operator_chunks = Vec::new();
        for assigned in assign_operator_state(&raw_operator, p)? {
            operator_chunks.extend(read_raw_operator_state(&assigned)?);
        }
        operator_chunks.sort();
        let mut want: Vec<_> = (0..2).flat_map(raw_operator_of).collect();
        want.sort();
        assert_eq!(operator_chunks, want, "raw operator state at {p}");
    }
    Ok(())
}

/// A savepoint of states with TTL (format version 3 on), in files: restored
/// here, and the heap and RocksDB backends' restore here too.
#[test]
fn ttl_savepoint_fixtures() -> Result<()> {
    use conformance_tests::fixtures::{restore_ttl_savepoint, write_ttl_savepoint};
    write_if_missing("savepoint-ttl-fs", |root| {
        write_ttl_savepoint(&fs(&root.join("work"), false)?, root)
    })?;
    let scratch = tempfile::tempdir().map_err(|e| state_api::Error::io("tempdir", e))?;
    for name in [
        "savepoint-ttl-fs",
        "savepoint-ttl-memory",
        "savepoint-ttl-rocksdb",
    ] {
        check_fixture(name, |m| {
            restore_ttl_savepoint(&fs(scratch.path(), true)?, m)?;
            restore_ttl_savepoint(&fs(scratch.path(), false)?, m)
        })?;
    }
    Ok(())
}

/// A savepoint holding timers (format version 3 on), in files: restored
/// here, with the heap backend's and RocksDB's.
#[test]
fn timer_savepoint_fixtures() -> Result<()> {
    use conformance_tests::fixtures::{restore_timer_savepoint, write_timer_savepoint};
    write_if_missing("savepoint-timers-fs", |root| {
        write_timer_savepoint(&fs(&root.join("work"), false)?, root)
    })?;
    let scratch = tempfile::tempdir().map_err(|e| state_api::Error::io("tempdir", e))?;
    for name in [
        "savepoint-timers-fs",
        "savepoint-timers-memory",
        "savepoint-timers-rocksdb",
    ] {
        check_fixture(name, |m| {
            restore_timer_savepoint(&fs(scratch.path(), true)?, m)
        })?;
    }
    Ok(())
}
