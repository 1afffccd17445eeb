//! Checkpoints and restores at scale: `ValueState<i64>` of many keys on the
//! backends that write checkpoints.
//!
//! Per round and subject, with `keys` keys populated (value `k`):
//! 1. `first`: a checkpoint through the coordinator. `sync` is the
//!    synchronous part (the `snapshot` call, when the task must wait),
//!    `total` runs until `complete_checkpoint` returns (the `_metadata` is
//!    durable), `bytes` is what the checkpoint added to storage (files it
//!    references that the previous one did not, plus its `_metadata`).
//! 2. `second`: the same after 1% of the keys changed, spread over the key
//!    space.
//! 3. `restore`: one subtask restored from the second checkpoint, until its
//!    state is registered and readable.
//! 4. `rescale.1-2`, `rescale.2-1`, `rescale.4-3`: every subtask of the new
//!    parallelism restored, in turn, from a checkpoint taken at the old one;
//!    the total time.
//!
//! After every restore (outside the timing) the restored subtasks are read
//! back, each key through the subtask that owns its key group, and compared
//! with what was written.
//!
//! With an object-store location (`--checkpoint-location s3://...`), every
//! subject runs a second time with its checkpoints there, in the same run
//! (subject `fs@s3`, ...), plus `upload` and `download` throughputs in MiB/s:
//! the first checkpoint's bytes over its total time, and the restore's
//! bytes over the restore time.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backend_fs::FsStateBackend;
use backend_rocksdb::{RocksDbStateBackend, RocksOptions};
use checkpoint_store::{
    CheckpointConfig, CheckpointCoordinator, CheckpointStorage, CompletedCheckpoint, Location,
    OperatorState, Storage, SubtaskState,
};
use state_api::backend::KeyedBackendParams;
use state_api::key_group::{key_group_for_bytes, operator_index_for_key_group};
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::snapshot::rescale::assign_keyed_state;
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::{KeyedStateBackendExt, ValueState};
use state_api::state::descriptor::ValueStateDescriptor;
use state_api::{codec, KeyedStateBackend, StateBackend};

use crate::progress::Progress;
use crate::results::{Better, Measurement};
use crate::subject::{work_dir, Subject};
use crate::{BenchError, Result, MAX_PARALLELISM};

/// The family name in the results.
pub const FAMILY: &str = "checkpoint";

/// A backend that writes checkpoints through a coordinator.
pub trait Checkpointing: StateBackend {
    /// The coordinator of the backend's job.
    fn coordinator(&self, config: CheckpointConfig) -> state_api::Result<CheckpointCoordinator>;
    /// Where its checkpoints go.
    fn storage(&self) -> &CheckpointStorage;
}

impl Checkpointing for FsStateBackend {
    fn coordinator(&self, config: CheckpointConfig) -> state_api::Result<CheckpointCoordinator> {
        FsStateBackend::coordinator(self, config)
    }

    fn storage(&self) -> &CheckpointStorage {
        self.checkpoint_storage()
    }
}

impl Checkpointing for RocksDbStateBackend {
    fn coordinator(&self, config: CheckpointConfig) -> state_api::Result<CheckpointCoordinator> {
        RocksDbStateBackend::coordinator(self, config)
    }

    fn storage(&self) -> &CheckpointStorage {
        self.checkpoint_storage()
    }
}

/// What the checkpoint family runs.
#[derive(Clone, Debug)]
pub struct CheckpointBenchConfig {
    /// Keys of `ValueState<i64>`.
    pub keys: u32,
    /// Rounds per subject.
    pub rounds: u32,
    /// Subjects to run (those that do not checkpoint are skipped).
    pub subjects: Vec<Subject>,
    /// Folder for the backends' files.
    pub work: PathBuf,
    /// An object-store location every subject also runs on.
    pub object_store: Option<String>,
}

const STATE: &str = "bench-value";

type Figures = Vec<(&'static str, &'static str, f64)>;

/// Runs the family: per subject, one measurement per figure.
pub fn run(config: &CheckpointBenchConfig, progress: &Progress) -> Result<Vec<Measurement>> {
    let remote = match &config.object_store {
        Some(url) => Some((url.clone(), Location::parse(url)?)),
        None => None,
    };
    let mut per_subject: Vec<(String, Vec<Figures>)> = Vec::new();
    for round in 0..config.rounds {
        for &subject in config.subjects.iter().filter(|s| s.in_checkpoints()) {
            let places = std::iter::once(None).chain(remote.iter().map(Some));
            for place in places {
                let label = match place {
                    None => subject.name().to_string(),
                    Some((_, Location::ObjectStore { scheme, .. })) => {
                        format!("{}@{scheme}", subject.name())
                    }
                    Some((_, Location::Local(_))) => format!("{}@dir", subject.name()),
                };
                let bar = progress.spinner(format!(
                    "checkpoint: {label}, {} keys, round {}",
                    config.keys,
                    round + 1
                ));
                let dir = work_dir(&config.work, subject.name())?;
                let storage = match place {
                    None => CheckpointStorage::new(&dir.path().join("checkpoints"), "bench")?,
                    Some((url, _)) => {
                        let unique = dir
                            .path()
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        CheckpointStorage::open(&format!("{url}/{unique}"), "bench")?
                    }
                };
                let figures = match subject {
                    Subject::Fs | Subject::FsIncremental => {
                        let backend = FsStateBackend::with_checkpoint_storage(storage.clone())
                            .with_incremental(subject == Subject::FsIncremental);
                        one_round(&backend, config.keys)
                    }
                    _ => {
                        let backend =
                            rocksdb_on(subject, &dir.path().join("local"), storage.clone());
                        one_round(&backend, config.keys)
                    }
                };
                // The round's objects do not outlive it.
                let _ = storage.storage().remove_dir_all(storage.layout().job_dir());
                bar.finish_and_clear();
                let mut figures = figures?;
                if place.is_some() {
                    add_throughputs(&mut figures);
                }
                match per_subject.iter_mut().find(|(s, _)| *s == label) {
                    Some((_, rounds)) => rounds.push(figures),
                    None => per_subject.push((label, vec![figures])),
                }
            }
        }
    }
    let mut out = Vec::new();
    for (subject, rounds) in per_subject {
        let Some(first) = rounds.first() else {
            continue;
        };
        for (i, &(workload, unit, _)) in first.iter().enumerate() {
            let values = rounds.iter().map(|r| r[i].2).collect();
            let better = if unit == "MiB/s" {
                Better::Higher
            } else {
                Better::Lower
            };
            let m = Measurement::new(FAMILY, workload, &subject, unit, better, values);
            progress.line(&format!(
                "{FAMILY:<18} {workload:<13} {subject:<19} {:>12.3} {unit}",
                m.median
            ));
            out.push(m);
        }
    }
    Ok(out)
}

/// Upload (first checkpoint) and download (restore) throughput, from the
/// round's bytes and times.
fn add_throughputs(figures: &mut Figures) {
    let get = |name: &str| figures.iter().find(|f| f.0 == name).map(|f| f.2);
    let mib = |bytes: f64, ms: f64| bytes / (1024.0 * 1024.0) / (ms / 1e3).max(1e-9);
    let upload = get("first.bytes").zip(get("first.total"));
    let download = get("restore.bytes").zip(get("restore"));
    if let Some((bytes, total)) = upload {
        figures.push(("upload", "MiB/s", mib(bytes, total)));
    }
    if let Some((bytes, restore)) = download {
        figures.push(("download", "MiB/s", mib(bytes, restore)));
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn value_state() -> ValueStateDescriptor<i64> {
    ValueStateDescriptor::new(STATE)
}

/// The value key `k` holds after `changed` (1% of the keys rewritten).
fn expected(k: i64) -> i64 {
    if changed(k) {
        -k - 1
    } else {
        k
    }
}

fn changed(k: i64) -> bool {
    k % 100 == 7
}

fn one_round<S: Checkpointing>(backend: &S, keys: u32) -> Result<Figures> {
    // Every checkpoint of the round stays restorable until the round ends.
    let mut coordinator = backend.coordinator(CheckpointConfig {
        num_retained: 8,
        ..CheckpointConfig::default()
    })?;
    let keys = i64::from(keys);
    let mut job = vec![open(backend, 1, 0, &[])?];
    {
        let (b, v) = &mut job[0];
        for k in 0..keys {
            b.set_current_key(k)?;
            v.on(b).update(Some(k))?;
        }
    }
    let storage = backend.storage().storage().clone();
    let storage = &*storage;
    let first = checkpoint(storage, &mut coordinator, &mut job, None)?;
    {
        let (b, v) = &mut job[0];
        for k in (0..keys).filter(|k| changed(*k)) {
            b.set_current_key(k)?;
            v.on(b).update(Some(expected(k)))?;
        }
    }
    let second = checkpoint(storage, &mut coordinator, &mut job, Some(&first.done))?;
    drop(job);

    let all = handles(&second.done);
    let t = Instant::now();
    let one = vec![open(backend, 1, 0, &all)?];
    let restore = t.elapsed();
    verify(one, keys)?;

    let (rescale_12, two) = rescale(backend, &all, 2)?;
    let at_two = checkpoint_quietly(storage, &mut coordinator, two, keys)?;
    let (rescale_21, one) = rescale(backend, &handles(&at_two), 1)?;
    verify(one, keys)?;
    let (_, four) = rescale(backend, &all, 4)?;
    let at_four = checkpoint_quietly(storage, &mut coordinator, four, keys)?;
    let (rescale_43, three) = rescale(backend, &handles(&at_four), 3)?;
    verify(three, keys)?;

    Ok(vec![
        ("first.sync", "ms", ms(first.sync)),
        ("first.total", "ms", ms(first.total)),
        ("first.bytes", "bytes", first.bytes as f64),
        ("second.sync", "ms", ms(second.sync)),
        ("second.total", "ms", ms(second.total)),
        ("second.bytes", "bytes", second.bytes as f64),
        ("restore", "ms", ms(restore)),
        (
            "restore.bytes",
            "bytes",
            new_bytes(storage, &second.done, None) as f64,
        ),
        ("rescale.1-2", "ms", ms(rescale_12)),
        ("rescale.2-1", "ms", ms(rescale_21)),
        ("rescale.4-3", "ms", ms(rescale_43)),
    ])
}

type Subtask<S> = (<S as StateBackend>::Keyed<i64>, ValueState<i64>);

/// Subtask `index` of `parallelism`, restored from `restore`, with the
/// value state registered (a heap backend decodes its state then).
fn open<S: StateBackend>(
    backend: &S,
    parallelism: u32,
    index: u32,
    restore: &[KeyedStateHandle],
) -> Result<Subtask<S>> {
    let params = KeyedBackendParams::for_subtask(
        MAX_PARALLELISM,
        parallelism,
        index,
        codec::postcard::<i64>(),
    )?;
    let mut keyed = backend.create_keyed_backend(params, restore)?;
    let v = keyed.value_state(&value_state())?;
    Ok((keyed, v))
}

/// Restores every subtask of `parallelism` from `handles`, timed in total.
fn rescale<S: StateBackend>(
    backend: &S,
    handles: &[KeyedStateHandle],
    parallelism: u32,
) -> Result<(Duration, Vec<Subtask<S>>)> {
    let parts = assign_keyed_state(handles, MAX_PARALLELISM, parallelism)?;
    let t = Instant::now();
    let mut subtasks = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        subtasks.push(open(backend, parallelism, i as u32, part)?);
    }
    Ok((t.elapsed(), subtasks))
}

/// Reads every key back through the subtask owning its key group.
fn verify<B: KeyedStateBackend<Key = i64>>(
    mut subtasks: Vec<(B, ValueState<i64>)>,
    keys: i64,
) -> Result<()> {
    let parallelism = subtasks.len() as u32;
    let key_codec = codec::postcard::<i64>();
    let mut bytes = Vec::new();
    for k in 0..keys {
        bytes.clear();
        key_codec
            .encode(&k, &mut bytes)
            .map_err(|e| BenchError::Store(e.to_string()))?;
        let group = key_group_for_bytes(&bytes, MAX_PARALLELISM)?;
        let i = operator_index_for_key_group(MAX_PARALLELISM, parallelism, group)? as usize;
        let (b, v) = &mut subtasks[i];
        b.set_current_key(k)?;
        let got = v.on(b).get()?;
        if got != Some(expected(k)) {
            return Err(BenchError::Verification(format!(
                "restored at parallelism {parallelism}: key {k} holds {got:?}, {} was written",
                expected(k)
            )));
        }
    }
    Ok(())
}

struct Taken {
    sync: Duration,
    total: Duration,
    bytes: u64,
    done: CompletedCheckpoint,
}

/// One checkpoint of `subtasks` through `coordinator`.
fn checkpoint<B: KeyedStateBackend>(
    storage: &dyn Storage,
    coordinator: &mut CheckpointCoordinator,
    subtasks: &mut [(B, ValueState<i64>)],
    before: Option<&CompletedCheckpoint>,
) -> Result<Taken> {
    let pending = coordinator.begin_checkpoint()?;
    let started = Instant::now();
    let mut sync = Duration::ZERO;
    let mut tasks = Vec::with_capacity(subtasks.len());
    for (b, _) in subtasks.iter_mut() {
        let t = Instant::now();
        tasks.push(b.snapshot(
            pending.id,
            pending.streams.clone(),
            SnapshotOptions::default(),
        )?);
        sync += t.elapsed();
    }
    let mut states = Vec::with_capacity(tasks.len());
    for task in tasks {
        states.push(SubtaskState {
            keyed: task.run()?.into_iter().collect(),
            ..Default::default()
        });
    }
    let done = coordinator.complete_checkpoint(
        pending.id,
        vec![OperatorState {
            operator_id: "bench".into(),
            parallelism: subtasks.len() as u32,
            max_parallelism: MAX_PARALLELISM,
            subtasks: states,
        }],
    )?;
    let total = started.elapsed();
    for (b, _) in subtasks.iter_mut() {
        b.notify_checkpoint_complete(pending.id)?;
    }
    let bytes = new_bytes(storage, &done, before);
    Ok(Taken {
        sync,
        total,
        bytes,
        done,
    })
}

/// Verifies `subtasks`, checkpoints them and closes them.
fn checkpoint_quietly<B: KeyedStateBackend<Key = i64>>(
    storage: &dyn Storage,
    coordinator: &mut CheckpointCoordinator,
    mut subtasks: Vec<(B, ValueState<i64>)>,
    keys: i64,
) -> Result<CompletedCheckpoint> {
    let taken = checkpoint(storage, coordinator, &mut subtasks, None)?;
    verify(subtasks, keys)?;
    Ok(taken.done)
}

fn handles(done: &CompletedCheckpoint) -> Vec<KeyedStateHandle> {
    done.metadata
        .operators
        .iter()
        .flat_map(|o| o.subtasks.iter())
        .flat_map(|s| s.keyed.iter().cloned())
        .collect()
}

/// Bytes `done` added to storage: the files it references that `before`
/// does not (at the sizes their handles record), and its `_metadata` (where
/// small state is inlined).
fn new_bytes(
    storage: &dyn Storage,
    done: &CompletedCheckpoint,
    before: Option<&CompletedCheckpoint>,
) -> u64 {
    let old: BTreeSet<PathBuf> = before
        .map(|b| b.metadata.files().into_iter().collect())
        .unwrap_or_default();
    let files: u64 = done
        .metadata
        .file_sizes()
        .into_iter()
        .filter(|(f, _)| !old.contains(f))
        .map(|(_, size)| size)
        .sum();
    files + storage.len(&done.metadata_path).unwrap_or(0)
}

/// A RocksDB backend of `subject` working in `local`, checkpointing to
/// `storage`.
fn rocksdb_on(subject: Subject, local: &Path, storage: CheckpointStorage) -> RocksDbStateBackend {
    let backend = RocksDbStateBackend::with_checkpoint_storage(local, storage);
    if subject == Subject::RocksDbFull {
        backend.with_options(RocksOptions {
            incremental: false,
            ..RocksOptions::default()
        })
    } else {
        backend
    }
}
