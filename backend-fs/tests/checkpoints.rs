//! File checkpoints end to end: incremental chains against a model, what a
//! delta writes, failed checkpoints, savepoints across backends, and damaged
//! files.

use std::path::{Path, PathBuf};

use backend_fs::FsStateBackend;
use backend_memory::heap::IncrementalOptions;
use backend_memory::MemoryStateBackend;
use checkpoint_store::{
    dispose_savepoint, load_metadata, CancellationPolicy, CheckpointConfig, JobStatus, LocalStorage,
};
use conformance_tests::rounds::{
    checkpoint, model_after, open, read, snapshot_all, write_round, OPERATOR,
};
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::snapshot::stream::StreamStateHandle;
use state_api::snapshot::SnapshotOptions;
use state_api::{Error, ErrorKind, KeyedStateBackend, Result};

fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))
}

fn fs(dir: &Path, incremental: bool) -> Result<FsStateBackend> {
    Ok(FsStateBackend::new(dir, "job")?
        .with_inline_threshold(0)?
        .with_incremental(incremental))
}

#[test]
fn incremental_chains_restore_like_the_model_at_any_parallelism() -> Result<()> {
    let dir = tempdir()?;
    let backend = fs(dir.path(), false)?.with_incremental_options(IncrementalOptions {
        max_deltas: 3,
        max_delta_ratio: 10.0,
    });
    let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
    let keys = 60;
    let mut job = open(&backend, 2, None)?;
    let mut chain_lengths = Vec::new();
    for r in 1..=9 {
        write_round(&mut job, r, keys)?;
        let done = checkpoint(&mut coordinator, &mut job)?;
        let op = done
            .metadata
            .operator(OPERATOR)
            .expect("the operator's state");
        let pieces = op.subtasks[0].keyed[0].pieces().len();
        chain_lengths.push(pieces);
        for p in [1, 2, 3] {
            let mut restored = open(&backend, p, Some(op))?;
            assert_eq!(
                read(&mut restored, keys)?,
                model_after(r, keys),
                "round {r}, restored at parallelism {p}"
            );
        }
    }
    assert_eq!(
        chain_lengths,
        vec![1, 2, 3, 4, 1, 2, 3, 4, 1],
        "a base, three deltas, then a new base"
    );
    Ok(())
}

#[test]
fn an_incremental_checkpoint_writes_only_what_changed() -> Result<()> {
    let dir = tempdir()?;
    let backend = fs(dir.path(), true)?;
    let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
    let mut job = open(&backend, 1, None)?;
    let keys = 5_000;
    write_round(&mut job, 1, keys)?;
    checkpoint(&mut coordinator, &mut job)?;
    // Change 1% of the values.
    let s = &mut job[0];
    for k in (0..keys).step_by(100) {
        s.keyed.set_current_key(k)?;
        s.value.on(&mut s.keyed).update(Some(-1))?;
    }
    let pending = coordinator.begin_checkpoint()?;
    let states = snapshot_all(&mut job, &pending, SnapshotOptions::default())?;
    let written: u64 = pending
        .created_files()
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let KeyedStateHandle::IncrementalHeap(h) = &states[0].subtasks[0].keyed[0] else {
        panic!("an incremental handle");
    };
    let base = h.base.data.size();
    // 50 changed entries of about 10 bytes each, in a file of 128 key groups.
    assert!(
        written < 3_000,
        "the delta wrote {written} bytes; the base has {base}"
    );
    assert!(
        written * 20 < base,
        "the delta ({written}) is a small fraction of the base ({base})"
    );
    coordinator.complete_checkpoint(pending.id, states)?;
    Ok(())
}

#[test]
fn pieces_of_a_failed_checkpoint_are_never_reused() -> Result<()> {
    let dir = tempdir()?;
    let backend = fs(dir.path(), true)?;
    let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
    let keys = 40;
    let mut job = open(&backend, 2, None)?;
    write_round(&mut job, 1, keys)?;
    checkpoint(&mut coordinator, &mut job)?;
    write_round(&mut job, 2, keys)?;
    // Checkpoint 2 is taken and then fails (say, another task failed).
    let pending = coordinator.begin_checkpoint()?;
    snapshot_all(&mut job, &pending, SnapshotOptions::default())?;
    let failed_files = pending.created_files();
    assert!(!failed_files.is_empty());
    coordinator.abort(pending.id)?;
    for s in job.iter_mut() {
        s.keyed.notify_checkpoint_aborted(pending.id)?;
    }
    for f in &failed_files {
        assert!(
            !f.exists(),
            "{} of the aborted checkpoint is deleted",
            f.display()
        );
    }
    write_round(&mut job, 3, keys)?;
    let done = checkpoint(&mut coordinator, &mut job)?;
    for f in done.metadata.files() {
        assert!(
            !failed_files.contains(&f),
            "{} belongs to the failed checkpoint",
            f.display()
        );
        assert!(f.exists(), "{} is referenced and present", f.display());
    }
    let mut restored = open(&backend, 3, done.metadata.operator(OPERATOR))?;
    assert_eq!(
        read(&mut restored, keys)?,
        model_after(3, keys),
        "round 2's changes are in checkpoint 3's delta"
    );
    Ok(())
}

#[test]
fn savepoints_move_state_between_backends() -> Result<()> {
    let dir = tempdir()?;
    let keys = 50;
    let savepoints = dir.path().join("savepoints");
    let memory = MemoryStateBackend::new();
    let fs_full = fs(dir.path(), false)?;
    let fs_incremental = FsStateBackend::new(dir.path(), "job2")?.with_incremental(true);

    // memory -> savepoint
    let mut job = open(&memory, 2, None)?;
    for r in 1..=3 {
        write_round(&mut job, r, keys)?;
    }
    let mut coordinator = fs_full.coordinator(CheckpointConfig::default())?;
    let pending = coordinator.begin_savepoint(&savepoints)?;
    let states = snapshot_all(
        &mut job,
        &pending,
        SnapshotOptions::savepoint(Default::default()),
    )?;
    let sp1 = coordinator.complete_savepoint(pending.id, states)?;

    // -> fs (incremental) at another parallelism, one more round, savepoint
    let meta = load_metadata(&LocalStorage, &sp1)?;
    let mut job = open(&fs_incremental, 3, meta.operator(OPERATOR))?;
    assert_eq!(read(&mut job, keys)?, model_after(3, keys), "memory -> fs");
    write_round(&mut job, 4, keys)?;
    let mut coordinator2 = fs_incremental.coordinator(CheckpointConfig::default())?;
    checkpoint(&mut coordinator2, &mut job)?; // an incremental base; the savepoint must not depend on it
    let pending = coordinator2.begin_savepoint(&savepoints)?;
    let states = snapshot_all(
        &mut job,
        &pending,
        SnapshotOptions::savepoint(Default::default()),
    )?;
    for s in &states[0].subtasks {
        assert!(
            matches!(s.keyed[0], KeyedStateHandle::KeyGroups(_)),
            "a savepoint is a canonical full snapshot even on an incremental backend"
        );
    }
    let sp2 = coordinator2.complete_savepoint(pending.id, states)?;

    // -> memory at parallelism 1
    let meta = load_metadata(&LocalStorage, &sp2)?;
    let mut job = open(&memory, 1, meta.operator(OPERATOR))?;
    assert_eq!(read(&mut job, keys)?, model_after(4, keys), "fs -> memory");

    // Retention never removes savepoints; dispose does.
    for _ in 0..3 {
        let pending = coordinator2.begin_checkpoint()?;
        coordinator2.complete_checkpoint(pending.id, vec![])?;
    }
    assert!(sp2.join("_metadata").exists());
    dispose_savepoint(&LocalStorage, &sp1)?;
    assert!(!sp1.exists());
    Ok(())
}

#[test]
fn stop_with_savepoint_takes_a_savepoint_then_cancels() -> Result<()> {
    let dir = tempdir()?;
    let keys = 30;
    let backend = fs(dir.path(), true)?;
    let mut coordinator = backend.coordinator(CheckpointConfig {
        cancellation: CancellationPolicy::DeleteOnCancellation,
        ..Default::default()
    })?;
    let mut job = open(&backend, 2, None)?;
    write_round(&mut job, 1, keys)?;
    let chk = checkpoint(&mut coordinator, &mut job)?;
    write_round(&mut job, 2, keys)?;
    let sp = coordinator.stop_with_savepoint(&dir.path().join("sp"), |pending| {
        snapshot_all(
            &mut job,
            pending,
            SnapshotOptions::savepoint(Default::default()),
        )
    })?;
    assert!(
        !chk.metadata_path.exists(),
        "cancelled with DELETE_ON_CANCELLATION"
    );
    let meta = load_metadata(&LocalStorage, &sp)?;
    let mut restored = open(&backend, 1, meta.operator(OPERATOR))?;
    assert_eq!(read(&mut restored, keys)?, model_after(2, keys));
    Ok(())
}

/// Every file the latest checkpoint references, with its `_metadata`.
fn checkpoint_files(meta_path: &Path) -> Result<Vec<PathBuf>> {
    let meta = load_metadata(&LocalStorage, meta_path)?;
    let mut files = meta.files();
    files.push(meta_path.to_path_buf());
    Ok(files)
}

fn restore_everything(
    backend: &FsStateBackend,
    meta_path: &Path,
    keys: u64,
) -> Result<conformance_tests::rounds::Model> {
    let meta = load_metadata(&LocalStorage, meta_path)?;
    let mut job = open(backend, 2, meta.operator(OPERATOR))?;
    read(&mut job, keys)
}

#[test]
fn every_bit_flip_in_any_checkpoint_file_is_a_typed_error() -> Result<()> {
    let dir = tempdir()?;
    let keys = 12;
    let backend = fs(dir.path(), true)?;
    let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
    let mut job = open(&backend, 2, None)?;
    write_round(&mut job, 1, keys)?;
    checkpoint(&mut coordinator, &mut job)?;
    write_round(&mut job, 2, keys)?;
    let done = checkpoint(&mut coordinator, &mut job)?;
    assert_eq!(
        restore_everything(&backend, &done.metadata_path, keys)?,
        model_after(2, keys)
    );
    let files = checkpoint_files(&done.metadata_path)?;
    assert!(
        files.len() >= 7,
        "bases, deltas, operator files and metadata: {files:?}"
    );
    let mut flips = 0;
    for file in &files {
        let good = std::fs::read(file).map_err(|e| Error::io("read", e))?;
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(file, &bad).map_err(|e| Error::io("write", e))?;
            match restore_everything(&backend, &done.metadata_path, keys) {
                Ok(m) => panic!("flip of bit {bit} of {name} restored silently: {m:?}"),
                Err(e) => {
                    // Headers carry a CRC32 from format version 2 on, so
                    // even a flipped version bit is a corruption.
                    assert_eq!(e.kind(), ErrorKind::Corruption, "bit {bit} of {name}: {e}");
                    assert!(e.to_string().contains(&name), "the error names {name}: {e}");
                }
            }
            flips += 1;
        }
        std::fs::write(file, &good).map_err(|e| Error::io("write", e))?;
    }
    assert!(flips > 10_000, "{flips} flips checked");
    assert_eq!(
        restore_everything(&backend, &done.metadata_path, keys)?,
        model_after(2, keys)
    );
    Ok(())
}

#[test]
fn missing_and_truncated_files_are_typed_errors_naming_the_file() -> Result<()> {
    let dir = tempdir()?;
    let keys = 20;
    let backend = fs(dir.path(), true)?;
    let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
    let mut job = open(&backend, 1, None)?;
    write_round(&mut job, 1, keys)?;
    let done = checkpoint(&mut coordinator, &mut job)?;
    let meta = load_metadata(&LocalStorage, &done.metadata_path)?;
    let KeyedStateHandle::IncrementalHeap(h) = &meta.operators[0].subtasks[0].keyed[0] else {
        panic!("incremental handle");
    };
    let StreamStateHandle::File { path, .. } = &h.base.data else {
        panic!("a file");
    };
    let good = std::fs::read(path).map_err(|e| Error::io("read", e))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();

    std::fs::write(path, &good[..good.len() - 10]).map_err(|e| Error::io("write", e))?;
    let e = restore_everything(&backend, &done.metadata_path, keys).expect_err("truncated");
    assert!(
        matches!(e, Error::Truncated { .. }) && e.to_string().contains(&name),
        "{e}"
    );

    std::fs::remove_file(path).map_err(|e| Error::io("remove", e))?;
    let e = restore_everything(&backend, &done.metadata_path, keys).expect_err("missing");
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert!(
        matches!(&e, Error::StateFileUnreadable { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound),
        "{e}"
    );
    assert!(
        e.to_string().contains(&name),
        "the error names the absent file: {e}"
    );
    assert!(
        e.to_string()
            .contains(&format!("which checkpoint {} needs", done.id)),
        "the error names the checkpoint that needs the file: {e}"
    );

    std::fs::write(path, &good).map_err(|e| Error::io("write", e))?;
    let mut with_extra = good.clone();
    with_extra.extend_from_slice(b"junk");
    std::fs::write(path, &with_extra).map_err(|e| Error::io("write", e))?;
    let e = restore_everything(&backend, &done.metadata_path, keys)
        .expect_err("longer than its handle");
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");

    std::fs::remove_file(&done.metadata_path).map_err(|e| Error::io("remove", e))?;
    let e = load_metadata(&LocalStorage, &done.metadata_path).expect_err("no metadata");
    assert!(e.to_string().contains("_metadata"), "{e}");

    Ok(())
}

/// A missing file used to be reported by its path alone; for a shared piece
/// of an incremental chain that left open which checkpoint was broken.
#[test]
fn a_missing_file_names_the_checkpoint_that_needs_it() -> Result<()> {
    let dir = tempdir()?;
    let keys = 20;
    let backend = fs(dir.path(), true)?;
    let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
    let mut job = open(&backend, 1, None)?;
    write_round(&mut job, 1, keys)?;
    let first = checkpoint(&mut coordinator, &mut job)?;
    write_round(&mut job, 2, keys)?;
    let second = checkpoint(&mut coordinator, &mut job)?;
    let meta = load_metadata(&LocalStorage, &second.metadata_path)?;
    let subtask = &meta.operators[0].subtasks[0];
    let KeyedStateHandle::IncrementalHeap(h) = &subtask.keyed[0] else {
        panic!("incremental handle");
    };
    assert_eq!(h.base.checkpoint_id, first.id, "the chain's base is shared");
    let StreamStateHandle::File { path, .. } = &h.base.data else {
        panic!("a file");
    };
    let base = std::fs::read(path).map_err(|e| Error::io("read", e))?;
    std::fs::remove_file(path).map_err(|e| Error::io("remove", e))?;
    let e = restore_everything(&backend, &second.metadata_path, keys).expect_err("missing");
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    let message = e.to_string();
    assert!(
        message.contains(&path.display().to_string())
            && message.contains(&format!(
                "which checkpoint {} (it was written for checkpoint {}) needs",
                second.id, first.id
            )),
        "{message}"
    );

    let operator_file = subtask
        .operator
        .iter()
        .find_map(|o| match &o.data {
            StreamStateHandle::File { path, .. } => Some(path.clone()),
            _ => None,
        })
        .expect("an operator state file (inline threshold 0)");
    std::fs::write(path, &base).map_err(|e| Error::io("write", e))?;
    std::fs::remove_file(&operator_file).map_err(|e| Error::io("remove", e))?;
    let Err(e) = open(&backend, 1, meta.operator(OPERATOR)) else {
        panic!("restored without its operator state file");
    };
    assert!(
        e.to_string().contains(&operator_file.display().to_string())
            && e.to_string()
                .contains(&format!("which checkpoint {} needs", second.id)),
        "{e}"
    );
    Ok(())
}

#[test]
fn restart_finds_the_latest_checkpoint_and_cancellation_cleans_up() -> Result<()> {
    let dir = tempdir()?;
    let keys = 25;
    let backend = fs(dir.path(), true)?;
    {
        let mut coordinator = backend.coordinator(CheckpointConfig {
            num_retained: 2,
            ..Default::default()
        })?;
        let mut job = open(&backend, 2, None)?;
        for r in 1..=4 {
            write_round(&mut job, r, keys)?;
            checkpoint(&mut coordinator, &mut job)?;
        }
        coordinator.shutdown(JobStatus::Failed)?;
    }
    let mut coordinator = backend.coordinator(CheckpointConfig {
        num_retained: 2,
        ..Default::default()
    })?;
    let ids: Vec<u64> = coordinator.completed().map(|c| c.id).collect();
    assert_eq!(
        ids,
        vec![3, 4],
        "the two newest are retained after a failure"
    );
    let latest = coordinator
        .latest_completed()
        .expect("latest")
        .metadata
        .clone();
    let mut job = open(&backend, 3, latest.operator(OPERATOR))?;
    assert_eq!(read(&mut job, keys)?, model_after(4, keys));
    write_round(&mut job, 5, keys)?;
    checkpoint(&mut coordinator, &mut job)?;
    coordinator.shutdown(JobStatus::Cancelled)?;
    let left: Vec<_> = walk(dir.path());
    assert!(
        left.is_empty(),
        "DELETE_ON_CANCELLATION leaves no file: {left:?}"
    );
    Ok(())
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
