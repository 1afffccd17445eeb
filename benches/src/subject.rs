//! The backends and baselines a run measures, by name.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use backend_fs::FsStateBackend;
use backend_memory::MemoryStateBackend;
use backend_rocksdb::{RocksDbStateBackend, RocksOptions};
use state_api::backend::KeyedBackendParams;
use state_api::{codec, StateBackend};

use crate::driver::{
    Driver, HashMapDriver, KeyLayout, KvDriver, RawRocks, Setup, SledStore, StateDriver,
};
use crate::workload::BenchKey;
use crate::{Result, MAX_PARALLELISM};

/// A backend of this crate family or a baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// The heap backend with in-memory snapshots.
    Memory,
    /// The heap backend with full file checkpoints.
    Fs,
    /// The heap backend with incremental file checkpoints.
    FsIncremental,
    /// The RocksDB backend with its defaults (incremental checkpoints, the
    /// process-wide memory budget).
    RocksDb,
    /// The RocksDB backend with full (canonical) checkpoints; measured where
    /// checkpoints are, its per-record path is `rocksdb`'s.
    RocksDbFull,
    /// One hash map per key group: the upper limit for the heap backends.
    RawHashMap,
    /// rust-rocksdb with the backend's options and plain keys.
    RawRocksDb,
    /// rust-rocksdb with the backend's options and its key bytes.
    RawRocksDbLayout,
    /// sled 0.34 with the backend's key bytes.
    Sled,
}

impl Subject {
    /// Every subject, in report order.
    pub const ALL: [Subject; 9] = [
        Subject::Memory,
        Subject::Fs,
        Subject::FsIncremental,
        Subject::RocksDb,
        Subject::RocksDbFull,
        Subject::RawHashMap,
        Subject::RawRocksDb,
        Subject::RawRocksDbLayout,
        Subject::Sled,
    ];

    /// The name in options and reports.
    pub fn name(self) -> &'static str {
        match self {
            Subject::Memory => "memory",
            Subject::Fs => "fs",
            Subject::FsIncremental => "fs-incremental",
            Subject::RocksDb => "rocksdb",
            Subject::RocksDbFull => "rocksdb-full",
            Subject::RawHashMap => "raw-hashmap",
            Subject::RawRocksDb => "raw-rocksdb",
            Subject::RawRocksDbLayout => "raw-rocksdb-layout",
            Subject::Sled => "sled",
        }
    }

    /// Whether it is a backend of this crate family (else a baseline).
    pub fn is_backend(self) -> bool {
        matches!(
            self,
            Subject::Memory
                | Subject::Fs
                | Subject::FsIncremental
                | Subject::RocksDb
                | Subject::RocksDbFull
        )
    }

    /// Whether it runs the throughput workloads (all but `rocksdb-full`,
    /// whose per-record path is `rocksdb`'s).
    pub fn in_throughput(self) -> bool {
        self != Subject::RocksDbFull
    }

    /// Whether it runs the large-state workloads (RocksDB and its raw
    /// baselines: the heap would need the state in memory).
    pub fn in_large_state(self) -> bool {
        matches!(
            self,
            Subject::RocksDb | Subject::RawRocksDb | Subject::RawRocksDbLayout
        )
    }

    /// Whether it writes checkpoints.
    pub fn in_checkpoints(self) -> bool {
        matches!(
            self,
            Subject::Fs | Subject::FsIncremental | Subject::RocksDb | Subject::RocksDbFull
        )
    }

    /// Whether its resident memory is measured.
    pub fn in_memory(self) -> bool {
        matches!(self, Subject::Memory | Subject::RawHashMap)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Subject {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Subject::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Subject::ALL.iter().map(|b| b.name()).collect();
                format!("unknown backend {s:?} (known: {})", names.join(", "))
            })
    }
}

/// A fresh folder under `work`, removed when dropped.
pub fn work_dir(work: &Path, prefix: &str) -> Result<tempfile::TempDir> {
    std::fs::create_dir_all(work)?;
    Ok(tempfile::Builder::new().prefix(prefix).tempdir_in(work)?)
}

/// The keyed-backend parameters of every workload: one subtask owning all
/// 128 key groups.
pub fn params<K: BenchKey>() -> Result<KeyedBackendParams<K>> {
    Ok(KeyedBackendParams::for_subtask(
        MAX_PARALLELISM,
        1,
        0,
        codec::postcard::<K>(),
    )?)
}

/// The RocksDB backend of `subject` (`rocksdb` or `rocksdb-full`) working
/// in `local` and checkpointing to `checkpoints`.
pub fn rocksdb_backend(
    subject: Subject,
    local: &Path,
    checkpoints: &Path,
) -> Result<RocksDbStateBackend> {
    let backend = RocksDbStateBackend::new(local, checkpoints, "bench")?;
    Ok(if subject == Subject::RocksDbFull {
        backend.with_options(RocksOptions {
            incremental: false,
            ..RocksOptions::default()
        })
    } else {
        backend
    })
}

/// Builds `subject`'s driver for `setup`, its files under `work`, and
/// populates it (untimed).
pub fn driver<K: BenchKey>(
    subject: Subject,
    setup: Setup<K>,
    work: &Path,
) -> Result<Box<dyn Driver>> {
    Ok(match subject {
        Subject::Memory => {
            let keyed = MemoryStateBackend::new().create_keyed_backend(params::<K>()?, &[])?;
            Box::new(StateDriver::new(setup, keyed, Vec::new())?)
        }
        Subject::Fs | Subject::FsIncremental => {
            let dir = work_dir(work, subject.name())?;
            let backend = FsStateBackend::new(dir.path(), "bench")?
                .with_incremental(subject == Subject::FsIncremental);
            let keyed = backend.create_keyed_backend(params::<K>()?, &[])?;
            Box::new(StateDriver::new(setup, keyed, vec![dir])?)
        }
        Subject::RocksDb | Subject::RocksDbFull => {
            let dir = work_dir(work, subject.name())?;
            let backend = rocksdb_backend(
                subject,
                &dir.path().join("local"),
                &dir.path().join("checkpoints"),
            )?;
            let keyed = backend.create_keyed_backend(params::<K>()?, &[])?;
            Box::new(StateDriver::new(setup, keyed, vec![dir])?)
        }
        Subject::RawHashMap => Box::new(HashMapDriver::new(setup)),
        Subject::RawRocksDb | Subject::RawRocksDbLayout => {
            let dir = work_dir(work, subject.name())?;
            let store = RawRocks::open(dir.path())?;
            let layout = if subject == Subject::RawRocksDb {
                KeyLayout::Plain
            } else {
                KeyLayout::Backend
            };
            Box::new(KvDriver::new(setup, store, layout, vec![dir])?)
        }
        Subject::Sled => {
            let dir = work_dir(work, subject.name())?;
            let store = SledStore::open(dir.path())?;
            Box::new(KvDriver::new(setup, store, KeyLayout::Backend, vec![dir])?)
        }
    })
}
