//! The example job: a partitioned source that keeps its partition offsets in
//! operator list state (as a Kafka source does), feeding a keyed count in
//! reducing state; aligned checkpoints through a [`CheckpointCoordinator`],
//! savepoints, cancellation, restore at any parallelism on any backend, and an
//! exact check of every count once the source is exhausted (exactly once:
//! records after the restored checkpoint are replayed from the restored
//! offsets).
//!
//! One process runs every subtask of both operators, one after the other;
//! a checkpoint snapshots them all between two records (an aligned barrier).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use checkpoint_store::{
    CheckpointCoordinator, CompletedCheckpoint, JobStatus, OperatorState, PendingCheckpoint,
    RestoreMode, RestorePlan, SubtaskState,
};
use state_api::backend::operator::OperatorListState;
use state_api::codec::postcard;
use state_api::format::frame::Compression;
use state_api::key_group::KeyRouter;
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::{KeyedStateBackendExt, ReducingState};
use state_api::state::descriptor::{ListStateDescriptor, ReducingStateDescriptor};
use state_api::state::VoidNamespace;
use state_api::{
    DefaultOperatorStateBackend, Error, KeyedStateBackend, OperatorStateBackend, Result,
    StateBackend,
};

use crate::control::{Command, Request};

/// The source operator's id.
pub const SOURCE_OPERATOR: &str = "source";
/// The keyed count's id.
pub const COUNT_OPERATOR: &str = "count";
/// Every operator of the job.
pub const OPERATORS: [&str; 2] = [SOURCE_OPERATOR, COUNT_OPERATOR];

/// What the source emits: `records` records spread over `partitions`
/// partitions, with keys in `0..keys`. Deterministic, so the expected count
/// of every key is known without running the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceConfig {
    /// Source partitions.
    pub partitions: u32,
    /// Records in all partitions together.
    pub records: u64,
    /// Distinct keys.
    pub keys: u64,
}

impl SourceConfig {
    /// A source of `records` records in `partitions` partitions over `keys`
    /// keys; partitions and keys must be positive.
    pub fn new(partitions: u32, records: u64, keys: u64) -> Result<Self> {
        if partitions == 0 || keys == 0 {
            return Err(Error::InvalidArgument {
                what: format!(
                    "a source needs at least one partition and one key (got {partitions} partitions, {keys} keys)"
                ),
            });
        }
        Ok(SourceConfig {
            partitions,
            records,
            keys,
        })
    }

    /// The records of `partition`.
    pub fn records_in(&self, partition: u32) -> u64 {
        let p = u64::from(self.partitions);
        self.records / p + u64::from(u64::from(partition) < self.records % p)
    }

    /// The key of record `offset` of `partition`.
    pub fn key_of(&self, partition: u32, offset: u64) -> u64 {
        // A fixed scramble so that keys spread over key groups and partitions.
        let x = (u64::from(partition) << 40) ^ offset.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) % self.keys
    }

    /// The count every key must end with.
    pub fn expected_counts(&self) -> HashMap<u64, u64> {
        let mut expected = HashMap::new();
        for p in 0..self.partitions {
            for o in 0..self.records_in(p) {
                *expected.entry(self.key_of(p, o)).or_default() += 1;
            }
        }
        expected
    }

    fn to_state(self) -> (u32, u64, u64) {
        (self.partitions, self.records, self.keys)
    }

    fn from_state((partitions, records, keys): (u32, u64, u64)) -> Result<Self> {
        SourceConfig::new(partitions, records, keys)
    }
}

/// How to run the job.
#[derive(Clone, Debug)]
pub struct JobOptions {
    /// The source of a fresh start; a restored job keeps the source of its
    /// snapshot.
    pub source: SourceConfig,
    /// Parallelism of both operators.
    pub parallelism: u32,
    /// Max parallelism of both operators (a restore keeps the snapshot's).
    pub max_parallelism: u32,
    /// Time between two checkpoints.
    pub checkpoint_interval: Duration,
    /// At most this many records per second (all subtasks together).
    pub rate: Option<u64>,
    /// Compression of savepoints.
    pub savepoint_compression: Compression,
}

/// What the job reports while it runs.
#[derive(Clone, Debug)]
pub enum JobEvent {
    /// Records consumed so far (often).
    Progress {
        /// Records consumed, restored offsets included.
        consumed: u64,
        /// Records in the source.
        total: u64,
    },
    /// A checkpoint completed.
    Checkpoint {
        /// Its id.
        id: u64,
        /// Records consumed at its barrier.
        consumed: u64,
        /// Bytes of the files it references.
        bytes: u64,
        /// Files it references.
        files: usize,
    },
    /// A checkpoint failed and was aborted; the job goes on.
    CheckpointFailed {
        /// Why.
        error: String,
    },
    /// A savepoint completed.
    Savepoint {
        /// Its folder.
        path: PathBuf,
    },
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// The source was exhausted and every count checked.
    Finished {
        /// Keys whose count was checked.
        keys: usize,
        /// The sum of all counts (the records in the source).
        total: u64,
    },
    /// Cancelled through the control channel.
    Cancelled {
        /// The savepoint taken on the way out.
        savepoint: Option<PathBuf>,
    },
}

struct SourceTask {
    operator: DefaultOperatorStateBackend,
    offsets: OperatorListState<(u32, u64)>,
}

struct CountTask<B> {
    keyed: B,
    count: ReducingState<u64>,
}

fn count_descriptor() -> ReducingStateDescriptor<u64> {
    ReducingStateDescriptor::new("count", |a: &u64, b: &u64| a + b)
}

fn offsets_descriptor() -> ListStateDescriptor<(u32, u64)> {
    ListStateDescriptor::new("partition-offsets")
}

fn config_descriptor() -> ListStateDescriptor<(u32, u64, u64)> {
    ListStateDescriptor::new("source-config")
}

/// A running job on backend `S`.
pub struct Job<S: StateBackend> {
    coordinator: CheckpointCoordinator,
    source: SourceConfig,
    max_parallelism: u32,
    parallelism: u32,
    sources: Vec<SourceTask>,
    counters: Vec<CountTask<S::Keyed<u64>>>,
    router: KeyRouter<u64>,
    savepoint_compression: Compression,
}

impl<S: StateBackend> Job<S> {
    /// Starts the job on `backend`, checkpointing through `coordinator`,
    /// restored from `restore` when given (which must hold this job's
    /// operators only).
    pub fn start(
        backend: &S,
        mut coordinator: CheckpointCoordinator,
        options: &JobOptions,
        restore: Option<&RestorePlan>,
    ) -> Result<Self> {
        let mut max_parallelism = options.max_parallelism;
        if let Some(plan) = restore {
            plan.check_operators(&OPERATORS)?;
            if let Some(op) = plan.metadata().operator(COUNT_OPERATOR) {
                max_parallelism = op.max_parallelism;
            }
            // Later checkpoint ids follow the restored one; its files are
            // never deleted by this job.
            coordinator.restore_from(plan.metadata_path(), RestoreMode::NoClaim)?;
        }
        let p = options.parallelism;
        let source_spec =
            checkpoint_store::SubtaskSpec::operator(SOURCE_OPERATOR, max_parallelism, p)?;
        let count_spec =
            checkpoint_store::SubtaskSpec::operator(COUNT_OPERATOR, max_parallelism, p)?;
        let (source_restore, count_restore) = match restore {
            Some(plan) => (plan.subtasks(&source_spec)?, plan.subtasks(&count_spec)?),
            None => (Vec::new(), Vec::new()),
        };

        // The source: fresh partitions dealt round-robin, or restored offsets
        // (split list state) and the source's definition (union list state).
        let mut sources = Vec::new();
        let mut source = if restore.is_some() {
            None
        } else {
            Some(options.source)
        };
        for i in 0..p {
            let handles = source_restore
                .get(i as usize)
                .map(|r| r.operator.as_slice())
                .unwrap_or(&[]);
            let mut operator = backend.create_operator_backend(handles)?;
            let offsets = operator.list_state(&offsets_descriptor())?;
            let config = operator.union_list_state(&config_descriptor())?;
            if restore.is_some() {
                let stored = operator.list(&config)?;
                let first = stored.first().copied().ok_or_else(|| Error::NotFound {
                    what: format!(
                        "the snapshot has no definition of the source (state 'source-config' of operator '{SOURCE_OPERATOR}'); is it a snapshot of this job?"
                    ),
                })?;
                let restored = SourceConfig::from_state(first)?;
                if stored.iter().any(|c| *c != first) {
                    return Err(Error::InvalidArgument {
                        what: "the snapshot's source subtasks disagree on the source definition"
                            .into(),
                    });
                }
                source = Some(restored);
                // One copy is enough: every subtask gets all on the next restore.
                stored.truncate(usize::from(i == 0));
            } else {
                let list = operator.list(&offsets)?;
                list.extend(
                    (0..options.source.partitions)
                        .filter(|part| part % p == i)
                        .map(|part| (part, 0)),
                );
                if i == 0 {
                    operator.list(&config)?.push(options.source.to_state());
                }
            }
            sources.push(SourceTask { operator, offsets });
        }
        let source = source.ok_or_else(|| Error::NotFound {
            what: "the job has no source subtask".into(),
        })?;

        let mut counters = Vec::new();
        for spec in count_spec.all() {
            let handles = count_restore
                .get(spec.index as usize)
                .map(|r| r.keyed.as_slice())
                .unwrap_or(&[]);
            let mut keyed =
                backend.create_keyed_backend(spec.keyed_params(postcard::<u64>()), handles)?;
            let count = keyed.reducing_state(&count_descriptor())?;
            counters.push(CountTask { keyed, count });
        }
        let mut job = Job {
            coordinator,
            source,
            max_parallelism,
            parallelism: p,
            sources,
            counters,
            router: KeyRouter::new(postcard::<u64>(), max_parallelism)?,
            savepoint_compression: options.savepoint_compression,
        };
        job.check_offsets()?;
        Ok(job)
    }

    /// The source the job reads.
    pub fn source(&self) -> SourceConfig {
        self.source
    }

    /// Records consumed so far (the sum of the sources' offsets).
    pub fn consumed(&mut self) -> Result<u64> {
        let mut total = 0;
        for s in &mut self.sources {
            total += s
                .operator
                .list(&s.offsets)?
                .iter()
                .map(|(_, o)| o)
                .sum::<u64>();
        }
        Ok(total)
    }

    /// Every partition is owned by exactly one source subtask.
    fn check_offsets(&mut self) -> Result<()> {
        let mut seen = vec![false; self.source.partitions as usize];
        for s in &mut self.sources {
            for &(part, offset) in s.operator.list(&s.offsets)?.iter() {
                let slot = seen
                    .get_mut(part as usize)
                    .ok_or_else(|| Error::InvalidArgument {
                        what: format!(
                            "restored offsets name partition {part}, the source has {}",
                            self.source.partitions
                        ),
                    })?;
                if std::mem::replace(slot, true) || offset > self.source.records_in(part) {
                    return Err(Error::InvalidArgument {
                        what: format!("restored offsets of partition {part} are inconsistent"),
                    });
                }
            }
        }
        if let Some(missing) = seen.iter().position(|s| !s) {
            return Err(Error::InvalidArgument {
                what: format!("no source subtask owns partition {missing} after the restore"),
            });
        }
        Ok(())
    }

    /// Emits one record from each source subtask in turn until `limit`
    /// records were processed or the sources are exhausted; returns how many.
    pub fn process(&mut self, limit: u64) -> Result<u64> {
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
                    .find(|(part, o)| *o < self.source.records_in(*part))
                else {
                    continue;
                };
                let key = self.source.key_of(slot.0, slot.1);
                slot.1 += 1;
                let owner = self.router.subtask(&key, self.parallelism)?;
                let counter = &mut self.counters[owner as usize];
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

    /// Snapshots every subtask of both operators into `pending`.
    fn snapshot_all(
        &mut self,
        pending: &PendingCheckpoint,
        options: SnapshotOptions,
    ) -> Result<Vec<OperatorState>> {
        let mut sources = Vec::new();
        for s in &mut self.sources {
            let handle = pending.snapshot_operator(&mut s.operator, options)?.run()?;
            sources.push(SubtaskState {
                operator: handle.into_iter().collect(),
                ..Default::default()
            });
        }
        let mut counts = Vec::new();
        for c in &mut self.counters {
            let handle = pending.snapshot_keyed(&mut c.keyed, options)?.run()?;
            counts.push(SubtaskState {
                keyed: handle.into_iter().collect(),
                ..Default::default()
            });
        }
        let operator = |id: &str, subtasks| OperatorState {
            operator_id: id.into(),
            parallelism: self.parallelism,
            max_parallelism: self.max_parallelism,
            subtasks,
        };
        Ok(vec![
            operator(SOURCE_OPERATOR, sources),
            operator(COUNT_OPERATOR, counts),
        ])
    }

    /// Takes a checkpoint of every subtask and completes it. On failure the
    /// checkpoint is aborted (the previous one stays the latest) and the
    /// error returned.
    pub fn checkpoint(&mut self) -> Result<CompletedCheckpoint> {
        let pending = self.coordinator.begin_checkpoint()?;
        let id = pending.id;
        let completed = self
            .snapshot_all(&pending, SnapshotOptions::default())
            .and_then(|operators| self.coordinator.complete_checkpoint(id, operators));
        match completed {
            Ok(completed) => {
                for c in &mut self.counters {
                    c.keyed.notify_checkpoint_complete(id)?;
                }
                Ok(completed)
            }
            Err(e) => {
                for c in &mut self.counters {
                    c.keyed.notify_checkpoint_aborted(id)?;
                }
                self.coordinator.abort(id)?;
                Err(e)
            }
        }
    }

    /// Takes a savepoint (canonical, self-contained) under `target`; returns
    /// its id and folder.
    pub fn savepoint(&mut self, target: &Path) -> Result<(u64, PathBuf)> {
        let pending = self.coordinator.begin_savepoint(target)?;
        let id = pending.id;
        let options = SnapshotOptions::savepoint(self.savepoint_compression);
        match self
            .snapshot_all(&pending, options)
            .and_then(|operators| self.coordinator.complete_savepoint(id, operators))
        {
            Ok(path) => Ok((id, path)),
            Err(e) => {
                self.coordinator.abort(id)?;
                Err(e)
            }
        }
    }

    /// Stops the job, after a savepoint under `savepoint` when given; the
    /// coordinator's cancellation policy decides what happens to the
    /// retained checkpoints.
    pub fn cancel(mut self, savepoint: Option<&Path>) -> Result<Option<PathBuf>> {
        let path = match savepoint {
            Some(target) => Some(self.savepoint(target)?.1),
            None => None,
        };
        self.close();
        self.coordinator.shutdown(JobStatus::Cancelled)?;
        Ok(path)
    }

    /// Checks that every key's count equals its records in the source, then
    /// finishes the job (its checkpoints are handled like on cancellation).
    pub fn finish(mut self) -> Result<JobOutcome> {
        let expected = self.source.expected_counts();
        let mut seen = 0usize;
        let mut total = 0u64;
        for (i, c) in self.counters.iter_mut().enumerate() {
            for key in c.keyed.keys(c.count.handle(), &VoidNamespace)? {
                c.keyed.set_current_key(key)?;
                let got = c.count.on(&mut c.keyed).get()?.unwrap_or(0);
                let want = expected.get(&key).copied().unwrap_or(0);
                if got != want {
                    return Err(Error::user(format!(
                        "key {key} on subtask {i}: count {got}, expected {want} (not exactly once)"
                    )));
                }
                total += got;
                seen += 1;
            }
        }
        if seen != expected.len() {
            return Err(Error::user(format!(
                "{seen} keys counted, {} expected",
                expected.len()
            )));
        }
        self.close();
        self.coordinator.shutdown(JobStatus::Finished)?;
        Ok(JobOutcome::Finished { keys: seen, total })
    }

    fn close(&mut self) {
        for s in &mut self.sources {
            s.operator.close();
        }
        for c in &mut self.counters {
            c.keyed.close();
        }
    }

    /// Runs the job until the source is exhausted or a cancel command
    /// arrives: checkpoints every `options.checkpoint_interval`, answers
    /// commands from `commands` between records, reports to `observe`.
    pub fn run(
        mut self,
        options: &JobOptions,
        commands: Option<&Receiver<Command>>,
        observe: &mut dyn FnMut(JobEvent),
    ) -> Result<JobOutcome> {
        let total = self.source.records;
        let started = Instant::now();
        let start_consumed = self.consumed()?;
        let mut consumed = start_consumed;
        let mut last_checkpoint = Instant::now();
        // Batches small enough to answer commands and keep the rate smooth.
        let batch = options.rate.map_or(2_000, |r| (r / 100).clamp(1, 2_000));
        loop {
            if let Some(rx) = commands {
                while let Ok(command) = rx.try_recv() {
                    match command.request.clone() {
                        Request::Status => command.reply(Ok(format!(
                            "running: {consumed} of {total} records, parallelism {}",
                            self.parallelism
                        ))),
                        Request::Savepoint { target } => match self.savepoint(&target) {
                            Ok((_, path)) => {
                                observe(JobEvent::Savepoint { path: path.clone() });
                                command.reply(Ok(path.display().to_string()));
                            }
                            Err(e) => command.reply(Err(format!("savepoint failed: {e}"))),
                        },
                        Request::Cancel { savepoint } => {
                            return match self.cancel(savepoint.as_deref()) {
                                Ok(path) => {
                                    if let Some(path) = &path {
                                        observe(JobEvent::Savepoint { path: path.clone() });
                                    }
                                    command.reply(Ok(match &path {
                                        Some(p) => p.display().to_string(),
                                        None => "cancelled".into(),
                                    }));
                                    Ok(JobOutcome::Cancelled { savepoint: path })
                                }
                                Err(e) => {
                                    command.reply(Err(format!("cancel failed: {e}")));
                                    Err(e)
                                }
                            };
                        }
                    }
                }
            }
            if last_checkpoint.elapsed() >= options.checkpoint_interval {
                let id_and_files = self.checkpoint();
                last_checkpoint = Instant::now();
                match id_and_files {
                    Ok(c) => {
                        let sizes = c.metadata.file_sizes();
                        observe(JobEvent::Checkpoint {
                            id: c.id,
                            consumed,
                            bytes: sizes.iter().map(|(_, s)| s).sum(),
                            files: sizes.len(),
                        });
                    }
                    Err(e) if e.kind() == state_api::ErrorKind::Io => {
                        // A failed write fails the checkpoint, not the job;
                        // a backend that lost writes refuses the next call.
                        observe(JobEvent::CheckpointFailed {
                            error: e.to_string(),
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            let n = self.process(batch)?;
            consumed += n;
            observe(JobEvent::Progress { consumed, total });
            if n < batch {
                // A final checkpoint, as Flink takes one when a job finishes:
                // the job's last checkpoint holds its final state.
                let c = self.checkpoint()?;
                let sizes = c.metadata.file_sizes();
                observe(JobEvent::Checkpoint {
                    id: c.id,
                    consumed,
                    bytes: sizes.iter().map(|(_, s)| s).sum(),
                    files: sizes.len(),
                });
                return self.finish();
            }
            if let Some(rate) = options.rate {
                // Sleep until the records done so far are due.
                let due = Duration::from_secs_f64((consumed - start_consumed) as f64 / rate as f64);
                let elapsed = started.elapsed();
                if due > elapsed {
                    std::thread::sleep((due - elapsed).min(Duration::from_millis(50)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_dealt_to_every_partition() {
        let s = SourceConfig::new(3, 10, 5).expect("valid");
        assert_eq!(
            (0..3).map(|p| s.records_in(p)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(s.expected_counts().values().sum::<u64>(), 10);
        assert!(SourceConfig::new(0, 10, 5).is_err());
        assert!(SourceConfig::new(1, 10, 0).is_err());
    }
}
