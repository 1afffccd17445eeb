//! Raw keyed and raw operator state through checkpoints and rescaling, and a
//! property test of retention: a file a retained checkpoint references is
//! never deleted, and nothing is left behind once nothing references it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use backend_fs::FsStateBackend;
use checkpoint_store::{
    CheckpointConfig, CheckpointCoordinator, LocalStorage, OperatorState, SubtaskState,
};
use conformance_tests::rounds::{
    checkpoint, model_after, open, read, snapshot_all, write_round, OPERATOR,
};
use proptest::prelude::*;
use state_api::format::frame::Compression;
use state_api::key_group::KeyGroupRange;
use state_api::snapshot::raw::{
    read_raw_keyed_state, read_raw_operator_state, write_raw_operator_state, RawKeyedStateWriter,
};
use state_api::snapshot::rescale::{assign_keyed_state, assign_operator_state};
use state_api::snapshot::SnapshotOptions;
use state_api::{Error, KeyedStateBackend, Result};

const MAX_P: u32 = 128;

#[test]
fn raw_state_round_trips_through_a_checkpoint_and_rescales() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
    let backend = FsStateBackend::new(dir.path(), "job")?.with_inline_threshold(0)?;
    let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
    let pending = coordinator.begin_checkpoint()?;
    // Two subtasks write raw keyed bytes for their key groups and raw
    // operator chunks.
    let mut subtasks = Vec::new();
    let mut expected_keyed: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
    let mut expected_chunks = BTreeSet::new();
    for i in 0..2u32 {
        let range = KeyGroupRange::for_operator(MAX_P, 2, i)?;
        let mut w = RawKeyedStateWriter::new(
            &*pending.streams,
            MAX_P,
            range,
            pending.id,
            Compression::None,
        )?;
        for kg in range.iter().filter(|kg| kg % 3 == 0) {
            w.start_key_group(kg)?;
            let chunks = vec![
                format!("kg{kg}-a").into_bytes(),
                format!("kg{kg}-b").into_bytes(),
            ];
            for c in &chunks {
                w.write(c)?;
            }
            expected_keyed.insert(kg, chunks);
        }
        let chunks: Vec<Vec<u8>> = (0..5)
            .map(|j| format!("sub{i}-chunk{j}").into_bytes())
            .collect();
        expected_chunks.extend(chunks.iter().cloned());
        subtasks.push(SubtaskState {
            raw_keyed: vec![w.finish()?],
            raw_operator: write_raw_operator_state(&*pending.streams, chunks, pending.id)?
                .into_iter()
                .collect(),
            ..Default::default()
        });
    }
    let done = coordinator.complete_checkpoint(
        pending.id,
        vec![OperatorState {
            operator_id: "raw".into(),
            parallelism: 2,
            max_parallelism: MAX_P,
            subtasks,
        }],
    )?;
    let meta = checkpoint_store::load_metadata(&LocalStorage, &done.metadata_path)?;
    let op = meta.operator("raw").expect("operator");
    let raw_keyed: Vec<_> = op
        .subtasks
        .iter()
        .flat_map(|s| s.raw_keyed.clone())
        .collect();
    let raw_ops: Vec<_> = op
        .subtasks
        .iter()
        .flat_map(|s| s.raw_operator.clone())
        .collect();
    for p in [1u32, 3, 5] {
        let keyed = assign_keyed_state(&raw_keyed, MAX_P, p)?;
        let ops = assign_operator_state(&raw_ops, p)?;
        let mut seen_keyed = BTreeMap::new();
        let mut seen_chunks = BTreeSet::new();
        let mut sizes = Vec::new();
        for i in 0..p {
            let range = KeyGroupRange::for_operator(MAX_P, p, i)?;
            for (kg, chunks) in read_raw_keyed_state(&keyed[i as usize], range)? {
                assert!(range.contains(kg), "subtask {i} of {p} got key group {kg}");
                assert!(
                    seen_keyed.insert(kg, chunks).is_none(),
                    "key group {kg} read twice"
                );
            }
            let chunks = read_raw_operator_state(&ops[i as usize])?;
            sizes.push(chunks.len());
            for c in chunks {
                assert!(
                    seen_chunks.insert(c),
                    "a raw operator chunk went to two subtasks"
                );
            }
        }
        assert_eq!(
            seen_keyed, expected_keyed,
            "raw keyed state at parallelism {p}"
        );
        assert_eq!(
            seen_chunks, expected_chunks,
            "raw operator state at parallelism {p}"
        );
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        assert!(
            max.zip(min).is_some_and(|(a, b)| a - b <= 1),
            "even split at {p}: {sizes:?}"
        );
    }

    Ok(())
}

#[derive(Clone, Debug)]
enum Step {
    /// A round of writes and a checkpoint that completes.
    Complete,
    /// A round of writes and a checkpoint that is aborted after its snapshots.
    Abort,
    /// The coordinator is reopened (a restart of the job manager).
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![6 => Just(Step::Complete), 2 => Just(Step::Abort), 1 => Just(Step::Restart)]
}

fn all_files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(all_files(&p));
            } else {
                out.insert(p);
            }
        }
    }
    out
}

fn check_retention(steps: &[Step], num_retained: usize, incremental: bool) -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
    let keys = 40;
    let backend = FsStateBackend::new(dir.path(), "job")?
        .with_inline_threshold(0)?
        .with_incremental(incremental);
    let config = CheckpointConfig {
        num_retained,
        ..Default::default()
    };
    let mut coordinator: CheckpointCoordinator = backend.coordinator(config.clone())?;
    let mut job = open(&backend, 2, None)?;
    let mut round = 0;
    let mut completed_rounds: BTreeMap<u64, u64> = BTreeMap::new();
    for s in steps {
        match s {
            Step::Complete => {
                round += 1;
                write_round(&mut job, round, keys)?;
                let done = checkpoint(&mut coordinator, &mut job)?;
                completed_rounds.insert(done.id, round);
            }
            Step::Abort => {
                round += 1;
                write_round(&mut job, round, keys)?;
                let pending = coordinator.begin_checkpoint()?;
                snapshot_all(&mut job, &pending, SnapshotOptions::default())?;
                coordinator.abort(pending.id)?;
                for t in job.iter_mut() {
                    t.keyed.notify_checkpoint_aborted(pending.id)?;
                }
            }
            Step::Restart => {
                drop(coordinator);
                coordinator = backend.coordinator(config.clone())?;
            }
        }
        // Invariants after every step (no checkpoint pending):
        let retained: Vec<_> = coordinator.completed().cloned().collect();
        assert!(
            retained.len() <= num_retained,
            "at most {num_retained} retained"
        );
        let mut referenced: BTreeSet<PathBuf> = BTreeSet::new();
        for c in &retained {
            referenced.insert(c.metadata_path.clone());
            for f in c.metadata.files() {
                assert!(
                    f.exists(),
                    "{} is referenced by checkpoint {} and must exist",
                    f.display(),
                    c.id
                );
                referenced.insert(f);
            }
        }
        let on_disk = all_files(dir.path());
        let unreferenced: Vec<_> = on_disk.difference(&referenced).collect();
        assert!(
            unreferenced.is_empty(),
            "files nothing references: {unreferenced:?}"
        );
        // The newest retained checkpoint restores its round's state.
        if let Some(latest) = retained.last() {
            let r = completed_rounds[&latest.id];
            let mut restored = open(&backend, 1, latest.metadata.operator(OPERATOR))?;
            assert_eq!(
                read(&mut restored, keys)?,
                model_after(r, keys),
                "checkpoint {}",
                latest.id
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn retention_keeps_referenced_files_and_leaves_no_garbage(
        steps in proptest::collection::vec(step(), 1..14),
        num_retained in 1usize..4,
        incremental in any::<bool>(),
    ) {
        if let Err(e) = check_retention(&steps, num_retained, incremental) {
            panic!("{e}");
        }
    }
}
