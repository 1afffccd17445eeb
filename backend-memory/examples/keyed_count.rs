//! The example job on the heap backend: a partitioned source keeping its
//! offsets in operator list state, a keyed count, checkpoints every few
//! thousand records, a failure, a restore of the last checkpoint at another
//! parallelism, and an exact check of every count.
//!
//! Run with `cargo run --release -p backend-memory --example keyed_count`.
//! Optional arguments: `[parallelism_before] [parallelism_after]`.

use std::process::ExitCode;

use backend_memory::MemoryStateBackend;
use conformance_tests::job::{run, JobConfig};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut config = JobConfig {
        partitions: 12,
        records_per_partition: 50_000,
        keys: 20_000,
        parallelism_before: 2,
        parallelism_after: 3,
        checkpoint_every: 100_000,
        fail_after: 450_000,
        ..Default::default()
    };
    for target in [
        &mut config.parallelism_before,
        &mut config.parallelism_after,
    ] {
        if let Some(arg) = args.next() {
            match arg.parse() {
                Ok(p) if p > 0 => *target = p,
                _ => {
                    eprintln!("usage: keyed_count [parallelism_before] [parallelism_after] (positive integers)");
                    return ExitCode::from(2);
                }
            }
        }
    }
    // Each keyed snapshot here is a few hundred KiB; allow up to 64 MiB.
    let backend = MemoryStateBackend::new().with_max_state_size(64 << 20);
    println!(
        "keyed count: {} partitions x {} records, {} keys, parallelism {} -> {} after a failure",
        config.partitions,
        config.records_per_partition,
        config.keys,
        config.parallelism_before,
        config.parallelism_after
    );
    match run(&backend, &config) {
        Ok(report) => {
            println!(
                "records processed      {} ({} replayed after the failure)",
                report.records_processed, report.records_replayed
            );
            println!("checkpoints completed  {}", report.checkpoints);
            println!(
                "restored checkpoint    {} at parallelism {}",
                report.restored_checkpoint, config.parallelism_after
            );
            println!("restore time           {:.2?}", report.restore_time);
            println!(
                "keys checked           {} (sum of counts {})",
                report.keys_checked, report.total_count
            );
            println!("OK: every count is exact");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
