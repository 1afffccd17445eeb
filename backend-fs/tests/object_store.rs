//! Crash consistency of file-backend checkpoints on S3 across processes: a
//! child process checkpoints a large state to S3 and is SIGKILLed in the
//! middle of the uploads of a checkpoint; the parent then checks what a
//! restarted job finds.
//!
//! Needs a real S3 (a local server: `eval "$(scripts/s3-server start)"`), as
//! the in-memory store does not outlive the child process: without
//! `FLOWSTATE_S3_URL` the test is skipped with a message (and fails if
//! `FLOWSTATE_REQUIRE_S3` is set). Uploads the killed process left open are
//! listed through the S3 API (`GET /bucket?uploads`, with `curl`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_fs::FsStateBackend;
use backend_memory::HeapKeyedStateBackend;
use checkpoint_store::object_faults::{Fault, FaultyObjectStore, Op};
use checkpoint_store::{
    CheckpointConfig, CheckpointStorage, Location, ObjectStoreOptions, ObjectStoreStorage,
    OperatorState, SubtaskState,
};
use conformance_tests::harness::{keyed, object_store_location, owner, rescale_keyed};
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::{KeyedStateBackendExt, ValueState};
use state_api::state::descriptor::ValueStateDescriptor;
use state_api::{Error, KeyedStateBackend, Result};

/// Set in the child: the checkpoint location it writes to.
const WORKER_LOCATION: &str = "FS_OBJECT_STORE_CRASH_LOCATION";
/// Set in the child (to an id) to hold the upload of checkpoint `id`'s
/// second file just before its completion (see [`stalling_storage`]).
const WORKER_STALL_AT: &str = "FS_OBJECT_STORE_CRASH_STALL_AT";
/// Prefix of the child's progress lines on its stdout.
const SAYS: &str = "crash-worker: ";
const KEYS: u64 = 200_000;
const PARALLELISM: u32 = 2;
const MAX_P: u32 = 128;
const OPERATOR: &str = "values";
const JOB: &str = "job";

type Keyed = HeapKeyedStateBackend<u64>;

/// The value of `key` in checkpoint `id`: `key * 1000 + id`, padded to 100 bytes.
fn value(key: u64, id: u64) -> String {
    format!("{:020}{}", key * 1000 + id, "p".repeat(80))
}

fn descriptor() -> ValueStateDescriptor<String> {
    ValueStateDescriptor::new("value")
}

fn config() -> CheckpointConfig {
    CheckpointConfig::default()
}

fn storage_at(location: &str) -> Result<CheckpointStorage> {
    CheckpointStorage::open(location, JOB)?.with_inline_threshold(0)
}

/// The checkpoint storage of `location` (S3) through a `FaultyObjectStore`
/// that lets the first multipart upload of checkpoint `id` complete and holds
/// the completion of the next one for an hour: the process then sits in the
/// middle of an upload (every part sent, the upload open) until it is killed.
fn stalling_storage(location: &str, id: u64) -> Result<CheckpointStorage> {
    let io = |e| Error::io(format!("opening {location}"), e);
    let s3 = ObjectStoreStorage::from_url(location, ObjectStoreOptions::default()).map_err(io)?;
    let faults = FaultyObjectStore::new(Arc::clone(s3.store()));
    let folder = format!("/chk-{id}/");
    faults.inject(
        Fault::delay(Op::Complete, Duration::ZERO)
            .path_contains(&folder)
            .times(1),
    );
    faults.inject(Fault::delay(Op::Complete, Duration::from_secs(3600)).path_contains(&folder));
    let prefix = location
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .map_or("", |(_, prefix)| prefix);
    let store = ObjectStoreStorage::new(
        Arc::new(faults),
        prefix,
        location,
        ObjectStoreOptions::default(),
    )
    .map_err(io)?;
    CheckpointStorage::at(&Location::parse(location)?, Arc::new(store), JOB)?
        .with_inline_threshold(0)
}

/// A progress line for the parent (stdout is a pipe: flushed at once).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{SAYS}{line}");
    let _ = out.flush();
}

/// Writes to stderr directly (the test harness captures `eprintln!` of
/// passing tests; these lines are for the record).
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The child: `PARALLELISM` subtasks; before checkpoint `id` every key gets
/// `value(key, id)`; full checkpoints (every subtask's one file in `chk-<id>/`)
/// until killed. Does nothing unless started by the crash test.
#[test]
#[ignore = "runs as the child process of the object-store crash test"]
fn object_store_crash_worker() -> Result<()> {
    let Ok(location) = std::env::var(WORKER_LOCATION) else {
        return Ok(());
    };
    let storage = match std::env::var(WORKER_STALL_AT) {
        Ok(id) => stalling_storage(&location, id.parse().expect("a checkpoint id"))?,
        Err(_) => storage_at(&location)?,
    };
    let backend = FsStateBackend::with_checkpoint_storage(storage.clone());
    let mut coordinator = storage.coordinator(config())?;
    let mut subtasks: Vec<(Keyed, ValueState<String>)> = (0..PARALLELISM)
        .map(|i| {
            let mut keyed = keyed::<_, u64>(&backend, MAX_P, PARALLELISM, i, &[])?;
            let state = keyed.value_state(&descriptor())?;
            Ok((keyed, state))
        })
        .collect::<Result<_>>()?;
    let owners: Vec<usize> = (0..KEYS)
        .map(|k| owner(&k, MAX_P, PARALLELISM).map(|o| o as usize))
        .collect::<Result<_>>()?;
    // Bounded, in case the parent never kills it.
    for id in 1..=50 {
        for key in 0..KEYS {
            let (keyed, state) = &mut subtasks[owners[key as usize]];
            keyed.set_current_key(key)?;
            state.on(keyed).update(Some(value(key, id)))?;
        }
        say(&format!("starting {id}"));
        let pending = coordinator.begin_checkpoint()?;
        assert_eq!(pending.id, id, "checkpoint ids follow the rounds");
        let mut states = Vec::new();
        for (keyed, _) in &mut subtasks {
            let handle = pending
                .snapshot_keyed(keyed, SnapshotOptions::default())?
                .run()?;
            states.push(SubtaskState {
                keyed: handle.into_iter().collect(),
                ..Default::default()
            });
        }
        coordinator.complete_checkpoint(
            id,
            vec![OperatorState {
                operator_id: OPERATOR.into(),
                parallelism: PARALLELISM,
                max_parallelism: MAX_P,
                subtasks: states,
            }],
        )?;
        for (keyed, _) in &mut subtasks {
            keyed.notify_checkpoint_complete(id)?;
        }
        say(&format!("checkpoint {id} completed"));
    }
    Ok(())
}

/// The child process, killed when dropped (so a failing parent leaves no
/// worker behind).
struct Worker {
    child: Child,
    lines: Receiver<String>,
    stderr: PathBuf,
    started: Instant,
}

impl Worker {
    fn spawn(location: &str, dir: &Path, stall_at: Option<u64>) -> Self {
        let exe = std::env::current_exe().expect("the test binary");
        let stderr = dir.join("worker.stderr");
        let mut command = Command::new(exe);
        match stall_at {
            Some(id) => command.env(WORKER_STALL_AT, id.to_string()),
            None => command.env_remove(WORKER_STALL_AT),
        };
        let mut child = command
            .args([
                "--ignored",
                "--exact",
                "object_store_crash_worker",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER_LOCATION, location)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("the worker's stderr file"))
            .spawn()
            .expect("spawning the worker");
        let stdout = child.stdout.take().expect("the worker's stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(said) = line.strip_prefix(SAYS) {
                    if sender.send(said.to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        Worker {
            child,
            lines,
            stderr,
            started: Instant::now(),
        }
    }

    fn died(&self, waiting_for: &str) -> ! {
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        panic!("the worker ended while the test waited for {waiting_for:?}; its stderr:\n{stderr}");
    }

    /// Waits for the progress line `expected`; earlier lines are returned.
    fn wait_for(&self, expected: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(300)) {
                Ok(line) if line == expected => return seen,
                Ok(line) => seen.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {expected:?} from the worker in 5 minutes")
                }
                Err(RecvTimeoutError::Disconnected) => self.died(expected),
            }
        }
    }

    /// Kills the process (SIGKILL) and returns the lines it printed since the
    /// last one read.
    fn kill(&mut self) -> Vec<String> {
        self.child.kill().expect("killing the worker");
        self.child.wait().expect("waiting for the killed worker");
        self.lines.iter().collect()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn objects_under(storage: &CheckpointStorage, dir: &Path) -> BTreeMap<PathBuf, u64> {
    conformance_tests::harness::objects_under(&**storage.storage(), dir)
}

/// Ids of the `chk-<id>/_metadata` objects among `objects`.
fn published_ids(storage: &CheckpointStorage, objects: &BTreeMap<PathBuf, u64>) -> Vec<u64> {
    let layout = storage.layout();
    objects
        .keys()
        .filter_map(|path| {
            let rel = path.strip_prefix(layout.job_dir()).ok()?;
            let mut parts = rel.iter().map(|p| p.to_str().unwrap_or_default());
            let id = parts.next()?.strip_prefix("chk-")?.parse().ok()?;
            (parts.next()? == "_metadata" && parts.next().is_none()).then_some(id)
        })
        .collect()
}

/// A multipart upload in progress on the S3 server.
#[derive(Debug)]
struct OpenUpload {
    key: String,
    upload_id: String,
}

/// The S3 server's endpoint and the bucket and key prefix of `location`
/// (`s3://bucket/prefix`).
fn s3_parts(location: &str) -> Option<(String, String, String)> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .ok()?;
    let (bucket, prefix) = location.strip_prefix("s3://")?.split_once('/')?;
    Some((
        endpoint.trim_end_matches('/').to_owned(),
        bucket.to_owned(),
        prefix.to_owned(),
    ))
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = start + text[start..].find(close)?;
    Some(&text[start..end])
}

/// The multipart uploads in progress under `location` (`GET /bucket?uploads`,
/// unsigned, as the local server allows); `None` if they cannot be listed.
fn open_uploads(location: &str) -> Option<Vec<OpenUpload>> {
    let (endpoint, bucket, prefix) = s3_parts(location)?;
    let output = Command::new("curl")
        .args([
            "-sf",
            &format!("{endpoint}/{bucket}?uploads&prefix={prefix}/"),
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let body = String::from_utf8_lossy(&output.stdout);
    Some(
        body.split("<Upload>")
            .skip(1)
            .filter_map(|upload| {
                Some(OpenUpload {
                    key: between(upload, "<Key>", "</Key>")?.to_owned(),
                    upload_id: between(upload, "<UploadId>", "</UploadId>")?.to_owned(),
                })
            })
            .collect(),
    )
}

/// Aborts `upload` (`DELETE /bucket/key?uploadId=`), to leave the server clean.
fn abort_upload(location: &str, upload: &OpenUpload) {
    if let Some((endpoint, bucket, _)) = s3_parts(location) {
        let _ = Command::new("curl")
            .args([
                "-sf",
                "-X",
                "DELETE",
                &format!(
                    "{endpoint}/{bucket}/{}?uploadId={}",
                    upload.key, upload.upload_id
                ),
            ])
            .output();
    }
}

/// Whether the S3 test can run: `FLOWSTATE_S3_URL` set; else a message (or
/// a failure under `FLOWSTATE_REQUIRE_S3`).
fn s3_configured(test: &str) -> bool {
    match std::env::var("FLOWSTATE_S3_URL") {
        Ok(url) if !url.is_empty() => true,
        _ => {
            assert!(
                std::env::var_os("FLOWSTATE_REQUIRE_S3").is_none(),
                "{test}: FLOWSTATE_REQUIRE_S3 is set but FLOWSTATE_S3_URL is not"
            );
            note(&format!(
                "SKIPPED {test}: FLOWSTATE_S3_URL is not set; the crash test needs S3 \
                 (run `eval \"$(scripts/s3-server start)\"` for a local one)"
            ));
            false
        }
    }
}

/// One kill: the worker completes checkpoint `n`, starts `n + 1`, and is
/// SIGKILLed once the first file of `n + 1` is uploaded: at once (the other
/// subtask's file is then being serialized or uploaded), or with `stall`
/// once the second file's multipart upload is held open just before its
/// completion. Then: no `_metadata` but `n`'s is visible; a coordinator
/// opened on the storage finds `n` as the latest and removes what `n + 1`
/// left; `n` restores exactly `value(key, n)` for every key.
fn kill_during_checkpoint(n: u64, stall: bool) -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
    let location = object_store_location(dir.path());
    assert!(location.starts_with("s3://"), "{location}");
    let storage = storage_at(&location)?;
    let layout = storage.layout().clone();
    let started = Instant::now();
    let mut worker = Worker::spawn(&location, dir.path(), stall.then_some(n + 1));
    worker.wait_for(&format!("checkpoint {n} completed"));
    let completed_at = worker.started.elapsed();
    worker.wait_for(&format!("starting {}", n + 1));
    let next_dir = layout.checkpoint_dir(n + 1);
    let next_key = format!("/chk-{}/", n + 1);
    let uploading =
        || open_uploads(&location).is_none_or(|u| u.iter().any(|u| u.key.contains(&next_key)));
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let written = !storage
            .storage()
            .list_dir(&next_dir)
            .map_err(|e| Error::io("listing", e))?
            .is_empty();
        if written && (!stall || uploading()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "checkpoint {} wrote nothing",
            n + 1
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let late = worker.kill();
    assert!(
        late.is_empty(),
        "the kill came too late: the worker went on with {late:?}"
    );
    let killed_at = worker.started.elapsed();

    // What a restarted job sees before any recovery.
    let objects = objects_under(&storage, layout.job_dir());
    assert_eq!(
        published_ids(&storage, &objects),
        vec![n],
        "only the _metadata of completed checkpoint {n} is visible: {:#?}",
        objects.keys().collect::<Vec<_>>()
    );
    let orphans = objects.keys().filter(|p| p.starts_with(&next_dir)).count();
    assert!(orphans > 0, "checkpoint {} had written a file", n + 1);
    let uploads_after_kill = open_uploads(&location);
    if stall {
        if let Some(uploads) = &uploads_after_kill {
            assert!(
                uploads.iter().any(|u| u.key.contains(&next_key)),
                "the kill left the upload of a file of checkpoint {} open: {uploads:?}",
                n + 1
            );
        }
    }

    // Recovery.
    let coordinator = storage.coordinator(config())?;
    let latest = coordinator
        .latest_completed()
        .expect("a completed checkpoint");
    assert_eq!(latest.id, n, "the latest checkpoint after the kill");
    assert!(coordinator.skipped_on_recovery().is_empty());
    let objects = objects_under(&storage, layout.job_dir());
    assert!(
        !objects.keys().any(|p| p.starts_with(&next_dir)),
        "the orphans of checkpoint {} are removed",
        n + 1
    );
    let referenced: BTreeMap<PathBuf, u64> = latest.metadata.file_sizes().into_iter().collect();
    for (path, size) in &objects {
        let expected = if *path == latest.metadata_path {
            Some(size)
        } else {
            referenced.get(path)
        };
        assert_eq!(
            expected,
            Some(size),
            "{} is neither referenced by checkpoint {n} (with this size) nor its _metadata",
            path.display()
        );
    }
    for (path, size) in &referenced {
        assert_eq!(
            objects.get(path),
            Some(size),
            "{} of checkpoint {n}",
            path.display()
        );
    }
    let uploads_after_recovery = open_uploads(&location);

    // Checkpoint n restores exactly its state (into one subtask).
    let backend = FsStateBackend::with_checkpoint_storage(storage.clone());
    let handles: Vec<KeyedStateHandle> = latest
        .metadata
        .operator(OPERATOR)
        .expect("the operator's state")
        .subtasks
        .iter()
        .flat_map(|s| s.keyed.clone())
        .collect();
    let mut restored: Vec<Keyed> = rescale_keyed(&backend, &handles, MAX_P, 1)?;
    let keyed = &mut restored[0];
    let state = keyed.value_state(&descriptor())?;
    let mut wrong = Vec::new();
    for key in 0..KEYS {
        keyed.set_current_key(key)?;
        if state.on(keyed).get()? != Some(value(key, n)) {
            wrong.push(key);
        }
    }
    assert!(
        wrong.is_empty(),
        "checkpoint {n} restores {} keys wrong, first {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );

    let bytes: u64 = objects.values().sum();
    let count = |u: &Option<Vec<OpenUpload>>| u.as_ref().map_or(0, Vec::len);
    note(&format!(
        "kill during checkpoint {}{} on {location}: checkpoint {n} completed at {completed_at:.1?}, \
         killed at {killed_at:.1?} with {orphans} object(s) of checkpoint {} up; \
         open multipart uploads after the kill: {}, after recovery: {} ({:?}); \
         checkpoint {n}: {} objects, {bytes} bytes; trial {:.1?}",
        n + 1,
        if stall { " (stalled upload)" } else { "" },
        n + 1,
        uploads_after_kill
            .as_ref()
            .map_or("unknown".into(), |u| u.len().to_string()),
        uploads_after_recovery
            .as_ref()
            .map_or("unknown".into(), |u| u.len().to_string()),
        uploads_after_recovery
            .iter()
            .flatten()
            .map(|u| u.key.as_str())
            .collect::<Vec<_>>(),
        objects.len(),
        started.elapsed()
    ));

    // Clean up: the job's objects and the uploads the kill left open.
    drop(restored);
    for upload in uploads_after_recovery.iter().flatten() {
        abort_upload(&location, upload);
    }
    if uploads_after_recovery.is_some() {
        assert_eq!(
            count(&open_uploads(&location)),
            0,
            "the open uploads are aborted"
        );
    }
    storage
        .storage()
        .remove_dir_all(layout.job_dir())
        .map_err(|e| Error::io("cleaning up", e))?;
    Ok(())
}

/// A process checkpointing a large state (200k keys, 100-byte values, no
/// inlining: one multipart-sized file per subtask, two subtasks) to S3 is
/// SIGKILLed in the middle of the uploads of checkpoint N+1, three times:
/// N = 1 and N = 3 as soon as the first file of N+1 is up, N = 2 with the
/// second file's multipart upload held open. Each time no `_metadata` of an
/// incomplete checkpoint is visible, a coordinator opened afterwards finds
/// checkpoint N as the latest and removes every orphan object of N+1, and N
/// restores exactly its state. Multipart uploads the killed process left
/// open are printed (nothing in the process can abort them; S3 keeps them
/// until a lifecycle rule does), then aborted to leave the server clean.
#[test]
fn a_process_killed_during_an_s3_checkpoint_leaves_the_previous_one_latest() -> Result<()> {
    if !s3_configured("a_process_killed_during_an_s3_checkpoint_leaves_the_previous_one_latest") {
        return Ok(());
    }
    kill_during_checkpoint(1, false)?;
    kill_during_checkpoint(2, true)?;
    kill_during_checkpoint(3, false)?;
    Ok(())
}
