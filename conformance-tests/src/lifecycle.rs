//! Checkpoint-lifecycle checks any file-checkpointing backend runs (through
//! [`crash_tests!`](crate::crash_tests)), full and incremental:
//!
//! * [`out_of_order_completion`]: with checkpoints 2 and 3 pending, 3
//!   completes first; the late completion of 2 is refused, the latest
//!   checkpoint stays 3, and every later checkpoint restores exactly (no
//!   shared file that a newer checkpoint references is deleted);
//! * [`damaged_newest_checkpoint`]: a truncated `_metadata` or a missing
//!   file of the newest checkpoint makes recovery fall back to the one
//!   before, report what it skipped, and remove the damaged one once newer
//!   checkpoints replace it.

use std::path::PathBuf;

use crate::crash::CrashSetup;
use crate::rounds::{
    begin_snapshots, checkpoint, finish_snapshots, model_after, open, read, write_round, Subtask,
    OPERATOR,
};
use checkpoint_store::{CheckpointConfig, CheckpointCoordinator, CompletedCheckpoint};
use state_api::snapshot::SnapshotOptions;
use state_api::{Error, ErrorKind, KeyedStateBackend, Result, StateBackend};

const KEYS: u64 = 60;

fn config(num_retained: usize) -> CheckpointConfig {
    CheckpointConfig {
        num_retained,
        ..CheckpointConfig::default()
    }
}

/// Restores `checkpoint` at parallelism 3 and checks it holds the state after
/// `round` rounds.
fn check_restores<S: StateBackend>(
    backend: &S,
    checkpoint: &CompletedCheckpoint,
    round: u64,
    what: &str,
) -> Result<()> {
    let mut job = open(backend, 3, checkpoint.metadata.operator(OPERATOR))
        .unwrap_or_else(|e| panic!("{what}: checkpoint {} does not restore: {e}", checkpoint.id));
    assert_eq!(
        read(&mut job, KEYS)?,
        model_after(round, KEYS),
        "{what}: checkpoint {} holds the state after round {round}",
        checkpoint.id
    );
    Ok(())
}

fn notify_all<B: KeyedStateBackend>(
    job: &mut [Subtask<B>],
    id: u64,
    completed: bool,
) -> Result<()> {
    for s in job {
        if completed {
            s.keyed.notify_checkpoint_complete(id)?;
        } else {
            s.keyed.notify_checkpoint_aborted(id)?;
        }
    }
    Ok(())
}

/// Regression: completing checkpoint 3 and then 2 (their asynchronous parts
/// finished out of order) made 2 the latest; retention then dropped 3 and,
/// with incremental checkpoints, deleted shared files that checkpoints 4 and
/// 5 still referenced, so they no longer restored.
pub fn out_of_order_completion<S: StateBackend>(setup: &CrashSetup<S>) -> Result<()> {
    for incremental in [false, true] {
        for num_retained in [1, 2] {
            let what = format!("incremental {incremental}, num_retained {num_retained}");
            let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
            let backend = (setup.make)(dir.path(), incremental)?;
            let mut coordinator = (setup.coordinator)(&backend, config(num_retained))?;
            let mut job = open(&backend, 2, None)?;
            write_round(&mut job, 1, KEYS)?;
            checkpoint(&mut coordinator, &mut job)?;

            write_round(&mut job, 2, KEYS)?;
            let two = coordinator.begin_checkpoint()?;
            let tasks_two = begin_snapshots(&mut job, &two, SnapshotOptions::default())?;
            write_round(&mut job, 3, KEYS)?;
            let three = coordinator.begin_checkpoint()?;
            let tasks_three = begin_snapshots(&mut job, &three, SnapshotOptions::default())?;
            let states_three = finish_snapshots(tasks_three)?;
            let states_two = finish_snapshots(tasks_two)?;

            coordinator.complete_checkpoint(three.id, states_three)?;
            notify_all(&mut job, three.id, true)?;
            assert!(
                coordinator.pending_ids().is_empty(),
                "{what}: completing 3 aborts pending 2 as subsumed"
            );
            let late = coordinator.complete_checkpoint(two.id, states_two);
            assert!(
                matches!(
                    &late,
                    Err(Error::CheckpointSubsumed {
                        checkpoint_id: 2,
                        latest: 3
                    })
                ),
                "{what}: the late completion of 2 is refused: {late:?}"
            );
            assert_eq!(
                late.err().map(|e| e.kind()),
                Some(ErrorKind::Cancelled),
                "{what}: a subsumed checkpoint counts as cancelled"
            );
            // What an engine does with a refused checkpoint, and a stray
            // completion notification on top: neither may move the backends
            // back to checkpoint 2.
            notify_all(&mut job, two.id, false)?;
            notify_all(&mut job, two.id, true)?;
            assert_eq!(
                coordinator.latest_completed().map(|c| c.id),
                Some(3),
                "{what}: the latest checkpoint stays 3"
            );

            for round in 4..=5 {
                write_round(&mut job, round, KEYS)?;
                let done = checkpoint(&mut coordinator, &mut job)?;
                assert_eq!(done.id, round, "{what}: ids follow rounds");
            }
            let retained: Vec<CompletedCheckpoint> = coordinator.completed().cloned().collect();
            assert_eq!(retained.len(), num_retained, "{what}: retention");
            for c in &retained {
                check_restores(&backend, c, c.id, &what)?;
            }
            drop(coordinator);
            let reopened = (setup.coordinator)(&backend, config(num_retained))?;
            let latest = reopened.latest_completed().expect("checkpoint 5 survives");
            assert_eq!(latest.id, 5, "{what}: reopened, the latest is 5");
            assert!(
                reopened.skipped_on_recovery().is_empty(),
                "{what}: nothing damaged"
            );
            check_restores(&backend, latest, 5, &what)?;
        }
    }
    Ok(())
}

/// How the newest checkpoint gets damaged.
#[derive(Clone, Copy, Debug)]
enum Damage {
    TruncatedMetadata,
    MissingFile,
}

fn damage(coordinator: &CheckpointCoordinator, how: Damage) -> Result<PathBuf> {
    let completed: Vec<&CompletedCheckpoint> = coordinator.completed().collect();
    let [older, newest] = completed[..] else {
        panic!(
            "two retained checkpoints expected, found {}",
            completed.len()
        );
    };
    let io = |e| Error::io("damaging a checkpoint", e);
    match how {
        Damage::TruncatedMetadata => {
            let bytes = std::fs::read(&newest.metadata_path).map_err(io)?;
            std::fs::write(&newest.metadata_path, &bytes[..bytes.len() / 2]).map_err(io)?;
            Ok(newest.metadata_path.clone())
        }
        Damage::MissingFile => {
            let keep = older.metadata.files();
            let file = newest
                .metadata
                .files()
                .into_iter()
                .find(|f| !keep.contains(f))
                .expect("the newest checkpoint has a file of its own");
            std::fs::remove_file(&file).map_err(io)?;
            Ok(file)
        }
    }
}

/// Regression: with `num_retained = 3`, truncating `chk-2/_metadata` (chk-1
/// intact) made opening the coordinator fail with `Corruption`, although
/// checkpoint 1 could restore.
pub fn damaged_newest_checkpoint<S: StateBackend>(setup: &CrashSetup<S>) -> Result<()> {
    for incremental in [false, true] {
        for how in [Damage::TruncatedMetadata, Damage::MissingFile] {
            let what = format!("incremental {incremental}, {how:?}");
            let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
            let backend = (setup.make)(dir.path(), incremental)?;
            let mut coordinator = (setup.coordinator)(&backend, config(3))?;
            let mut job = open(&backend, 2, None)?;
            for round in 1..=2 {
                write_round(&mut job, round, KEYS)?;
                checkpoint(&mut coordinator, &mut job)?;
            }
            let damaged = damage(&coordinator, how)?;
            drop(coordinator);
            drop(job);

            let mut coordinator = (setup.coordinator)(&backend, config(3))
                .unwrap_or_else(|e| panic!("{what}: recovery fails: {e}"));
            let latest = coordinator.latest_completed().cloned();
            let latest = latest.expect("checkpoint 1 is intact");
            assert_eq!(latest.id, 1, "{what}: recovery falls back to checkpoint 1");
            let skipped = coordinator.skipped_on_recovery();
            assert_eq!(
                skipped.iter().map(|s| s.id).collect::<Vec<_>>(),
                vec![2],
                "{what}: checkpoint 2 is reported as skipped"
            );
            assert_eq!(skipped[0].error.kind(), ErrorKind::Corruption, "{what}");
            let message = skipped[0].error.to_string();
            assert!(
                message.contains(&damaged.display().to_string()),
                "{what}: the report names the damaged file: {message}"
            );
            if matches!(how, Damage::MissingFile) {
                assert!(
                    message.contains("checkpoint 2"),
                    "{what}: a missing file's error names the checkpoint: {message}"
                );
            }
            check_restores(&backend, &latest, 1, &what)?;

            // The job goes on from checkpoint 1; the damaged folder stays
            // until three newer checkpoints replace it.
            let mut job = open(&backend, 2, latest.metadata.operator(OPERATOR))?;
            let chk2 = coordinator.layout().checkpoint_dir(2);
            for round in 2..=4 {
                write_round(&mut job, round, KEYS)?;
                let done = checkpoint(&mut coordinator, &mut job)?;
                assert_eq!(
                    done.id,
                    round + 1,
                    "{what}: ids continue after the damaged one"
                );
                check_restores(&backend, &done, round, &what)?;
                assert_eq!(
                    chk2.exists(),
                    round < 4,
                    "{what}: after round {round}, the damaged checkpoint folder is kept until replaced"
                );
            }
            assert!(coordinator.skipped_on_recovery().is_empty(), "{what}");
        }
    }
    Ok(())
}
