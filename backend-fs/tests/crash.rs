//! Crash consistency of the file backend (see `conformance_tests::crash`):
//! 200 SIGKILLed checkpointing processes (ten times as many in the ignored long run) and a
//! storage-failure sweep over every operation of a checkpoint.

use std::path::Path;

use backend_fs::FsStateBackend;
use conformance_tests::crash::CrashSetup;
use state_api::Result;

fn make(dir: &Path, incremental: bool) -> Result<FsStateBackend> {
    Ok(FsStateBackend::new(dir, "job")?
        .with_inline_threshold(0)?
        .with_incremental(incremental))
}

const SETUP: CrashSetup<FsStateBackend> = CrashSetup {
    make,
    with_storage: FsStateBackend::with_storage,
    coordinator: |b, config| b.coordinator(config),
    kill_after_micros: 2_000,
    kill_spread_micros: 60_000,
};

conformance_tests::crash_tests!(SETUP, 200);
