//! Reading native RocksDB checkpoints without the job's types, and their
//! conversion to the canonical format (`backend_rocksdb::export`), on real
//! incremental checkpoints of value, list, map, reducing and namespaced
//! state: records equal what was written, key-group sub-ranges, restores of
//! the converted snapshot on every backend at other parallelisms, the bytes
//! of a savepoint, and damaged files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use backend_fs::FsStateBackend;
use backend_memory::MemoryStateBackend;
use backend_rocksdb::export::{canonical_meta, export_canonical, for_each_native_record};
use backend_rocksdb::{RocksDbStateBackend, RocksOptions};
use conformance_tests::harness::{
    expect_err, keyed, owner, rescale_keyed, snapshot, TempDirBackend,
};
use state_api::codec::postcard;
use state_api::format::frame::Compression;
use state_api::format::keyed::{KeyedSnapshotReader, RecordBody};
use state_api::key_group::key_group_for_bytes;
use state_api::snapshot::handle::{IncrementalNativeStateHandle, KeyedStateHandle};
use state_api::snapshot::stream::StreamStateHandle;
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::{
    KeyedStateBackendExt, ListState, MapState, ReducingState, ValueState,
};
use state_api::state::descriptor::{
    ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor, ValueStateDescriptor,
};
use state_api::{Error, ErrorKind, KeyGroupRange, KeyedStateBackend, Result, StateBackend};

const KEYS: u64 = 3000;

/// Everything one key holds.
#[derive(Clone, Debug, Default, PartialEq)]
struct Entry {
    value: Option<i64>,
    list: Option<Vec<u32>>,
    map: BTreeMap<u32, String>,
    sum: Option<i64>,
    /// The namespaced value state, by namespace.
    windows: BTreeMap<u32, i64>,
}

type Model = BTreeMap<u64, Entry>;

struct States {
    value: ValueState<i64>,
    list: ListState<u32>,
    map: MapState<u32, String>,
    sum: ReducingState<i64>,
    windows: ValueState<i64, u32>,
}

fn states<B: KeyedStateBackend>(k: &mut B) -> Result<States> {
    Ok(States {
        value: k.value_state(&ValueStateDescriptor::<i64>::new("value"))?,
        list: k.list_state(&ListStateDescriptor::<u32>::new("list"))?,
        map: k.map_state(&MapStateDescriptor::<u32, String>::new("map"))?,
        sum: k.reducing_state(&ReducingStateDescriptor::<i64>::new("sum", |a, b| a + b))?,
        windows: k.value_state(
            &ValueStateDescriptor::<i64>::new("windows").with_namespace(postcard::<u32>()),
        )?,
    })
}

/// Round 1 writes every state; round 2 (after a checkpoint, so the newer
/// SSTs hold overwrites, deletes and list merge operands over older ones)
/// changes some of it. Returns the model after `round`.
fn write_round<B: KeyedStateBackend<Key = u64>>(
    k: &mut B,
    s: &States,
    round: u32,
    model: &mut Model,
) -> Result<()> {
    for key in 0..KEYS {
        k.set_current_key(key)?;
        let e = model.entry(key).or_default();
        let small = key as u32;
        if round == 1 {
            s.value.on(k).update(Some(key as i64 * 10))?;
            e.value = Some(key as i64 * 10);
            if key % 3 != 0 {
                s.list.on(k).add(small)?;
                s.list.on(k).add(small + 1)?;
                e.list = Some(vec![small, small + 1]);
            }
            if key % 2 == 0 {
                s.map.on(k).put(1, format!("a{key}"))?;
                s.map.on(k).put(2, format!("b{key}"))?;
                e.map.insert(1, format!("a{key}"));
                e.map.insert(2, format!("b{key}"));
            }
            s.sum.on(k).add(key as i64)?;
            s.sum.on(k).add(1)?;
            e.sum = Some(key as i64 + 1);
            if key % 4 == 0 {
                s.windows.on_ns(k, &7).update(Some(key as i64 + 7))?;
                e.windows.insert(7, key as i64 + 7);
            }
        } else {
            match key % 5 {
                0 => {
                    s.value.on(k).clear()?;
                    e.value = None;
                }
                1 => {
                    s.value.on(k).update(Some(-(key as i64)))?;
                    e.value = Some(-(key as i64));
                }
                _ => {}
            }
            if key % 3 == 1 {
                s.list.on(k).add(999)?;
                e.list.get_or_insert_with(Vec::new).push(999);
            }
            if key % 7 == 0 {
                s.list.on(k).clear()?;
                e.list = None;
            }
            if key % 4 == 0 {
                s.map.on(k).remove(&1)?;
                s.map.on(k).put(3, "c".into())?;
                e.map.remove(&1);
                e.map.insert(3, "c".into());
            }
            if key % 2 == 1 {
                s.sum.on(k).add(100)?;
                e.sum = e.sum.map(|v| v + 100);
            }
            if key % 4 == 0 {
                s.windows.on_ns(k, &9).update(Some(1))?;
                e.windows.insert(9, 1);
            }
        }
    }
    Ok(())
}

/// Reads `keys` from a backend (skipping keys it does not own).
fn read_backend<B: KeyedStateBackend<Key = u64>>(
    k: &mut B,
    keys: impl Iterator<Item = u64>,
    out: &mut Model,
) -> Result<()> {
    let s = states(k)?;
    let range = k.key_group_range();
    let max_p = k.max_parallelism();
    for key in keys {
        if !range.contains(key_group(key, max_p)?) {
            continue;
        }
        k.set_current_key(key)?;
        let e = Entry {
            value: s.value.on(k).get()?,
            list: s.list.on(k).get()?,
            map: s.map.on(k).entries()?.into_iter().collect(),
            sum: s.sum.on(k).get()?,
            windows: [7, 9]
                .into_iter()
                .map(|ns| Ok(s.windows.on_ns(k, &ns).get()?.map(|v| (ns, v))))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .flatten()
                .collect(),
        };
        if e != Entry::default() {
            out.insert(key, e);
        }
    }
    Ok(())
}

fn key_bytes(key: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    postcard::<u64>()
        .encode(&key, &mut out)
        .map_err(Error::user)?;
    Ok(out)
}

fn key_group(key: u64, max_p: u32) -> Result<u32> {
    key_group_for_bytes(&key_bytes(key)?, max_p)
}

/// The model without empty entries, restricted to `range`'s key groups.
fn within(model: &Model, range: KeyGroupRange, max_p: u32) -> Result<Model> {
    let mut out = Model::new();
    for (k, e) in model {
        if *e != Entry::default() && range.contains(key_group(*k, max_p)?) {
            out.insert(*k, e.clone());
        }
    }
    Ok(out)
}

fn decode<T: serde::Serialize + serde::de::DeserializeOwned + 'static>(b: &[u8]) -> Result<T> {
    postcard::<T>().decode(b).map_err(Error::user)
}

/// What `for_each_native_record` yields for a handle: the model it adds up
/// to, the record count per state name and the key groups seen, in order.
struct Read {
    model: Model,
    counts: BTreeMap<String, usize>,
    key_groups: Vec<u32>,
}

fn read_native(n: &IncrementalNativeStateHandle, work: &Path) -> Result<Read> {
    let mut read = Read {
        model: Model::new(),
        counts: BTreeMap::new(),
        key_groups: Vec::new(),
    };
    let max_p = n.max_parallelism;
    for_each_native_record(n, work, &mut |kg, r| {
        let key: u64 = decode(r.key)?;
        assert_eq!(
            key_group_for_bytes(r.key, max_p)?,
            kg,
            "key {key} reported in the wrong key group"
        );
        assert!(n.range.contains(kg), "key group {kg} outside {}", n.range);
        if read.key_groups.last() != Some(&kg) {
            read.key_groups.push(kg);
        }
        let name = n.states[r.state as usize].name.clone();
        *read.counts.entry(name.clone()).or_default() += 1;
        let e = read.model.entry(key).or_default();
        match (name.as_str(), &r.body) {
            ("value", RecordBody::Cell(v)) => assert!(e.value.replace(decode(v)?).is_none()),
            ("sum", RecordBody::Cell(v)) => assert!(e.sum.replace(decode(v)?).is_none()),
            ("windows", RecordBody::Cell(v)) => {
                let ns: u32 = decode(r.namespace)?;
                assert!(e.windows.insert(ns, decode(v)?).is_none());
            }
            ("list", RecordBody::List(elements)) => {
                let list = elements
                    .iter()
                    .map(|x| decode(x))
                    .collect::<Result<Vec<u32>>>()?;
                assert!(e.list.replace(list).is_none());
            }
            ("map", RecordBody::MapEntry { key, value }) => {
                assert!(e.map.insert(decode(key)?, decode(value)?).is_none());
            }
            (name, body) => panic!("unexpected record of state {name}: {body:?}"),
        }
        Ok(())
    })?;
    Ok(read)
}

/// Records per state the model holds.
fn counts_of(model: &Model) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    let mut add = |name: &str, n: usize| {
        if n > 0 {
            *c.entry(name.to_string()).or_default() += n;
        }
    };
    for e in model.values() {
        add("value", usize::from(e.value.is_some()));
        add("list", usize::from(e.list.is_some()));
        add("map", e.map.len());
        add("sum", usize::from(e.sum.is_some()));
        add("windows", e.windows.len());
    }
    c
}

fn native(h: &KeyedStateHandle) -> &IncrementalNativeStateHandle {
    match h {
        KeyedStateHandle::IncrementalNative(n) => n,
        other => panic!("expected a native handle, got {other:?}"),
    }
}

fn rocks_backend() -> TempDirBackend<RocksDbStateBackend> {
    TempDirBackend::new(|dir| {
        RocksDbStateBackend::new(&dir.join("work"), &dir.join("checkpoints"), "job")?
            .with_options(RocksOptions::default())
            .with_inline_threshold(0)
    })
}

fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))
}

fn is_empty_dir(dir: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(dir)
        .map_err(|e| Error::io("listing", e))?
        .next()
        .is_none())
}

/// A job of one subtask after two rounds, with the native handles of the
/// checkpoints after each round.
struct Job {
    backend: TempDirBackend<RocksDbStateBackend>,
    keyed: backend_rocksdb::RocksKeyedStateBackend<u64>,
    after_1: (KeyedStateHandle, Model),
    after_2: (KeyedStateHandle, Model),
}

fn job(max_p: u32) -> Result<Job> {
    let backend = rocks_backend();
    let mut k = keyed::<_, u64>(&backend, max_p, 1, 0, &[])?;
    let s = states(&mut k)?;
    let mut model = Model::new();
    write_round(&mut k, &s, 1, &mut model)?;
    let h1 = snapshot(&backend, &mut k, 1)?.expect("state");
    let m1 = model.clone();
    write_round(&mut k, &s, 2, &mut model)?;
    let h2 = snapshot(&backend, &mut k, 2)?.expect("state");
    for h in [&h1, &h2] {
        assert!(matches!(h, KeyedStateHandle::IncrementalNative(_)), "{h:?}");
    }
    Ok(Job {
        backend,
        keyed: k,
        after_1: (h1, m1),
        after_2: (h2, model),
    })
}

fn records_equal_what_was_written(max_p: u32) -> Result<()> {
    let j = job(max_p)?;
    let work = tempdir()?;
    let all = KeyGroupRange::all(max_p);
    for (h, model) in [&j.after_1, &j.after_2] {
        let want = within(model, all, max_p)?;
        let read = read_native(native(h), work.path())?;
        assert_eq!(read.model, want, "checkpoint {}", h.checkpoint_id());
        assert_eq!(read.counts, counts_of(&want));
        assert!(
            read.key_groups.windows(2).all(|w| w[0] < w[1]),
            "key groups in order"
        );
        assert!(
            read.key_groups.len() > max_p as usize / 2,
            "most key groups hold keys"
        );
        assert!(
            is_empty_dir(work.path())?,
            "the scratch folder is cleaned up"
        );
    }
    Ok(())
}

#[test]
fn records_equal_what_was_written_with_one_byte_key_group_prefixes() -> Result<()> {
    records_equal_what_was_written(128)
}

#[test]
fn records_equal_what_was_written_with_two_byte_key_group_prefixes() -> Result<()> {
    records_equal_what_was_written(1024)
}

#[test]
fn an_intersected_handle_yields_only_its_key_groups() -> Result<()> {
    let max_p = 128;
    let j = job(max_p)?;
    let (h, model) = &j.after_2;
    let work = tempdir()?;
    let full = read_native(native(h), work.path())?;
    let mut union = Model::new();
    for i in 0..3 {
        let range = KeyGroupRange::for_operator(max_p, 3, i)?;
        let part = h.intersection(&range).expect("overlap");
        let read = read_native(native(&part), work.path())?;
        let want = within(model, range, max_p)?;
        assert!(!want.is_empty());
        assert_eq!(read.model, want, "part {i} ({range})");
        assert_eq!(read.counts, counts_of(&want));
        assert!(read.key_groups.iter().all(|kg| range.contains(*kg)));
        union.extend(read.model);
    }
    assert_eq!(union, full.model, "the parts add up to the whole");
    // A single key group.
    let one = KeyGroupRange::new(5, 5);
    let read = read_native(native(&h.intersection(&one).expect("overlap")), work.path())?;
    assert_eq!(read.model, within(model, one, max_p)?);
    assert_eq!(read.key_groups, vec![5]);
    Ok(())
}

/// Restores `handles` at `parallelism` into `backend` (assigned to the
/// subtasks by `assign_keyed_state`) and reads every key.
fn restore_all<S: StateBackend>(
    backend: &S,
    handles: &[KeyedStateHandle],
    max_p: u32,
    parallelism: u32,
) -> Result<Model> {
    let subtasks = rescale_keyed::<_, u64>(backend, handles, max_p, parallelism)?;
    assert_eq!(subtasks.len(), parallelism as usize);
    let mut out = Model::new();
    for (i, mut k) in subtasks.into_iter().enumerate() {
        let mut own = Model::new();
        read_backend(&mut k, 0..KEYS, &mut own)?;
        for key in own.keys() {
            assert_eq!(owner(key, max_p, parallelism)?, i as u32);
        }
        out.extend(own);
    }
    Ok(out)
}

fn file_of(h: &KeyedStateHandle) -> &StreamStateHandle {
    match h {
        KeyedStateHandle::KeyGroups(g) => &g.data,
        other => panic!("expected a canonical handle, got {other:?}"),
    }
}

#[test]
fn the_canonical_export_restores_on_every_backend_at_any_parallelism() -> Result<()> {
    let max_p = 128;
    let j = job(max_p)?;
    let (h, model) = &j.after_2;
    let want = within(model, KeyGroupRange::all(max_p), max_p)?;
    let n = native(h);
    let work = tempdir()?;
    let streams = j.backend.stream_factory(10)?;
    let exported = export_canonical(n, work.path(), 10, &*streams, Compression::None)?;
    assert!(is_empty_dir(work.path())?);
    assert!(matches!(exported, KeyedStateHandle::KeyGroups(_)));
    assert_eq!(exported.checkpoint_id(), 10);
    assert_eq!(exported.range(), n.range);
    let reader = KeyedSnapshotReader::open(exported.pieces()[0])?;
    assert_eq!(reader.meta(), &canonical_meta(n));

    let dir = tempdir()?;
    let fs = FsStateBackend::new(&dir.path().join("fs"), "fs")?;
    let memory = MemoryStateBackend::new();
    let rocks = rocks_backend();
    let one = std::slice::from_ref(&exported);
    assert_eq!(restore_all(&fs, one, max_p, 1)?, want, "fs at 1");
    assert_eq!(restore_all(&memory, one, max_p, 3)?, want, "memory at 3");
    assert_eq!(
        restore_all(rocks.inner(), one, max_p, 1)?,
        want,
        "rocksdb at 1"
    );
    assert_eq!(
        restore_all(rocks.inner(), one, max_p, 4)?,
        want,
        "rocksdb at 4"
    );

    // Sub-ranges exported one by one restore together, at another split.
    let mut parts = Vec::new();
    for i in 0..2 {
        let range = KeyGroupRange::for_operator(max_p, 2, i)?;
        let part = h.intersection(&range).expect("overlap");
        let e = export_canonical(
            native(&part),
            work.path(),
            11,
            &*streams,
            Compression::Zstd { level: 3 },
        )?;
        assert_eq!(e.range(), range);
        assert_eq!(
            restore_all(&memory, std::slice::from_ref(&e), max_p, 1)?,
            within(model, range, max_p)?,
            "part {i} alone"
        );
        parts.push(e);
    }
    assert_eq!(
        restore_all(&fs, &parts, max_p, 3)?,
        want,
        "parts on fs at 3"
    );
    assert_eq!(
        restore_all(rocks.inner(), &parts, max_p, 3)?,
        want,
        "parts on rocksdb at 3"
    );
    Ok(())
}

/// The export holds the bytes of a savepoint taken at the same state.
#[test]
fn the_canonical_export_is_a_savepoints_bytes() -> Result<()> {
    let max_p = 128;
    let mut j = job(max_p)?;
    let n = native(&j.after_2.0).clone();
    let work = tempdir()?;
    for (id, compression) in [
        (20, Compression::None),
        (21, Compression::Zstd { level: 3 }),
    ] {
        let savepoint = j
            .keyed
            .snapshot(
                id,
                j.backend.stream_factory(id)?,
                SnapshotOptions::savepoint(compression),
            )?
            .run()?
            .expect("state");
        let streams = j.backend.stream_factory(id + 100)?;
        let exported = export_canonical(&n, work.path(), id, &*streams, compression)?;
        let (a, b) = (file_of(&savepoint), file_of(&exported));
        assert_ne!(a, b, "two files");
        assert_eq!(a.read()?.bytes(), b.read()?.bytes(), "{compression:?}");
        assert_eq!(savepoint.pieces()[0].offsets, exported.pieces()[0].offsets);
    }
    Ok(())
}

fn path_of(s: &StreamStateHandle) -> PathBuf {
    match s {
        StreamStateHandle::File { path, .. } => path.clone(),
        other => panic!("expected a file, got {other:?}"),
    }
}

/// Runs both functions on `n` and checks each fails with `kind`, leaving
/// nothing in the scratch folder and writing no canonical file.
fn both_fail(n: &IncrementalNativeStateHandle, work: &Path, kind: ErrorKind, what: &str) -> Error {
    let streams = state_api::snapshot::stream::MemoryCheckpointStreamFactory::new(1 << 30, "x");
    let mut calls = 0;
    let e = expect_err(
        for_each_native_record(n, work, &mut |_, _| {
            calls += 1;
            Ok(())
        }),
        kind,
        what,
    );
    assert_eq!(calls, 0, "{what}: no record before the error");
    expect_err(
        export_canonical(n, work, 1, &streams, Compression::None),
        kind,
        what,
    );
    assert!(
        is_empty_dir(work).expect("lists the scratch folder"),
        "{what}: the scratch folder is cleaned up"
    );
    e
}

#[test]
fn damaged_files_and_handles_are_typed_errors() -> Result<()> {
    let max_p = 128;
    let j = job(max_p)?;
    let n = native(&j.after_2.0).clone();
    let work = tempdir()?;
    let work = work.path();

    // Handles that lie about their files.
    let other = IncrementalNativeStateHandle {
        backend: "other".into(),
        ..n.clone()
    };
    both_fail(
        &other,
        work,
        ErrorKind::IncompatibleFormat,
        "another backend",
    );
    let beyond = IncrementalNativeStateHandle {
        source_range: KeyGroupRange::new(0, 63),
        ..n.clone()
    };
    both_fail(
        &beyond,
        work,
        ErrorKind::Corruption,
        "a range beyond the files",
    );
    let too_small = IncrementalNativeStateHandle {
        max_parallelism: 64,
        ..n.clone()
    };
    both_fail(
        &too_small,
        work,
        ErrorKind::InvalidArgument,
        "key groups beyond the max parallelism",
    );
    let bad_name = IncrementalNativeStateHandle {
        private: n
            .private
            .iter()
            .cloned()
            .map(|mut f| {
                f.name = format!("../{}", f.name);
                f
            })
            .collect(),
        ..n.clone()
    };
    both_fail(
        &bad_name,
        work,
        ErrorKind::Corruption,
        "a file name with a path",
    );
    // The function's own error stops the walk.
    let mut calls = 0;
    let e = expect_err(
        for_each_native_record(&n, work, &mut |_, _| {
            calls += 1;
            Err(Error::user("enough"))
        }),
        ErrorKind::User,
        "the function's error",
    );
    assert_eq!(calls, 1);
    assert!(e.to_string().contains("enough"), "{e}");

    // Damaged SSTs, as a restore sees them.
    let sst = path_of(&n.shared[0].data);
    let name = sst.display().to_string();
    let original = std::fs::read(&sst).map_err(|e| Error::io("reading", e))?;
    let mut flipped = original.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x10;
    std::fs::write(&sst, &flipped).map_err(|e| Error::io("writing", e))?;
    let e = both_fail(&n, work, ErrorKind::Corruption, "a flipped bit");
    assert!(e.to_string().contains(&name), "{e}");

    std::fs::write(&sst, &original[..original.len() - 1]).map_err(|e| Error::io("writing", e))?;
    let e = both_fail(&n, work, ErrorKind::Corruption, "a truncated file");
    assert!(e.to_string().contains(&name), "{e}");

    std::fs::remove_file(&sst).map_err(|e| Error::io("removing", e))?;
    let e = both_fail(&n, work, ErrorKind::Io, "a missing file");
    assert!(e.to_string().contains(&name), "{e}");

    // Restored, it reads again.
    std::fs::write(&sst, &original).map_err(|e| Error::io("writing", e))?;
    let read = read_native(&n, work)?;
    assert_eq!(
        read.model,
        within(&j.after_2.1, KeyGroupRange::all(max_p), max_p)?
    );
    let states: BTreeSet<_> = read.counts.keys().cloned().collect();
    assert_eq!(states.len(), 5, "{states:?}");
    Ok(())
}

/// Keys whose key group under the handle's max parallelism is not the one
/// they are stored under (metadata that does not match the files).
#[test]
fn keys_stored_under_other_key_groups_are_corruption() -> Result<()> {
    let j = job(1024)?;
    let n = native(&j.after_2.0);
    let remapped = IncrementalNativeStateHandle {
        max_parallelism: 1025,
        ..n.clone()
    };
    let work = tempdir()?;
    let e = expect_err(
        for_each_native_record(&remapped, work.path(), &mut |_, _| Ok(())),
        ErrorKind::Corruption,
        "keys of other key groups",
    );
    assert!(e.to_string().contains("is stored under key group"), "{e}");
    let streams = state_api::snapshot::stream::MemoryCheckpointStreamFactory::new(1 << 30, "x");
    expect_err(
        export_canonical(&remapped, work.path(), 1, &streams, Compression::None),
        ErrorKind::Corruption,
        "keys of other key groups, exported",
    );
    assert!(is_empty_dir(work.path())?);
    Ok(())
}
