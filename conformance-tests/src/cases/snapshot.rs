//! Snapshots and restore: empty snapshots, asynchronous isolation, cancellation, rescaling.

use std::collections::{BTreeMap, BTreeSet};

use state_api::snapshot::handle::KeyedStateHandle;
use state_api::state::access::{KeyedStateBackendExt, ListState, MapState, ValueState};
use state_api::state::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, ValueStateDescriptor,
};
use state_api::state::VoidNamespace;
use state_api::{codec, Error, ErrorKind, KeyedStateBackend, Result, StateBackend};

use crate::harness::{
    expect_err, join, keyed, owner, rescale_keyed, single, snapshot, snapshot_task, sorted,
    MAX_PARALLELISM,
};

fn value_d() -> ValueStateDescriptor<u64> {
    ValueStateDescriptor::new("v")
}

fn list_d() -> ListStateDescriptor<u64> {
    ListStateDescriptor::new("l")
}

fn map_d() -> MapStateDescriptor<u32, String> {
    MapStateDescriptor::new("m")
}

fn names<B: KeyedStateBackend>(b: &B) -> BTreeSet<String> {
    b.state_metas().into_iter().map(|m| m.name).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// Restores `handle` into a single backend of [`MAX_PARALLELISM`].
fn restore<S: StateBackend>(backend: &S, handle: KeyedStateHandle) -> Result<S::Keyed<u64>> {
    keyed::<S, u64>(backend, MAX_PARALLELISM, 1, 0, &[handle])
}

/// A snapshot of a backend with no state at all yields no handle.
pub fn snapshot_empty_backend_yields_none<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    assert!(
        snapshot(backend, &mut b, 1)?.is_none(),
        "fresh backend: no handle"
    );
    b.set_current_key(5)?;
    assert!(
        snapshot(backend, &mut b, 2)?.is_none(),
        "a current key alone is no state"
    );
    let mut restored = keyed::<S, u64>(backend, MAX_PARALLELISM, 1, 0, &[])?;
    assert!(
        snapshot(backend, &mut restored, 3)?.is_none(),
        "a backend restored from no handle has no state"
    );
    let task = snapshot_task(backend, &mut b, 4)?;
    assert!(
        join(task.spawn())?.is_none(),
        "asynchronous part on another thread: no handle"
    );
    Ok(())
}

/// A snapshot of every kind of state restores with equal contents.
pub fn snapshot_restore_all_kinds<S: StateBackend>(backend: &S) -> Result<()> {
    struct Sum;
    impl AggregateFunction<u64, u64, u64> for Sum {
        fn create_accumulator(&self) -> u64 {
            0
        }
        fn add(&self, value: &u64, acc: &mut u64) {
            *acc += value;
        }
        fn get_result(&self, acc: &u64) -> u64 {
            *acc
        }
        fn merge(&self, acc: &mut u64, other: u64) {
            *acc += other;
        }
    }
    let value = || value_d().with_namespace(codec::postcard::<u64>());
    let reducing = || ReducingStateDescriptor::new("r", |a: &u64, b: &u64| *a.max(b));
    let aggregating = || AggregatingStateDescriptor::new("a", Sum);
    let mut b = single::<S, u64>(backend)?;
    let (v, l, m) = (
        b.value_state(&value())?,
        b.list_state(&list_d())?,
        b.map_state(&map_d())?,
    );
    let (r, a) = (
        b.reducing_state(&reducing())?,
        b.aggregating_state(&aggregating())?,
    );
    for k in 0..50_u64 {
        b.set_current_key(k)?;
        v.on_ns(&mut b, &(k % 3)).update(Some(k))?;
        l.on(&mut b).add_all((0..k % 4).collect())?;
        for i in 0..(k % 5) as u32 {
            m.on(&mut b).put(i, format!("{k}/{i}"))?;
        }
        r.on(&mut b).add(k)?;
        r.on(&mut b).add(k / 2)?;
        a.on(&mut b).add(k)?;
        a.on(&mut b).add(1)?;
    }
    let entries = b.num_entries()?;
    let handle = snapshot(backend, &mut b, 1)?.expect("state was written");
    let mut b = restore(backend, handle)?;
    assert_eq!(b.num_entries()?, entries, "restored entry count");
    let (v, l, m) = (
        b.value_state(&value())?,
        b.list_state(&list_d())?,
        b.map_state(&map_d())?,
    );
    let (r, a) = (
        b.reducing_state(&reducing())?,
        b.aggregating_state(&aggregating())?,
    );
    for k in 0..50_u64 {
        b.set_current_key(k)?;
        for ns in 0..3 {
            let expected = (ns == k % 3).then_some(k);
            assert_eq!(v.on_ns(&mut b, &ns).get()?, expected, "value {k}/{ns}");
        }
        let list: Vec<u64> = (0..k % 4).collect();
        assert_eq!(
            l.on(&mut b).get()?,
            (!list.is_empty()).then_some(list),
            "list {k}"
        );
        let map: Vec<(u32, String)> = (0..(k % 5) as u32)
            .map(|i| (i, format!("{k}/{i}")))
            .collect();
        assert_eq!(sorted(m.on(&mut b).entries()?), map, "map {k}");
        assert_eq!(r.on(&mut b).get()?, Some(k), "reducing {k}");
        assert_eq!(a.on(&mut b).get()?, Some(k + 1), "aggregating {k}");
    }
    Ok(())
}

/// A state registered but never written is in the snapshot, restores, and
/// registers as an empty state.
pub fn snapshot_non_accessed_state_restores<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    b.value_state(&value_d())?;
    b.list_state(&list_d())?;
    b.map_state(&map_d())?;
    let handle =
        snapshot(backend, &mut b, 1)?.expect("registered states are state, even without entries");
    let mut r = restore(backend, handle)?;
    assert_eq!(
        names(&r),
        set(&["v", "l", "m"]),
        "restored backend knows the never-written states"
    );
    assert_eq!(r.num_entries()?, 0, "no entries restored");
    let v = r.value_state(&value_d())?;
    let l = r.list_state(&list_d())?;
    let m = r.map_state(&map_d())?;
    assert!(
        r.keys(v.handle(), &VoidNamespace)?.is_empty(),
        "restored value state is empty"
    );
    r.set_current_key(1)?;
    assert_eq!(v.on(&mut r).get()?, None, "restored value state reads None");
    assert_eq!(l.on(&mut r).get()?, None, "restored list state reads None");
    assert!(m.on(&mut r).is_empty()?, "restored map state is empty");
    v.on(&mut r).update(Some(3))?;
    assert_eq!(v.on(&mut r).get()?, Some(3), "restored state is writable");
    // And once more: restore, do not register, snapshot again.
    let mut b = single::<S, u64>(backend)?;
    b.value_state(&value_d())?;
    let h1 = snapshot(backend, &mut b, 2)?.expect("registered state");
    let mut r1 = restore(backend, h1)?;
    let h2 = snapshot(backend, &mut r1, 3)?
        .expect("a restored, unregistered, empty state is still state");
    let mut r2 = restore(backend, h2)?;
    assert_eq!(names(&r2), set(&["v"]), "still known after two cycles");
    let v = r2.value_state(&value_d())?;
    assert!(
        r2.keys(v.handle(), &VoidNamespace)?.is_empty(),
        "and still empty"
    );
    Ok(())
}

/// A restored state that is not registered survives another snapshot and
/// restore cycle with all its data, next to registered and changed states.
pub fn snapshot_restored_unregistered_state_survives<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let (v, l, m) = (
        b.value_state(&value_d())?,
        b.list_state(&list_d())?,
        b.map_state(&map_d())?,
    );
    for k in 0..40_u64 {
        b.set_current_key(k)?;
        v.on(&mut b).update(Some(k))?;
        l.on(&mut b).add_all(vec![k, k + 1])?;
        m.on(&mut b).put(k as u32, format!("m{k}"))?;
    }
    let h1 = snapshot(backend, &mut b, 1)?.expect("state was written");
    // Restore; register only the list and change it; leave v and m untouched.
    let mut r1 = restore(backend, h1)?;
    assert_eq!(
        r1.num_entries()?,
        120,
        "restored entries, none registered yet"
    );
    let l1 = r1.list_state(&list_d())?;
    for k in 0..40_u64 {
        r1.set_current_key(k)?;
        l1.on(&mut r1).add(1000)?;
    }
    assert_eq!(
        r1.num_entries()?,
        120,
        "entries of unregistered states are counted"
    );
    assert_eq!(
        names(&r1),
        set(&["v", "l", "m"]),
        "unregistered states still known"
    );
    let h2 = snapshot(backend, &mut r1, 2)?.expect("state was restored");
    // Restore again without registering anything, snapshot a third time.
    let mut r2 = restore(backend, h2)?;
    assert_eq!(
        names(&r2),
        set(&["v", "l", "m"]),
        "every state in the second snapshot"
    );
    let h3 = snapshot(backend, &mut r2, 3)?.expect("restored states are state");
    let mut r3 = restore(backend, h3)?;
    let (v, l, m) = (
        r3.value_state(&value_d())?,
        r3.list_state(&list_d())?,
        r3.map_state(&map_d())?,
    );
    for k in 0..40_u64 {
        r3.set_current_key(k)?;
        assert_eq!(
            v.on(&mut r3).get()?,
            Some(k),
            "never-registered value of {k}"
        );
        assert_eq!(
            l.on(&mut r3).get()?,
            Some(vec![k, k + 1, 1000]),
            "changed list of {k}"
        );
        assert_eq!(
            m.on(&mut r3).entries()?,
            vec![(k as u32, format!("m{k}"))],
            "never-registered map of {k}"
        );
    }
    assert_eq!(r3.num_entries()?, 120, "no entry lost or duplicated");
    Ok(())
}

/// Writes made after `snapshot()` returned (updates, clears, new keys, a new
/// state) are not in that snapshot.
pub fn snapshot_async_isolation<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let (v, l, m) = (
        b.value_state(&value_d())?,
        b.list_state(&list_d())?,
        b.map_state(&map_d())?,
    );
    for k in 0..100_u64 {
        b.set_current_key(k)?;
        v.on(&mut b).update(Some(k))?;
        l.on(&mut b).add(k)?;
        m.on(&mut b).put(1, format!("a{k}"))?;
        m.on(&mut b).put(2, format!("b{k}"))?;
    }
    let task = snapshot_task(backend, &mut b, 1)?;
    for k in 0..100_u64 {
        b.set_current_key(k)?;
        match k % 4 {
            0 => {
                v.on(&mut b).clear()?;
                l.on(&mut b).clear()?;
                m.on(&mut b).clear()?;
            }
            1 => {
                v.on(&mut b).update(Some(k + 1000))?;
                l.on(&mut b).add(k + 1000)?;
                m.on(&mut b).put(1, "changed".into())?;
                m.on(&mut b).put(3, "new".into())?;
            }
            2 => {
                l.on(&mut b).update(vec![7])?;
                m.on(&mut b).remove(&2)?;
            }
            _ => {}
        }
    }
    for k in 100..150_u64 {
        b.set_current_key(k)?;
        v.on(&mut b).update(Some(k))?;
    }
    let late = b.value_state(&ValueStateDescriptor::<u64>::new("late"))?;
    late.on(&mut b).update(Some(1))?;
    let handle = task.run()?.expect("state was written");
    let mut r = restore(backend, handle)?;
    assert_eq!(
        names(&r),
        set(&["v", "l", "m"]),
        "a state registered after the synchronous part is not in the snapshot"
    );
    assert_eq!(r.num_entries()?, 300, "entries at the synchronous part");
    let (v, l, m) = (
        r.value_state(&value_d())?,
        r.list_state(&list_d())?,
        r.map_state(&map_d())?,
    );
    for k in 0..150_u64 {
        r.set_current_key(k)?;
        if k < 100 {
            assert_eq!(v.on(&mut r).get()?, Some(k), "value of {k}");
            assert_eq!(l.on(&mut r).get()?, Some(vec![k]), "list of {k}");
            assert_eq!(
                sorted(m.on(&mut r).entries()?),
                vec![(1, format!("a{k}")), (2, format!("b{k}"))],
                "map of {k}"
            );
        } else {
            assert_eq!(
                v.on(&mut r).get()?,
                None,
                "key {k} written after the snapshot"
            );
        }
    }
    Ok(())
}

/// Several snapshots in flight at once, taken between writes and run in
/// reverse order: each restores to its own point in time.
pub fn snapshot_several_in_flight<S: StateBackend>(backend: &S) -> Result<()> {
    const KEYS: u64 = 60;
    let mut b = single::<S, u64>(backend)?;
    let (v, l, m) = (
        b.value_state(&value_d())?,
        b.list_state(&list_d())?,
        b.map_state(&map_d())?,
    );
    let mut tasks = Vec::new();
    for generation in 1..=3_u64 {
        for k in 0..KEYS {
            b.set_current_key(k)?;
            v.on(&mut b).update(Some(k * 10 + generation))?;
            l.on(&mut b).add(generation)?;
            m.on(&mut b)
                .put(generation as u32, format!("g{generation}"))?;
        }
        // A key that exists only in generation 2.
        b.set_current_key(KEYS)?;
        if generation == 2 {
            v.on(&mut b).update(Some(0))?;
        } else {
            v.on(&mut b).clear()?;
        }
        tasks.push((generation, snapshot_task(backend, &mut b, generation)?));
    }
    for k in 0..KEYS {
        b.set_current_key(k)?;
        v.on(&mut b).clear()?;
        l.on(&mut b).add(99)?;
    }
    let mut handles = BTreeMap::new();
    for (generation, task) in tasks.into_iter().rev() {
        handles.insert(generation, task.run()?.expect("state was written"));
    }
    for (generation, handle) in handles {
        let mut r = restore(backend, handle)?;
        let (v, l, m) = (
            r.value_state(&value_d())?,
            r.list_state(&list_d())?,
            r.map_state(&map_d())?,
        );
        for k in 0..KEYS {
            r.set_current_key(k)?;
            assert_eq!(
                v.on(&mut r).get()?,
                Some(k * 10 + generation),
                "value of {k} in snapshot {generation}"
            );
            assert_eq!(
                l.on(&mut r).get()?,
                Some((1..=generation).collect()),
                "list of {k} in snapshot {generation}"
            );
            assert_eq!(
                sorted(m.on(&mut r).entries()?),
                (1..=generation as u32)
                    .map(|g| (g, format!("g{g}")))
                    .collect::<Vec<_>>(),
                "map of {k} in snapshot {generation}"
            );
        }
        r.set_current_key(KEYS)?;
        assert_eq!(
            v.on(&mut r).get()?,
            (generation == 2).then_some(0),
            "generation-2-only key in snapshot {generation}"
        );
    }
    Ok(())
}

/// Closing the backend cancels snapshots whose asynchronous part has not run:
/// running them (here or on another thread) fails with `Cancelled`.
pub fn snapshot_cancelled_on_close<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let v = b.value_state(&value_d())?;
    for k in 0..20_u64 {
        b.set_current_key(k)?;
        v.on(&mut b).update(Some(k))?;
    }
    let here = snapshot_task(backend, &mut b, 1)?;
    let there = snapshot_task(backend, &mut b, 2)?;
    b.close();
    let e = expect_err(here.run(), ErrorKind::Cancelled, "snapshot run after close");
    assert!(
        matches!(e, Error::Cancelled { .. }),
        "a Cancelled error: {e:?}"
    );
    expect_err(
        join(there.spawn()),
        ErrorKind::Cancelled,
        "snapshot spawned after close",
    );
    Ok(())
}

/// After `close()` every call fails with `Closed`; closing twice is harmless.
pub fn snapshot_closed_backend_rejects_calls<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let v = b.value_state(&value_d())?;
    let l = b.list_state(&list_d())?;
    let m = b.map_state(&map_d())?;
    b.set_current_key(1)?;
    v.on(&mut b).update(Some(1))?;
    b.close();
    b.close();
    let closed = ErrorKind::Closed;
    expect_err(b.set_current_key(2), closed, "set_current_key");
    expect_err(
        b.value_state(&value_d()),
        closed,
        "registering a known state",
    );
    expect_err(
        b.value_state(&ValueStateDescriptor::<u64>::new("new")),
        closed,
        "registering a new state",
    );
    expect_err(v.on(&mut b).get(), closed, "value get");
    expect_err(v.on(&mut b).update(Some(2)), closed, "value update");
    expect_err(v.on(&mut b).clear(), closed, "value clear");
    expect_err(l.on(&mut b).get(), closed, "list get");
    expect_err(l.on(&mut b).add(1), closed, "list add");
    expect_err(l.on(&mut b).update(vec![1]), closed, "list update");
    expect_err(m.on(&mut b).get(&1), closed, "map get");
    expect_err(m.on(&mut b).put(1, "x".into()), closed, "map put");
    expect_err(m.on(&mut b).remove(&1), closed, "map remove");
    expect_err(m.on(&mut b).entries(), closed, "map entries");
    expect_err(m.on(&mut b).is_empty(), closed, "map is_empty");
    expect_err(m.on(&mut b).clear(), closed, "map clear");
    expect_err(b.keys(v.handle(), &VoidNamespace), closed, "keys");
    expect_err(
        b.keys_and_namespaces(v.handle()),
        closed,
        "keys_and_namespaces",
    );
    expect_err(b.num_entries(), closed, "num_entries");
    expect_err(snapshot_task(backend, &mut b, 1), closed, "snapshot");
    Ok(())
}

/// The value, list and map state of [`value_d`], [`list_d`] and [`map_d`].
type States = (ValueState<u64>, ListState<u64>, MapState<u32, String>);

/// Writes `keys` into `old_parallelism` subtasks (each key on its owner),
/// snapshots them all, restores at `new_parallelism`, and checks that every
/// key is readable exactly once, on its owner, with its value, list and map.
fn check_rescale<S: StateBackend>(
    backend: &S,
    old_parallelism: u32,
    new_parallelism: u32,
) -> Result<()> {
    const KEYS: u64 = 1200;
    let maxp = MAX_PARALLELISM;
    let list_of = |k: u64| (0..=k % 3).map(|i| k * 10 + i).collect::<Vec<_>>();
    let map_of = |k: u64| {
        (0..=(k % 4) as u32)
            .map(|i| (i, format!("{k}:{i}")))
            .collect::<Vec<_>>()
    };
    // The old subtasks, each writing the keys it owns.
    let mut old = (0..old_parallelism)
        .map(|i| keyed::<S, u64>(backend, maxp, old_parallelism, i, &[]))
        .collect::<Result<Vec<_>>>()?;
    let mut handles_of: Vec<States> = Vec::new();
    for b in &mut old {
        handles_of.push((
            b.value_state(&value_d())?,
            b.list_state(&list_d())?,
            b.map_state(&map_d())?,
        ));
    }
    for k in 0..KEYS {
        let o = owner(&k, maxp, old_parallelism)? as usize;
        let (v, l, m) = &handles_of[o];
        let b = &mut old[o];
        b.set_current_key(k)?;
        v.on(b).update(Some(k))?;
        l.on(b).update(list_of(k))?;
        m.on(b).put_all(map_of(k))?;
    }
    let mut handles = Vec::new();
    for (i, b) in old.iter_mut().enumerate() {
        handles.push(snapshot(backend, b, 1)?.unwrap_or_else(|| {
            panic!("old subtask {i} has registered states: a handle is expected")
        }));
    }
    // The new subtasks.
    let mut new = rescale_keyed::<S, u64>(backend, &handles, maxp, new_parallelism)?;
    assert_eq!(
        new.len(),
        new_parallelism as usize,
        "one backend per new subtask"
    );
    let mut seen: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut states = Vec::new();
    let mut entries = 0;
    for (j, b) in new.iter_mut().enumerate() {
        let (v, l, m) = (
            b.value_state(&value_d())?,
            b.list_state(&list_d())?,
            b.map_state(&map_d())?,
        );
        let listed = [
            ("value", b.keys(v.handle(), &VoidNamespace)?),
            ("list", b.keys(l.handle(), &VoidNamespace)?),
            ("map", b.keys(m.handle(), &VoidNamespace)?),
        ];
        for (what, keys) in listed {
            for k in &keys {
                assert_eq!(
                    owner(k, maxp, new_parallelism)?,
                    j as u32,
                    "{what} key {k} restored on subtask {j}, which does not own it \
                     ({old_parallelism} -> {new_parallelism})"
                );
            }
            seen.entry(what).or_default().extend(keys);
        }
        entries += b.num_entries()?;
        states.push((v, l, m));
    }
    for (what, keys) in seen {
        let unique: BTreeSet<u64> = keys.iter().copied().collect();
        assert_eq!(
            unique.len(),
            keys.len(),
            "{what} keys duplicated over the new subtasks ({old_parallelism} -> {new_parallelism})"
        );
        assert_eq!(
            unique,
            (0..KEYS).collect::<BTreeSet<_>>(),
            "{what} keys listed over the new subtasks equal the keys written \
             ({old_parallelism} -> {new_parallelism})"
        );
    }
    assert_eq!(
        entries,
        3 * KEYS as usize,
        "entries over the new subtasks ({old_parallelism} -> {new_parallelism})"
    );
    for k in 0..KEYS {
        let j = owner(&k, maxp, new_parallelism)? as usize;
        let (v, l, m) = &states[j];
        let b = &mut new[j];
        b.set_current_key(k)?;
        assert_eq!(v.on(b).get()?, Some(k), "value of {k} on subtask {j}");
        assert_eq!(
            l.on(b).get()?,
            Some(list_of(k)),
            "list of {k} on subtask {j}"
        );
        assert_eq!(
            sorted(m.on(b).entries()?),
            map_of(k),
            "map of {k} on subtask {j}"
        );
        if new_parallelism > 1 {
            let other = (j + 1) % new_parallelism as usize;
            expect_err(
                new[other].set_current_key(k),
                ErrorKind::InvalidArgument,
                "a key set on a subtask that does not own it",
            );
        }
    }
    Ok(())
}

/// Key-group restore without rescaling: 2 subtasks to 2.
pub fn rescale_2_to_2<S: StateBackend>(backend: &S) -> Result<()> {
    check_rescale(backend, 2, 2)
}

/// Key-group restore scaling up: 2 subtasks to 4.
pub fn rescale_2_to_4<S: StateBackend>(backend: &S) -> Result<()> {
    check_rescale(backend, 2, 4)
}

/// Key-group restore scaling down: 4 subtasks to 2.
pub fn rescale_4_to_2<S: StateBackend>(backend: &S) -> Result<()> {
    check_rescale(backend, 4, 2)
}

/// Key-group restore with uneven ranges, scaling up: 15 subtasks to 77.
pub fn rescale_15_to_77<S: StateBackend>(backend: &S) -> Result<()> {
    check_rescale(backend, 15, 77)
}

/// Key-group restore with uneven ranges, scaling down: 77 subtasks to 15.
pub fn rescale_77_to_15<S: StateBackend>(backend: &S) -> Result<()> {
    check_rescale(backend, 77, 15)
}

/// Restoring into a backend with another max parallelism fails with
/// `IncompatibleState`, naming both max parallelisms.
pub fn restore_other_max_parallelism_fails<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = keyed::<S, u64>(backend, MAX_PARALLELISM, 1, 0, &[])?;
    let v = b.value_state(&value_d())?;
    for k in 0..10_u64 {
        b.set_current_key(k)?;
        v.on(&mut b).update(Some(k))?;
    }
    let handle = snapshot(backend, &mut b, 1)?.expect("state was written");
    for other in [MAX_PARALLELISM * 2, MAX_PARALLELISM / 2] {
        let r = keyed::<S, u64>(backend, other, 1, 0, std::slice::from_ref(&handle));
        let e = expect_err(
            r,
            ErrorKind::IncompatibleState,
            "restore at another max parallelism",
        );
        assert!(
            matches!(
                e,
                Error::MaxParallelismMismatch { snapshot: s, backend: r, .. }
                    if s == MAX_PARALLELISM && r == other
            ),
            "the error names both max parallelisms: {e:?}"
        );
        expect_err(
            rescale_keyed::<S, u64>(backend, std::slice::from_ref(&handle), other, 2),
            ErrorKind::IncompatibleState,
            "assigning handles to subtasks of another max parallelism",
        );
    }
    let mut ok = keyed::<S, u64>(backend, MAX_PARALLELISM, 1, 0, &[handle])?;
    let v = ok.value_state(&value_d())?;
    ok.set_current_key(3)?;
    assert_eq!(
        v.on(&mut ok).get()?,
        Some(3),
        "the same max parallelism restores"
    );
    Ok(())
}

/// A snapshot taken with zstd compression restores with equal contents.
pub fn snapshot_compressed_restores<S: StateBackend>(backend: &S) -> Result<()> {
    use state_api::format::frame::Compression;
    use state_api::snapshot::SnapshotOptions;
    let mut b = single::<S, u64>(backend)?;
    let (v, l, m) = (
        b.value_state(&value_d())?,
        b.list_state(&list_d())?,
        b.map_state(&map_d())?,
    );
    for k in 0..200_u64 {
        b.set_current_key(k)?;
        v.on(&mut b).update(Some(k))?;
        l.on(&mut b).add_all(vec![k; 20])?;
        m.on(&mut b).put(1, "compressible ".repeat(20))?;
    }
    let options = SnapshotOptions {
        compression: Compression::Zstd { level: 3 },
        ..Default::default()
    };
    let handle = b
        .snapshot(1, backend.stream_factory(1)?, options)?
        .run()?
        .expect("state was written");
    let mut r = restore(backend, handle)?;
    let (v, l, m) = (
        r.value_state(&value_d())?,
        r.list_state(&list_d())?,
        r.map_state(&map_d())?,
    );
    for k in 0..200_u64 {
        r.set_current_key(k)?;
        assert_eq!(v.on(&mut r).get()?, Some(k), "value of {k}");
        assert_eq!(l.on(&mut r).get()?, Some(vec![k; 20]), "list of {k}");
        assert_eq!(
            m.on(&mut r).get(&1)?,
            Some("compressible ".repeat(20)),
            "map of {k}"
        );
    }
    Ok(())
}

/// Restored states left unregistered survive a rescale, a snapshot and a
/// rescale back (2 -> 3 without registering, then 3 -> 2).
pub fn rescale_unregistered_states_survive<S: StateBackend>(backend: &S) -> Result<()> {
    const KEYS: u64 = 300;
    let maxp = MAX_PARALLELISM;
    let mut old = (0..2)
        .map(|i| keyed::<S, u64>(backend, maxp, 2, i, &[]))
        .collect::<Result<Vec<_>>>()?;
    let mut states = Vec::new();
    for b in &mut old {
        states.push((b.value_state(&value_d())?, b.list_state(&list_d())?));
    }
    for k in 0..KEYS {
        let o = owner(&k, maxp, 2)? as usize;
        let (v, l) = &states[o];
        let b = &mut old[o];
        b.set_current_key(k)?;
        v.on(b).update(Some(k))?;
        l.on(b).add(k)?;
    }
    let mut handles = Vec::new();
    for b in &mut old {
        handles.push(snapshot(backend, b, 1)?.expect("state was written"));
    }
    let mut middle = rescale_keyed::<S, u64>(backend, &handles, maxp, 3)?;
    let mut entries = 0;
    let mut handles = Vec::new();
    for b in &mut middle {
        entries += b.num_entries()?;
        // Register and change only the list; the value state stays pending.
        let l = b.list_state(&list_d())?;
        for k in b.keys(l.handle(), &VoidNamespace)? {
            b.set_current_key(k)?;
            l.on(b).add(k + 1)?;
        }
        handles.push(snapshot(backend, b, 2)?.expect("state was restored"));
    }
    assert_eq!(
        entries,
        2 * KEYS as usize,
        "entries over 3 subtasks, unregistered"
    );
    let mut new = rescale_keyed::<S, u64>(backend, &handles, maxp, 2)?;
    let mut seen = BTreeSet::new();
    for (j, b) in new.iter_mut().enumerate() {
        let (v, l) = (b.value_state(&value_d())?, b.list_state(&list_d())?);
        for k in b.keys(v.handle(), &VoidNamespace)? {
            assert!(seen.insert(k), "key {k} restored twice");
            assert_eq!(owner(&k, maxp, 2)?, j as u32, "key {k} on its owner");
            b.set_current_key(k)?;
            assert_eq!(v.on(b).get()?, Some(k), "unregistered value of {k}");
            assert_eq!(l.on(b).get()?, Some(vec![k, k + 1]), "changed list of {k}");
        }
    }
    assert_eq!(
        seen,
        (0..KEYS).collect(),
        "every key back after two rescales"
    );
    Ok(())
}

/// Registering a restored state as another kind fails with
/// `IncompatibleState`; registering it as its own kind then still works.
pub fn restore_register_other_kind_fails<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let v = b.value_state(&value_d())?;
    b.set_current_key(1)?;
    v.on(&mut b).update(Some(11))?;
    let handle = snapshot(backend, &mut b, 1)?.expect("state was written");
    let mut r = restore(backend, handle)?;
    expect_err(
        r.list_state(&ListStateDescriptor::<u64>::new("v")),
        ErrorKind::IncompatibleState,
        "restored value state registered as list state",
    );
    expect_err(
        r.reducing_state(&ReducingStateDescriptor::new("v", |a: &u64, b: &u64| a + b)),
        ErrorKind::IncompatibleState,
        "restored value state registered as reducing state",
    );
    let v = r.value_state(&value_d())?;
    r.set_current_key(1)?;
    assert_eq!(
        v.on(&mut r).get()?,
        Some(11),
        "its own kind still restores the data"
    );
    Ok(())
}

/// Regression: a `ValueState<i64>` restored and registered as
/// `ValueState<u64>` with the default codec read reinterpreted bytes. Every
/// role (value, list element, map user key and value, namespace, key) now
/// records its type, and registering another type fails with a typed error
/// naming the state and both schemas, while the original types still read
/// the data.
pub fn restore_with_other_types_fails<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let v = b.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    let l = b.list_state(&ListStateDescriptor::<i64>::new("l"))?;
    let m = b.map_state(&MapStateDescriptor::<u32, i64>::new("m"))?;
    let n = b.value_state(
        &ValueStateDescriptor::<i64>::new("n").with_namespace(codec::postcard::<u32>()),
    )?;
    b.set_current_key(3)?;
    v.on(&mut b).update(Some(-5))?;
    l.on(&mut b).add(-6)?;
    m.on(&mut b).put(7, -7)?;
    n.on_ns(&mut b, &9).update(Some(-8))?;
    let handle = snapshot(backend, &mut b, 1)?.expect("state was written");

    let mut r = restore(backend, handle.clone())?;
    let kind = ErrorKind::IncompatibleState;
    let e = expect_err(
        r.value_state(&ValueStateDescriptor::<u64>::new("v")),
        kind,
        "ValueState<i64> registered as ValueState<u64>",
    );
    assert!(
        matches!(&e, Error::IncompatibleCodec { state, role: "value", .. } if state == "v"),
        "the error names the state and the role: {e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("postcard:i64#") && msg.contains("postcard:u64#"),
        "the message names both schemas: {msg}"
    );
    let e = expect_err(
        r.list_state(&ListStateDescriptor::<String>::new("l")),
        kind,
        "ListState<i64> registered as ListState<String>",
    );
    assert!(
        matches!(
            &e,
            Error::IncompatibleCodec {
                role: "element",
                ..
            }
        ),
        "{e:?}"
    );
    let e = expect_err(
        r.map_state(&MapStateDescriptor::<u64, i64>::new("m")),
        kind,
        "MapState<u32, _> registered as MapState<u64, _>",
    );
    assert!(
        matches!(
            &e,
            Error::IncompatibleCodec {
                role: "user key",
                ..
            }
        ),
        "{e:?}"
    );
    let e = expect_err(
        r.map_state(&MapStateDescriptor::<u32, f64>::new("m")),
        kind,
        "MapState<_, i64> registered as MapState<_, f64>",
    );
    assert!(
        matches!(
            &e,
            Error::IncompatibleCodec {
                role: "user value",
                ..
            }
        ),
        "{e:?}"
    );
    let e = expect_err(
        r.value_state(
            &ValueStateDescriptor::<i64>::new("n").with_namespace(codec::postcard::<i32>()),
        ),
        kind,
        "namespace u32 registered as namespace i32",
    );
    assert!(
        matches!(
            &e,
            Error::IncompatibleCodec {
                role: "namespace",
                ..
            }
        ),
        "{e:?}"
    );

    // Failed registrations leave the restored data untouched.
    let v = r.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    let l = r.list_state(&ListStateDescriptor::<i64>::new("l"))?;
    let m = r.map_state(&MapStateDescriptor::<u32, i64>::new("m"))?;
    let n = r.value_state(
        &ValueStateDescriptor::<i64>::new("n").with_namespace(codec::postcard::<u32>()),
    )?;
    r.set_current_key(3)?;
    assert_eq!(
        v.on(&mut r).get()?,
        Some(-5),
        "value after failed registrations"
    );
    assert_eq!(
        l.on(&mut r).get()?,
        Some(vec![-6]),
        "list after failed registrations"
    );
    assert_eq!(
        m.on(&mut r).get(&7)?,
        Some(-7),
        "map after failed registrations"
    );
    assert_eq!(n.on_ns(&mut r, &9).get()?, Some(-8), "namespaced value");

    // The key type is checked too.
    let e = expect_err(
        keyed::<S, i64>(
            backend,
            MAX_PARALLELISM,
            1,
            0,
            std::slice::from_ref(&handle),
        ),
        kind,
        "u64 keys restored as i64 keys",
    );
    assert!(
        matches!(&e, Error::IncompatibleCodec { role: "key", .. }),
        "{e:?}"
    );
    Ok(())
}

/// A declared migration from the old value type reads the data (converted)
/// and the next snapshot holds the new type.
pub fn restore_with_declared_type_migration<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let v = b.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    for k in 0..20u64 {
        b.set_current_key(k)?;
        v.on(&mut b).update(Some(-(k as i64)))?;
    }
    let handle = snapshot(backend, &mut b, 1)?.expect("state was written");
    let migrated = || {
        ValueStateDescriptor::<u64>::with_codec(
            "v",
            std::sync::Arc::new(
                codec::PostcardCodec::<u64>::new()
                    .migrate_from_type(|old: i64| old.unsigned_abs() * 10),
            ),
        )
    };
    let mut r = restore(backend, handle)?;
    let v = r.value_state(&migrated())?;
    for k in 0..20u64 {
        r.set_current_key(k)?;
        assert_eq!(
            v.on(&mut r).get()?,
            Some(k * 10),
            "migrated value of key {k}"
        );
    }
    let again = snapshot(backend, &mut r, 2)?.expect("state was written");
    let mut r2 = restore(backend, again)?;
    let e = expect_err(
        r2.value_state(&ValueStateDescriptor::<i64>::new("v")),
        ErrorKind::IncompatibleState,
        "after migration the snapshot holds u64 values",
    );
    assert!(matches!(&e, Error::IncompatibleCodec { .. }), "{e:?}");
    let v = r2.value_state(&ValueStateDescriptor::<u64>::new("v"))?;
    r2.set_current_key(7)?;
    assert_eq!(v.on(&mut r2).get()?, Some(70), "rewritten as u64");
    Ok(())
}

/// A migration that fails on one restored value fails the registration with
/// a typed error and leaves nothing half-migrated: the state registered again
/// with the codec it was written with reads every value exactly, and a later
/// successful migration reads them all.
pub fn failed_migration_leaves_no_partial_state<S: StateBackend>(backend: &S) -> Result<()> {
    use std::sync::Arc;
    let v1 = || {
        ValueStateDescriptor::<u64>::with_codec(
            "v",
            Arc::new(codec::PostcardCodec::<u64>::with_schema("count", 1)),
        )
    };
    let v2 = |fail_on: Option<u64>| {
        let old = codec::PostcardCodec::<u64>::with_schema("count", 1);
        ValueStateDescriptor::<String>::with_codec(
            "v",
            Arc::new(
                codec::PostcardCodec::<String>::with_schema("count", 2).migrate_from(
                    1,
                    move |bytes| {
                        use state_api::codec::Codec;
                        let n = old.decode(bytes)?;
                        if Some(n) == fail_on {
                            return Err(codec::CodecError(format!("cannot migrate {n}")));
                        }
                        Ok(format!("#{n}"))
                    },
                ),
            ),
        )
    };
    let mut b = single::<S, u64>(backend)?;
    let v = b.value_state(&v1())?;
    for k in 0..50u64 {
        b.set_current_key(k)?;
        v.on(&mut b).update(Some(k))?;
    }
    let handle = snapshot(backend, &mut b, 1)?.expect("state was written");

    let mut r = restore(backend, handle)?;
    let e = expect_err(
        r.value_state(&v2(Some(25))),
        ErrorKind::User,
        "a migration failing on one value",
    );
    assert!(
        matches!(&e, Error::Codec { state, .. } if state == "v"),
        "the error names the state: {e:?}"
    );
    let old = r.value_state(&v1())?;
    for k in 0..50u64 {
        r.set_current_key(k)?;
        assert_eq!(
            old.on(&mut r).get()?,
            Some(k),
            "key {k}: nothing was half-migrated"
        );
    }
    // Registered as v1 now: its values are v1 and stay so in the next
    // snapshot, from which a good migration reads them all.
    let again = snapshot(backend, &mut r, 2)?.expect("state was written");
    let mut r2 = restore(backend, again)?;
    let new = r2.value_state(&v2(None))?;
    for k in 0..50u64 {
        r2.set_current_key(k)?;
        assert_eq!(
            new.on(&mut r2).get()?,
            Some(format!("#{k}")),
            "migrated key {k}"
        );
    }
    Ok(())
}

/// The completion-notification contract of `KeyedStateBackend`, the same on
/// every backend: notifications of ids never taken, of savepoints, of
/// checkpoints whose asynchronous part has not finished, of aborted ones and
/// of ones older than the newest completed are ignored (`Ok`), and every
/// snapshot taken around them restores exactly what it captured. After
/// close, both notifications fail with `Closed`.
pub fn notify_checkpoint_contract<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let v = b.value_state(&value_d())?;
    let write = |b: &mut S::Keyed<u64>, round: u64| -> Result<()> {
        for k in 0..30u64 {
            b.set_current_key(k)?;
            if (k + round).is_multiple_of(4) {
                v.on(b).clear()?;
            } else {
                v.on(b).update(Some(round * 100 + k))?;
            }
        }
        Ok(())
    };
    let expected = |round: u64| -> BTreeMap<u64, u64> {
        (0..30u64)
            .filter(|k| !(k + round).is_multiple_of(4))
            .map(|k| (k, round * 100 + k))
            .collect()
    };
    let mut handles = Vec::new();
    write(&mut b, 1)?;
    handles.push((1, snapshot(backend, &mut b, 1)?.expect("state was written")));
    b.notify_checkpoint_complete(99)?; // never taken
    write(&mut b, 2)?;
    let savepoint = b
        .snapshot(
            2,
            backend.stream_factory(2)?,
            state_api::snapshot::SnapshotOptions::savepoint(Default::default()),
        )?
        .run()?
        .expect("state was written");
    b.notify_checkpoint_complete(2)?; // a savepoint
    handles.push((2, savepoint));
    write(&mut b, 3)?;
    let unfinished = snapshot_task(backend, &mut b, 3)?;
    b.notify_checkpoint_complete(3)?; // its asynchronous part has not run
    handles.push((3, unfinished.run()?.expect("state was written")));
    write(&mut b, 4)?;
    let aborted = snapshot_task(backend, &mut b, 4)?
        .run()?
        .expect("state was written");
    b.notify_checkpoint_aborted(4)?;
    b.notify_checkpoint_complete(4)?; // aborted before
    b.notify_checkpoint_aborted(98)?; // never taken
    handles.push((4, aborted));
    write(&mut b, 5)?;
    handles.push((5, snapshot(backend, &mut b, 5)?.expect("state was written")));
    b.notify_checkpoint_complete(1)?; // older than the newest completed
    b.notify_checkpoint_complete(3)?; // likewise, now finished
    write(&mut b, 6)?;
    handles.push((6, snapshot(backend, &mut b, 6)?.expect("state was written")));
    for (round, handle) in handles {
        let mut r = restore(backend, handle)?;
        let v = r.value_state(&value_d())?;
        let mut got = BTreeMap::new();
        for k in 0..30u64 {
            r.set_current_key(k)?;
            if let Some(x) = v.on(&mut r).get()? {
                got.insert(k, x);
            }
        }
        assert_eq!(
            got,
            expected(round),
            "snapshot of round {round} restores exactly"
        );
    }
    b.close();
    let e = expect_err(
        b.notify_checkpoint_complete(7),
        ErrorKind::Closed,
        "notify complete after close",
    );
    assert!(matches!(e, Error::Closed), "{e:?}");
    expect_err(
        b.notify_checkpoint_aborted(7),
        ErrorKind::Closed,
        "notify aborted after close",
    );
    Ok(())
}

/// A backend restored from handles covering more key groups than its own
/// (every old subtask's whole handle, not the coordinator's assignment) keeps
/// only its own key groups: every key lands on exactly one new subtask.
pub fn rescale_restore_keeps_only_own_key_groups<S: StateBackend>(backend: &S) -> Result<()> {
    const KEYS: u64 = 400;
    let maxp = MAX_PARALLELISM;
    let mut old = (0..2)
        .map(|i| keyed::<S, u64>(backend, maxp, 2, i, &[]))
        .collect::<Result<Vec<_>>>()?;
    let mut states = Vec::new();
    for b in &mut old {
        states.push(b.value_state(&value_d())?);
    }
    for k in 0..KEYS {
        let o = owner(&k, maxp, 2)? as usize;
        old[o].set_current_key(k)?;
        states[o].on(&mut old[o]).update(Some(k))?;
    }
    let mut handles = Vec::new();
    for b in &mut old {
        handles.push(snapshot(backend, b, 1)?.expect("state was written"));
    }
    let mut seen = BTreeSet::new();
    let mut entries = 0;
    for j in 0..3_u32 {
        let mut b = keyed::<S, u64>(backend, maxp, 3, j, &handles)?;
        entries += b.num_entries()?;
        let v = b.value_state(&value_d())?;
        for k in b.keys(v.handle(), &VoidNamespace)? {
            assert_eq!(
                owner(&k, maxp, 3)?,
                j,
                "key {k} kept by subtask {j}, not its owner"
            );
            assert!(seen.insert(k), "key {k} restored on two subtasks");
            b.set_current_key(k)?;
            assert_eq!(v.on(&mut b).get()?, Some(k), "value of {k}");
        }
    }
    assert_eq!(seen, (0..KEYS).collect(), "every key restored");
    assert_eq!(
        entries, KEYS as usize,
        "entries over the new subtasks (before registration)"
    );
    Ok(())
}
