//! A small streaming job driven through the state API, end to end: a
//! partitioned source that keeps its partition offsets in operator list state
//! (as a Kafka source does), a keyed count in reducing state, checkpoints, a
//! failure, a restore at another parallelism, and an exact check of every
//! count (exactly-once: records after the last checkpoint are replayed).
//!
//! Used by the example job and by cross-backend tests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use state_api::snapshot::handle::{KeyedStateHandle, OperatorStateHandle};
use state_api::state::access::{KeyedStateBackendExt, ReducingState};
use state_api::state::descriptor::{ListStateDescriptor, ReducingStateDescriptor};
use state_api::{
    DefaultOperatorStateBackend, Error, KeyedStateBackend, OperatorStateBackend, Result,
    StateBackend,
};

use crate::harness::{owner, rescale_keyed, rescale_operator, snapshot, snapshot_operator};

/// The job's shape.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// Source partitions.
    pub partitions: u32,
    /// Records in each partition.
    pub records_per_partition: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Max parallelism of the keyed count.
    pub max_parallelism: u32,
    /// Parallelism before the failure.
    pub parallelism_before: u32,
    /// Parallelism after the restore.
    pub parallelism_after: u32,
    /// A checkpoint every this many records.
    pub checkpoint_every: u64,
    /// The job fails after this many records (at least one checkpoint before).
    pub fail_after: u64,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            partitions: 8,
            records_per_partition: 5_000,
            keys: 1_000,
            max_parallelism: 128,
            parallelism_before: 2,
            parallelism_after: 3,
            checkpoint_every: 7_000,
            fail_after: 25_000,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct JobReport {
    /// Records processed, replays included.
    pub records_processed: u64,
    /// Records processed after the last checkpoint before the failure, and so replayed.
    pub records_replayed: u64,
    /// Completed checkpoints.
    pub checkpoints: u64,
    /// The checkpoint restored after the failure.
    pub restored_checkpoint: u64,
    /// Time spent restoring after the failure.
    pub restore_time: Duration,
    /// Keys whose count was checked.
    pub keys_checked: usize,
    /// The sum of all counts (equals the records in the source).
    pub total_count: u64,
}

/// The key of record `offset` of `partition`.
pub fn key_of(config: &JobConfig, partition: u32, offset: u64) -> u64 {
    // A fixed scramble so that keys spread over key groups and partitions.
    let x = (u64::from(partition) << 40) ^ offset.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) % config.keys
}

/// One source subtask: its partitions' next offsets, kept in operator list state.
struct Source {
    operator: DefaultOperatorStateBackend,
    offsets: state_api::backend::operator::OperatorListState<(u32, u64)>,
}

/// One keyed count subtask.
struct Counter<B> {
    keyed: B,
    count: ReducingState<u64>,
}

fn count_descriptor() -> ReducingStateDescriptor<u64> {
    ReducingStateDescriptor::new("count", |a: &u64, b: &u64| a + b)
}

fn offsets_descriptor() -> ListStateDescriptor<(u32, u64)> {
    ListStateDescriptor::new("partition-offsets")
}

struct Running<B> {
    sources: Vec<Source>,
    counters: Vec<Counter<B>>,
}

impl<B: KeyedStateBackend<Key = u64>> Running<B> {
    /// Emits one record from each source subtask in turn until `limit`
    /// records were processed or the sources are exhausted. Returns the count.
    fn process(&mut self, config: &JobConfig, limit: u64) -> Result<u64> {
        let p = self.counters.len() as u32;
        let mut done = 0;
        while done < limit {
            let mut progressed = false;
            for source in &mut self.sources {
                if done >= limit {
                    break;
                }
                let offsets = source.operator.list(&source.offsets)?;
                let Some(slot) = offsets
                    .iter_mut()
                    .find(|(_, o)| *o < config.records_per_partition)
                else {
                    continue;
                };
                let key = key_of(config, slot.0, slot.1);
                slot.1 += 1;
                let counter = &mut self.counters[owner(&key, config.max_parallelism, p)? as usize];
                counter.keyed.set_current_key(key)?;
                counter.count.on(&mut counter.keyed).add(1)?;
                done += 1;
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        Ok(done)
    }

    /// Snapshots every subtask of both operators (an aligned checkpoint).
    fn checkpoint<S: StateBackend<Keyed<u64> = B>>(
        &mut self,
        backend: &S,
        id: u64,
    ) -> Result<(Vec<OperatorStateHandle>, Vec<KeyedStateHandle>)> {
        let mut ops = Vec::new();
        for s in &mut self.sources {
            ops.extend(snapshot_operator(backend, &mut s.operator, id)?);
        }
        let mut keyed = Vec::new();
        for c in &mut self.counters {
            keyed.extend(snapshot(backend, &mut c.keyed, id)?);
        }
        Ok((ops, keyed))
    }
}

fn start<S: StateBackend>(
    backend: &S,
    config: &JobConfig,
    parallelism: u32,
    restore: Option<&(Vec<OperatorStateHandle>, Vec<KeyedStateHandle>)>,
) -> Result<Running<S::Keyed<u64>>> {
    let operators = match restore {
        Some((ops, _)) => rescale_operator(backend, ops, parallelism)?,
        None => (0..parallelism)
            .map(|_| backend.create_operator_backend(&[]))
            .collect::<Result<_>>()?,
    };
    let mut sources = Vec::new();
    for (i, mut operator) in operators.into_iter().enumerate() {
        let offsets = operator.list_state(&offsets_descriptor())?;
        if !operator.is_restored() {
            // Fresh start: partitions are dealt round-robin, from offset 0.
            let list = operator.list(&offsets)?;
            list.extend(
                (0..config.partitions)
                    .filter(|p| p % parallelism == i as u32)
                    .map(|p| (p, 0)),
            );
        }
        sources.push(Source { operator, offsets });
    }
    let keyed = match restore {
        Some((_, keyed)) => {
            rescale_keyed::<S, u64>(backend, keyed, config.max_parallelism, parallelism)?
        }
        None => (0..parallelism)
            .map(|i| crate::harness::keyed(backend, config.max_parallelism, parallelism, i, &[]))
            .collect::<Result<_>>()?,
    };
    let mut counters = Vec::new();
    for mut k in keyed {
        let count = k.reducing_state(&count_descriptor())?;
        counters.push(Counter { keyed: k, count });
    }
    Ok(Running { sources, counters })
}

/// Runs the job on `backend` and checks every count; returns what it did.
pub fn run<S: StateBackend>(backend: &S, config: &JobConfig) -> Result<JobReport> {
    let mut report = JobReport::default();
    let mut job = start(backend, config, config.parallelism_before, None)?;
    let mut last = None;
    let mut since_checkpoint = 0;
    // Phase 1: run, checkpointing, until the failure.
    while report.records_processed < config.fail_after {
        let step = config
            .checkpoint_every
            .min(config.fail_after - report.records_processed);
        let n = job.process(config, step)?;
        report.records_processed += n;
        since_checkpoint += n;
        if n < step {
            break;
        }
        if since_checkpoint >= config.checkpoint_every {
            report.checkpoints += 1;
            last = Some(job.checkpoint(backend, report.checkpoints)?);
            report.restored_checkpoint = report.checkpoints;
            since_checkpoint = 0;
        }
    }
    report.records_replayed = since_checkpoint;
    let Some(last) = last else {
        return Err(Error::user(
            "the job failed before its first checkpoint; lower checkpoint_every",
        ));
    };
    // The failure: every subtask is lost.
    drop(job);
    // Phase 2: restore the last checkpoint at the new parallelism and finish.
    let started = Instant::now();
    let mut job = start(backend, config, config.parallelism_after, Some(&last))?;
    report.restore_time = started.elapsed();
    loop {
        let n = job.process(config, config.checkpoint_every)?;
        report.records_processed += n;
        if n == 0 {
            break;
        }
        report.checkpoints += 1;
        job.checkpoint(backend, report.checkpoints)?;
    }
    // Check: every key's count equals its number of records in the source.
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for p in 0..config.partitions {
        for o in 0..config.records_per_partition {
            *expected.entry(key_of(config, p, o)).or_default() += 1;
        }
    }
    let mut seen = 0usize;
    for (i, c) in job.counters.iter_mut().enumerate() {
        for key in c
            .keyed
            .keys(c.count.handle(), &state_api::state::VoidNamespace)?
        {
            c.keyed.set_current_key(key)?;
            let got = c.count.on(&mut c.keyed).get()?.unwrap_or(0);
            let want = expected.get(&key).copied().unwrap_or(0);
            if got != want {
                return Err(Error::user(format!(
                    "key {key} on subtask {i}: count {got}, expected {want} (not exactly once)"
                )));
            }
            report.total_count += got;
            seen += 1;
        }
    }
    if seen != expected.len() {
        return Err(Error::user(format!(
            "{} keys counted, {} expected",
            seen,
            expected.len()
        )));
    }
    report.keys_checked = seen;
    Ok(report)
}
