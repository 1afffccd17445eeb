//! Incremental RocksDB checkpoints: SSTs shared between checkpoints, failed
//! checkpoints, writes during the capture, rescaling, retention and damaged
//! files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use backend_rocksdb::{MemoryMode, RocksDbStateBackend, RocksOptions};
use checkpoint_store::CheckpointConfig;
use conformance_tests::harness::{expect_err, keyed, snapshot, snapshot_task, TempDirBackend};
use conformance_tests::rounds::{checkpoint, model_after, open, read, write_round, OPERATOR};
use state_api::snapshot::handle::{IncrementalNativeStateHandle, KeyedStateHandle};
use state_api::snapshot::stream::StreamStateHandle;
use state_api::state::access::{KeyedStateBackendExt, ValueState};
use state_api::state::descriptor::ValueStateDescriptor;
use state_api::{Error, ErrorKind, KeyedStateBackend, Result, StateBackend};

fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))
}

fn rocks(dir: &Path, options: RocksOptions) -> Result<RocksDbStateBackend> {
    RocksDbStateBackend::new(&dir.join("work"), &dir.join("checkpoints"), "job")?
        .with_options(options)
        .with_inline_threshold(0)
}

fn backend(options: RocksOptions) -> TempDirBackend<RocksDbStateBackend> {
    TempDirBackend::new(move |dir| rocks(dir, options))
}

fn native(h: &KeyedStateHandle) -> &IncrementalNativeStateHandle {
    match h {
        KeyedStateHandle::IncrementalNative(n) => n,
        other => panic!("expected a native handle, got {other:?}"),
    }
}

fn path_of(s: &StreamStateHandle) -> PathBuf {
    match s {
        StreamStateHandle::File { path, .. } => path.clone(),
        other => panic!("expected a file, got {other:?}"),
    }
}

fn shared_paths(h: &IncrementalNativeStateHandle) -> BTreeSet<PathBuf> {
    h.shared.iter().map(|f| path_of(&f.data)).collect()
}

type Backend = backend_rocksdb::RocksKeyedStateBackend<u64>;

fn values(k: &mut Backend) -> Result<ValueState<i64>> {
    k.value_state(&ValueStateDescriptor::<i64>::new("v"))
}

fn put_all(
    k: &mut Backend,
    v: &ValueState<i64>,
    keys: impl Iterator<Item = u64>,
    base: i64,
) -> Result<()> {
    for key in keys {
        k.set_current_key(key)?;
        v.on(k).update(Some(base + key as i64))?;
    }
    Ok(())
}

fn read_all(k: &mut Backend, v: &ValueState<i64>, keys: u64) -> Result<BTreeMap<u64, i64>> {
    let mut out = BTreeMap::new();
    for key in 0..keys {
        k.set_current_key(key)?;
        if let Some(x) = v.on(k).get()? {
            out.insert(key, x);
        }
    }
    Ok(out)
}

#[test]
fn ssts_are_uploaded_once_and_referenced_by_later_checkpoints() -> Result<()> {
    let b = backend(RocksOptions::default());
    let keys = 20_000;
    let mut k = keyed::<_, u64>(&b, 128, 1, 0, &[])?;
    let v = values(&mut k)?;
    put_all(&mut k, &v, 0..keys, 0)?;
    let h1 = snapshot(&b, &mut k, 1)?.expect("state");
    let n1 = native(&h1);
    assert!(!n1.shared.is_empty(), "the first checkpoint uploads SSTs");
    assert!(
        n1.private.iter().any(|f| f.name == "CURRENT"),
        "{:?}",
        n1.private
    );
    for f in &n1.shared {
        assert!(f.name.ends_with(".sst"));
        assert!(path_of(&f.data).starts_with(b.dir().join("checkpoints/job/shared")));
    }
    // 1% of the keys change.
    put_all(&mut k, &v, (0..keys).step_by(100), 1_000_000)?;
    let h2 = snapshot(&b, &mut k, 2)?.expect("state");
    let n2 = native(&h2);
    let reused: Vec<_> = n2.shared.iter().filter(|f| n1.shared.contains(f)).collect();
    assert_eq!(
        reused.len(),
        n1.shared.len(),
        "every SST of checkpoint 1 is referenced again"
    );
    let new_bytes: u64 = n2
        .shared
        .iter()
        .filter(|f| !n1.shared.contains(f))
        .map(|f| f.data.size())
        .sum();
    let first_bytes: u64 = n1.shared.iter().map(|f| f.data.size()).sum();
    assert!(
        new_bytes > 0 && new_bytes * 20 < first_bytes,
        "{new_bytes} new vs {first_bytes}"
    );

    let mut r = keyed::<_, u64>(&b, 128, 1, 0, &[h2])?;
    let rv = values(&mut r)?;
    let mut want: BTreeMap<u64, i64> = (0..keys).map(|key| (key, key as i64)).collect();
    for key in (0..keys).step_by(100) {
        want.insert(key, 1_000_000 + key as i64);
    }
    assert_eq!(read_all(&mut r, &rv, keys)?, want);
    Ok(())
}

#[test]
fn an_aborted_checkpoints_ssts_are_never_referenced() -> Result<()> {
    let b = backend(RocksOptions::default());
    let mut k = keyed::<_, u64>(&b, 128, 1, 0, &[])?;
    let v = values(&mut k)?;
    put_all(&mut k, &v, 0..1000, 0)?;
    let h1 = snapshot(&b, &mut k, 1)?.expect("state");
    put_all(&mut k, &v, 1000..2000, 0)?;
    let h2 = snapshot_task(&b, &mut k, 2)?.run()?.expect("state");
    k.notify_checkpoint_aborted(2)?;
    let failed: BTreeSet<_> = shared_paths(native(&h2))
        .difference(&shared_paths(native(&h1)))
        .cloned()
        .collect();
    assert!(!failed.is_empty(), "checkpoint 2 uploaded an SST");
    put_all(&mut k, &v, 2000..3000, 0)?;
    let h3 = snapshot(&b, &mut k, 3)?.expect("state");
    let used = shared_paths(native(&h3));
    assert!(used.is_disjoint(&failed), "{used:?} reuses {failed:?}");
    assert!(shared_paths(native(&h1)).is_subset(&used));
    let mut r = keyed::<_, u64>(&b, 128, 1, 0, &[h3])?;
    let rv = values(&mut r)?;
    assert_eq!(read_all(&mut r, &rv, 3000)?.len(), 3000);
    Ok(())
}

/// With a tiny memtable the task writes past the gate's budget while the
/// asynchronous part has not run: the task takes the capture itself, and the
/// checkpoint still holds exactly the state at the barrier. Under a memory
/// budget (whose write buffer manager may flush at any write) the task takes
/// the capture before its first write reaches RocksDB.
#[test]
fn writes_after_the_barrier_are_not_in_the_checkpoint() -> Result<()> {
    for (concurrent, memory) in [
        (false, MemoryMode::PerInstance),
        (true, MemoryMode::PerInstance),
        (false, MemoryMode::ProcessDefault),
        (true, MemoryMode::ProcessDefault),
    ] {
        let b = backend(RocksOptions {
            write_buffer_bytes: 64 << 10,
            memory,
            ..RocksOptions::default()
        });
        let mut k = keyed::<_, u64>(&b, 128, 1, 0, &[])?;
        let v = values(&mut k)?;
        put_all(&mut k, &v, 0..3000, 0)?;
        let task = snapshot_task(&b, &mut k, 1)?;
        let (task, running) = if concurrent {
            (None, Some(task.spawn()))
        } else {
            (Some(task), None)
        };
        // Far more than the memtable holds: several flushes happen.
        for round in 1..=5 {
            put_all(&mut k, &v, 0..5000, round * 100_000)?;
        }
        let h = match (task, running) {
            (Some(t), _) => t.run()?,
            (None, Some(r)) => conformance_tests::harness::join(r)?,
            (None, None) => unreachable!(),
        }
        .expect("state");
        let mut r = keyed::<_, u64>(&b, 128, 1, 0, &[h])?;
        let rv = values(&mut r)?;
        let want: BTreeMap<u64, i64> = (0..3000).map(|key| (key, key as i64)).collect();
        let got = read_all(&mut r, &rv, 5000)?;
        let wrong = (0..5000).filter(|k| got.get(k) != want.get(k)).count();
        assert_eq!(
            wrong, 0,
            "keys unlike the barrier's state (concurrent: {concurrent})"
        );
    }
    Ok(())
}

/// The job of value, list and map state checkpointed through the
/// coordinator, restored 2 → 1 (merging two instances) → 3 (clipping), with
/// files of subsumed checkpoints removed along the way.
#[test]
fn rescaling_and_retention_of_native_checkpoints() -> Result<()> {
    let dir = tempdir()?;
    let backend = rocks(dir.path(), RocksOptions::default())?;
    let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
    let keys = 400;
    let mut job = open(&backend, 2, None)?;
    let mut round = 0;
    for p in [1, 3, 2] {
        for _ in 0..3 {
            round += 1;
            write_round(&mut job, round, keys)?;
            checkpoint(&mut coordinator, &mut job)?;
        }
        let done = coordinator.latest_completed().expect("a checkpoint");
        let op = done.metadata.operator(OPERATOR).expect("the operator");
        for s in &op.subtasks {
            assert!(matches!(s.keyed[0], KeyedStateHandle::IncrementalNative(_)));
        }
        // Only the latest checkpoint's files remain in shared/.
        let referenced: BTreeSet<PathBuf> = done.metadata.files().into_iter().collect();
        let shared_dir = dir.path().join("checkpoints/job/shared");
        for entry in std::fs::read_dir(&shared_dir).map_err(|e| Error::io("listing", e))? {
            let path = entry.map_err(|e| Error::io("listing", e))?.path();
            assert!(
                referenced.contains(&path),
                "{} is not referenced",
                path.display()
            );
        }
        drop(job);
        job = open(&backend, p, Some(op))?;
        assert_eq!(
            read(&mut job, keys)?,
            model_after(round, keys),
            "restored at {p}"
        );
    }
    Ok(())
}

fn first_sst(h: &KeyedStateHandle) -> PathBuf {
    path_of(&native(h).shared[0].data)
}

#[test]
fn a_damaged_or_missing_sst_is_a_typed_error_naming_it() -> Result<()> {
    let b = backend(RocksOptions::default());
    let mut k = keyed::<_, u64>(&b, 128, 1, 0, &[])?;
    let v = values(&mut k)?;
    put_all(&mut k, &v, 0..5000, 0)?;
    let h = snapshot(&b, &mut k, 1)?.expect("state");
    // A live instance's folder holds the same SSTs, and a restore would
    // reuse them (local recovery) without reading the checkpoint's copies.
    drop(k);
    let sst = first_sst(&h);
    let original = std::fs::read(&sst).map_err(|e| Error::io("reading", e))?;
    let name = sst.display().to_string();
    let work = b.dir().join("work");
    let before = std::fs::read_dir(&work)
        .map_err(|e| Error::io("listing", e))?
        .count();

    let mut flipped = original.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x10;
    std::fs::write(&sst, &flipped).map_err(|e| Error::io("writing", e))?;
    let e = expect_err(
        keyed::<_, u64>(&b, 128, 1, 0, std::slice::from_ref(&h)),
        ErrorKind::Corruption,
        "a flipped bit",
    );
    assert!(e.to_string().contains(&name), "{e}");

    std::fs::write(&sst, &original[..original.len() - 1]).map_err(|e| Error::io("writing", e))?;
    let e = expect_err(
        keyed::<_, u64>(&b, 128, 1, 0, std::slice::from_ref(&h)),
        ErrorKind::Corruption,
        "a truncated file",
    );
    assert!(e.to_string().contains(&name), "{e}");

    std::fs::remove_file(&sst).map_err(|e| Error::io("removing", e))?;
    let e = expect_err(
        keyed::<_, u64>(&b, 128, 1, 0, std::slice::from_ref(&h)),
        ErrorKind::Io,
        "a missing file",
    );
    assert!(e.to_string().contains(&name), "{e}");
    assert!(
        e.to_string().contains("which checkpoint 1 needs"),
        "names the checkpoint: {e}"
    );

    // Failed restores leave no instance folder behind.
    let after = std::fs::read_dir(&work)
        .map_err(|e| Error::io("listing", e))?
        .count();
    assert_eq!(before, after);
    Ok(())
}

#[test]
fn heap_backends_refuse_a_native_checkpoint_with_a_typed_error() -> Result<()> {
    let b = backend(RocksOptions::default());
    let mut k = keyed::<_, u64>(&b, 128, 1, 0, &[])?;
    let v = values(&mut k)?;
    put_all(&mut k, &v, 0..10, 0)?;
    let h = snapshot(&b, &mut k, 1)?.expect("state");
    let heap = backend_memory::MemoryStateBackend::default();
    let e = expect_err(
        keyed::<_, u64>(&heap, 128, 1, 0, &[h]),
        ErrorKind::IncompatibleFormat,
        "native on heap",
    );
    assert!(e.to_string().contains("savepoint"), "{e}");
    Ok(())
}

#[test]
fn savepoints_stay_canonical_when_checkpoints_are_incremental() -> Result<()> {
    let b = backend(RocksOptions::default());
    let mut k = keyed::<_, u64>(&b, 128, 1, 0, &[])?;
    let v = values(&mut k)?;
    put_all(&mut k, &v, 0..100, 0)?;
    let h = k
        .snapshot(
            7,
            b.stream_factory(7)?,
            state_api::snapshot::SnapshotOptions {
                kind: state_api::snapshot::SnapshotKind::Savepoint,
                ..Default::default()
            },
        )?
        .run()?
        .expect("state");
    assert!(matches!(h, KeyedStateHandle::KeyGroups(_)), "{h:?}");
    Ok(())
}

/// A native handle of other key groups restores nothing here (and is not
/// opened as the base).
#[test]
fn a_native_handle_of_other_key_groups_restores_nothing() -> Result<()> {
    let b = backend(RocksOptions::default());
    let mut k = keyed::<_, u64>(&b, 128, 1, 0, &[])?;
    let v = values(&mut k)?;
    put_all(&mut k, &v, 0..500, 0)?;
    let h = snapshot(&b, &mut k, 1)?.expect("state");
    let first_half = state_api::KeyGroupRange::for_operator(128, 2, 0)?;
    let other = h.intersection(&first_half).expect("overlap");
    let mut r = keyed::<_, u64>(&b, 128, 2, 1, &[other])?;
    let rv = values(&mut r)?;
    let owned = (0..500u64)
        .filter(|key| conformance_tests::harness::owner(key, 128, 2).is_ok_and(|o| o == 1))
        .count();
    assert!(owned > 0);
    assert_eq!(
        read_all_owned(&mut r, &rv, 500, 1)?,
        0,
        "nothing of the other half"
    );
    Ok(())
}

fn read_all_owned(k: &mut Backend, v: &ValueState<i64>, keys: u64, subtask: u32) -> Result<usize> {
    let mut n = 0;
    for key in 0..keys {
        if conformance_tests::harness::owner(&key, 128, 2)? != subtask {
            continue;
        }
        k.set_current_key(key)?;
        n += usize::from(v.on(k).get()?.is_some());
    }
    Ok(n)
}

/// Local recovery: a restore on the host where the checkpoint was taken
/// links the SSTs still in an earlier instance's folder (same name, size
/// and CRC32) and reads only the rest from checkpoint storage.
#[test]
fn a_restore_on_the_same_host_reuses_local_ssts() -> Result<()> {
    let dir = tempdir()?;
    // Counts every storage operation; a storage that is not the local file
    // system is read through it, never hard-linked behind its back.
    let storage =
        checkpoint_store::FaultyStorage::new(checkpoint_store::LocalStorage, u64::MAX / 2);
    let b = rocks(dir.path(), RocksOptions::default())?
        .with_storage(std::sync::Arc::new(storage.clone()));
    let mut k = keyed::<_, u64>(&b, 128, 1, 0, &[])?;
    let v = values(&mut k)?;
    put_all(&mut k, &v, 0..5000, 7)?;
    let h = snapshot(&b, &mut k, 1)?.expect("state");
    let ssts = native(&h)
        .shared
        .iter()
        .filter(|f| f.name.ends_with(".sst"))
        .count() as i64;
    assert!(ssts > 0, "the checkpoint has SSTs");

    // The first instance's folder is still there (as after a crash).
    let ops = storage.remaining();
    let mut reused = keyed::<_, u64>(&b, 128, 1, 0, std::slice::from_ref(&h))?;
    let reused_ops = ops - storage.remaining();
    let v2 = values(&mut reused)?;
    assert_eq!(read_all(&mut reused, &v2, 5000)?.len(), 5000);
    drop(reused);
    drop(k);

    // No earlier folder: every SST comes from checkpoint storage.
    let ops = storage.remaining();
    let mut fresh = keyed::<_, u64>(&b, 128, 1, 0, std::slice::from_ref(&h))?;
    let fresh_ops = ops - storage.remaining();
    let v3 = values(&mut fresh)?;
    assert_eq!(read_all(&mut fresh, &v3, 5000)?, read_all_values(5000, 7));
    assert_eq!(
        fresh_ops - reused_ops,
        ssts,
        "one read per SST more without local files ({fresh_ops} against {reused_ops})"
    );
    Ok(())
}

fn read_all_values(keys: u64, base: i64) -> BTreeMap<u64, i64> {
    (0..keys).map(|k| (k, base + k as i64)).collect()
}
