//! The example job across processes: one coordinator process and one worker
//! process per subtask, all checkpointing to the same location (a shared
//! folder or an object store such as `s3://bucket/prefix`).
//!
//! * The coordinator starts the workers, triggers checkpoints, collects the
//!   handles each worker reports, and completes a checkpoint (publishes its
//!   `_metadata`) only when every worker reported. A worker that fails a
//!   snapshot, or does not answer in time, aborts the checkpoint; a worker
//!   that dies fails the job, and the latest completed checkpoint is where
//!   it resumes, at any number of workers.
//! * A worker owns the key groups of its subtask. The source is the same
//!   deterministic generator as the single-process job's; every worker reads
//!   all its partitions and keeps the records of its own key groups (so no
//!   records cross processes). How far each key group has read every
//!   partition is kept in union operator state, so that after a restore at
//!   another parallelism every key group resumes exactly where its
//!   checkpoint left it: every record is counted exactly once.
//!
//! Messages are JSON lines: on a worker's stdin from the coordinator, on its
//! stdout to the coordinator.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use backend_fs::FsStateBackend;
use backend_rocksdb::RocksDbStateBackend;
use checkpoint_store::{
    CheckpointConfig, CheckpointStorage, Location, OperatorState, RestorePlan, SnapshotKind,
    SubtaskSpec, SubtaskState,
};
use serde::{Deserialize, Serialize};
use state_api::backend::operator::OperatorListState;
use state_api::codec::postcard;
use state_api::format::frame::Compression;
use state_api::key_group::KeyRouter;
use state_api::snapshot::metadata::{decode_metadata, encode_metadata, CheckpointMetadata};
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::{KeyedStateBackendExt, ReducingState};
use state_api::state::descriptor::{ListStateDescriptor, ReducingStateDescriptor};
use state_api::{
    DefaultOperatorStateBackend, Error, KeyGroupRange, KeyedStateBackend, OperatorStateBackend,
    StateBackend,
};

use crate::backends::BackendKind;
use crate::job::SourceConfig;

/// The operator of the distributed job: the keyed count, with the source's
/// read positions in its operator state.
pub const CLUSTER_OPERATOR: &str = "count";

/// A message from the coordinator to a worker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// Snapshot for checkpoint `id` and report the handles.
    Checkpoint {
        /// The checkpoint id.
        id: u64,
    },
    /// Checkpoint `id` completed (incremental backends build on it).
    Completed {
        /// The checkpoint id.
        id: u64,
    },
    /// Checkpoint `id` was aborted.
    Aborted {
        /// The checkpoint id.
        id: u64,
    },
    /// Every worker is done: exit.
    Finish,
}

/// A message from a worker to the coordinator.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// The worker restored (or started fresh) and runs.
    Started {
        /// Its process id.
        pid: u32,
        /// Its key groups, `start..=end`.
        key_groups: (u32, u32),
        /// Records of the source (all partitions) it starts reading at.
        start_at: u64,
    },
    /// The handles of the worker's snapshot for checkpoint `id`: a
    /// `_metadata` encoding holding one subtask, in hex.
    Snapshot {
        /// The checkpoint id.
        id: u64,
        /// The encoded subtask state.
        state: String,
    },
    /// The worker's snapshot for checkpoint `id` failed.
    SnapshotFailed {
        /// The checkpoint id.
        id: u64,
        /// Why.
        error: String,
    },
    /// The worker read its whole source and checked every count of its key
    /// groups against the source's definition.
    Done {
        /// Keys checked.
        keys: u64,
        /// The sum of their counts.
        total: u64,
        /// The source (partitions, records, keys) the worker read.
        source: (u32, u64, u64),
    },
    /// The worker failed and exits.
    Failed {
        /// Why.
        error: String,
    },
}

/// A worker's settings (its command line).
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The checkpoint location (a folder, or a URL).
    pub location: String,
    /// The job's id.
    pub job_id: String,
    /// The backend (fs or rocksdb).
    pub backend: BackendKind,
    /// RocksDB's working folder.
    pub local_dir: PathBuf,
    /// This worker's subtask index.
    pub index: u32,
    /// The job's parallelism (workers).
    pub parallelism: u32,
    /// The max parallelism.
    pub max_parallelism: u32,
    /// The source of a fresh job.
    pub source: SourceConfig,
    /// The checkpoint to restore (a `_metadata` path in the location).
    pub restore: Option<PathBuf>,
    /// Records read per second (of all partitions, before filtering).
    pub rate: Option<u64>,
    /// Snapshot streams up to this many bytes go into `_metadata`.
    pub inline_threshold: usize,
}

fn io_failure(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn send_line<W: Write, T: Serialize>(out: &mut W, msg: &T) -> Result<(), String> {
    let line = serde_json::to_string(msg).map_err(|e| e.to_string())?;
    writeln!(out, "{line}").map_err(io_failure("writing a message"))?;
    out.flush().map_err(io_failure("writing a message"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("odd hex length".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

/// Encodes one subtask's state for the coordinator.
pub fn encode_subtask(
    id: u64,
    max_parallelism: u32,
    state: SubtaskState,
) -> Result<String, String> {
    let metadata = CheckpointMetadata {
        checkpoint_id: id,
        kind: SnapshotKind::Checkpoint,
        timestamp_millis: 0,
        operators: vec![OperatorState {
            operator_id: CLUSTER_OPERATOR.into(),
            parallelism: 1,
            max_parallelism,
            subtasks: vec![state],
        }],
    };
    let bytes = encode_metadata(&metadata, Compression::None).map_err(|e| e.to_string())?;
    Ok(hex(&bytes))
}

/// Decodes what [`encode_subtask`] encoded.
pub fn decode_subtask(state: &str) -> Result<SubtaskState, String> {
    let bytes = unhex(state)?;
    let mut m = decode_metadata("a worker's report", &bytes).map_err(|e| e.to_string())?;
    m.operators
        .pop()
        .and_then(|mut o| o.subtasks.pop())
        .ok_or_else(|| "a worker's report holds no subtask".to_string())
}

fn count_descriptor() -> ReducingStateDescriptor<u64> {
    ReducingStateDescriptor::new("count", |a: &u64, b: &u64| a + b)
}

/// `(key group, partition, records of the partition read)` of every key
/// group, in union state: every subtask gets all on restore and keeps its own.
fn positions_descriptor() -> ListStateDescriptor<(u32, u32, u64)> {
    ListStateDescriptor::new("key-group-positions")
}

fn config_descriptor() -> ListStateDescriptor<(u32, u64, u64)> {
    ListStateDescriptor::new("source-config")
}

/// Runs a worker: restores, reads its source, snapshots on request, checks
/// its counts, and reports on stdout. Returns when told to finish.
pub fn run_worker(options: &WorkerOptions) -> Result<(), String> {
    let storage = CheckpointStorage::open(&options.location, &options.job_id)
        .and_then(|s| s.with_inline_threshold(options.inline_threshold))
        .map_err(|e| e.to_string())?;
    match options.backend {
        BackendKind::RocksDb => {
            let backend =
                RocksDbStateBackend::with_checkpoint_storage(&options.local_dir, storage.clone());
            Worker::start(&backend, storage, options)?.run()
        }
        _ => {
            let backend = FsStateBackend::with_checkpoint_storage(storage.clone());
            Worker::start(&backend, storage, options)?.run()
        }
    }
}

struct Worker<B: KeyedStateBackend<Key = u64>> {
    storage: CheckpointStorage,
    keyed: B,
    count: ReducingState<u64>,
    operator: DefaultOperatorStateBackend,
    positions: OperatorListState<(u32, u32, u64)>,
    range: KeyGroupRange,
    router: KeyRouter<u64>,
    source: SourceConfig,
    max_parallelism: u32,
    /// Per own key group (index from `range.start()`), per partition: the
    /// records already counted (restored); records below are skipped.
    floor: Vec<Vec<u64>>,
    /// Per partition: the next record to read.
    next: Vec<u64>,
    rate: Option<u64>,
    commands: Receiver<Option<ToWorker>>,
    out: std::io::Stdout,
}

impl<B> Worker<B>
where
    B: KeyedStateBackend<Key = u64>,
{
    fn start<S>(
        backend: &S,
        storage: CheckpointStorage,
        options: &WorkerOptions,
    ) -> Result<Self, String>
    where
        S: StateBackend<Keyed<u64> = B>,
    {
        let err = |e: Error| e.to_string();
        let mut max_parallelism = options.max_parallelism;
        let plan = match &options.restore {
            Some(path) => {
                let plan = RestorePlan::load(&**storage.storage(), path).map_err(err)?;
                plan.check_operators(&[CLUSTER_OPERATOR]).map_err(err)?;
                if let Some(op) = plan.metadata().operator(CLUSTER_OPERATOR) {
                    max_parallelism = op.max_parallelism;
                }
                Some(plan)
            }
            None => None,
        };
        let spec = SubtaskSpec::new(
            CLUSTER_OPERATOR,
            max_parallelism,
            options.parallelism,
            options.index,
        )
        .map_err(err)?;
        let restore = match &plan {
            Some(plan) => {
                let all =
                    SubtaskSpec::operator(CLUSTER_OPERATOR, max_parallelism, options.parallelism)
                        .map_err(err)?;
                plan.subtasks(&all)
                    .map_err(err)?
                    .into_iter()
                    .nth(options.index as usize)
                    .map(|r| (r.keyed, r.operator))
            }
            None => None,
        };
        let (keyed_handles, operator_handles) = restore.unwrap_or_default();
        let mut keyed = backend
            .create_keyed_backend(spec.keyed_params(postcard::<u64>()), &keyed_handles)
            .map_err(err)?;
        let count = keyed.reducing_state(&count_descriptor()).map_err(err)?;
        let mut operator = backend
            .create_operator_backend(&operator_handles)
            .map_err(err)?;
        let positions = operator
            .union_list_state(&positions_descriptor())
            .map_err(err)?;
        let config = operator
            .union_list_state(&config_descriptor())
            .map_err(err)?;
        let source = if plan.is_some() {
            let stored = operator.list(&config).map_err(err)?;
            let first = *stored
                .first()
                .ok_or("the checkpoint has no definition of the source")?;
            if stored.iter().any(|c| *c != first) {
                return Err("the checkpoint's subtasks disagree on the source".into());
            }
            stored.truncate(1);
            SourceConfig::new(first.0, first.1, first.2).map_err(err)?
        } else {
            operator.list(&config).map_err(err)?.push((
                options.source.partitions,
                options.source.records,
                options.source.keys,
            ));
            options.source
        };
        let range = spec.key_group_range();
        let partitions = source.partitions as usize;
        let mut floor = vec![vec![0u64; partitions]; range.len()];
        let restored = std::mem::take(operator.list(&positions).map_err(err)?);
        for (kg, partition, read) in restored {
            if range.contains(kg) && (partition as usize) < partitions {
                floor[(kg - range.start()) as usize][partition as usize] = read;
            }
        }
        let next: Vec<u64> = (0..partitions)
            .map(|p| floor.iter().map(|f| f[p]).min().unwrap_or(0))
            .collect();
        let start_at = next.iter().sum();
        let (tx, commands) = mpsc::channel();
        spawn_stdin_reader(tx);
        let mut worker = Worker {
            storage,
            keyed,
            count,
            operator,
            positions,
            range,
            router: KeyRouter::new(postcard::<u64>(), max_parallelism).map_err(err)?,
            source,
            max_parallelism,
            floor,
            next,
            rate: options.rate,
            commands,
            out: std::io::stdout(),
        };
        let started = FromWorker::Started {
            pid: std::process::id(),
            key_groups: (range.start(), range.end().unwrap_or(range.start())),
            start_at,
        };
        send_line(&mut worker.out, &started)?;
        Ok(worker)
    }

    fn exhausted(&self) -> bool {
        (0..self.source.partitions).all(|p| self.next[p as usize] >= self.source.records_in(p))
    }

    /// Reads up to `n` records of each partition.
    fn read_batch(&mut self, n: u64) -> Result<u64, String> {
        let mut read = 0;
        for p in 0..self.source.partitions {
            let end = self.source.records_in(p).min(self.next[p as usize] + n);
            for offset in self.next[p as usize]..end {
                let key = self.source.key_of(p, offset);
                let kg = self.router.key_group(&key).map_err(|e| e.to_string())?;
                if !self.range.contains(kg) {
                    continue;
                }
                if offset < self.floor[(kg - self.range.start()) as usize][p as usize] {
                    continue;
                }
                self.keyed.set_current_key(key).map_err(|e| e.to_string())?;
                self.count
                    .on(&mut self.keyed)
                    .add(1)
                    .map_err(|e| e.to_string())?;
            }
            read += end - self.next[p as usize];
            self.next[p as usize] = end;
        }
        Ok(read)
    }

    fn snapshot(&mut self, id: u64) -> Result<SubtaskState, String> {
        let err = |e: Error| e.to_string();
        // Every own key group has read each partition up to the later of
        // the shared position and its restored floor.
        let mut positions = Vec::with_capacity(self.floor.len() * self.next.len());
        for (i, floor) in self.floor.iter().enumerate() {
            for (p, &f) in floor.iter().enumerate() {
                positions.push((self.range.start() + i as u32, p as u32, f.max(self.next[p])));
            }
        }
        *self.operator.list(&self.positions).map_err(err)? = positions;
        let streams = self.storage.stream_factory(id).map_err(err)?;
        let options = SnapshotOptions::default();
        let keyed = self
            .keyed
            .snapshot(id, streams.clone(), options)
            .map_err(err)?;
        let operator = self.operator.snapshot(id, streams, options).map_err(err)?;
        Ok(SubtaskState {
            keyed: keyed.run().map_err(err)?.into_iter().collect(),
            operator: operator.run().map_err(err)?.into_iter().collect(),
            ..SubtaskState::default()
        })
    }

    /// Checks the count of every key of its key groups.
    fn check_counts(&mut self) -> Result<(u64, u64), String> {
        let mut keys = 0;
        let mut total = 0;
        let mut expected = self
            .source
            .expected_counts()
            .into_iter()
            .collect::<Vec<_>>();
        expected.sort_unstable();
        for (key, want) in expected {
            let kg = self.router.key_group(&key).map_err(|e| e.to_string())?;
            if !self.range.contains(kg) {
                continue;
            }
            self.keyed.set_current_key(key).map_err(|e| e.to_string())?;
            let got = self
                .count
                .on(&mut self.keyed)
                .get()
                .map_err(|e| e.to_string())?
                .unwrap_or(0);
            if got != want {
                return Err(format!(
                    "key {key} (key group {kg}) counted {got}, expected {want}"
                ));
            }
            keys += 1;
            total += got;
        }
        Ok((keys, total))
    }

    /// Handles a command; returns false on `Finish` or a closed stdin.
    fn handle(&mut self, command: Option<ToWorker>) -> Result<bool, String> {
        match command {
            None | Some(ToWorker::Finish) => return Ok(false),
            Some(ToWorker::Checkpoint { id }) => {
                let reply = match self
                    .snapshot(id)
                    .and_then(|s| encode_subtask(id, self.max_parallelism, s))
                {
                    Ok(state) => FromWorker::Snapshot { id, state },
                    Err(error) => FromWorker::SnapshotFailed { id, error },
                };
                send_line(&mut self.out, &reply)?;
            }
            Some(ToWorker::Completed { id }) => {
                self.keyed
                    .notify_checkpoint_complete(id)
                    .map_err(|e| e.to_string())?;
            }
            Some(ToWorker::Aborted { id }) => {
                self.keyed
                    .notify_checkpoint_aborted(id)
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(true)
    }

    fn run(mut self) -> Result<(), String> {
        let started = Instant::now();
        let mut read = 0u64;
        let batch = 500;
        while !self.exhausted() {
            while let Ok(command) = self.commands.try_recv() {
                if !self.handle(command)? {
                    return Ok(());
                }
            }
            read += self.read_batch(batch)?;
            if let Some(rate) = self.rate.filter(|r| *r > 0) {
                let due = Duration::from_secs_f64(read as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        let (keys, total) = match self.check_counts() {
            Ok(done) => done,
            Err(error) => {
                send_line(
                    &mut self.out,
                    &FromWorker::Failed {
                        error: error.clone(),
                    },
                )?;
                return Err(error);
            }
        };
        let source = (
            self.source.partitions,
            self.source.records,
            self.source.keys,
        );
        send_line(
            &mut self.out,
            &FromWorker::Done {
                keys,
                total,
                source,
            },
        )?;
        while let Ok(command) = self.commands.recv() {
            if !self.handle(command)? {
                break;
            }
        }
        Ok(())
    }
}

fn spawn_stdin_reader(tx: Sender<Option<ToWorker>>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<ToWorker>(&line) {
                Ok(msg) => {
                    if tx.send(Some(msg)).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("worker: ignoring a bad command ({e}): {line}"),
            }
        }
        // The coordinator is gone: stop.
        let _ = tx.send(None);
    });
}

/// The coordinator's settings.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The `statectl` binary the workers run.
    pub exe: PathBuf,
    /// The workers' settings; `index` is set per worker and `restore` by
    /// the coordinator (the latest completed checkpoint, if any).
    pub worker: WorkerOptions,
    /// Time between two checkpoints.
    pub checkpoint_interval: Duration,
    /// A checkpoint not completed within this is aborted.
    pub checkpoint_timeout: Duration,
    /// Completed checkpoints to keep.
    pub retained: usize,
}

/// How a coordinated run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterOutcome {
    /// Keys whose count every worker checked.
    pub keys: u64,
    /// The sum of their counts (the records of the source).
    pub total: u64,
    /// Checkpoints completed in this run.
    pub checkpoints: u64,
}

struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
}

enum Event {
    Message(u32, FromWorker),
    Exited(u32),
}

fn spawn_workers(
    options: &ClusterOptions,
    restore: Option<&Path>,
) -> Result<(Vec<WorkerProcess>, Receiver<Event>), String> {
    let w = &options.worker;
    let (tx, rx) = mpsc::channel();
    let mut workers = Vec::new();
    for index in 0..w.parallelism {
        let mut args = vec![
            "worker".to_string(),
            "--checkpoints".into(),
            w.location.clone(),
            "--job-id".into(),
            w.job_id.clone(),
            "--backend".into(),
            w.backend.name().into(),
            "--local-dir".into(),
            w.local_dir
                .join(format!("worker-{index}"))
                .display()
                .to_string(),
            "--index".into(),
            index.to_string(),
            "--parallelism".into(),
            w.parallelism.to_string(),
            "--max-parallelism".into(),
            w.max_parallelism.to_string(),
            "--records".into(),
            w.source.records.to_string(),
            "--partitions".into(),
            w.source.partitions.to_string(),
            "--keys".into(),
            w.source.keys.to_string(),
        ];
        args.extend([
            "--inline-threshold".to_string(),
            w.inline_threshold.to_string(),
        ]);
        if let Some(rate) = w.rate {
            args.extend(["--rate".to_string(), rate.to_string()]);
        }
        if let Some(path) = restore {
            args.extend(["--restore".to_string(), path.display().to_string()]);
        }
        let mut child = Command::new(&options.exe)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(io_failure("starting a worker"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or("a worker without an output pipe")?;
        let stdin = child.stdin.take().ok_or("a worker without an input pipe")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<FromWorker>(&line) {
                    Ok(msg) => {
                        if tx.send(Event::Message(index, msg)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        eprintln!("coordinator: worker {index} said something odd ({e}): {line}")
                    }
                }
            }
            let _ = tx.send(Event::Exited(index));
        });
        workers.push(WorkerProcess { child, stdin });
    }
    Ok((workers, rx))
}

fn broadcast(workers: &mut [WorkerProcess], msg: &ToWorker) {
    // A worker that cannot be written to has died; its reader reports it.
    for w in workers.iter_mut() {
        let _ = send_line(&mut w.stdin, msg);
    }
}

fn stop_all(workers: &mut [WorkerProcess]) {
    for w in workers.iter_mut() {
        let _ = w.child.kill();
        let _ = w.child.wait();
    }
}

/// Runs the job: restores from the job's latest completed checkpoint if it
/// has one, starts the workers, checkpoints until every worker is done, and
/// checks the counts. Prints one line per event on stdout.
pub fn run_coordinator(options: &ClusterOptions) -> Result<ClusterOutcome, String> {
    let w = &options.worker;
    let err = |e: Error| e.to_string();
    let location = Location::parse(&w.location).map_err(err)?;
    let storage = CheckpointStorage::open(&w.location, &w.job_id).map_err(err)?;
    let config = CheckpointConfig {
        num_retained: options.retained,
        ..CheckpointConfig::default()
    };
    let mut coordinator = storage.coordinator(config).map_err(err)?;
    let restore = coordinator
        .latest_completed()
        .map(|c| (c.id, c.metadata_path.clone()));
    match &restore {
        Some((id, path)) => println!(
            "resuming from checkpoint {id} ({}) with {} workers",
            storage.storage().describe(path),
            w.parallelism
        ),
        None => println!(
            "starting job {} with {} workers, checkpoints in {}",
            w.job_id,
            w.parallelism,
            location.root().display()
        ),
    }
    let (mut workers, events) = spawn_workers(options, restore.as_ref().map(|(_, p)| p.as_path()))?;
    let result = coordinate(options, &mut coordinator, &mut workers, &events);
    match &result {
        Ok(_) => {
            broadcast(&mut workers, &ToWorker::Finish);
            for w in workers.iter_mut() {
                let _ = w.child.wait();
            }
        }
        Err(_) => stop_all(&mut workers),
    }
    result
}

fn coordinate(
    options: &ClusterOptions,
    coordinator: &mut checkpoint_store::CheckpointCoordinator,
    workers: &mut [WorkerProcess],
    events: &Receiver<Event>,
) -> Result<ClusterOutcome, String> {
    let p = options.worker.parallelism;
    let mut done: BTreeMap<u32, WorkerDone> = BTreeMap::new();
    let mut started = 0;
    let mut in_flight: Option<(u64, Instant, HashMap<u32, SubtaskState>)> = None;
    let mut next_checkpoint = Instant::now() + options.checkpoint_interval;
    let mut completed = 0u64;
    let latest = |c: &checkpoint_store::CheckpointCoordinator| {
        c.latest_completed()
            .map(|c| format!("checkpoint {}", c.id))
            .unwrap_or_else(|| "none".into())
    };
    loop {
        if done.len() as u32 == p && in_flight.is_none() {
            return check_outcome(&done, completed);
        }
        let now = Instant::now();
        if started == p && in_flight.is_none() && now >= next_checkpoint {
            let pending = coordinator.begin_checkpoint().map_err(|e| e.to_string())?;
            broadcast(workers, &ToWorker::Checkpoint { id: pending.id });
            in_flight = Some((pending.id, now, HashMap::new()));
        }
        if let Some((id, since, _)) = &in_flight {
            if since.elapsed() > options.checkpoint_timeout {
                let id = *id;
                coordinator.abort(id).map_err(|e| e.to_string())?;
                broadcast(workers, &ToWorker::Aborted { id });
                println!(
                    "checkpoint {id} aborted: not every worker reported within {:?}",
                    options.checkpoint_timeout
                );
                in_flight = None;
                next_checkpoint = Instant::now() + options.checkpoint_interval;
            }
        }
        let event = match events.recv_timeout(Duration::from_millis(20)) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Err("every worker is gone".into()),
        };
        match event {
            Event::Message(
                i,
                FromWorker::Started {
                    pid,
                    key_groups,
                    start_at,
                },
            ) => {
                started += 1;
                println!(
                    "worker {i} pid {pid} key groups {}..={} starts at source record {start_at}",
                    key_groups.0, key_groups.1
                );
            }
            Event::Message(i, FromWorker::Snapshot { id, state }) => {
                let Some((current, _, reports)) = in_flight.as_mut() else {
                    continue;
                };
                if *current != id {
                    continue;
                }
                reports.insert(i, decode_subtask(&state)?);
                if reports.len() as u32 == p {
                    let subtasks = (0..p)
                        .map(|i| reports.remove(&i).unwrap_or_default())
                        .collect();
                    let op = OperatorState {
                        operator_id: CLUSTER_OPERATOR.into(),
                        parallelism: p,
                        max_parallelism: options.worker.max_parallelism,
                        subtasks,
                    };
                    let c = coordinator
                        .complete_checkpoint(id, vec![op])
                        .map_err(|e| e.to_string())?;
                    completed += 1;
                    let bytes: u64 = c.metadata.file_sizes().iter().map(|f| f.1).sum();
                    println!("checkpoint {id} completed ({bytes} bytes in files)");
                    broadcast(workers, &ToWorker::Completed { id });
                    in_flight = None;
                    next_checkpoint = Instant::now() + options.checkpoint_interval;
                }
            }
            Event::Message(i, FromWorker::SnapshotFailed { id, error }) => {
                if in_flight.as_ref().is_some_and(|f| f.0 == id) {
                    coordinator.abort(id).map_err(|e| e.to_string())?;
                    broadcast(workers, &ToWorker::Aborted { id });
                    println!("checkpoint {id} aborted: worker {i} failed its snapshot: {error}");
                    in_flight = None;
                    next_checkpoint = Instant::now() + options.checkpoint_interval;
                }
            }
            Event::Message(
                i,
                FromWorker::Done {
                    keys,
                    total,
                    source,
                },
            ) => {
                println!("worker {i} done: {keys} keys, {total} records, every count exact");
                done.insert(
                    i,
                    WorkerDone {
                        keys,
                        total,
                        source,
                    },
                );
            }
            Event::Message(i, FromWorker::Failed { error }) => {
                abort_in_flight(coordinator, &mut in_flight);
                return Err(format!(
                    "worker {i} failed: {error}; latest completed: {}",
                    latest(coordinator)
                ));
            }
            Event::Exited(i) => {
                if done.contains_key(&i) && in_flight.is_none() {
                    continue;
                }
                let status = workers[i as usize]
                    .child
                    .wait()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                if let Some((id, _, _)) = &in_flight {
                    println!("checkpoint {id} aborted: worker {i} exited");
                }
                abort_in_flight(coordinator, &mut in_flight);
                return Err(format!(
                    "worker {i} exited ({status}); the job failed; latest completed: {}",
                    latest(coordinator)
                ));
            }
        }
    }
}

/// What a worker reported when done.
struct WorkerDone {
    keys: u64,
    total: u64,
    source: (u32, u64, u64),
}

/// Checks that the workers together counted every key of the source once
/// and every record once.
fn check_outcome(
    done: &BTreeMap<u32, WorkerDone>,
    checkpoints: u64,
) -> Result<ClusterOutcome, String> {
    let mut sources = done.values().map(|d| d.source);
    let (partitions, records, keys) = sources.next().ok_or("no worker")?;
    if sources.any(|s| s != (partitions, records, keys)) {
        return Err("the workers read different sources".into());
    }
    let source = SourceConfig::new(partitions, records, keys).map_err(|e| e.to_string())?;
    let outcome = ClusterOutcome {
        keys: done.values().map(|d| d.keys).sum(),
        total: done.values().map(|d| d.total).sum(),
        checkpoints,
    };
    let expected_keys = source.expected_counts().len() as u64;
    if outcome.keys != expected_keys || outcome.total != records {
        return Err(format!(
            "the workers checked {} keys and {} records; the source has {expected_keys} keys and {records} records",
            outcome.keys, outcome.total
        ));
    }
    Ok(outcome)
}

fn abort_in_flight(
    coordinator: &mut checkpoint_store::CheckpointCoordinator,
    in_flight: &mut Option<(u64, Instant, HashMap<u32, SubtaskState>)>,
) {
    if let Some((id, _, _)) = in_flight.take() {
        // The job fails anyway; a failed abort leaves an orphan that the
        // next coordinator removes.
        let _ = coordinator.abort(id);
    }
}
