//! Crash consistency of the RocksDB backend (see `conformance_tests::crash`):
//! 100 SIGKILLed checkpointing processes (2,000 in the ignored long run) and a
//! storage-failure sweep over every operation of a checkpoint.

use std::path::Path;

use backend_rocksdb::{RocksDbStateBackend, RocksOptions};
use conformance_tests::crash::{self, default_config, CrashSetup};
use state_api::Result;

fn make(dir: &Path, incremental: bool) -> Result<RocksDbStateBackend> {
    RocksDbStateBackend::new(&dir.join("work"), &dir.join("checkpoints"), "job")?
        .with_options(RocksOptions {
            incremental,
            ..RocksOptions::default()
        })
        .with_inline_threshold(0)
}

const SETUP: CrashSetup<RocksDbStateBackend> = CrashSetup {
    make,
    with_storage: RocksDbStateBackend::with_storage,
    coordinator: |b| b.coordinator(default_config()),
    kill_after_micros: 30_000,
    kill_spread_micros: 400_000,
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
    let restored = crash::kill_trials(&SETUP, 100, seed)?;
    assert!(
        restored >= 50,
        "only {restored} of 100 trials got as far as a checkpoint (seed {seed})"
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
