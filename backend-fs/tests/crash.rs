//! Crash consistency, proven twice:
//!
//! * a child process checkpoints in a loop and is killed (SIGKILL) at a random
//!   moment; the parent then restores the latest completed checkpoint and
//!   checks it holds exactly that checkpoint's state (200 trials here, more
//!   in the ignored long run);
//! * in process, a storage that fails every operation after N operations and
//!   then loses what was not durable, for every N of a checkpoint.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use backend_fs::FsStateBackend;
use conformance_tests::rounds::{checkpoint, model_after, open, read, write_round, OPERATOR};
use state_api::checkpoint::{CheckpointConfig, FaultyStorage, LocalStorage};
use state_api::{Error, Result};

const KEYS: u64 = 120;
const WORKER_DIR: &str = "CRASH_TEST_WORKER_DIR";
const WORKER_INCREMENTAL: &str = "CRASH_TEST_WORKER_INCREMENTAL";

fn backend(dir: &Path, incremental: bool) -> Result<FsStateBackend> {
    Ok(FsStateBackend::new(dir, "job")?
        .with_inline_threshold(0)?
        .with_incremental(incremental))
}

/// The worker side: rounds of writes, each followed by a checkpoint, until
/// killed. Checkpoint `n` holds the state after round `n`. Does nothing when
/// not started by the crash test.
#[test]
#[ignore = "runs as the child process of the crash test"]
fn crash_worker() -> Result<()> {
    let Some(dir) = std::env::var_os(WORKER_DIR) else {
        return Ok(());
    };
    let incremental = std::env::var_os(WORKER_INCREMENTAL).is_some();
    let backend = backend(Path::new(&dir), incremental)?;
    let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
    let mut job = open(&backend, 2, None)?;
    for r in 1..10_000 {
        write_round(&mut job, r, KEYS)?;
        let done = checkpoint(&mut coordinator, &mut job)?;
        assert_eq!(done.id, r, "checkpoint ids follow rounds");
    }
    Ok(())
}

/// A small deterministic generator (xorshift), seeded per trial.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Runs `trials` kills; returns how many found a checkpoint to restore.
fn kill_trials(trials: u64, seed: u64) -> Result<u64> {
    let exe = std::env::current_exe().map_err(|e| Error::io("finding the test binary", e))?;
    let mut restored = 0;
    for trial in 0..trials {
        let mut rng = seed ^ (trial + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let incremental = trial % 2 == 1;
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let mut command = Command::new(&exe);
        command
            .args([
                "--ignored",
                "--exact",
                "crash_worker",
                "--test-threads=1",
                "--quiet",
            ])
            .env(WORKER_DIR, dir.path())
            .env_remove(WORKER_INCREMENTAL)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if incremental {
            command.env(WORKER_INCREMENTAL, "1");
        }
        let mut child = command
            .spawn()
            .map_err(|e| Error::io("spawning the worker", e))?;
        // Process start-up takes a few milliseconds; kill somewhere after it.
        std::thread::sleep(Duration::from_micros(2_000 + next(&mut rng) % 60_000));
        let _ = child.kill();
        let _ = child.wait();

        let backend = backend(dir.path(), incremental)?;
        let coordinator = backend.coordinator(CheckpointConfig::default());
        let coordinator = coordinator.unwrap_or_else(|e| {
            panic!("trial {trial} (seed {seed}): the checkpoint directory does not open after a kill: {e}")
        });
        let Some(latest) = coordinator.latest_completed() else {
            continue;
        };
        let round = latest.id;
        let mut job = open(&backend, 3, latest.metadata.operator(OPERATOR)).unwrap_or_else(|e| {
            panic!("trial {trial} (seed {seed}): checkpoint {round} does not restore: {e}")
        });
        assert_eq!(
            read(&mut job, KEYS)?,
            model_after(round, KEYS),
            "trial {trial} (seed {seed}, incremental {incremental}): checkpoint {round} restores its own state"
        );
        restored += 1;
        if std::env::var_os("CRASH_TEST_VERBOSE").is_some() {
            eprintln!("trial {trial}: restored checkpoint {round}");
        }
    }
    Ok(restored)
}

#[test]
fn a_killed_process_leaves_its_last_checkpoint_restorable() -> Result<()> {
    let seed = std::env::var("CRASH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0001);
    let restored = kill_trials(200, seed)?;
    assert!(
        restored >= 100,
        "only {restored} of 200 trials got as far as a checkpoint (seed {seed})"
    );
    Ok(())
}

#[test]
#[ignore = "long run: 2,000 kills"]
fn a_killed_process_leaves_its_last_checkpoint_restorable_long() -> Result<()> {
    let seed = 0x5eed_0002;
    let restored = kill_trials(2_000, seed)?;
    assert!(
        restored >= 1_000,
        "only {restored} of 2,000 trials restored (seed {seed})"
    );
    Ok(())
}

/// Runs checkpoint 3 with a storage that fails after `budget` operations,
/// then loses what was not durable; the latest checkpoint must be 2 or 3 and
/// restore its own state. Returns whether the injected failure hit.
fn fail_after(budget: u64, incremental: bool) -> Result<bool> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
    let keys = 30;
    let good = backend(dir.path(), incremental)?;
    let mut coordinator = good.coordinator(CheckpointConfig::default())?;
    let mut job = open(&good, 2, None)?;
    for r in 1..=2 {
        write_round(&mut job, r, keys)?;
        checkpoint(&mut coordinator, &mut job)?;
    }
    drop(coordinator);
    write_round(&mut job, 3, keys)?;
    let faulty = FaultyStorage::new(LocalStorage, budget);
    let bad = good.clone().with_storage(Arc::new(faulty.clone()));
    let outcome = bad
        .coordinator(CheckpointConfig::default())
        .and_then(|mut c| checkpoint(&mut c, &mut job).map(drop));
    let failed = outcome.is_err();
    faulty
        .crash()
        .map_err(|e| Error::io("simulating a crash", e))?;

    let coordinator = good.coordinator(CheckpointConfig::default())?;
    let latest = coordinator
        .latest_completed()
        .expect("a checkpoint survives");
    assert!(
        matches!(latest.id, 2 | 3),
        "budget {budget}: latest is {}",
        latest.id
    );
    if !failed {
        assert_eq!(
            latest.id, 3,
            "budget {budget}: a checkpoint that completed survives the crash"
        );
    }
    let mut restored = open(&good, 1, latest.metadata.operator(OPERATOR))?;
    assert_eq!(
        read(&mut restored, keys)?,
        model_after(latest.id, keys),
        "budget {budget} (incremental {incremental}): checkpoint {} restores its own state",
        latest.id
    );
    Ok(failed)
}

#[test]
fn an_io_failure_at_any_point_of_a_checkpoint_leaves_the_previous_one_restorable() -> Result<()> {
    for incremental in [false, true] {
        let mut budget = 0;
        while fail_after(budget, incremental)? {
            budget += 1;
            assert!(budget < 2_000, "the checkpoint never completed");
        }
        assert!(budget > 20, "the sweep covered every operation ({budget})");
    }
    Ok(())
}
