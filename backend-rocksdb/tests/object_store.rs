//! Incremental RocksDB checkpoints on object storage: retention over many
//! checkpoints (nothing missing, nothing leaked), failures of uploads,
//! `_metadata` publishes and restore reads (through `FaultyObjectStore`), and
//! the exclusive publish of `_metadata` when two coordinators race.
//!
//! The location is a fresh prefix of the S3 bucket `FLOWSTATE_S3_URL` names
//! (a local S3 server: `eval "$(scripts/s3-server start)"`), else an
//! in-memory object store (`memory://`). The fault-injection tests always run
//! on an in-memory store, and also around the real S3 store when
//! `FLOWSTATE_S3_URL` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use backend_rocksdb::{RocksDbStateBackend, RocksKeyedStateBackend};
use checkpoint_store::object_faults::{Fault, FaultyObjectStore, Op};
use checkpoint_store::{
    load_metadata, CheckpointConfig, CheckpointCoordinator, CheckpointMetadata, CheckpointStorage,
    CompletedCheckpoint, Location, ObjectStoreOptions, ObjectStoreStorage, OperatorState,
    SubtaskState,
};
use conformance_tests::harness::{keyed, object_store_location};
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::{KeyedStateBackendExt, ValueState};
use state_api::state::descriptor::ValueStateDescriptor;
use state_api::{Error, ErrorKind, KeyedStateBackend, Result};

const MAX_P: u32 = 128;
const OPERATOR: &str = "values";
const JOB: &str = "job";

type Keyed = RocksKeyedStateBackend<u64>;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// The value `key` holds after it was written for `version` (about 100 bytes).
fn value(key: u64, version: u64) -> String {
    format!("{key:012}-{version:06}-{}", "v".repeat(80))
}

fn descriptor() -> ValueStateDescriptor<String> {
    ValueStateDescriptor::new("value")
}

/// One keyed backend owning every key group, its value state and a model of
/// what the state holds.
struct Job {
    keyed: Keyed,
    state: ValueState<String>,
    model: BTreeMap<u64, String>,
}

impl Job {
    fn open(backend: &RocksDbStateBackend) -> Result<Self> {
        let mut keyed = keyed::<_, u64>(backend, MAX_P, 1, 0, &[])?;
        let state = keyed.value_state(&descriptor())?;
        Ok(Job {
            keyed,
            state,
            model: BTreeMap::new(),
        })
    }

    /// Writes `keys` for `version`; every 13th of them is cleared instead.
    fn write(&mut self, keys: impl Iterator<Item = u64>, version: u64) -> Result<()> {
        for key in keys {
            self.keyed.set_current_key(key)?;
            if (key + version).is_multiple_of(13) && version > 0 {
                self.state.on(&mut self.keyed).clear()?;
                self.model.remove(&key);
            } else {
                let v = value(key, version);
                self.state.on(&mut self.keyed).update(Some(v.clone()))?;
                self.model.insert(key, v);
            }
        }
        Ok(())
    }

    /// Takes the keyed snapshot for `pending` (both parts).
    fn snapshot(&mut self, pending: &checkpoint_store::PendingCheckpoint) -> Result<OperatorState> {
        let handle = pending
            .snapshot_keyed(&mut self.keyed, SnapshotOptions::default())?
            .run()?;
        Ok(operator_state(handle))
    }

    /// A whole checkpoint through `coordinator`; a failed snapshot is
    /// aborted (backend and coordinator), as an engine does.
    fn checkpoint(
        &mut self,
        coordinator: &mut CheckpointCoordinator,
    ) -> Result<CompletedCheckpoint> {
        let pending = coordinator.begin_checkpoint()?;
        let state = match self.snapshot(&pending) {
            Ok(state) => state,
            Err(e) => {
                self.keyed.notify_checkpoint_aborted(pending.id)?;
                coordinator.abort(pending.id)?;
                return Err(e);
            }
        };
        let completed = coordinator.complete_checkpoint(pending.id, vec![state])?;
        self.keyed.notify_checkpoint_complete(pending.id)?;
        Ok(completed)
    }
}

fn operator_state(handle: Option<KeyedStateHandle>) -> OperatorState {
    OperatorState {
        operator_id: OPERATOR.into(),
        parallelism: 1,
        max_parallelism: MAX_P,
        subtasks: vec![SubtaskState {
            keyed: handle.into_iter().collect(),
            ..Default::default()
        }],
    }
}

/// A backend restored from a checkpoint, working in a folder of its own (so
/// that no SST of an earlier instance is reused: every file is downloaded).
/// Field order matters: the backend is dropped before its folder.
struct Restored {
    keyed: Keyed,
    state: ValueState<String>,
    _dir: tempfile::TempDir,
}

fn restore(storage: &CheckpointStorage, metadata: &CheckpointMetadata) -> Result<Restored> {
    let dir = tempdir();
    let backend =
        RocksDbStateBackend::with_checkpoint_storage(&dir.path().join("work"), storage.clone());
    let handles: Vec<KeyedStateHandle> = metadata
        .operator(OPERATOR)
        .expect("the operator's state")
        .subtasks
        .iter()
        .flat_map(|s| s.keyed.clone())
        .collect();
    let mut keyed = keyed::<_, u64>(&backend, MAX_P, 1, 0, &handles)?;
    let state = keyed.value_state(&descriptor())?;
    Ok(Restored {
        keyed,
        state,
        _dir: dir,
    })
}

/// Asserts that `restored` holds exactly `model` for keys `0..keys`.
fn check_values(
    restored: &mut Restored,
    model: &BTreeMap<u64, String>,
    keys: u64,
    what: &str,
) -> Result<()> {
    let mut wrong = Vec::new();
    for key in 0..keys {
        restored.keyed.set_current_key(key)?;
        let got = restored.state.on(&mut restored.keyed).get()?;
        if got.as_ref() != model.get(&key) {
            wrong.push(key);
        }
    }
    assert!(
        wrong.is_empty(),
        "{what}: {} keys differ from the checkpointed state, first {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    Ok(())
}

fn objects_under(storage: &CheckpointStorage, dir: &Path) -> BTreeMap<PathBuf, u64> {
    conformance_tests::harness::objects_under(&**storage.storage(), dir)
}

/// What [`check_objects`] found.
#[derive(Debug, Default)]
struct ObjectCensus {
    objects: usize,
    bytes: u64,
    /// SSTs (in `shared/`) the retained checkpoints reference.
    ssts: BTreeSet<PathBuf>,
}

/// Checks the job's objects against the retained checkpoints: each retained
/// checkpoint's `_metadata` (read back from the store) matches what the
/// coordinator holds, every file it references exists with its recorded
/// size (no missing), and every object under `shared/` and `chk-*` is
/// referenced or is a retained checkpoint's `_metadata` (no leak); nothing
/// else lies in the job's folder.
fn check_objects(
    storage: &CheckpointStorage,
    coordinator: &CheckpointCoordinator,
    what: &str,
) -> ObjectCensus {
    let layout = storage.layout();
    let objects = objects_under(storage, layout.job_dir());
    let mut allowed: BTreeSet<PathBuf> = BTreeSet::new();
    let mut ssts = BTreeSet::new();
    let shared = layout.shared_dir();
    for c in coordinator.completed() {
        let metadata = load_metadata(&**storage.storage(), &c.metadata_path).unwrap_or_else(|e| {
            panic!(
                "{what}: loading the _metadata of retained checkpoint {}: {e}",
                c.id
            )
        });
        assert_eq!(
            metadata, c.metadata,
            "{what}: the published _metadata of checkpoint {} is what the coordinator completed",
            c.id
        );
        assert!(
            objects.contains_key(&c.metadata_path),
            "{what}: {} is missing",
            c.metadata_path.display()
        );
        allowed.insert(c.metadata_path.clone());
        for (path, size) in metadata.file_sizes() {
            match objects.get(&path) {
                Some(&actual) => assert_eq!(
                    actual,
                    size,
                    "{what}: {} of checkpoint {} has {actual} bytes, its handle records {size}",
                    path.display(),
                    c.id
                ),
                None => panic!(
                    "{what}: {} of retained checkpoint {} is missing",
                    path.display(),
                    c.id
                ),
            }
            if path.starts_with(&shared) {
                ssts.insert(path.clone());
            }
            allowed.insert(path);
        }
    }
    let retained_dirs: BTreeSet<PathBuf> = coordinator
        .completed()
        .map(|c| layout.checkpoint_dir(c.id))
        .collect();
    let mut leaks = Vec::new();
    for path in objects.keys() {
        let in_scope = path.starts_with(&shared)
            || path
                .strip_prefix(layout.job_dir())
                .ok()
                .and_then(|rel| rel.components().next())
                .and_then(|c| c.as_os_str().to_str())
                .is_some_and(|first| first.starts_with("chk-"));
        if !in_scope || !allowed.contains(path) {
            leaks.push(path.display().to_string());
        }
    }
    assert!(
        leaks.is_empty(),
        "{what}: objects no retained checkpoint ({:?}) references: {leaks:#?}",
        retained_dirs
    );
    ObjectCensus {
        objects: objects.len(),
        bytes: objects.values().sum(),
        ssts,
    }
}

/// Writes to stderr directly (the test harness captures `eprintln!` of
/// passing tests; these lines are for the record).
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// 50 incremental checkpoints with 3 retained, each after rewriting a slice
/// of the keys: after every checkpoint the job's objects are exactly what
/// the retained checkpoints reference (each with its recorded size) plus
/// their `_metadata`: nothing missing, nothing leaked, while SSTs come and
/// go with compactions. The latest checkpoint then restores every value.
#[test]
fn retention_on_object_storage_keeps_exactly_the_referenced_objects() -> Result<()> {
    const KEYS: u64 = 20_000;
    const SLICE: u64 = 1_500;
    const CHECKPOINTS: u64 = 50;
    const RETAINED: usize = 3;
    let started = Instant::now();
    let dir = tempdir();
    let location = object_store_location(dir.path());
    let storage = CheckpointStorage::open(&location, JOB)?.with_inline_threshold(0)?;
    let backend =
        RocksDbStateBackend::with_checkpoint_storage(&dir.path().join("work"), storage.clone());
    let mut coordinator = storage.coordinator(CheckpointConfig {
        num_retained: RETAINED,
        ..Default::default()
    })?;
    let mut job = Job::open(&backend)?;
    job.write(0..KEYS, 0)?;
    let mut ever_referenced: BTreeSet<PathBuf> = BTreeSet::new();
    let mut census = ObjectCensus::default();
    for id in 1..=CHECKPOINTS {
        let start = (id * SLICE) % KEYS;
        job.write((start..start + SLICE).map(|k| k % KEYS), id)?;
        let done = job.checkpoint(&mut coordinator)?;
        assert_eq!(done.id, id);
        let retained: Vec<u64> = coordinator.completed().map(|c| c.id).collect();
        let first = id.saturating_sub(RETAINED as u64 - 1).max(1);
        assert_eq!(
            retained,
            (first..=id).collect::<Vec<_>>(),
            "retained after {id}"
        );
        census = check_objects(&storage, &coordinator, &format!("after checkpoint {id}"));
        ever_referenced.extend(census.ssts.iter().cloned());
    }
    let dropped = ever_referenced.difference(&census.ssts).count();
    assert!(
        dropped > 0,
        "compactions replaced SSTs over {CHECKPOINTS} checkpoints ({} SSTs seen)",
        ever_referenced.len()
    );

    let latest = coordinator.latest_completed().expect("a checkpoint");
    assert_eq!(latest.id, CHECKPOINTS);
    let mut restored = restore(&storage, &latest.metadata)?;
    check_values(&mut restored, &job.model, KEYS, "the latest checkpoint")?;
    note(&format!(
        "retention on {location}: {} objects, {} bytes after {CHECKPOINTS} checkpoints \
         ({RETAINED} retained, {} SSTs referenced, {} SSTs seen in all, {dropped} deleted); {:.1?}",
        census.objects,
        census.bytes,
        census.ssts.len(),
        ever_referenced.len(),
        started.elapsed()
    ));
    drop(restored);
    storage
        .storage()
        .remove_dir_all(storage.layout().job_dir())
        .map_err(|e| Error::io("cleaning up", e))?;
    Ok(())
}

/// A checkpoint storage over a `FaultyObjectStore`.
struct FaultySetup {
    name: &'static str,
    faults: FaultyObjectStore,
    storage: CheckpointStorage,
}

impl FaultySetup {
    fn describe(&self, path: &Path) -> String {
        self.storage.storage().describe(path)
    }
}

impl Drop for FaultySetup {
    fn drop(&mut self) {
        self.faults.clear();
        let _ = self
            .storage
            .storage()
            .remove_dir_all(self.storage.layout().job_dir());
    }
}

fn unique(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{test}-{}-{nanos}", std::process::id())
}

fn faulty_setup(
    name: &'static str,
    inner: &ObjectStoreStorage,
    prefix: &str,
    url: &str,
) -> FaultySetup {
    let faults = FaultyObjectStore::new(Arc::clone(inner.store()));
    let store = ObjectStoreStorage::new(
        Arc::new(faults.clone()),
        prefix,
        url,
        ObjectStoreOptions::default(),
    )
    .expect("the faulty store");
    let location = Location::parse(url).expect("the location");
    let storage = CheckpointStorage::at(&location, Arc::new(store), JOB)
        .and_then(|s| s.with_inline_threshold(0))
        .expect("the checkpoint storage");
    FaultySetup {
        name,
        faults,
        storage,
    }
}

/// Checkpoint storages over a `FaultyObjectStore`: around an in-memory store,
/// and around the S3 store of `FLOWSTATE_S3_URL` when it is set.
fn faulty_setups(test: &str) -> Vec<FaultySetup> {
    let memory = ObjectStoreStorage::from_url("memory://", ObjectStoreOptions::default())
        .expect("an in-memory store");
    let name = unique(test);
    let mut setups = vec![faulty_setup(
        "memory",
        &memory,
        "",
        &format!("memory://{name}"),
    )];
    match std::env::var("FLOWSTATE_S3_URL") {
        Ok(base) if !base.is_empty() => {
            let url = format!("{}/{name}", base.trim_end_matches('/'));
            let s3 = ObjectStoreStorage::from_url(&url, ObjectStoreOptions::default())
                .expect("the S3 store");
            let prefix = url
                .trim_start_matches("s3://")
                .split_once('/')
                .map(|(_, prefix)| prefix.to_owned())
                .unwrap_or_default();
            setups.push(faulty_setup("s3", &s3, &prefix, &url));
        }
        _ => {
            assert!(
                std::env::var_os("FLOWSTATE_REQUIRE_S3").is_none(),
                "FLOWSTATE_REQUIRE_S3 is set but FLOWSTATE_S3_URL is not"
            );
            note(&format!(
                "SKIPPED (S3 part of {test}): FLOWSTATE_S3_URL is not set; \
                 run `eval \"$(scripts/s3-server start)\"` to test against a local S3 (moto)"
            ));
        }
    }
    setups
}

fn backend_on(storage: &CheckpointStorage, dir: &Path) -> RocksDbStateBackend {
    RocksDbStateBackend::with_checkpoint_storage(&dir.join("work"), storage.clone())
}

/// A permanent error on the put of one SST fails the checkpoint with an I/O
/// error naming the object's URL; the coordinator aborts it (no `_metadata`,
/// its folder and its new SSTs gone), the previous checkpoint still restores
/// exactly, and the next checkpoint succeeds and restores.
#[test]
fn a_failed_sst_upload_fails_the_checkpoint_and_keeps_the_previous_one() -> Result<()> {
    const KEYS: u64 = 5_000;
    for setup in faulty_setups("sst-put") {
        let what = setup.name;
        let storage = &setup.storage;
        let layout = storage.layout();
        let dir = tempdir();
        let backend = backend_on(storage, dir.path());
        let mut coordinator = storage.coordinator(CheckpointConfig::default())?;
        let mut job = Job::open(&backend)?;
        job.write(0..KEYS, 1)?;
        let first = job.checkpoint(&mut coordinator)?;
        let model_1 = job.model.clone();

        job.write(0..KEYS / 2, 2)?;
        setup
            .faults
            .inject(Fault::fail(Op::Put).path_contains("shared/").times(1));
        let pending = coordinator.begin_checkpoint()?;
        let id = pending.id;
        let err = job
            .snapshot(&pending)
            .expect_err("the checkpoint with a failing SST upload fails");
        assert!(setup.faults.calls(Op::Put) > 0);
        let created: Vec<PathBuf> = pending
            .created_files()
            .into_iter()
            .filter(|p| p.starts_with(layout.shared_dir()))
            .collect();
        let failed: Vec<&PathBuf> = created
            .iter()
            .filter(|p| !storage.storage().exists(p))
            .collect();
        assert_eq!(
            failed.len(),
            1,
            "{what}: one SST failed to upload: {created:?}"
        );
        let url = setup.describe(failed[0]);
        assert!(url.contains("/job/shared/"), "{url}");
        assert!(matches!(err, Error::Io { .. }), "{what}: {err:?}");
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(
            err.to_string().contains(&url),
            "{what}: the error names {url}: {err}"
        );
        job.keyed.notify_checkpoint_aborted(id)?;
        coordinator.abort(id)?;
        assert!(
            !storage.storage().exists(&layout.metadata_path(id)),
            "{what}"
        );
        assert!(
            objects_under(storage, &layout.checkpoint_dir(id)).is_empty(),
            "{what}: the aborted checkpoint's folder is gone"
        );
        let referenced: BTreeSet<PathBuf> = first.metadata.files().into_iter().collect();
        for file in created.iter().filter(|f| !referenced.contains(*f)) {
            assert!(
                !storage.storage().exists(file),
                "{what}: {} of the aborted checkpoint is deleted",
                file.display()
            );
        }
        assert_eq!(coordinator.latest_completed().map(|c| c.id), Some(first.id));
        check_objects(storage, &coordinator, what);
        let mut restored = restore(storage, &first.metadata)?;
        check_values(&mut restored, &model_1, KEYS, what)?;

        let next = job.checkpoint(&mut coordinator)?;
        assert_eq!(next.id, id + 1);
        check_objects(storage, &coordinator, what);
        let mut restored = restore(storage, &next.metadata)?;
        check_values(&mut restored, &job.model, KEYS, what)?;
        note(&format!("sst-put on {what}: {err}"));
    }
    Ok(())
}

/// A failing `_metadata` publish fails `complete_checkpoint` with an error
/// naming the `_metadata` object; the latest completed checkpoint stays the
/// previous one, also for a coordinator reopened on the storage, which
/// removes the failed checkpoint's folder and its SSTs as orphans.
#[test]
fn a_failed_metadata_publish_leaves_the_previous_checkpoint_latest() -> Result<()> {
    const KEYS: u64 = 5_000;
    for setup in faulty_setups("metadata-put") {
        let what = setup.name;
        let storage = &setup.storage;
        let layout = storage.layout();
        let dir = tempdir();
        let backend = backend_on(storage, dir.path());
        let mut coordinator = storage.coordinator(CheckpointConfig::default())?;
        let mut job = Job::open(&backend)?;
        job.write(0..KEYS, 1)?;
        let first = job.checkpoint(&mut coordinator)?;
        let model_1 = job.model.clone();

        job.write(0..KEYS, 2)?;
        let pending = coordinator.begin_checkpoint()?;
        let id = pending.id;
        let state = job.snapshot(&pending)?;
        let new_files = pending.created_files();
        assert!(!new_files.is_empty());
        setup
            .faults
            .inject(Fault::fail(Op::Put).path_contains("_metadata").times(1));
        let err = coordinator
            .complete_checkpoint(id, vec![state])
            .expect_err("the publish fails");
        let url = setup.describe(&layout.metadata_path(id));
        assert!(matches!(err, Error::Io { .. }), "{what}: {err:?}");
        assert!(
            err.to_string().contains(&url),
            "{what}: the error names {url}: {err}"
        );
        assert!(!storage.storage().exists(&layout.metadata_path(id)));
        assert_eq!(coordinator.latest_completed().map(|c| c.id), Some(first.id));
        job.keyed.notify_checkpoint_aborted(id)?;
        // The job fails over: a new coordinator opens on the storage.
        drop(coordinator);
        let mut coordinator = storage.coordinator(CheckpointConfig::default())?;
        assert_eq!(
            coordinator.latest_completed().map(|c| c.id),
            Some(first.id),
            "{what}: the reopened coordinator's latest checkpoint"
        );
        assert!(
            objects_under(storage, &layout.checkpoint_dir(id)).is_empty(),
            "{what}: the failed checkpoint's folder is removed as an orphan"
        );
        for file in &new_files {
            assert!(
                !storage.storage().exists(file),
                "{what}: {} of the failed checkpoint is removed",
                file.display()
            );
        }
        check_objects(storage, &coordinator, what);
        let mut restored = restore(storage, &first.metadata)?;
        check_values(&mut restored, &model_1, KEYS, what)?;

        let next = job.checkpoint(&mut coordinator)?;
        assert!(next.id > id);
        check_objects(storage, &coordinator, what);
        let mut restored = restore(storage, &next.metadata)?;
        check_values(&mut restored, &job.model, KEYS, what)?;
        note(&format!("metadata-put on {what}: {err}"));
    }
    Ok(())
}

/// A read of an SST that fails during a restore is a typed error
/// (`StateFileUnreadable`) naming the object's URL and the checkpoint, not
/// a panic; the same restore succeeds once the store answers again.
#[test]
fn a_failed_read_during_restore_is_an_error_naming_the_object() -> Result<()> {
    const KEYS: u64 = 5_000;
    for setup in faulty_setups("restore-get") {
        let what = setup.name;
        let storage = &setup.storage;
        let dir = tempdir();
        let backend = backend_on(storage, dir.path());
        let mut coordinator = storage.coordinator(CheckpointConfig::default())?;
        let mut job = Job::open(&backend)?;
        job.write(0..KEYS, 1)?;
        let done = job.checkpoint(&mut coordinator)?;

        setup
            .faults
            .inject(Fault::fail(Op::Get).path_contains("shared/").times(1));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            restore(storage, &done.metadata).map(drop)
        }));
        let err = match outcome {
            Ok(Ok(())) => panic!("{what}: the restore succeeded despite a failing read"),
            Ok(Err(e)) => e,
            Err(_) => panic!("{what}: the restore panicked on a failing read"),
        };
        assert!(setup.faults.calls(Op::Get) > 0);
        assert!(
            matches!(err, Error::StateFileUnreadable { .. }),
            "{what}: {err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::Io);
        let message = err.to_string();
        let names_an_sst = done
            .metadata
            .files()
            .iter()
            .filter(|f| f.starts_with(storage.layout().shared_dir()))
            .any(|f| message.contains(&setup.describe(f)));
        assert!(
            names_an_sst,
            "{what}: the error names the SST's URL: {message}"
        );
        assert!(
            message.contains(&format!("checkpoint {}", done.id)),
            "{message}"
        );

        let mut restored = restore(storage, &done.metadata)?;
        check_values(&mut restored, &job.model, KEYS, what)?;
        note(&format!("restore-get on {what}: {err}"));
    }
    Ok(())
}

/// Two coordinators on the same location both begin checkpoint 2 and race
/// to complete it: exactly one succeeds, the other gets an error saying the
/// `_metadata` already exists; the `_metadata` is the winner's and restores
/// the winner's state, also after the loser aborted its checkpoint.
#[test]
fn two_coordinators_completing_the_same_checkpoint_publish_exactly_one() -> Result<()> {
    const KEYS: u64 = 2_000;
    const TRIALS: usize = 3;
    for trial in 0..TRIALS {
        let dir = tempdir();
        let location = object_store_location(dir.path());
        let storage = CheckpointStorage::open(&location, JOB)?.with_inline_threshold(0)?;
        let layout = storage.layout();
        let backend_a = backend_on(&storage, &dir.path().join("a"));
        // B opens the location on its own, as another process would.
        let storage_b = CheckpointStorage::open(&location, JOB)?.with_inline_threshold(0)?;
        let backend_b = backend_on(&storage_b, &dir.path().join("b"));
        let mut a = storage.coordinator(CheckpointConfig::default())?;
        let mut job_a = Job::open(&backend_a)?;
        job_a.write(0..KEYS, 1)?;
        let first = job_a.checkpoint(&mut a)?;
        // B opens on the same location (after checkpoint 1 completed) and
        // writes other values.
        let mut b = storage_b.coordinator(CheckpointConfig::default())?;
        assert_eq!(b.latest_completed().map(|c| c.id), Some(first.id));
        let mut job_b = Job::open(&backend_b)?;
        job_b.write(0..KEYS, 2)?;
        job_a.write(0..KEYS, 3)?;

        let pending_a = a.begin_checkpoint()?;
        let pending_b = b.begin_checkpoint()?;
        assert_eq!(pending_a.id, 2);
        assert_eq!(pending_b.id, 2);
        let id = pending_a.id;
        let state_a = job_a.snapshot(&pending_a)?;
        let state_b = job_b.snapshot(&pending_b)?;
        let barrier = Barrier::new(2);
        let (result_a, result_b) = std::thread::scope(|s| {
            let ra = s.spawn(|| {
                barrier.wait();
                a.complete_checkpoint(id, vec![state_a])
            });
            let rb = s.spawn(|| {
                barrier.wait();
                b.complete_checkpoint(id, vec![state_b])
            });
            (
                ra.join().expect("coordinator A"),
                rb.join().expect("coordinator B"),
            )
        });
        let a_won = match (&result_a, &result_b) {
            (Ok(_), Err(_)) => true,
            (Err(_), Ok(_)) => false,
            (Ok(_), Ok(_)) => panic!("trial {trial}: both coordinators published checkpoint {id}"),
            (Err(x), Err(y)) => panic!("trial {trial}: neither published: {x}; {y}"),
        };
        let (winner, loser_err, mut winner_c, mut winner_job, mut loser_c, mut loser_job) = if a_won
        {
            let (Ok(w), Err(e)) = (result_a, result_b) else {
                unreachable!()
            };
            (w, e, a, job_a, b, job_b)
        } else {
            let (Err(e), Ok(w)) = (result_a, result_b) else {
                unreachable!()
            };
            (w, e, b, job_b, a, job_a)
        };
        let metadata_url = storage.storage().describe(&layout.metadata_path(id));
        assert_eq!(loser_err.kind(), ErrorKind::Cancelled, "{loser_err:?}");
        let message = loser_err.to_string();
        assert!(
            message.contains("already exists") && message.contains(&metadata_url),
            "trial {trial}: {message}"
        );
        let published = load_metadata(&**storage.storage(), &layout.metadata_path(id))?;
        assert_eq!(
            published, winner.metadata,
            "trial {trial}: the winner's _metadata"
        );

        // The loser gives its checkpoint up, as an engine does after a
        // failed completion, and stops; the winner's checkpoint stays whole.
        loser_job.keyed.notify_checkpoint_aborted(id)?;
        loser_c.abort(id)?;
        drop((loser_c, loser_job));
        let published = load_metadata(&**storage.storage(), &layout.metadata_path(id))?;
        assert_eq!(
            published, winner.metadata,
            "trial {trial}: after the loser's abort"
        );
        checkpoint_store::verify_files(&**storage.storage(), id, &published)?;
        let mut restored = restore(&storage, &published)?;
        check_values(
            &mut restored,
            &winner_job.model,
            KEYS,
            "the winner's checkpoint",
        )?;
        drop(restored);
        let reopened = storage.coordinator(CheckpointConfig::default())?;
        assert_eq!(reopened.latest_completed().map(|c| c.id), Some(id));
        drop(reopened);

        // The winner goes on: once its next checkpoint subsumes this one,
        // nothing of the loser's is left.
        winner_job.write(0..KEYS / 2, 4)?;
        let next = winner_job.checkpoint(&mut winner_c)?;
        assert_eq!(next.id, id + 1);
        check_objects(&storage, &winner_c, &format!("trial {trial}"));
        let mut restored = restore(&storage, &next.metadata)?;
        check_values(
            &mut restored,
            &winner_job.model,
            KEYS,
            "the winner's next checkpoint",
        )?;
        drop(restored);
        note(&format!(
            "trial {trial} on {location}: {} won; the loser got: {message}",
            if a_won { "A" } else { "B" }
        ));
        storage
            .storage()
            .remove_dir_all(layout.job_dir())
            .map_err(|e| Error::io("cleaning up", e))?;
    }
    Ok(())
}
