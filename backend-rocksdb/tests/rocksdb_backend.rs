//! Behaviour specific to the RocksDB backend.

use backend_rocksdb::{RocksDbStateBackend, RocksOptions};
use conformance_tests::harness::{keyed, snapshot, TempDirBackend, MAX_PARALLELISM};
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::{ListStateDescriptor, ValueStateDescriptor};
use state_api::{Error, ErrorKind, KeyedStateBackend, Result};

fn small_values() -> TempDirBackend<RocksDbStateBackend> {
    TempDirBackend::new(|dir| {
        Ok(
            RocksDbStateBackend::new(&dir.join("work"), &dir.join("checkpoints"), "job")?
                .with_options(RocksOptions {
                    max_value_bytes: 1_000,
                    ..Default::default()
                }),
        )
    })
}

/// Flink's RocksDB ListState lets a list grow past 2^31 bytes and fails at
/// the next read; here the append that would pass the limit is refused.
#[test]
fn oversized_values_and_lists_are_refused_when_written() -> Result<()> {
    let backend = small_values();
    let mut b = keyed::<_, u64>(&backend, MAX_PARALLELISM, 1, 0, &[])?;
    let v = b.value_state(&ValueStateDescriptor::<String>::new("v"))?;
    let l = b.list_state(&ListStateDescriptor::<String>::new("l"))?;
    b.set_current_key(1)?;
    let err = v
        .on(&mut b)
        .update(Some("x".repeat(2_000)))
        .expect_err("too large");
    assert_eq!(err.kind(), ErrorKind::StateSizeExceeded);
    assert!(
        matches!(err, Error::SizeLimitExceeded { limit: 1_000, .. }),
        "{err:?}"
    );
    for i in 0..9 {
        l.on(&mut b)
            .add("y".repeat(100))
            .unwrap_or_else(|e| panic!("append {i} fits: {e}"));
    }
    let err = l
        .on(&mut b)
        .add("y".repeat(100))
        .expect_err("the merged list would pass the limit");
    assert_eq!(err.kind(), ErrorKind::StateSizeExceeded, "{err}");
    assert_eq!(
        l.on(&mut b).get()?.map(|l| l.len()),
        Some(9),
        "the refused append changed nothing"
    );
    // The backend keeps working and snapshots.
    v.on(&mut b).update(Some("small".into()))?;
    let h = snapshot(&backend, &mut b, 1)?.expect("state");
    assert_eq!(
        b.list_size_reads(),
        1,
        "only the append that reached the limit read its list"
    );
    let mut handles = vec![h.clone()];
    // A checkpoint written before list bounds were kept: restore reads the
    // list sizes instead.
    if let KeyedStateHandle::IncrementalNative(mut native) = h {
        let before = native.private.len();
        native.private.retain(|f| f.name != "FLOWSTATE-LIST-BOUND");
        assert_eq!(
            native.private.len(),
            before - 1,
            "the checkpoint carries its bound"
        );
        handles.push(KeyedStateHandle::IncrementalNative(native));
    }
    for h in handles {
        let mut r = keyed::<_, u64>(&backend, MAX_PARALLELISM, 1, 0, &[h])?;
        let l = r.list_state(&ListStateDescriptor::<String>::new("l"))?;
        r.set_current_key(1)?;
        assert_eq!(l.on(&mut r).get()?.map(|l| l.len()), Some(9));
        // The restored backend knows how large its lists may be.
        let err = l
            .on(&mut r)
            .add("y".repeat(100))
            .expect_err("the restored list would pass the limit");
        assert_eq!(err.kind(), ErrorKind::StateSizeExceeded, "{err}");
        r.set_current_key(2)?;
        l.on(&mut r).add("z".into())?;
    }
    Ok(())
}

/// Appends far from the size limit never read the list back: its size is
/// bounded from the bytes appended (one read per append made appends three
/// times slower than raw RocksDB merges).
#[test]
fn appends_far_from_the_limit_read_nothing() -> Result<()> {
    let backend = TempDirBackend::new(|dir| {
        RocksDbStateBackend::new(&dir.join("work"), &dir.join("checkpoints"), "job")
    });
    let mut b = keyed::<_, u64>(&backend, MAX_PARALLELISM, 1, 0, &[])?;
    let l = b.list_state(&ListStateDescriptor::<i64>::new("l"))?;
    for round in 0..3 {
        for k in 0..5_000u64 {
            b.set_current_key(k)?;
            l.on(&mut b).add(k as i64 * round)?;
        }
        snapshot(&backend, &mut b, round as u64 + 1)?;
    }
    b.set_current_key(4_321)?;
    assert_eq!(l.on(&mut b).get()?, Some(vec![0, 4_321, 8_642]));
    assert_eq!(b.list_size_reads(), 0);
    Ok(())
}

/// Many more writes than the write buffer holds, mixing puts, deletes, list
/// appends and map updates across its flushes, read back against a model
/// before and after a checkpoint of either kind.
#[test]
fn writes_across_write_buffer_flushes_read_back_exactly() -> Result<()> {
    use state_api::state::descriptor::MapStateDescriptor;
    use std::collections::BTreeMap;
    let keys = (backend_rocksdb::buffer::MAX_BUFFERED_ENTRIES as u64) * 3;
    for incremental in [true, false] {
        let backend = TempDirBackend::new(move |dir| {
            Ok(
                RocksDbStateBackend::new(&dir.join("work"), &dir.join("checkpoints"), "job")?
                    .with_options(RocksOptions {
                        incremental,
                        ..Default::default()
                    }),
            )
        });
        let mut b = keyed::<_, u64>(&backend, MAX_PARALLELISM, 1, 0, &[])?;
        let v = b.value_state(&ValueStateDescriptor::<u64>::new("v"))?;
        let l = b.list_state(&ListStateDescriptor::<u64>::new("l"))?;
        let m = b.map_state(&MapStateDescriptor::<u64, u64>::new("m"))?;
        let mut values = BTreeMap::new();
        let mut lists: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut maps: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
        for round in 0..3u64 {
            for k in 0..keys {
                b.set_current_key(k)?;
                match (k + round) % 5 {
                    0 => {
                        v.on(&mut b).clear()?;
                        values.remove(&k);
                    }
                    _ => {
                        v.on(&mut b).update(Some(k * 10 + round))?;
                        values.insert(k, k * 10 + round);
                    }
                }
                if k % 7 == round {
                    l.on(&mut b).add(round)?;
                    lists.entry(k).or_default().push(round);
                }
                if k % 11 == 0 {
                    m.on(&mut b).put(round % 2, k + round)?;
                    maps.entry(k).or_default().insert(round % 2, k + round);
                    if round == 2 && k % 22 == 0 {
                        m.on(&mut b).remove(&0)?;
                        maps.entry(k).or_default().remove(&0);
                    }
                }
            }
        }
        type Backend = backend_rocksdb::RocksKeyedStateBackend<u64>;
        type Handles = (
            state_api::state::access::ValueState<u64>,
            state_api::state::access::ListState<u64>,
            state_api::state::access::MapState<u64, u64>,
        );
        let read = |b: &mut Backend, (v, l, m): &Handles| -> Result<()> {
            for k in 0..keys {
                b.set_current_key(k)?;
                assert_eq!(v.on(b).get()?, values.get(&k).copied(), "value {k}");
                assert_eq!(l.on(b).get()?, lists.get(&k).cloned(), "list {k}");
                let entries: BTreeMap<u64, u64> = m.on(b).entries()?.into_iter().collect();
                assert_eq!(
                    entries,
                    maps.get(&k).cloned().unwrap_or_default(),
                    "map {k}"
                );
            }
            Ok(())
        };
        read(&mut b, &(v, l, m))?;
        let h = snapshot(&backend, &mut b, 1)?.expect("state");
        let mut r = keyed::<_, u64>(&backend, MAX_PARALLELISM, 1, 0, &[h])?;
        let handles = (
            r.value_state(&ValueStateDescriptor::<u64>::new("v"))?,
            r.list_state(&ListStateDescriptor::<u64>::new("l"))?,
            r.map_state(&MapStateDescriptor::<u64, u64>::new("m"))?,
        );
        read(&mut r, &handles)?;
    }
    Ok(())
}
