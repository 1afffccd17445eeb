//! The checkpoint directory, metadata and coordinator: layout, inlining,
//! atomic publishing, retention and shared files, aborts, cancellation
//! policies, savepoints, recovery on startup, and crash consistency with an
//! in-process storage that fails every operation after N and then loses what
//! was not durable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use checkpoint_store::coordinator::CheckpointCoordinator;
use checkpoint_store::metadata::{load_metadata, OperatorState, SnapshotKind, SubtaskState};
use checkpoint_store::storage::{LocalStorage, Storage};
use checkpoint_store::FaultyStorage;
use checkpoint_store::{
    dispose_savepoint, CancellationPolicy, CheckpointConfig, JobStatus, RestoreMode,
};
use state_api::snapshot::handle::{Distribution, OperatorStateHandle, OperatorStatePart};
use state_api::snapshot::stream::{CheckpointStreamFactory, StreamScope, StreamStateHandle};
use state_api::{ErrorKind, Result};

fn local() -> Arc<dyn Storage> {
    Arc::new(LocalStorage)
}

/// Writes `len` bytes through a stream and wraps the handle as operator state.
fn piece(
    streams: &Arc<dyn CheckpointStreamFactory>,
    scope: StreamScope,
    len: usize,
    fill: u8,
) -> Result<OperatorStateHandle> {
    let mut s = streams.create_stream(scope)?;
    s.write_all(&vec![fill; len])?;
    let data = s.close_and_get_handle()?;
    Ok(OperatorStateHandle {
        checkpoint_id: 0,
        data,
        states: BTreeMap::from([(
            "s".to_string(),
            OperatorStatePart {
                distribution: Distribution::SplitDistribute,
                offsets: vec![0],
            },
        )]),
    })
}

fn operators(handles: Vec<OperatorStateHandle>) -> Vec<OperatorState> {
    vec![OperatorState {
        operator_id: "op".into(),
        parallelism: 1,
        max_parallelism: 128,
        subtasks: vec![SubtaskState {
            operator: handles,
            ..Default::default()
        }],
    }]
}

fn file_of(h: &OperatorStateHandle) -> PathBuf {
    match &h.data {
        StreamStateHandle::File { path, .. } => path.clone(),
        other => panic!("expected a file, got {other:?}"),
    }
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walk(dir) {
        out.push(e.strip_prefix(dir).expect("under").display().to_string());
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn small_state_is_inlined_large_state_gets_a_file() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| state_api::Error::io("tempdir", e))?;
    let mut c =
        CheckpointCoordinator::open(local(), dir.path(), "job", CheckpointConfig::default())?;
    let p = c.begin_checkpoint()?;
    let small = piece(&p.streams, StreamScope::Exclusive, 20 * 1024, 1)?;
    let large = piece(&p.streams, StreamScope::Exclusive, 20 * 1024 + 1, 2)?;
    assert!(
        matches!(small.data, StreamStateHandle::InMemory { .. }),
        "20 KiB is inlined"
    );
    let path = file_of(&large);
    assert!(
        path.starts_with(dir.path().join("job/chk-1")),
        "{}",
        path.display()
    );
    c.complete_checkpoint(p.id, operators(vec![small.clone(), large.clone()]))?;
    let m = load_metadata(&LocalStorage, &dir.path().join("job/chk-1/_metadata"))?;
    assert_eq!(m.kind, SnapshotKind::Checkpoint);
    let sub = &m.operators[0].subtasks[0];
    assert_eq!(
        sub.operator[0].data.read()?.bytes(),
        &vec![1u8; 20 * 1024][..],
        "inline bytes live in the metadata"
    );
    assert_eq!(sub.operator[1].data.read()?.bytes().len(), 20 * 1024 + 1);
    let too_big = CheckpointConfig {
        inline_threshold: 2 << 20,
        ..Default::default()
    };
    let err = CheckpointCoordinator::open(local(), dir.path(), "job2", too_big)
        .err()
        .expect("over 1 MiB");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    Ok(())
}

#[test]
fn retention_keeps_the_newest_and_counts_shared_files() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| state_api::Error::io("tempdir", e))?;
    let config = CheckpointConfig {
        num_retained: 2,
        inline_threshold: 0,
        ..Default::default()
    };
    let mut c = CheckpointCoordinator::open(local(), dir.path(), "job", config)?;
    // Checkpoint 1 writes shared piece A; 2 reuses A and adds B; 3 reuses B only.
    let p1 = c.begin_checkpoint()?;
    let a = piece(&p1.streams, StreamScope::Shared, 10, 0xA)?;
    let x1 = piece(&p1.streams, StreamScope::Exclusive, 10, 1)?;
    c.complete_checkpoint(p1.id, operators(vec![a.clone(), x1]))?;
    let p2 = c.begin_checkpoint()?;
    let b = piece(&p2.streams, StreamScope::Shared, 10, 0xB)?;
    c.complete_checkpoint(p2.id, operators(vec![a.clone(), b.clone()]))?;
    let p3 = c.begin_checkpoint()?;
    c.complete_checkpoint(p3.id, operators(vec![b.clone()]))?;
    // Retained: 2 and 3. A is still referenced by 2.
    assert!(
        !dir.path().join("job/chk-1").exists(),
        "subsumed checkpoint folder deleted"
    );
    assert!(
        file_of(&a).exists(),
        "A is referenced by retained checkpoint 2"
    );
    let p4 = c.begin_checkpoint()?;
    c.complete_checkpoint(p4.id, operators(vec![b.clone()]))?;
    assert!(
        !file_of(&a).exists(),
        "A is referenced by no retained checkpoint"
    );
    assert!(file_of(&b).exists(), "B is still referenced");
    let ids: Vec<u64> = c.completed().map(|c| c.id).collect();
    assert_eq!(ids, vec![3, 4]);
    Ok(())
}

#[test]
fn aborted_checkpoints_leave_nothing_behind() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| state_api::Error::io("tempdir", e))?;
    let config = CheckpointConfig {
        inline_threshold: 0,
        ..Default::default()
    };
    let mut c = CheckpointCoordinator::open(local(), dir.path(), "job", config)?;
    let p1 = c.begin_checkpoint()?;
    let a = piece(&p1.streams, StreamScope::Shared, 10, 1)?;
    c.complete_checkpoint(p1.id, operators(vec![a.clone()]))?;
    let before = files_under(dir.path());
    let p2 = c.begin_checkpoint()?;
    piece(&p2.streams, StreamScope::Shared, 10, 2)?;
    piece(&p2.streams, StreamScope::Exclusive, 10, 3)?;
    c.abort(p2.id)?;
    assert_eq!(
        files_under(dir.path()),
        before,
        "the aborted checkpoint's files are gone, A is kept"
    );
    assert_eq!(c.latest_completed().map(|c| c.id), Some(1));
    let p3 = c.begin_checkpoint()?;
    assert_eq!(p3.id, 3, "ids are never reused");
    Ok(())
}

#[test]
fn startup_finds_the_latest_checkpoint_and_removes_leftovers() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| state_api::Error::io("tempdir", e))?;
    let config = CheckpointConfig {
        inline_threshold: 0,
        ..Default::default()
    };
    let mut c = CheckpointCoordinator::open(local(), dir.path(), "job", config.clone())?;
    let p1 = c.begin_checkpoint()?;
    let a = piece(&p1.streams, StreamScope::Shared, 10, 1)?;
    c.complete_checkpoint(p1.id, operators(vec![a]))?;
    let p2 = c.begin_checkpoint()?;
    let orphan = piece(&p2.streams, StreamScope::Shared, 10, 2)?;
    piece(&p2.streams, StreamScope::Exclusive, 10, 3)?;
    drop(c); // the process dies with checkpoint 2 pending

    let c = CheckpointCoordinator::open(local(), dir.path(), "job", config)?;
    assert_eq!(c.latest_completed().map(|c| c.id), Some(1));
    assert!(
        !dir.path().join("job/chk-2").exists(),
        "incomplete folder removed"
    );
    assert!(!file_of(&orphan).exists(), "orphaned shared file removed");
    let meta = c
        .latest_completed()
        .map(|c| c.metadata.clone())
        .expect("one");
    assert_eq!(
        meta.operators[0].subtasks[0].operator[0]
            .data
            .read()?
            .bytes(),
        &[1u8; 10]
    );
    Ok(())
}

#[test]
fn cancellation_policies_and_failure() -> Result<()> {
    for (policy, status, kept) in [
        (
            CancellationPolicy::DeleteOnCancellation,
            JobStatus::Cancelled,
            false,
        ),
        (
            CancellationPolicy::RetainOnCancellation,
            JobStatus::Cancelled,
            true,
        ),
        (
            CancellationPolicy::DeleteOnCancellation,
            JobStatus::Failed,
            true,
        ),
    ] {
        let dir = tempfile::tempdir().map_err(|e| state_api::Error::io("tempdir", e))?;
        let config = CheckpointConfig {
            cancellation: policy,
            inline_threshold: 0,
            ..Default::default()
        };
        let mut c = CheckpointCoordinator::open(local(), dir.path(), "job", config)?;
        let p = c.begin_checkpoint()?;
        let a = piece(&p.streams, StreamScope::Shared, 10, 1)?;
        c.complete_checkpoint(p.id, operators(vec![a.clone()]))?;
        let sp = c.begin_savepoint(&dir.path().join("savepoints"))?;
        let s = piece(&sp.streams, StreamScope::Shared, 10, 9)?;
        let sp_dir = c.complete_savepoint(sp.id, operators(vec![s]))?;
        c.shutdown(status)?;
        assert_eq!(
            file_of(&a).exists(),
            kept,
            "{policy:?} {status:?}: shared file"
        );
        assert_eq!(
            dir.path().join("job/chk-1/_metadata").exists(),
            kept,
            "{policy:?} {status:?}: metadata"
        );
        assert!(
            sp_dir.join("_metadata").exists(),
            "savepoints are never removed by the coordinator"
        );
    }
    Ok(())
}

#[test]
fn savepoints_are_self_contained_relocatable_and_disposable() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| state_api::Error::io("tempdir", e))?;
    let config = CheckpointConfig {
        inline_threshold: 0,
        ..Default::default()
    };
    let mut c = CheckpointCoordinator::open(local(), dir.path(), "job-abcdefgh", config)?;
    let sp = c.begin_savepoint(&dir.path().join("sp"))?;
    let shared = piece(&sp.streams, StreamScope::Shared, 100, 7)?;
    assert!(
        file_of(&shared).starts_with(dir.path().join("sp")),
        "even shared-scope files stay in the savepoint"
    );
    let sp_dir = c.complete_savepoint(sp.id, operators(vec![shared]))?;
    let name = sp_dir.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(name.starts_with("savepoint-job-ab-"), "{name}");
    // Retention never touches it.
    for _ in 0..3 {
        let p = c.begin_checkpoint()?;
        c.complete_checkpoint(p.id, operators(vec![]))?;
    }
    // Move it: relative paths still resolve.
    let moved = dir.path().join("moved");
    std::fs::rename(&sp_dir, &moved).map_err(|e| state_api::Error::io("rename", e))?;
    let m = load_metadata(&LocalStorage, &moved)?;
    assert_eq!(m.kind, SnapshotKind::Savepoint);
    assert_eq!(
        m.operators[0].subtasks[0].operator[0].data.read()?.bytes(),
        &[7u8; 100]
    );
    // A checkpoint is not disposable as a savepoint.
    let chk = dir.path().join("job-abcdefgh/chk-4");
    assert_eq!(
        dispose_savepoint(&LocalStorage, &chk)
            .err()
            .map(|e| e.kind()),
        Some(ErrorKind::InvalidArgument)
    );
    dispose_savepoint(&LocalStorage, &moved)?;
    assert!(!moved.exists());
    let missing = load_metadata(&LocalStorage, &moved).expect_err("gone");
    assert_eq!(missing.kind(), ErrorKind::InvalidArgument, "{missing}");
    Ok(())
}

#[test]
fn restore_claim_and_no_claim() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| state_api::Error::io("tempdir", e))?;
    let config = CheckpointConfig {
        inline_threshold: 0,
        cancellation: CancellationPolicy::RetainOnCancellation,
        ..Default::default()
    };
    let mut old = CheckpointCoordinator::open(local(), dir.path(), "old", config.clone())?;
    let p = old.begin_checkpoint()?;
    let a = piece(&p.streams, StreamScope::Shared, 10, 1)?;
    let done = old.complete_checkpoint(p.id, operators(vec![a.clone()]))?;
    old.shutdown(JobStatus::Cancelled)?;

    let mut no_claim =
        CheckpointCoordinator::open(local(), dir.path(), "new1", CheckpointConfig::default())?;
    no_claim.restore_from(&done.metadata_path, RestoreMode::NoClaim)?;
    for _ in 0..2 {
        let p = no_claim.begin_checkpoint()?;
        assert!(p.id > done.id, "ids continue after the restored checkpoint");
        no_claim.complete_checkpoint(p.id, operators(vec![]))?;
    }
    assert!(
        done.metadata_path.exists() && file_of(&a).exists(),
        "no-claim restore never deletes"
    );

    let mut claim =
        CheckpointCoordinator::open(local(), dir.path(), "new2", CheckpointConfig::default())?;
    claim.restore_from(&done.metadata_path, RestoreMode::Claim)?;
    let p = claim.begin_checkpoint()?;
    claim.complete_checkpoint(p.id, operators(vec![]))?;
    assert!(
        !done.metadata_path.exists(),
        "a claimed checkpoint is subsumed like our own"
    );
    Ok(())
}

#[test]
fn corrupt_or_absent_metadata_is_a_typed_error() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| state_api::Error::io("tempdir", e))?;
    let mut c =
        CheckpointCoordinator::open(local(), dir.path(), "job", CheckpointConfig::default())?;
    let p = c.begin_checkpoint()?;
    let done = c.complete_checkpoint(p.id, operators(vec![]))?;
    let good = std::fs::read(&done.metadata_path).map_err(|e| state_api::Error::io("read", e))?;
    for bit in 0..good.len() * 8 {
        let mut bad = good.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&done.metadata_path, &bad).map_err(|e| state_api::Error::io("write", e))?;
        let err = load_metadata(&LocalStorage, &done.metadata_path).expect_err("flip detected");
        assert!(
            matches!(
                err.kind(),
                ErrorKind::Corruption | ErrorKind::IncompatibleFormat
            ),
            "bit {bit}: {err}"
        );
        assert!(
            err.to_string().contains("_metadata"),
            "the error names the file: {err}"
        );
    }
    std::fs::write(&done.metadata_path, &good).map_err(|e| state_api::Error::io("write", e))?;
    let absent =
        load_metadata(&LocalStorage, &dir.path().join("nope/_metadata")).expect_err("absent");
    assert!(absent.to_string().contains("nope"), "{absent}");
    Ok(())
}

/// Runs checkpoint 2 on a storage that fails after `budget` operations, then
/// simulates a power loss, reopens, and checks that the latest completed
/// checkpoint is 1 or 2 and fully readable.
fn crash_during_checkpoint(budget: u64) -> Result<bool> {
    let dir = tempfile::tempdir().map_err(|e| state_api::Error::io("tempdir", e))?;
    let config = CheckpointConfig {
        inline_threshold: 0,
        ..Default::default()
    };
    {
        let mut c = CheckpointCoordinator::open(local(), dir.path(), "job", config.clone())?;
        let p = c.begin_checkpoint()?;
        let a = piece(&p.streams, StreamScope::Shared, 100, 1)?;
        let b = piece(&p.streams, StreamScope::Exclusive, 100, 2)?;
        c.complete_checkpoint(p.id, operators(vec![a, b]))?;
    }
    let faulty = FaultyStorage::new(LocalStorage, budget);
    let outcome = (|| -> Result<()> {
        let mut c = CheckpointCoordinator::open(
            Arc::new(faulty.clone()),
            dir.path(),
            "job",
            config.clone(),
        )?;
        let p = c.begin_checkpoint()?;
        let a = piece(&p.streams, StreamScope::Shared, 100, 3)?;
        let b = piece(&p.streams, StreamScope::Exclusive, 100, 4)?;
        c.complete_checkpoint(p.id, operators(vec![a, b]))?;
        Ok(())
    })();
    let failed = outcome.is_err();
    faulty
        .crash()
        .map_err(|e| state_api::Error::io("crash", e))?;
    let c = CheckpointCoordinator::open(local(), dir.path(), "job", config)?;
    let latest = c
        .latest_completed()
        .expect("a checkpoint survives any crash");
    let expected_fill = match latest.id {
        1 => [1u8, 2],
        2 => [3u8, 4],
        other => panic!("unexpected checkpoint {other}"),
    };
    if !failed {
        assert_eq!(latest.id, 2, "a checkpoint that completed survives");
    }
    for (h, fill) in latest.metadata.operators[0].subtasks[0]
        .operator
        .iter()
        .zip(expected_fill)
    {
        assert_eq!(
            h.data.read()?.bytes(),
            &[fill; 100],
            "budget {budget}: checkpoint {} readable",
            latest.id
        );
    }
    Ok(failed)
}

#[test]
fn a_crash_at_any_operation_leaves_the_previous_checkpoint_restorable() -> Result<()> {
    let mut budget = 0;
    while crash_during_checkpoint(budget)? {
        budget += 1;
        assert!(budget < 500, "the checkpoint never completed");
    }
    assert!(
        budget > 10,
        "the sweep covered every operation of a checkpoint ({budget})"
    );
    Ok(())
}

/// Local files whose `publish` stores the file and then answers as if it
/// already existed: what a conditional put looks like when its answer was
/// lost and the retry found the object the first attempt created.
struct LostPublishReply;

impl Storage for LostPublishReply {
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn checkpoint_store::StorageFile>> {
        LocalStorage.create(path)
    }
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        LocalStorage.open(path)
    }
    fn publish(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        LocalStorage.publish(path, bytes)?;
        Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "precondition failed (after a retry)",
        ))
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        LocalStorage.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
        LocalStorage.remove_dir_all(path)
    }
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        LocalStorage.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
        LocalStorage.list_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        LocalStorage.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        LocalStorage.exists(path)
    }
    fn len(&self, path: &Path) -> std::io::Result<u64> {
        LocalStorage.len(path)
    }
}

/// A publish whose own put succeeded but whose answer says the `_metadata`
/// exists completes the checkpoint: the `_metadata` found is ours.
#[test]
fn a_publish_that_finds_its_own_metadata_completes() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| state_api::Error::io("tempdir", e))?;
    let config = CheckpointConfig {
        inline_threshold: 0,
        ..Default::default()
    };
    let mut c = CheckpointCoordinator::open(Arc::new(LostPublishReply), dir.path(), "job", config)?;
    let p1 = c.begin_checkpoint()?;
    let a = piece(&p1.streams, StreamScope::Exclusive, 100, 7)?;
    let done = c.complete_checkpoint(p1.id, operators(vec![a]))?;
    assert_eq!(c.latest_completed().map(|c| c.id), Some(done.id));
    assert_eq!(
        load_metadata(&LocalStorage, &done.metadata_path)?,
        done.metadata
    );
    Ok(())
}
