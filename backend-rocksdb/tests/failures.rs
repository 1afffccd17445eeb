//! Failed writes poison the backend: the failing call returns its error,
//! every later access, registration and snapshot fails with
//! `Error::Poisoned` naming it, and a restore from the last completed
//! checkpoint is exact. Failures of a checkpoint's asynchronous part fail
//! that checkpoint only; failures at restore fail the restore and leave
//! nothing behind. Failures are injected at the backend's failure points
//! (`backend_rocksdb::fault`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use backend_rocksdb::fault::{FailPoint, Faults};
use backend_rocksdb::{RocksDbStateBackend, RocksKeyedStateBackend, RocksOptions};
use checkpoint_store::{FaultyStorage, LocalStorage};
use conformance_tests::harness::{keyed, owner, snapshot, snapshot_task, TempDirBackend};
use state_api::codec::{PostcardCodec, SharedCodec};
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::snapshot::rescale::assign_keyed_state;
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::{KeyedStateBackendExt, ListState, MapState, ValueState};
use state_api::state::descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use state_api::{Error, ErrorKind, KeyedStateBackend, Result, StateBackend};

type Backend = RocksKeyedStateBackend<u64>;
type Rocks = TempDirBackend<RocksDbStateBackend>;

const KEYS: u64 = 600;
const MAX_P: u32 = 128;

fn make(dir: &Path, incremental: bool, faults: &Faults) -> Result<RocksDbStateBackend> {
    RocksDbStateBackend::new(&dir.join("work"), &dir.join("checkpoints"), "job")?
        .with_options(RocksOptions {
            incremental,
            faults: faults.clone(),
            ..RocksOptions::default()
        })
        .with_inline_threshold(0)
}

fn setup(incremental: bool) -> (Rocks, Faults) {
    let faults = Faults::default();
    let f = faults.clone();
    (
        TempDirBackend::new(move |dir| make(dir, incremental, &f)),
        faults,
    )
}

struct States {
    value: ValueState<i64>,
    list: ListState<i64>,
    map: MapState<u32, i64>,
}

fn states(k: &mut Backend) -> Result<States> {
    Ok(States {
        value: k.value_state(&ValueStateDescriptor::new("value"))?,
        list: k.list_state(&ListStateDescriptor::new("list"))?,
        map: k.map_state(&MapStateDescriptor::new("map"))?,
    })
}

/// What a key holds in the three states.
type Entry = (Option<i64>, Option<Vec<i64>>, BTreeMap<u32, i64>);
type Model = BTreeMap<u64, Entry>;

/// Round `r` over `keys`: sets the value, appends to the list, puts a map
/// entry and, every third round, removes one.
fn write(
    k: &mut Backend,
    s: &States,
    keys: impl Iterator<Item = u64>,
    r: i64,
    m: &mut Model,
) -> Result<()> {
    for key in keys {
        k.set_current_key(key)?;
        let e = m.entry(key).or_default();
        let v = key as i64 * 1000 + r;
        s.value.on(k).update(Some(v))?;
        e.0 = Some(v);
        s.list.on(k).add(r)?;
        e.1.get_or_insert_with(Vec::new).push(r);
        s.map.on(k).put(r as u32 % 5, v)?;
        e.2.insert(r as u32 % 5, v);
        if r % 3 == 0 {
            s.map.on(k).remove(&((r as u32 + 1) % 5))?;
            e.2.remove(&((r as u32 + 1) % 5));
        }
    }
    Ok(())
}

fn read(k: &mut Backend, s: &States, keys: impl Iterator<Item = u64>) -> Result<Model> {
    let mut out = Model::new();
    for key in keys {
        k.set_current_key(key)?;
        let e = (
            s.value.on(k).get()?,
            s.list.on(k).get()?,
            s.map
                .on(k)
                .entries()?
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
        );
        if e != Entry::default() {
            out.insert(key, e);
        }
    }
    Ok(out)
}

/// Restores one backend from `handles` and checks it holds exactly `want`.
fn restores_exactly(b: &Rocks, handles: &[KeyedStateHandle], want: &Model) -> Result<()> {
    let mut r = keyed::<_, u64>(b, MAX_P, 1, 0, handles)?;
    let s = states(&mut r)?;
    assert_eq!(&read(&mut r, &s, 0..KEYS * 2)?, want);
    Ok(())
}

fn assert_poisoned<T>(result: Result<T>, what: &str, point: FailPoint) {
    let e = match result {
        Ok(_) => panic!("{what}: expected Error::Poisoned, got Ok"),
        Err(e) => e,
    };
    let Error::Poisoned { first } = &e else {
        panic!("{what}: expected Error::Poisoned, got {e:?}");
    };
    assert!(
        first.contains(&format!("injected failure at {point:?}")),
        "{what}: the error names another failure: {first}"
    );
    assert_eq!(e.kind(), ErrorKind::Closed, "{what}");
    assert!(e.to_string().contains(first.as_str()), "{what}: {e}");
}

/// Every kind of call a task makes fails with the typed error.
fn every_call_is_refused(b: &Rocks, k: &mut Backend, s: &States, point: FailPoint) {
    assert_poisoned(k.set_current_key(1), "set_current_key", point);
    assert_poisoned(s.value.on(k).get(), "value get", point);
    assert_poisoned(s.value.on(k).update(Some(1)), "value update", point);
    assert_poisoned(s.list.on(k).get(), "list get", point);
    assert_poisoned(s.list.on(k).add(1), "list add", point);
    assert_poisoned(s.map.on(k).get(&1), "map get", point);
    assert_poisoned(s.map.on(k).put(1, 1), "map put", point);
    assert_poisoned(s.map.on(k).entries(), "map entries", point);
    assert_poisoned(s.map.on(k).clear(), "map clear", point);
    assert_poisoned(
        k.keys(s.value.handle(), &state_api::state::VoidNamespace),
        "keys",
        point,
    );
    assert_poisoned(k.num_entries(), "num_entries", point);
    assert_poisoned(
        k.value_state(&ValueStateDescriptor::<i64>::new("value")),
        "registering a registered state",
        point,
    );
    assert_poisoned(
        k.value_state(&ValueStateDescriptor::<i64>::new("another")),
        "registering a new state",
        point,
    );
    let streams = b.stream_factory(99).expect("a stream factory");
    assert_poisoned(
        k.snapshot(99, streams, SnapshotOptions::default()),
        "snapshot",
        point,
    );
    // Closing still works, and then the backend says it is closed.
    k.close();
    assert!(matches!(s.value.on(k).get(), Err(Error::Closed)));
}

/// What a task does that reaches each point of the live instance.
fn reach(point: FailPoint, b: &Rocks, k: &mut Backend, s: &States, m: &mut Model) -> Result<()> {
    match point {
        // More writes than the write buffer holds.
        FailPoint::BufferWrite => write(
            k,
            s,
            0..backend_rocksdb::buffer::MAX_BUFFERED_ENTRIES as u64,
            7,
            m,
        ),
        // An append to a list that is not in the write buffer.
        FailPoint::Merge => {
            k.set_current_key(KEYS + 1)?;
            s.list.on(k).add(5)
        }
        FailPoint::DeleteRange => {
            k.set_current_key(3)?;
            s.map.on(k).clear()
        }
        FailPoint::CreateColumnFamily => k
            .value_state(&ValueStateDescriptor::<i64>::new("new"))
            .map(drop),
        FailPoint::CheckpointFlush => snapshot(b, k, 2).map(drop),
        other => unreachable!("{other:?} is not a point of the live instance"),
    }
}

/// Each failure point of the live instance: the call that reaches it fails,
/// then every call fails with `Error::Poisoned` naming it, and a restore from
/// the last completed checkpoint is exact.
#[test]
fn a_failed_write_poisons_the_backend_until_it_is_restored() -> Result<()> {
    let points = [
        FailPoint::BufferWrite,
        FailPoint::Merge,
        FailPoint::DeleteRange,
        FailPoint::CreateColumnFamily,
        FailPoint::CheckpointFlush,
    ];
    for incremental in [true, false] {
        for point in points {
            if point == FailPoint::CheckpointFlush && !incremental {
                continue; // only incremental checkpoints switch memtables
            }
            let what = format!("{point:?} (incremental: {incremental})");
            let (b, faults) = setup(incremental);
            let mut k = keyed::<_, u64>(&b, MAX_P, 1, 0, &[])?;
            let s = states(&mut k)?;
            let mut m = Model::new();
            for r in 1..=3 {
                write(&mut k, &s, 0..KEYS, r, &mut m)?;
            }
            let h = snapshot(&b, &mut k, 1)?.expect("state");
            let at_checkpoint = m.clone();
            // Writes after the checkpoint, some buffered, some in RocksDB.
            write(&mut k, &s, 0..KEYS / 2, 4, &mut m)?;

            faults.fail_after(point, 0);
            let e = reach(point, &b, &mut k, &s, &mut m).expect_err(&what);
            assert!(!faults.is_armed(point), "{what}: the point was reached");
            assert_eq!(e.kind(), ErrorKind::Io, "{what}: {e}");
            assert!(e.to_string().contains("injected"), "{what}: {e}");
            every_call_is_refused(&b, &mut k, &s, point);
            drop(k);
            restores_exactly(&b, &[h], &at_checkpoint)?;
        }
    }
    Ok(())
}

/// A failed schema migration at registration poisons the backend too.
#[test]
fn a_failed_migration_poisons_the_backend() -> Result<()> {
    let (b, faults) = setup(true);
    let v1: SharedCodec<i64> = Arc::new(PostcardCodec::<i64>::with_schema("counter", 1));
    let v2: SharedCodec<i64> = Arc::new(
        PostcardCodec::<i64>::with_schema("counter", 2)
            .migrate_from(1, |bytes| postcard_i64(bytes).map(|v| v * 10)),
    );
    let mut k = keyed::<_, u64>(&b, MAX_P, 1, 0, &[])?;
    let counter = k.value_state(&ValueStateDescriptor::with_codec("counter", v1.clone()))?;
    for key in 0..KEYS {
        k.set_current_key(key)?;
        counter.on(&mut k).update(Some(key as i64))?;
    }
    let h = snapshot(&b, &mut k, 1)?.expect("state");
    drop(k);

    let mut k = keyed::<_, u64>(&b, MAX_P, 1, 0, std::slice::from_ref(&h))?;
    faults.fail_after(FailPoint::Migrate, 0);
    let e = k
        .value_state(&ValueStateDescriptor::with_codec("counter", v2.clone()))
        .map(drop)
        .expect_err("the migration fails");
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert_poisoned(
        k.value_state(&ValueStateDescriptor::with_codec("counter", v2.clone())),
        "registering again",
        FailPoint::Migrate,
    );
    assert_poisoned(k.set_current_key(1), "set_current_key", FailPoint::Migrate);
    drop(k);

    // The checkpoint still restores, and the migration then succeeds.
    let mut k = keyed::<_, u64>(&b, MAX_P, 1, 0, &[h])?;
    let counter = k.value_state(&ValueStateDescriptor::with_codec("counter", v2))?;
    for key in 0..KEYS {
        k.set_current_key(key)?;
        assert_eq!(counter.on(&mut k).get()?, Some(key as i64 * 10));
    }
    Ok(())
}

fn postcard_i64(bytes: &[u8]) -> std::result::Result<i64, state_api::codec::CodecError> {
    use state_api::codec::Codec;
    PostcardCodec::<i64>::with_schema("counter", 1).decode(bytes)
}

/// A checkpoint whose asynchronous part fails (capturing the files, or
/// uploading them to checkpoint storage) fails alone: the live state is
/// intact, the task goes on, and the next checkpoint restores exactly.
#[test]
fn a_failed_asynchronous_snapshot_part_fails_that_checkpoint_only() -> Result<()> {
    for incremental in [true, false] {
        for capture in [true, false] {
            if capture && !incremental {
                continue; // canonical snapshots capture no files
            }
            let what = format!("capture: {capture}, incremental: {incremental}");
            let (b, faults) = setup(incremental);
            let mut k = keyed::<_, u64>(&b, MAX_P, 1, 0, &[])?;
            let s = states(&mut k)?;
            let mut m = Model::new();
            write(&mut k, &s, 0..KEYS, 1, &mut m)?;
            snapshot(&b, &mut k, 1)?.expect("state");
            write(&mut k, &s, 0..KEYS, 2, &mut m)?;

            let task = if capture {
                faults.fail_after(FailPoint::CheckpointCapture, 0);
                snapshot_task(&b, &mut k, 2)?
            } else {
                // Checkpoint storage that fails after a few operations.
                let failing = make(b.dir(), incremental, &faults)?
                    .with_storage(Arc::new(FaultyStorage::new(LocalStorage, 2)));
                k.snapshot(2, failing.stream_factory(2)?, SnapshotOptions::default())?
            };
            let e = task.run().expect_err(&what);
            assert_eq!(e.kind(), ErrorKind::Io, "{what}: {e}");
            k.notify_checkpoint_aborted(2)?;

            assert_eq!(read(&mut k, &s, 0..KEYS * 2)?, m, "{what}");
            write(&mut k, &s, 0..KEYS, 3, &mut m)?;
            let h = snapshot(&b, &mut k, 3)?.expect("state");
            restores_exactly(&b, &[h], &m)?;
        }
    }
    Ok(())
}

/// A failure while restoring (writing restored records, clipping key groups
/// of another range, ingesting another handle's key groups) fails the
/// restore with the typed error and leaves no instance behind; the same
/// handles then restore exactly.
#[test]
fn a_failed_restore_leaves_nothing_behind() -> Result<()> {
    let cases = [
        (FailPoint::RestoreWrite, false, 1, 1),
        (FailPoint::RestoreClip, true, 1, 2),
        (FailPoint::RestoreIngest, true, 2, 1),
    ];
    for (point, incremental, from, to) in cases {
        let what = format!("{point:?}");
        let (b, faults) = setup(incremental);
        let mut m = Model::new();
        let mut handles = Vec::new();
        for i in 0..from {
            let mut k = keyed::<_, u64>(&b, MAX_P, from, i, &[])?;
            let s = states(&mut k)?;
            let mine: Vec<u64> = (0..KEYS)
                .filter(|key| owner(key, MAX_P, from).is_ok_and(|o| o == i))
                .collect();
            write(&mut k, &s, mine.into_iter(), 1, &mut m)?;
            handles.push(snapshot(&b, &mut k, 1)?.expect("state"));
        }
        let assigned = assign_keyed_state(&handles, MAX_P, to)?;
        let work = b.dir().join("work");
        let before = std::fs::read_dir(&work)
            .map_err(|e| Error::io("listing", e))?
            .count();

        faults.fail_after(point, 0);
        let e = keyed::<_, u64>(&b, MAX_P, to, 0, &assigned[0]).map(drop);
        let e = e.expect_err(&what);
        assert!(!faults.is_armed(point), "{what}: the point was reached");
        assert_eq!(e.kind(), ErrorKind::Io, "{what}: {e}");
        assert!(e.to_string().contains("injected"), "{what}: {e}");
        let after = std::fs::read_dir(&work)
            .map_err(|e| Error::io("listing", e))?
            .count();
        assert_eq!(before, after, "{what}: the failed restore left files");

        let mut r = keyed::<_, u64>(&b, MAX_P, to, 0, &assigned[0])?;
        let s = states(&mut r)?;
        let owned = |key: &u64| owner(key, MAX_P, to).is_ok_and(|o| o == 0);
        let want: Model = m
            .iter()
            .filter(|(k, _)| owned(k))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        assert!(!want.is_empty());
        assert_eq!(read(&mut r, &s, (0..KEYS).filter(owned))?, want, "{what}");
    }
    Ok(())
}
