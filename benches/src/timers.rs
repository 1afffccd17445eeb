//! The `timers` family: register `n` event-time timers (one per operation:
//! set the current key, register a timer at a random timestamp), then fire
//! them all with one watermark. Figures are timers per second.
//!
//! Subjects: the heap backend (`memory`; `fs` runs the same timer code) and
//! `rocksdb` (a column family ordered by key group and timestamp), against
//! two baselines doing the same work with no key groups and no
//! deduplication: `binary-heap`, a `std` `BinaryHeap` of `(timestamp, key)`,
//! and `raw-rocksdb-timers`, the backend's RocksDB options with
//! `timestamp | key` keys, fired by iterating and deleting each key (it runs
//! when `raw-rocksdb` is selected).
//!
//! Every run checks that each registered timer fires exactly once, in
//! timestamp order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use backend_memory::MemoryStateBackend;
use state_api::codec::postcard;
use state_api::state::VoidNamespace;
use state_api::timers::TimerService;
use state_api::{KeyedStateBackend, StateBackend};

use crate::progress::Progress;
use crate::results::{Better, Measurement};
use crate::rng::SplitMix64;
use crate::subject::{params, rocksdb_backend, work_dir, Subject};
use crate::{BenchError, Result};

/// The family's name.
pub const FAMILY: &str = "timers";
/// The baseline of the heap backend.
pub const BINARY_HEAP: &str = "binary-heap";
/// The baseline of the RocksDB backend.
pub const RAW_ROCKSDB: &str = "raw-rocksdb-timers";

/// What the family runs.
#[derive(Clone, Debug)]
pub struct TimersBenchConfig {
    /// Timers registered and fired per round.
    pub timers: u32,
    /// Rounds per subject.
    pub rounds: u32,
    /// Subjects: `memory` and `rocksdb` run, with their baselines when
    /// `raw-hashmap` (for `binary-heap`) and `raw-rocksdb` are selected.
    pub subjects: Vec<Subject>,
    /// Seed of the timestamps.
    pub seed: u64,
    /// Folder for RocksDB's files.
    pub work: PathBuf,
}

/// The timers: (timestamp, key), keys spread over `n / 4` keys.
fn stream(n: u32, seed: u64) -> Vec<(i64, i64)> {
    let mut rng = SplitMix64::new(seed);
    let keys = u64::from(n / 4).max(1);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n as usize);
    let mut j = 0u64;
    while out.len() < n as usize {
        let t = (rng.below(1 << 40) as i64, (j % keys) as i64);
        j += 1;
        // Distinct timers, so every subject fires exactly `n`.
        if seen.insert(t) {
            out.push(t);
        }
    }
    out
}

/// Seconds to register and to fire, for one subject.
type Round = (f64, f64);

fn check_order(fired: &[(i64, i64)], n: usize, subject: &str) -> Result<()> {
    if fired.len() != n || fired.windows(2).any(|w| w[0].0 > w[1].0) {
        return Err(BenchError::Store(format!(
            "{subject}: {} of {n} timers fired, or out of timestamp order",
            fired.len()
        )));
    }
    Ok(())
}

fn backend_round<S: StateBackend>(backend: &S, timers: &[(i64, i64)], name: &str) -> Result<Round> {
    let mut keyed = backend.create_keyed_backend(params::<i64>()?, &[])?;
    let service = TimerService::new(&mut keyed, "bench", postcard::<VoidNamespace>())?;
    let start = Instant::now();
    for &(ts, key) in timers {
        keyed.set_current_key(key)?;
        service.register_event_time_timer(&mut keyed, &VoidNamespace, ts)?;
    }
    let register = start.elapsed().as_secs_f64();
    let mut fired = Vec::with_capacity(timers.len());
    let start = Instant::now();
    service.advance_watermark(&mut keyed, i64::MAX, |_, t| {
        fired.push((t.timestamp, t.key));
        Ok(())
    })?;
    let fire = start.elapsed().as_secs_f64();
    check_order(&fired, timers.len(), name)?;
    keyed.close();
    Ok((register, fire))
}

fn binary_heap_round(timers: &[(i64, i64)]) -> Result<Round> {
    let start = Instant::now();
    let mut heap = BinaryHeap::new();
    for &(ts, key) in timers {
        heap.push(Reverse((ts, key)));
    }
    let register = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut fired = Vec::with_capacity(timers.len());
    while let Some(Reverse(t)) = heap.pop() {
        fired.push(t);
    }
    let fire = start.elapsed().as_secs_f64();
    check_order(&fired, timers.len(), BINARY_HEAP)?;
    Ok((register, fire))
}

fn raw_rocksdb_round(timers: &[(i64, i64)], work: &std::path::Path) -> Result<Round> {
    let dir = work_dir(work, RAW_ROCKSDB)?;
    let (mut db_opts, cf_opts) =
        backend_rocksdb::engine_options(&backend_rocksdb::RocksOptions::default());
    db_opts.create_missing_column_families(true);
    let db = rocksdb::DB::open_cf_descriptors(
        &db_opts,
        dir.path(),
        [rocksdb::ColumnFamilyDescriptor::new("timers", cf_opts)],
    )?;
    let cf = db
        .cf_handle("timers")
        .ok_or_else(|| BenchError::Store("RocksDB: the timers column family is gone".into()))?;
    let write = backend_rocksdb::engine_write_options();
    let key_of = |ts: i64, key: i64| {
        let mut k = state_api::timers::encode_timestamp(ts).to_vec();
        k.extend_from_slice(&key.to_be_bytes());
        k
    };
    let start = Instant::now();
    for &(ts, key) in timers {
        db.put_cf_opt(cf, key_of(ts, key), [], &write)?;
    }
    let register = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut fired = Vec::with_capacity(timers.len());
    let mut it = db.raw_iterator_cf(cf);
    it.seek_to_first();
    while let Some(k) = it.key() {
        let ts = state_api::timers::decode_timestamp(&k[..8]).unwrap_or(i64::MIN);
        let key = i64::from_be_bytes(k[8..16].try_into().unwrap_or_default());
        db.delete_cf_opt(cf, k, &write)?;
        fired.push((ts, key));
        it.next();
    }
    it.status()?;
    drop(it);
    let fire = start.elapsed().as_secs_f64();
    check_order(&fired, timers.len(), RAW_ROCKSDB)?;
    Ok((register, fire))
}

/// Runs the family: per subject, `register` and `fire` in timers per second.
pub fn run(config: &TimersBenchConfig, progress: &Progress) -> Result<Vec<Measurement>> {
    let timers = stream(config.timers, config.seed);
    let mut subjects: Vec<&str> = Vec::new();
    for s in &config.subjects {
        match s {
            Subject::Memory => subjects.push("memory"),
            Subject::RocksDb => subjects.push("rocksdb"),
            Subject::RawHashMap => subjects.push(BINARY_HEAP),
            Subject::RawRocksDb => subjects.push(RAW_ROCKSDB),
            _ => {}
        }
    }
    let mut rounds: Vec<(&str, Vec<Round>)> = subjects.iter().map(|s| (*s, Vec::new())).collect();
    for round in 0..config.rounds {
        for (subject, results) in rounds.iter_mut() {
            let bar = progress.spinner(format!(
                "timers: {subject}, {} timers, round {}",
                config.timers,
                round + 1
            ));
            let r = match *subject {
                "memory" => backend_round(&MemoryStateBackend::new(), &timers, subject),
                "rocksdb" => {
                    let dir = work_dir(&config.work, "rocksdb-timers")?;
                    let backend = rocksdb_backend(
                        Subject::RocksDb,
                        &dir.path().join("local"),
                        &dir.path().join("checkpoints"),
                    )?;
                    backend_round(&backend, &timers, subject)
                }
                BINARY_HEAP => binary_heap_round(&timers),
                _ => raw_rocksdb_round(&timers, &config.work),
            };
            bar.finish_and_clear();
            results.push(r?);
        }
    }
    let mut out = Vec::new();
    let n = f64::from(config.timers);
    for (subject, results) in rounds {
        for (workload, pick) in [("register", 0), ("fire", 1)] {
            let values: Vec<f64> = results
                .iter()
                .map(|r| n / if pick == 0 { r.0 } else { r.1 }.max(1e-9))
                .collect();
            let m = Measurement::new(FAMILY, workload, subject, "ops/s", Better::Higher, values);
            progress.line(&format!(
                "{FAMILY:<18} {workload:<13} {subject:<19} {:>12.0} ops/s",
                m.median
            ));
            out.push(m);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subject_fires_every_timer_in_order() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let config = TimersBenchConfig {
            timers: 2_000,
            rounds: 1,
            subjects: vec![
                Subject::Memory,
                Subject::RocksDb,
                Subject::RawHashMap,
                Subject::RawRocksDb,
            ],
            seed: 7,
            work: dir.path().to_path_buf(),
        };
        let m = run(&config, &Progress::hidden())?;
        assert_eq!(m.len(), 8, "two figures for each of four subjects");
        assert!(m.iter().all(|m| m.median > 0.0));
        Ok(())
    }
}
