//! Operator state: list, union list and broadcast state; snapshots; redistribution.

use std::collections::HashMap;

use state_api::snapshot::handle::OperatorStateHandle;
use state_api::state::descriptor::{ListStateDescriptor, MapStateDescriptor};
use state_api::{
    DefaultOperatorStateBackend, Error, ErrorKind, OperatorStateBackend, Result, StateBackend,
};

use crate::harness::{
    expect_err, join, operator_snapshot_task, rescale_operator, snapshot_operator, sorted,
};

fn list_d() -> ListStateDescriptor<u64> {
    ListStateDescriptor::new("list")
}

fn union_d() -> ListStateDescriptor<u64> {
    ListStateDescriptor::new("union")
}

fn broadcast_d() -> MapStateDescriptor<String, u64> {
    MapStateDescriptor::new("broadcast")
}

fn fresh<S: StateBackend>(backend: &S) -> Result<DefaultOperatorStateBackend> {
    backend.create_operator_backend(&[])
}

/// What [`fill`] writes: list elements, union list elements, broadcast entries.
type Contents = (Vec<u64>, Vec<u64>, HashMap<String, u64>);

/// Fills a backend with one state of each mode and returns what it holds.
fn fill(op: &mut DefaultOperatorStateBackend) -> Result<Contents> {
    let list: Vec<u64> = (0..25).collect();
    let union: Vec<u64> = vec![7, 3, 7, 100];
    let broadcast: HashMap<String, u64> = (0..10).map(|i| (format!("k{i}"), i * i)).collect();
    let l = op.list_state(&list_d())?;
    op.list(&l)?.extend(list.iter().copied());
    let u = op.union_list_state(&union_d())?;
    op.list(&u)?.extend(union.iter().copied());
    let b = op.broadcast_state(&broadcast_d())?;
    op.broadcast(&b)?.extend(broadcast.clone());
    Ok((list, union, broadcast))
}

/// Checks that a restored backend holds exactly `expected` (after registering).
fn check_contents(
    op: &mut DefaultOperatorStateBackend,
    expected: &Contents,
    what: &str,
) -> Result<()> {
    assert!(op.is_restored(), "{what}: backend reports it was restored");
    assert_eq!(
        sorted(op.state_names()),
        vec!["broadcast".to_string(), "list".into(), "union".into()],
        "{what}: restored state names before registration"
    );
    let l = op.list_state(&list_d())?;
    assert_eq!(op.list(&l)?, &expected.0, "{what}: list state");
    let u = op.union_list_state(&union_d())?;
    assert_eq!(op.list(&u)?, &expected.1, "{what}: union list state");
    let b = op.broadcast_state(&broadcast_d())?;
    assert_eq!(op.broadcast(&b)?, &expected.2, "{what}: broadcast state");
    Ok(())
}

/// Registers a list state: elements are kept, and registering the name again
/// returns the same state.
pub fn operator_register_list_state<S: StateBackend>(backend: &S) -> Result<()> {
    let mut op = fresh(backend)?;
    assert!(!op.is_restored(), "a fresh backend is not restored");
    let l = op.list_state(&list_d())?;
    assert!(op.list(&l)?.is_empty(), "a new list state is empty");
    op.list(&l)?.extend([1, 2, 3]);
    op.list(&l)?.push(4);
    let again = op.list_state(&list_d())?;
    assert_eq!(
        op.list(&again)?,
        &vec![1, 2, 3, 4],
        "same state when registered again"
    );
    op.list(&again)?.retain(|e| e % 2 == 0);
    assert_eq!(op.list(&l)?, &vec![2, 4], "both handles name one state");
    let other = op.list_state(&ListStateDescriptor::<u64>::new("other"))?;
    assert!(op.list(&other)?.is_empty(), "another name is another state");
    assert_eq!(
        sorted(op.state_names()),
        vec!["list".to_string(), "other".into()],
        "state names"
    );
    Ok(())
}

/// Registers a union list state.
pub fn operator_register_union_list_state<S: StateBackend>(backend: &S) -> Result<()> {
    let mut op = fresh(backend)?;
    let u = op.union_list_state(&union_d())?;
    assert!(op.list(&u)?.is_empty(), "a new union list state is empty");
    op.list(&u)?.extend([5, 6]);
    let again = op.union_list_state(&union_d())?;
    assert_eq!(
        op.list(&again)?,
        &vec![5, 6],
        "same state when registered again"
    );
    assert_eq!(op.state_names(), vec!["union".to_string()], "state names");
    Ok(())
}

/// Registers a broadcast state.
pub fn operator_register_broadcast_state<S: StateBackend>(backend: &S) -> Result<()> {
    let mut op = fresh(backend)?;
    let b = op.broadcast_state(&broadcast_d())?;
    assert!(
        op.broadcast(&b)?.is_empty(),
        "a new broadcast state is empty"
    );
    op.broadcast(&b)?.insert("a".into(), 1);
    op.broadcast(&b)?.insert("b".into(), 2);
    op.broadcast(&b)?.insert("a".into(), 3);
    let again = op.broadcast_state(&broadcast_d())?;
    let expected: HashMap<String, u64> = [("a".to_string(), 3), ("b".to_string(), 2)].into();
    assert_eq!(
        op.broadcast(&again)?,
        &expected,
        "same state when registered again"
    );
    op.broadcast(&again)?.remove("b");
    assert_eq!(op.broadcast(&b)?.len(), 1, "both handles name one state");
    assert_eq!(
        op.state_names(),
        vec!["broadcast".to_string()],
        "state names"
    );
    Ok(())
}

/// Registering a name again with another mode fails with `IncompatibleState`,
/// and the registered state keeps its contents.
pub fn operator_reregister_other_mode_fails<S: StateBackend>(backend: &S) -> Result<()> {
    let mut op = fresh(backend)?;
    let kind = ErrorKind::IncompatibleState;
    let l = op.list_state(&list_d())?;
    op.list(&l)?.push(1);
    expect_err(
        op.union_list_state(&list_d()),
        kind,
        "list state re-registered as union list state",
    );
    expect_err(
        op.broadcast_state(&MapStateDescriptor::<String, u64>::new("list")),
        kind,
        "list state re-registered as broadcast state",
    );
    let u = op.union_list_state(&union_d())?;
    expect_err(
        op.list_state(&union_d()),
        kind,
        "union list state re-registered as list state",
    );
    expect_err(
        op.broadcast_state(&MapStateDescriptor::<String, u64>::new("union")),
        kind,
        "union list state re-registered as broadcast state",
    );
    let b = op.broadcast_state(&broadcast_d())?;
    expect_err(
        op.list_state(&ListStateDescriptor::<u64>::new("broadcast")),
        kind,
        "broadcast state re-registered as list state",
    );
    expect_err(
        op.union_list_state(&ListStateDescriptor::<u64>::new("broadcast")),
        kind,
        "broadcast state re-registered as union list state",
    );
    assert_eq!(
        op.list(&l)?,
        &vec![1],
        "list state kept after failed registrations"
    );
    op.list(&u)?.push(2);
    op.broadcast(&b)?.insert("x".into(), 1);
    assert_eq!(
        op.state_names().len(),
        3,
        "failed registrations added no state"
    );
    Ok(())
}

/// A snapshot of an operator backend with no state yields no handle.
pub fn operator_empty_snapshot_yields_none<S: StateBackend>(backend: &S) -> Result<()> {
    let mut op = fresh(backend)?;
    assert!(
        snapshot_operator(backend, &mut op, 1)?.is_none(),
        "empty backend: no handle"
    );
    let task = operator_snapshot_task(backend, &mut op, 2)?;
    assert!(
        join(task.spawn())?.is_none(),
        "empty backend, asynchronous part on another thread: no handle"
    );
    let mut restored = backend.create_operator_backend(&[])?;
    assert!(
        !restored.is_restored(),
        "restored from no handle: not restored"
    );
    assert!(
        snapshot_operator(backend, &mut restored, 3)?.is_none(),
        "restored from no handle: no handle"
    );
    Ok(())
}

/// Synchronous snapshot and restore of list, union list and broadcast state.
pub fn operator_snapshot_restore_sync<S: StateBackend>(backend: &S) -> Result<()> {
    let mut op = fresh(backend)?;
    let expected = fill(&mut op)?;
    let handle = snapshot_operator(backend, &mut op, 1)?.expect("state was written");
    let mut restored = backend.create_operator_backend(&[handle])?;
    check_contents(&mut restored, &expected, "sync snapshot")
}

/// Asynchronous snapshot (its task run on another thread) and restore.
pub fn operator_snapshot_restore_async<S: StateBackend>(backend: &S) -> Result<()> {
    let mut op = fresh(backend)?;
    let expected = fill(&mut op)?;
    let task = operator_snapshot_task(backend, &mut op, 1)?;
    let handle = join(task.spawn())?.expect("state was written");
    let mut restored = backend.create_operator_backend(&[handle])?;
    check_contents(&mut restored, &expected, "async snapshot")?;
    // The original backend keeps working after the snapshot.
    let l = op.list_state(&list_d())?;
    op.list(&l)?.push(1000);
    assert_eq!(
        op.list(&l)?.len(),
        expected.0.len() + 1,
        "original still writable"
    );
    Ok(())
}

/// The asynchronous part writes a deep copy taken by the synchronous part:
/// changes to the elements made before the task runs are not in the snapshot.
pub fn operator_async_snapshot_isolation<S: StateBackend>(backend: &S) -> Result<()> {
    let mut op = fresh(backend)?;
    let expected = fill(&mut op)?;
    let task = operator_snapshot_task(backend, &mut op, 1)?;
    let l = op.list_state(&list_d())?;
    let list = op.list(&l)?;
    list[0] = 999;
    list.push(1000);
    list.remove(1);
    let u = op.union_list_state(&union_d())?;
    op.list(&u)?.clear();
    let b = op.broadcast_state(&broadcast_d())?;
    let map = op.broadcast(&b)?;
    map.insert("k0".into(), 12345);
    map.remove("k1");
    map.insert("new".into(), 1);
    let late = op.list_state(&ListStateDescriptor::<u64>::new("late"))?;
    op.list(&late)?.push(1);
    let handle = task.run()?.expect("state was written");
    let mut restored = backend.create_operator_backend(&[handle])?;
    check_contents(
        &mut restored,
        &expected,
        "snapshot taken before the changes",
    )
}

/// Closing the backend cancels a snapshot whose asynchronous part has not run
/// (here or on another thread); afterwards every call fails with `Closed`.
pub fn operator_close_cancels_async_snapshot<S: StateBackend>(backend: &S) -> Result<()> {
    let mut op = fresh(backend)?;
    fill(&mut op)?;
    let l = op.list_state(&list_d())?;
    let here = operator_snapshot_task(backend, &mut op, 1)?;
    let there = operator_snapshot_task(backend, &mut op, 2)?;
    op.close();
    let e = expect_err(
        here.run(),
        ErrorKind::Cancelled,
        "operator snapshot run after close",
    );
    assert!(
        matches!(e, Error::Cancelled { .. }),
        "a Cancelled error: {e:?}"
    );
    expect_err(
        join(there.spawn()),
        ErrorKind::Cancelled,
        "operator snapshot spawned after close",
    );
    op.close();
    let closed = ErrorKind::Closed;
    expect_err(op.list(&l).map(drop), closed, "list after close");
    expect_err(op.list_state(&list_d()), closed, "list_state after close");
    expect_err(
        op.union_list_state(&union_d()),
        closed,
        "union_list_state after close",
    );
    expect_err(
        op.broadcast_state(&broadcast_d()),
        closed,
        "broadcast_state after close",
    );
    expect_err(
        operator_snapshot_task(backend, &mut op, 3),
        closed,
        "snapshot after close",
    );
    Ok(())
}

/// A restored state that is not registered survives another snapshot and
/// restore cycle.
pub fn operator_unregistered_state_survives<S: StateBackend>(backend: &S) -> Result<()> {
    let mut op = fresh(backend)?;
    let expected = fill(&mut op)?;
    let h1 = snapshot_operator(backend, &mut op, 1)?.expect("state was written");
    let mut r1 = backend.create_operator_backend(&[h1])?;
    let h2 =
        snapshot_operator(backend, &mut r1, 2)?.expect("restored, unregistered states are state");
    let mut r2 = backend.create_operator_backend(&[h2])?;
    check_contents(&mut r2, &expected, "second cycle without registration")
}

/// Snapshots one operator backend per element set, with one list (split),
/// union list or broadcast state holding it.
fn old_subtasks<S: StateBackend>(
    backend: &S,
    contents: &[Vec<u64>],
    register: impl Fn(&mut DefaultOperatorStateBackend, &[u64]) -> Result<()>,
) -> Result<Vec<OperatorStateHandle>> {
    contents
        .iter()
        .enumerate()
        .map(|(i, elements)| {
            let mut op = fresh(backend)?;
            register(&mut op, elements)?;
            Ok(snapshot_operator(backend, &mut op, 1)?
                .unwrap_or_else(|| panic!("old subtask {i} has a state: a handle is expected")))
        })
        .collect()
}

/// Three old subtasks' list elements (one of them empty), all distinct.
fn old_lists() -> Vec<Vec<u64>> {
    vec![(0..7).collect(), Vec::new(), (1000..1013).collect()]
}

/// Split (even) redistribution of list state: when the parallelism changes,
/// every element lands on exactly one new subtask and the counts differ by at
/// most one.
pub fn operator_redistribute_even_split<S: StateBackend>(backend: &S) -> Result<()> {
    let old = old_lists();
    let all: Vec<u64> = sorted(old.concat());
    let handles = old_subtasks(backend, &old, |op, e| {
        let l = op.list_state(&list_d())?;
        op.list(&l)?.extend_from_slice(e);
        Ok(())
    })?;
    for p in [1_u32, 2, 4, 5, 25] {
        let mut new = rescale_operator(backend, &handles, p)?;
        assert_eq!(new.len(), p as usize, "one backend per new subtask");
        let mut union = Vec::new();
        let mut counts = Vec::new();
        for op in &mut new {
            let l = op.list_state(&list_d())?;
            let elements = op.list(&l)?.clone();
            counts.push(elements.len());
            union.extend(elements);
        }
        assert_eq!(
            sorted(union),
            all,
            "3 -> {p}: every element exactly once over the new subtasks"
        );
        let (min, max) = (
            counts.iter().copied().min().unwrap_or(0),
            counts.iter().copied().max().unwrap_or(0),
        );
        assert!(
            max - min <= 1,
            "3 -> {p}: elements spread evenly: {counts:?}"
        );
    }
    Ok(())
}

/// Split list state at unchanged parallelism: each subtask keeps its own elements.
pub fn operator_split_same_parallelism_keeps_elements<S: StateBackend>(backend: &S) -> Result<()> {
    let old = old_lists();
    let handles = old_subtasks(backend, &old, |op, e| {
        let l = op.list_state(&list_d())?;
        op.list(&l)?.extend_from_slice(e);
        Ok(())
    })?;
    let mut new = rescale_operator(backend, &handles, old.len() as u32)?;
    for (i, op) in new.iter_mut().enumerate() {
        let l = op.list_state(&list_d())?;
        assert_eq!(op.list(&l)?, &old[i], "subtask {i} keeps its elements");
    }
    Ok(())
}

/// Union redistribution: every new subtask gets every element of every old one.
pub fn operator_redistribute_union<S: StateBackend>(backend: &S) -> Result<()> {
    let old = old_lists();
    let all: Vec<u64> = sorted(old.concat());
    let handles = old_subtasks(backend, &old, |op, e| {
        let u = op.union_list_state(&union_d())?;
        op.list(&u)?.extend_from_slice(e);
        Ok(())
    })?;
    for p in [1_u32, 2, 3, 5] {
        let mut new = rescale_operator(backend, &handles, p)?;
        assert_eq!(new.len(), p as usize, "one backend per new subtask");
        for (i, op) in new.iter_mut().enumerate() {
            let u = op.union_list_state(&union_d())?;
            assert_eq!(
                sorted(op.list(&u)?.clone()),
                all,
                "3 -> {p}: subtask {i} gets every element once"
            );
        }
    }
    Ok(())
}

/// Broadcast redistribution: every new subtask gets a full copy.
pub fn operator_redistribute_broadcast<S: StateBackend>(backend: &S) -> Result<()> {
    let entries: HashMap<String, u64> = (0..20).map(|i| (format!("rule-{i}"), i)).collect();
    // Broadcast state is the same on every subtask.
    let old = vec![Vec::new(); 3];
    let handles = old_subtasks(backend, &old, |op, _| {
        let b = op.broadcast_state(&broadcast_d())?;
        op.broadcast(&b)?.extend(entries.clone());
        Ok(())
    })?;
    for p in [1_u32, 2, 3, 7] {
        let mut new = rescale_operator(backend, &handles, p)?;
        assert_eq!(new.len(), p as usize, "one backend per new subtask");
        for (i, op) in new.iter_mut().enumerate() {
            let b = op.broadcast_state(&broadcast_d())?;
            assert_eq!(
                op.broadcast(&b)?,
                &entries,
                "3 -> {p}: subtask {i} gets a full copy"
            );
        }
    }
    Ok(())
}
