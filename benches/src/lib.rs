//! One harness that measures every backend of this crate family on the same
//! workloads, beside raw baselines that do the same logical work with no
//! state layer (`raw-hashmap`, `raw-rocksdb`, `raw-rocksdb-layout`) and
//! sled.
//!
//! * The workloads mirror Apache Flink's `StateBackendBenchmark`: `i64` (or
//!   `String`) keys populated first, then a pre-generated uniform random
//!   stream of key indexes; one operation sets the current key and makes one
//!   state call ([`workload`]).
//! * Every backend and baseline is a [`driver::Driver`]: the same stream runs
//!   through each, interleaved round by round, and afterwards the state is
//!   read back and compared with what the stream must have produced
//!   ([`workload::Model`]), so a backend that skips work cannot look fast.
//! * [`throughput`], [`checkpoint`] and [`memory`] take the measurements;
//!   [`results`] holds them as `results.json`, [`report`] and [`charts`]
//!   turn them into `report.md` and SVG charts.
//!
//! `cargo run --release -p benches --bin flowbench -- --help` runs it;
//! `cargo bench -p benches` runs the throughput workloads under criterion.
//! `docs/benchmarks.md` explains how to read the figures.

pub mod charts;
pub mod checkpoint;
pub mod driver;
pub mod machine;
pub mod memory;
pub mod progress;
pub mod report;
pub mod results;
pub mod rng;
pub mod runner;
pub mod subject;
pub mod throughput;
pub mod timers;
pub mod workload;

/// Errors of the harness: the backend's own, a baseline's, or a workload
/// whose state read back differs from what its operations must produce.
#[derive(Debug)]
pub enum BenchError {
    /// An error of a backend of this crate family.
    State(state_api::Error),
    /// An error of a baseline store (RocksDB, sled) or of the file system.
    Store(String),
    /// The state read back after a workload is not what it must be.
    Verification(String),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::State(e) => write!(f, "state backend: {e}"),
            BenchError::Store(e) => write!(f, "baseline store: {e}"),
            BenchError::Verification(e) => write!(f, "verification failed: {e}"),
        }
    }
}

impl std::error::Error for BenchError {}

impl From<state_api::Error> for BenchError {
    fn from(e: state_api::Error) -> Self {
        BenchError::State(e)
    }
}

impl From<rocksdb::Error> for BenchError {
    fn from(e: rocksdb::Error) -> Self {
        BenchError::Store(format!("RocksDB: {e}"))
    }
}

impl From<sled::Error> for BenchError {
    fn from(e: sled::Error) -> Self {
        BenchError::Store(format!("sled: {e}"))
    }
}

impl From<std::io::Error> for BenchError {
    fn from(e: std::io::Error) -> Self {
        BenchError::Store(format!("I/O: {e}"))
    }
}

/// Result of the harness.
pub type Result<T> = std::result::Result<T, BenchError>;

/// The max parallelism of every workload, as in Flink's benchmark.
pub const MAX_PARALLELISM: u32 = 128;
