//! Helpers shared by the cases: creating subtask backends, taking snapshots,
//! restoring at another parallelism.

use state_api::backend::KeyedBackendParams;
use state_api::codec::{postcard, SharedCodec};
use state_api::snapshot::handle::{KeyedStateHandle, OperatorStateHandle};
use state_api::snapshot::rescale::{assign_keyed_state, assign_operator_state};
use std::thread::JoinHandle;

use state_api::snapshot::task::SnapshotTask;
use state_api::snapshot::SnapshotOptions;
use state_api::state::StateKey;
use state_api::{Error, ErrorKind, KeyedStateBackend, OperatorStateBackend, Result, StateBackend};

/// The max parallelism most cases use.
pub const MAX_PARALLELISM: u32 = 128;

/// A keyed backend for subtask `index` of `parallelism`, with the default
/// codec for `K`, restored from `restore`.
pub fn keyed<S: StateBackend, K>(
    backend: &S,
    max_parallelism: u32,
    parallelism: u32,
    index: u32,
    restore: &[KeyedStateHandle],
) -> Result<S::Keyed<K>>
where
    K: StateKey + serde::Serialize + serde::de::DeserializeOwned,
{
    keyed_with_codec(
        backend,
        max_parallelism,
        parallelism,
        index,
        postcard::<K>(),
        restore,
    )
}

/// Like [`keyed`], with a key codec of the caller's choosing.
pub fn keyed_with_codec<S: StateBackend, K: StateKey>(
    backend: &S,
    max_parallelism: u32,
    parallelism: u32,
    index: u32,
    key_codec: SharedCodec<K>,
    restore: &[KeyedStateHandle],
) -> Result<S::Keyed<K>> {
    let params = KeyedBackendParams::for_subtask(max_parallelism, parallelism, index, key_codec)?;
    backend.create_keyed_backend(params, restore)
}

/// A single keyed backend owning every key group of [`MAX_PARALLELISM`].
pub fn single<S: StateBackend, K>(backend: &S) -> Result<S::Keyed<K>>
where
    K: StateKey + serde::Serialize + serde::de::DeserializeOwned,
{
    keyed(backend, MAX_PARALLELISM, 1, 0, &[])
}

/// Takes a snapshot and runs its asynchronous part on the calling thread.
pub fn snapshot<S: StateBackend, B: KeyedStateBackend>(
    backend: &S,
    keyed: &mut B,
    checkpoint_id: u64,
) -> Result<Option<KeyedStateHandle>> {
    let handle = keyed
        .snapshot(
            checkpoint_id,
            backend.stream_factory(checkpoint_id)?,
            SnapshotOptions::default(),
        )?
        .run()?;
    // As an engine does once the checkpoint is complete: incremental backends
    // build their next snapshots on it.
    if handle.is_some() {
        keyed.notify_checkpoint_complete(checkpoint_id)?;
    }
    Ok(handle)
}

/// Snapshots an operator backend synchronously.
pub fn snapshot_operator<S: StateBackend, O: OperatorStateBackend>(
    backend: &S,
    operator: &mut O,
    checkpoint_id: u64,
) -> Result<Option<OperatorStateHandle>> {
    operator
        .snapshot(
            checkpoint_id,
            backend.stream_factory(checkpoint_id)?,
            SnapshotOptions::default(),
        )?
        .run()
}

/// Restores the keyed handles of all old subtasks into `new_parallelism`
/// backends (the coordinator's assignment, then each subtask's restore).
pub fn rescale_keyed<S: StateBackend, K>(
    backend: &S,
    handles: &[KeyedStateHandle],
    max_parallelism: u32,
    new_parallelism: u32,
) -> Result<Vec<S::Keyed<K>>>
where
    K: StateKey + serde::Serialize + serde::de::DeserializeOwned,
{
    let assigned = assign_keyed_state(handles, max_parallelism, new_parallelism)?;
    assigned
        .iter()
        .enumerate()
        .map(|(i, restore)| keyed(backend, max_parallelism, new_parallelism, i as u32, restore))
        .collect()
}

/// Restores operator handles of all old subtasks into `new_parallelism` backends.
pub fn rescale_operator<S: StateBackend>(
    backend: &S,
    handles: &[OperatorStateHandle],
    new_parallelism: u32,
) -> Result<Vec<state_api::DefaultOperatorStateBackend>> {
    assign_operator_state(handles, new_parallelism)?
        .iter()
        .map(|restore| backend.create_operator_backend(restore))
        .collect()
}

/// Which subtask of `parallelism` owns `key`.
pub fn owner<K>(key: &K, max_parallelism: u32, parallelism: u32) -> Result<u32>
where
    K: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    let mut bytes = Vec::new();
    postcard::<K>()
        .encode(key, &mut bytes)
        .map_err(state_api::Error::user)?;
    let kg = state_api::key_group::key_group_for_bytes(&bytes, max_parallelism)?;
    state_api::key_group::operator_index_for_key_group(max_parallelism, parallelism, kg)
}

/// Takes the synchronous part of a keyed snapshot and returns its
/// asynchronous part, not yet run.
pub fn snapshot_task<S: StateBackend, B: KeyedStateBackend>(
    backend: &S,
    keyed: &mut B,
    checkpoint_id: u64,
) -> Result<SnapshotTask<Option<KeyedStateHandle>>> {
    keyed.snapshot(
        checkpoint_id,
        backend.stream_factory(checkpoint_id)?,
        SnapshotOptions::default(),
    )
}

/// Takes the synchronous part of an operator snapshot and returns its
/// asynchronous part, not yet run.
pub fn operator_snapshot_task<S: StateBackend, O: OperatorStateBackend>(
    backend: &S,
    operator: &mut O,
    checkpoint_id: u64,
) -> Result<SnapshotTask<Option<OperatorStateHandle>>> {
    operator.snapshot(
        checkpoint_id,
        backend.stream_factory(checkpoint_id)?,
        SnapshotOptions::default(),
    )
}

/// Waits for a task started with [`SnapshotTask::spawn`]; a panic on that
/// thread is resumed on the caller's.
pub fn join<T>(running: JoinHandle<Result<T>>) -> Result<T> {
    running
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Asserts that `result` is an error of `kind` and returns the error; `what`
/// names the operation in the failure message.
pub fn expect_err<T>(result: Result<T>, kind: ErrorKind, what: &str) -> Error {
    match result {
        Ok(_) => panic!("{what}: expected an error of kind {kind:?}, got Ok"),
        Err(e) => {
            assert_eq!(
                e.kind(),
                kind,
                "{what}: wrong error kind for \"{e}\" ({e:?})"
            );
            e
        }
    }
}

/// `v`, sorted (to compare contents listed in no particular order).
pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Every object (or file) under `dir` in `storage`, with its size, found
/// by walking `list_dir`: what a retention or crash test compares with what
/// the retained checkpoints reference.
pub fn objects_under(
    storage: &dyn checkpoint_store::Storage,
    dir: &std::path::Path,
) -> std::collections::BTreeMap<std::path::PathBuf, u64> {
    fn walk(
        storage: &dyn checkpoint_store::Storage,
        dir: &std::path::Path,
        out: &mut std::collections::BTreeMap<std::path::PathBuf, u64>,
    ) {
        let names = storage
            .list_dir(dir)
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        for name in names {
            let child = dir.join(&name);
            match storage.len(&child) {
                Ok(size) => {
                    out.insert(child.clone(), size);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("stat {}: {e}", child.display()),
            }
            walk(storage, &child, out);
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(storage, dir, &mut out);
    out
}

/// A checkpoint location on object storage for a backend built in `dir`:
/// a fresh prefix of the S3 bucket `FLOWSTATE_S3_URL` names (a local S3
/// server, as `scripts/test` starts), else a fresh in-memory object store
/// (`memory://`). With `FLOWSTATE_REQUIRE_S3` set, a missing
/// `FLOWSTATE_S3_URL` panics instead, so that CI cannot skip S3 silently.
pub fn object_store_location(dir: &std::path::Path) -> String {
    let name = dir
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "")
        })
        .unwrap_or_default();
    let unique = format!("t{}-{name}", std::process::id());
    match std::env::var("FLOWSTATE_S3_URL") {
        Ok(url) if !url.is_empty() => format!("{}/{unique}", url.trim_end_matches('/')),
        _ => {
            assert!(
                std::env::var_os("FLOWSTATE_REQUIRE_S3").is_none(),
                "FLOWSTATE_REQUIRE_S3 is set but FLOWSTATE_S3_URL is not"
            );
            format!("memory://{unique}")
        }
    }
}

/// A backend that lives in a temporary directory, deleted when it is dropped.
pub struct TempDirBackend<S> {
    backend: S,
    dir: tempfile::TempDir,
}

impl<S> TempDirBackend<S> {
    /// Creates a temporary directory and the backend `make` builds in it.
    pub fn new(make: impl FnOnce(&std::path::Path) -> Result<S>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for the backend under test");
        let backend = make(dir.path()).expect("the backend under test builds");
        TempDirBackend { backend, dir }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &S {
        &self.backend
    }

    /// The temporary directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl<S: StateBackend> StateBackend for TempDirBackend<S> {
    type Keyed<K: StateKey> = S::Keyed<K>;

    fn name(&self) -> &'static str {
        self.backend.name()
    }

    fn create_keyed_backend<K: StateKey>(
        &self,
        params: KeyedBackendParams<K>,
        restore: &[KeyedStateHandle],
    ) -> Result<Self::Keyed<K>> {
        self.backend.create_keyed_backend(params, restore)
    }

    fn create_operator_backend(
        &self,
        restore: &[OperatorStateHandle],
    ) -> Result<state_api::DefaultOperatorStateBackend> {
        self.backend.create_operator_backend(restore)
    }

    fn stream_factory(
        &self,
        checkpoint_id: u64,
    ) -> Result<std::sync::Arc<dyn state_api::snapshot::stream::CheckpointStreamFactory>> {
        self.backend.stream_factory(checkpoint_id)
    }
}
