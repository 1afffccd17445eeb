//! Crash consistency of the file backend (see `conformance_tests::crash`):
//! 200 SIGKILLed checkpointing processes (2,000 in the ignored long run) and a
//! storage-failure sweep over every operation of a checkpoint.

use std::path::Path;

use backend_fs::FsStateBackend;
use conformance_tests::crash::{self, default_config, CrashSetup};
use state_api::Result;

fn make(dir: &Path, incremental: bool) -> Result<FsStateBackend> {
    Ok(FsStateBackend::new(dir, "job")?
        .with_inline_threshold(0)?
        .with_incremental(incremental))
}

const SETUP: CrashSetup<FsStateBackend> = CrashSetup {
    make,
    with_storage: FsStateBackend::with_storage,
    coordinator: |b| b.coordinator(default_config()),
    kill_after_micros: 2_000,
    kill_spread_micros: 60_000,
};

#[test]
#[ignore = "runs as the child process of the crash test"]
fn crash_worker() -> Result<()> {
    crash::crash_worker(&SETUP)
}

#[test]
fn a_killed_process_leaves_its_last_checkpoint_restorable() -> Result<()> {
    let seed = std::env::var("CRASH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0001);
    let restored = crash::kill_trials(&SETUP, 200, seed)?;
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
    let restored = crash::kill_trials(&SETUP, 2_000, seed)?;
    assert!(
        restored >= 1_000,
        "only {restored} of 2,000 trials restored (seed {seed})"
    );
    Ok(())
}

#[test]
fn an_io_failure_at_any_point_of_a_checkpoint_leaves_the_previous_one_restorable() -> Result<()> {
    crash::failure_sweep(&SETUP)
}
