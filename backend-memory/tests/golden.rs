//! Golden snapshot files: `testdata/snapshots/v1/` holds keyed and operator
//! snapshots written by format version 1 (and a deliberately corrupted copy).
//! Every later version must restore them, at their own and at another
//! parallelism, with exactly these contents. Set `WRITE_GOLDEN=1` only to
//! create files for a new format version in a new folder.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use backend_memory::MemoryStateBackend;
use conformance_tests::harness::{keyed, owner, snapshot_operator};
use state_api::format::frame::Compression;
use state_api::format::keyed::describe_keyed_file;
use state_api::format::operator::describe_operator_file;
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::snapshot::rescale::{assign_keyed_state, assign_operator_state};
use state_api::snapshot::stream::StreamStateHandle;
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::{
    AggregatingState, KeyedStateBackendExt, ListState, MapState, ReducingState, ValueState,
};
use state_api::state::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, ValueStateDescriptor,
};
use state_api::{codec, ErrorKind, KeyedStateBackend, OperatorStateBackend, Result, StateBackend};

const MAX_P: u32 = 128;
const KEYS: u32 = 20;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/snapshots/v1")
}

struct Avg;

impl AggregateFunction<u32, (u64, u64), u64> for Avg {
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, value: &u32, acc: &mut (u64, u64)) {
        acc.0 += u64::from(*value);
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(u64, u64)) -> u64 {
        acc.0 / acc.1.max(1)
    }
    fn merge(&self, acc: &mut (u64, u64), other: (u64, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
}

struct States {
    value: ValueState<i64>,
    list: ListState<String>,
    reducing: ReducingState<u64>,
    avg: AggregatingState<u32, (u64, u64), u64>,
    map: MapState<u32, String, u32>,
}

fn register<B: KeyedStateBackend>(b: &mut B) -> Result<States> {
    Ok(States {
        value: b.value_state(&ValueStateDescriptor::<i64>::new("value"))?,
        list: b.list_state(&ListStateDescriptor::<String>::new("list"))?,
        reducing: b.reducing_state(&ReducingStateDescriptor::new("sum", |a: &u64, b: &u64| {
            a + b
        }))?,
        avg: b.aggregating_state(&AggregatingStateDescriptor::new("avg", Avg))?,
        map: b.map_state(
            &MapStateDescriptor::<u32, String>::new("windows")
                .with_namespace(codec::postcard::<u32>()),
        )?,
    })
}

fn key(i: u32) -> String {
    format!("k{i}")
}

/// What each key holds: value, list, sum, average, (namespace -> map).
type Expected = (
    Option<i64>,
    Option<Vec<String>>,
    u64,
    u64,
    BTreeMap<u32, BTreeMap<u32, String>>,
);

fn expected(i: u32) -> Expected {
    let value = i.is_multiple_of(2).then(|| i64::from(i * i) - 50);
    let list = i
        .is_multiple_of(3)
        .then(|| vec![format!("a{i}"), format!("b{i}").repeat(40)]);
    let mut maps = BTreeMap::new();
    if i % 2 == 1 {
        maps.insert(
            i % 4,
            BTreeMap::from([(i, format!("x{i}")), (i + 100, "y".to_string())]),
        );
    }
    (value, list, u64::from(i) + 1, u64::from(i) * 10 + 5, maps)
}

fn write_golden() -> Result<()> {
    let dir = dir();
    std::fs::create_dir_all(&dir).map_err(|e| state_api::Error::io("create golden dir", e))?;
    let backend = MemoryStateBackend::new();
    let mut b = keyed::<_, String>(&backend, MAX_P, 1, 0, &[])?;
    let s = register(&mut b)?;
    for i in 0..KEYS {
        b.set_current_key(key(i))?;
        let (value, list, sum, avg, maps) = expected(i);
        s.value.on(&mut b).update(value)?;
        if let Some(l) = list {
            s.list.on(&mut b).update(l)?;
        }
        s.reducing.on(&mut b).add(sum)?;
        s.avg.on(&mut b).add((avg - 5) as u32)?;
        s.avg.on(&mut b).add((avg + 5) as u32)?;
        for (ns, m) in maps {
            for (k, v) in m {
                s.map.on_ns(&mut b, &ns).put(k, v)?;
            }
        }
    }
    for (file, compression) in [
        ("keyed.snap", Compression::None),
        ("keyed-zstd.snap", Compression::Zstd { level: 3 }),
    ] {
        let h = b
            .snapshot(
                1,
                backend.stream_factory(1)?,
                SnapshotOptions {
                    compression,
                    ..Default::default()
                },
            )?
            .run()?
            .expect("state");
        let KeyedStateHandle::KeyGroups(h) = h else {
            panic!("a full snapshot is one key-groups file");
        };
        let bytes = h.data.read()?.bytes().to_vec();
        std::fs::write(dir.join(file), &bytes)
            .map_err(|e| state_api::Error::io("write golden", e))?;
        if compression == Compression::None {
            let mut corrupt = bytes;
            let at = h.offsets[h.offsets.len() / 2] as usize + 20;
            corrupt[at] ^= 0x10;
            std::fs::write(dir.join("keyed-corrupt.snap"), corrupt)
                .map_err(|e| state_api::Error::io("write golden", e))?;
        }
    }
    let mut op = backend.create_operator_backend(&[])?;
    let offsets = op.list_state(&ListStateDescriptor::<(u32, u64)>::new("offsets"))?;
    op.list(&offsets)?.extend([(0, 10), (1, 20), (2, 30)]);
    let union = op.union_list_state(&ListStateDescriptor::<String>::new("union"))?;
    op.list(&union)?.extend(["x".to_string(), "y".to_string()]);
    let rules = op.broadcast_state(&MapStateDescriptor::<String, u32>::new("rules"))?;
    op.broadcast(&rules)?
        .extend([("rule1".to_string(), 1), ("rule2".to_string(), 2)]);
    let h = snapshot_operator(&backend, &mut op, 1)?.expect("operator state");
    std::fs::write(dir.join("operator.snap"), h.data.read()?.bytes())
        .map_err(|e| state_api::Error::io("write golden", e))?;
    Ok(())
}

fn file_handle(name: &str) -> StreamStateHandle {
    let path = dir().join(name);
    let size = std::fs::metadata(&path)
        .map(|m| m.len())
        .expect("golden file is committed");
    StreamStateHandle::File { path, size }
}

fn check_keyed_file(name: &str) -> Result<()> {
    let handle = KeyedStateHandle::from(describe_keyed_file(file_handle(name), 1)?);
    let backend = MemoryStateBackend::new();
    for p in [1u32, 2, 3] {
        let assigned = assign_keyed_state(std::slice::from_ref(&handle), MAX_P, p)?;
        let mut subtasks = Vec::new();
        for (i, restore) in assigned.iter().enumerate() {
            let mut b = keyed::<_, String>(&backend, MAX_P, p, i as u32, restore)?;
            let s = register(&mut b)?;
            subtasks.push((b, s));
        }
        let mut total_entries = 0;
        for (b, _) in &subtasks {
            total_entries += b.num_entries()?;
        }
        let mut want_entries = 0;
        for i in 0..KEYS {
            let (value, list, sum, avg, maps) = expected(i);
            want_entries +=
                usize::from(value.is_some()) + usize::from(list.is_some()) + 2 + maps.len();
            let (b, s) = &mut subtasks[owner(&key(i), MAX_P, p)? as usize];
            b.set_current_key(key(i))?;
            assert_eq!(
                s.value.on(b).get()?,
                value,
                "{name} p={p}: value of {}",
                key(i)
            );
            assert_eq!(
                s.list.on(b).get()?,
                list,
                "{name} p={p}: list of {}",
                key(i)
            );
            assert_eq!(
                s.reducing.on(b).get()?,
                Some(sum),
                "{name} p={p}: sum of {}",
                key(i)
            );
            assert_eq!(
                s.avg.on(b).get()?,
                Some(avg),
                "{name} p={p}: average of {}",
                key(i)
            );
            for ns in 0..4u32 {
                let got: BTreeMap<u32, String> =
                    s.map.on_ns(b, &ns).entries()?.into_iter().collect();
                assert_eq!(
                    got,
                    maps.get(&ns).cloned().unwrap_or_default(),
                    "{name} p={p}: map of {} in {ns}",
                    key(i)
                );
            }
        }
        assert_eq!(
            total_entries, want_entries,
            "{name} p={p}: no entry beyond the expected ones"
        );
    }
    Ok(())
}

#[test]
fn golden_snapshots_restore() -> Result<()> {
    if std::env::var_os("WRITE_GOLDEN").is_some() && !dir().exists() {
        write_golden()?;
    }
    check_keyed_file("keyed.snap")?;
    check_keyed_file("keyed-zstd.snap")?;

    let handle = describe_operator_file(file_handle("operator.snap"), 1)?;
    let backend = MemoryStateBackend::new();
    for p in [1u32, 2] {
        let assigned = assign_operator_state(std::slice::from_ref(&handle), p)?;
        let mut all_offsets = Vec::new();
        for restore in &assigned {
            let mut op = backend.create_operator_backend(restore)?;
            let offsets = op.list_state(&ListStateDescriptor::<(u32, u64)>::new("offsets"))?;
            all_offsets.extend(op.list(&offsets)?.iter().copied());
            let union = op.union_list_state(&ListStateDescriptor::<String>::new("union"))?;
            assert_eq!(
                op.list(&union)?.clone(),
                vec!["x".to_string(), "y".to_string()],
                "union state, p={p}"
            );
            let rules = op.broadcast_state(&MapStateDescriptor::<String, u32>::new("rules"))?;
            let want: HashMap<String, u32> =
                HashMap::from([("rule1".into(), 1), ("rule2".into(), 2)]);
            assert_eq!(
                op.broadcast(&rules)?.clone(),
                want,
                "broadcast state, p={p}"
            );
        }
        all_offsets.sort();
        assert_eq!(
            all_offsets,
            vec![(0, 10), (1, 20), (2, 30)],
            "split list state, p={p}"
        );
    }
    Ok(())
}

#[test]
fn corrupted_golden_snapshot_is_a_typed_error() -> Result<()> {
    let data = file_handle("keyed-corrupt.snap");
    let handle = KeyedStateHandle::from(describe_keyed_file(data, 1)?);
    let err = match keyed::<_, String>(&MemoryStateBackend::new(), MAX_P, 1, 0, &[handle]) {
        Ok(_) => panic!("a corrupted snapshot must not restore"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(
        err.to_string().contains("keyed-corrupt.snap"),
        "the error names the file: {err}"
    );
    Ok(())
}
