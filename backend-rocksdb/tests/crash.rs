//! Crash consistency of the RocksDB backend (see `conformance_tests::crash`):
//! 100 SIGKILLed checkpointing processes (ten times as many in the ignored long run) and a
//! storage-failure sweep over every operation of a checkpoint.

use std::path::Path;

use backend_rocksdb::{RocksDbStateBackend, RocksOptions};
use conformance_tests::crash::CrashSetup;
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
    coordinator: |b, config| b.coordinator(config),
    kill_after_micros: 30_000,
    kill_spread_micros: 400_000,
};

conformance_tests::crash_tests!(SETUP, 100);
