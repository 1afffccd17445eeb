//! Crash-consistency checks any file-checkpointing backend runs:
//!
//! * [`kill_trials`]: a child process checkpoints in a loop and is killed
//!   (SIGKILL) at a random moment; the parent then restores the latest
//!   completed checkpoint and checks it holds exactly that checkpoint's state;
//! * [`failure_sweep`]: in process, a storage that fails every operation after
//!   N operations and then loses what was not durable, for every N of a
//!   checkpoint.
//!
//! A backend's test file provides a [`CrashSetup`] and calls
//! [`crash_tests!`](crate::crash_tests), whose `crash_worker` test is what the
//! child process runs.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::rounds::{checkpoint, model_after, open, read, write_round, OPERATOR};
use checkpoint_store::{
    CheckpointConfig, CheckpointCoordinator, FaultyStorage, LocalStorage, Storage,
};
use state_api::{Error, Result, StateBackend};

const KEYS: u64 = 120;
const WORKER_DIR: &str = "CRASH_TEST_WORKER_DIR";
const WORKER_INCREMENTAL: &str = "CRASH_TEST_WORKER_INCREMENTAL";

/// How to build a backend for the crash checks.
pub struct CrashSetup<S> {
    /// A backend checkpointing under `dir`, incremental or not.
    pub make: fn(dir: &Path, incremental: bool) -> Result<S>,
    /// The same backend doing its file operations through `storage`.
    pub with_storage: fn(S, Arc<dyn Storage>) -> S,
    /// The job's checkpoint coordinator, with a configuration.
    pub coordinator: fn(&S, CheckpointConfig) -> Result<CheckpointCoordinator>,
    /// Kills land this many microseconds after the worker starts, plus a
    /// random part below `kill_spread_micros` (process start-up and the
    /// backend's opening take part of it).
    pub kill_after_micros: u64,
    /// See `kill_after_micros`.
    pub kill_spread_micros: u64,
}

/// The worker side: rounds of writes, each followed by a checkpoint, until
/// killed. Checkpoint `n` holds the state after round `n`. Does nothing when
/// not started by [`kill_trials`].
pub fn crash_worker<S: StateBackend>(setup: &CrashSetup<S>) -> Result<()> {
    let Some(dir) = std::env::var_os(WORKER_DIR) else {
        return Ok(());
    };
    let incremental = std::env::var_os(WORKER_INCREMENTAL).is_some();
    let backend = (setup.make)(Path::new(&dir), incremental)?;
    let mut coordinator = (setup.coordinator)(&backend, default_config())?;
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

/// Runs `trials` kills of the test binary's `crash_worker` test, full and
/// incremental in turn; returns how many found a checkpoint to restore.
pub fn kill_trials<S: StateBackend>(setup: &CrashSetup<S>, trials: u64, seed: u64) -> Result<u64> {
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
        std::thread::sleep(Duration::from_micros(
            setup.kill_after_micros + next(&mut rng) % setup.kill_spread_micros.max(1),
        ));
        let _ = child.kill();
        let _ = child.wait();

        let backend = (setup.make)(dir.path(), incremental)?;
        let coordinator = (setup.coordinator)(&backend, default_config());
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

/// Runs checkpoint 3 with a storage that fails after `budget` operations,
/// then loses what was not durable; the latest checkpoint must be 2 or 3 and
/// restore its own state. Returns whether the injected failure hit.
fn fail_after<S: StateBackend + Clone>(
    setup: &CrashSetup<S>,
    budget: u64,
    incremental: bool,
) -> Result<bool> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
    let keys = 30;
    let good = (setup.make)(dir.path(), incremental)?;
    let mut coordinator = (setup.coordinator)(&good, default_config())?;
    let mut job = open(&good, 2, None)?;
    for r in 1..=2 {
        write_round(&mut job, r, keys)?;
        checkpoint(&mut coordinator, &mut job)?;
    }
    drop(coordinator);
    write_round(&mut job, 3, keys)?;
    let faulty = FaultyStorage::new(LocalStorage, budget);
    let bad = (setup.with_storage)(good.clone(), Arc::new(faulty.clone()));
    let outcome = (setup.coordinator)(&bad, default_config())
        .and_then(|mut c| checkpoint(&mut c, &mut job).map(drop));
    let failed = outcome.is_err();
    faulty
        .crash()
        .map_err(|e| Error::io("simulating a crash", e))?;

    let coordinator = (setup.coordinator)(&good, default_config())?;
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

/// Fails checkpoint 3 after every possible number of storage operations, for
/// full and incremental checkpoints, until one completes.
pub fn failure_sweep<S: StateBackend + Clone>(setup: &CrashSetup<S>) -> Result<()> {
    for incremental in [false, true] {
        let mut budget = 0;
        while fail_after(setup, budget, incremental)? {
            budget += 1;
            assert!(budget < 2_000, "the checkpoint never completed");
        }
        assert!(budget > 20, "the sweep covered every operation ({budget})");
    }
    Ok(())
}

/// The default coordinator configuration, for [`CrashSetup::coordinator`].
pub fn default_config() -> CheckpointConfig {
    CheckpointConfig::default()
}

/// Runs `trials` kills (seed from `CRASH_TEST_SEED`, else `default_seed`)
/// and checks that at least half of them got as far as a checkpoint.
pub fn check_kills<S: StateBackend>(
    setup: &CrashSetup<S>,
    trials: u64,
    default_seed: u64,
) -> Result<()> {
    let seed = std::env::var("CRASH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_seed);
    let restored = kill_trials(setup, trials, seed)?;
    assert!(
        restored * 2 >= trials,
        "only {restored} of {trials} trials got as far as a checkpoint (seed {seed})"
    );
    Ok(())
}

/// The crash and checkpoint-lifecycle tests of a backend (see also
/// [`crate::lifecycle`]): `crash_tests!(SETUP, trials)` defines the
/// worker, the kill test with `trials` kills, an ignored long run with ten
/// times as many, and the storage-failure sweep.
#[macro_export]
macro_rules! crash_tests {
    ($setup:expr, $trials:expr) => {
        #[test]
        #[ignore = "runs as the child process of the crash test"]
        fn crash_worker() -> state_api::Result<()> {
            $crate::crash::crash_worker(&$setup)
        }

        #[test]
        fn a_killed_process_leaves_its_last_checkpoint_restorable() -> state_api::Result<()> {
            $crate::crash::check_kills(&$setup, $trials, 0x5eed_0001)
        }

        #[test]
        #[ignore = "long run: ten times the kills"]
        fn a_killed_process_leaves_its_last_checkpoint_restorable_long() -> state_api::Result<()> {
            $crate::crash::check_kills(&$setup, 10 * $trials, 0x5eed_0002)
        }

        #[test]
        fn an_io_failure_at_any_point_of_a_checkpoint_leaves_the_previous_one_restorable(
        ) -> state_api::Result<()> {
            $crate::crash::failure_sweep(&$setup)
        }

        #[test]
        fn a_late_completion_of_an_older_checkpoint_is_refused_and_loses_nothing(
        ) -> state_api::Result<()> {
            $crate::lifecycle::out_of_order_completion(&$setup)
        }

        #[test]
        fn a_damaged_newest_checkpoint_is_skipped_on_recovery() -> state_api::Result<()> {
            $crate::lifecycle::damaged_newest_checkpoint(&$setup)
        }
    };
}
