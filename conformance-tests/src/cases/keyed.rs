//! Keyed state: the five state kinds, namespaces, key listing, registration.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use state_api::backend::keyed::apply_to_all_keys;
use state_api::codec::{postcard, PostcardCodec};
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, ValueStateDescriptor,
};
use state_api::state::VoidNamespace;
use state_api::{Error, ErrorKind, KeyedStateBackend, Result, StateBackend};

use crate::harness::{
    expect_err, join, keyed, keyed_with_codec, owner, single, snapshot, snapshot_task, sorted,
    MAX_PARALLELISM,
};

// ---------------------------------------------------------------------------
// Value state
// ---------------------------------------------------------------------------

/// Value state: get, update and clear over several keys.
pub fn value_basic<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, String>(backend)?;
    let state = b.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    for (i, k) in ["a", "b", "c"].iter().enumerate() {
        b.set_current_key(k.to_string())?;
        assert_eq!(state.on(&mut b).get()?, None, "fresh key {k} has no value");
        state.on(&mut b).update(Some(i as i64))?;
    }
    for (i, k) in ["a", "b", "c"].iter().enumerate() {
        b.set_current_key(k.to_string())?;
        assert_eq!(state.on(&mut b).get()?, Some(i as i64), "value of {k}");
    }
    b.set_current_key("b".into())?;
    state.on(&mut b).clear()?;
    assert_eq!(state.on(&mut b).get()?, None, "cleared");
    b.set_current_key("a".into())?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some(0),
        "other keys untouched by a clear"
    );
    Ok(())
}

/// Several value states side by side: same keys, independent values.
pub fn value_several_states<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, String>(backend)?;
    let first = b.value_state(&ValueStateDescriptor::<i64>::new("first"))?;
    let second = b.value_state(&ValueStateDescriptor::<i64>::new("second"))?;
    let third = b.value_state(&ValueStateDescriptor::<String>::new("third"))?;
    for k in ["a", "b"] {
        b.set_current_key(k.to_string())?;
        first.on(&mut b).update(Some(1))?;
        second.on(&mut b).update(Some(2))?;
        third.on(&mut b).update(Some(format!("{k}-3")))?;
    }
    b.set_current_key("a".into())?;
    second.on(&mut b).update(Some(20))?;
    assert_eq!(
        first.on(&mut b).get()?,
        Some(1),
        "'first' unchanged by a write to 'second'"
    );
    third.on(&mut b).clear()?;
    assert_eq!(
        second.on(&mut b).get()?,
        Some(20),
        "'second' unchanged by a clear of 'third'"
    );
    assert_eq!(third.on(&mut b).get()?, None, "'third' of a cleared");
    b.set_current_key("b".into())?;
    assert_eq!(first.on(&mut b).get()?, Some(1), "'first' of b");
    assert_eq!(second.on(&mut b).get()?, Some(2), "'second' of b");
    assert_eq!(
        third.on(&mut b).get()?,
        Some("b-3".to_string()),
        "'third' of b"
    );
    assert_eq!(
        b.num_entries()?,
        5,
        "2 keys x 3 states, minus the cleared one"
    );
    Ok(())
}

/// `update(None)` clears the value, exactly as `clear()` does.
pub fn value_update_none_clears<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.value_state(&ValueStateDescriptor::<String>::new("v"))?;
    b.set_current_key(1)?;
    state.on(&mut b).update(Some("one".into()))?;
    b.set_current_key(2)?;
    state.on(&mut b).update(Some("two".into()))?;
    state.on(&mut b).update(None)?;
    assert_eq!(state.on(&mut b).get()?, None, "update(None) clears");
    assert_eq!(
        b.keys(state.handle(), &VoidNamespace)?,
        vec![1],
        "update(None) removes the key's entry"
    );
    assert_eq!(b.num_entries()?, 1, "one entry left after update(None)");
    b.set_current_key(3)?;
    state.on(&mut b).update(None)?;
    assert_eq!(
        state.on(&mut b).get()?,
        None,
        "update(None) of an absent value is a no-op"
    );
    b.set_current_key(1)?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some("one".to_string()),
        "other key untouched"
    );
    Ok(())
}

/// `set` and `modify`: modify sees the current value (never the default),
/// writes what it returns, removes the entry on `None`, and a snapshot taken
/// after it holds exactly the modified values.
pub fn value_set_and_modify<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let d = ValueStateDescriptor::<i64>::new("v").with_default(100);
    let state = b.value_state(&d)?;
    b.set_current_key(1)?;
    state.on(&mut b).set(5)?;
    assert_eq!(state.on(&mut b).get()?, Some(5), "set");
    for k in 1..=3u64 {
        b.set_current_key(k)?;
        state.on(&mut b).modify(|v| {
            assert_ne!(v, Some(100), "modify never sees the default");
            Some(v.unwrap_or(0) + 10)
        })?;
    }
    b.set_current_key(1)?;
    assert_eq!(state.on(&mut b).get()?, Some(15), "modify of a set value");
    b.set_current_key(2)?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some(10),
        "modify of an absent value"
    );
    state.on(&mut b).modify(|v| {
        assert_eq!(v, Some(10));
        None
    })?;
    assert_eq!(state.on(&mut b).get()?, Some(100), "None removed it");
    b.set_current_key(4)?;
    state.on(&mut b).modify(|v| {
        assert_eq!(v, None);
        None
    })?;
    assert_eq!(
        sorted(b.keys(state.handle(), &VoidNamespace)?),
        vec![1, 3],
        "a removed and a never-written key have no entry"
    );
    assert_eq!(b.num_entries()?, 2);
    let h = snapshot(backend, &mut b, 1)?;
    let mut r = keyed::<S, u64>(
        backend,
        MAX_PARALLELISM,
        1,
        0,
        &h.into_iter().collect::<Vec<_>>(),
    )?;
    let restored = r.value_state(&d)?;
    for (k, want) in [(1, Some(15)), (2, Some(100)), (3, Some(10)), (4, Some(100))] {
        r.set_current_key(k)?;
        assert_eq!(restored.on(&mut r).get()?, want, "restored key {k}");
    }
    Ok(())
}

/// The default value is returned when no value is set, and is never stored.
pub fn value_default_when_absent<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.value_state(&ValueStateDescriptor::<i64>::new("v").with_default(42))?;
    b.set_current_key(1)?;
    assert_eq!(state.on(&mut b).get()?, Some(42), "default when absent");
    assert!(
        state.on(&mut b).read(|v| v.is_none())?,
        "read() does not apply the default"
    );
    assert_eq!(b.num_entries()?, 0, "reading the default stores nothing");
    assert!(
        b.keys(state.handle(), &VoidNamespace)?.is_empty(),
        "reading the default lists no key"
    );
    state.on(&mut b).update(Some(7))?;
    assert_eq!(state.on(&mut b).get()?, Some(7), "a set value wins");
    state.on(&mut b).clear()?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some(42),
        "default again after clear"
    );
    state.on(&mut b).update(None)?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some(42),
        "default again after update(None)"
    );
    Ok(())
}

/// The default is a fresh copy per read: changing a returned copy does not
/// change what the next read returns.
pub fn value_default_is_fresh_copy<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let default = vec![1_i64, 2, 3];
    let state =
        b.value_state(&ValueStateDescriptor::<Vec<i64>>::new("v").with_default(default.clone()))?;
    b.set_current_key(1)?;
    let mut first = state.on(&mut b).get()?.expect("the default is returned");
    first.push(4);
    first[0] = 100;
    assert_eq!(
        state.on(&mut b).get()?,
        Some(default.clone()),
        "mutating a returned default does not change the next read"
    );
    b.set_current_key(2)?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some(default.clone()),
        "another key gets the unchanged default"
    );
    // The same holds for a stored value: `get` returns a copy.
    state.on(&mut b).update(Some(vec![9]))?;
    let mut copy = state.on(&mut b).get()?.expect("stored value");
    copy.push(10);
    assert_eq!(
        state.on(&mut b).get()?,
        Some(vec![9]),
        "mutating a returned value does not change the stored one"
    );
    Ok(())
}

/// Reads and writes go on while a snapshot is in flight (before and while its
/// asynchronous part runs on another thread); the live backend sees every
/// write, the snapshot none made after its synchronous part.
pub fn value_concurrent_read_during_snapshot<S: StateBackend>(backend: &S) -> Result<()> {
    const N: u64 = 400;
    let mut b = single::<S, u64>(backend)?;
    let d = || ValueStateDescriptor::<u64>::new("v");
    let state = b.value_state(&d())?;
    for k in 0..N {
        b.set_current_key(k)?;
        state.on(&mut b).update(Some(k))?;
    }
    let task = snapshot_task(backend, &mut b, 1)?;
    for k in 0..N {
        b.set_current_key(k)?;
        assert_eq!(
            state.on(&mut b).get()?,
            Some(k),
            "key {k} readable after the synchronous part"
        );
        state.on(&mut b).update(Some(k + N))?;
    }
    let running = task.spawn();
    for k in 0..N {
        b.set_current_key(k)?;
        assert_eq!(
            state.on(&mut b).get()?,
            Some(k + N),
            "key {k} reads its latest write while the snapshot runs"
        );
        if k % 2 == 0 {
            state.on(&mut b).clear()?;
        } else {
            state.on(&mut b).update(Some(k + 2 * N))?;
        }
    }
    for k in N..2 * N {
        b.set_current_key(k)?;
        state.on(&mut b).update(Some(k))?;
    }
    let handle = join(running)?.expect("a backend with state yields a handle");
    for k in 0..N {
        b.set_current_key(k)?;
        let expected = (k % 2 == 1).then_some(k + 2 * N);
        assert_eq!(
            state.on(&mut b).get()?,
            expected,
            "live value of key {k} after the snapshot"
        );
    }
    let mut restored = keyed::<S, u64>(backend, MAX_PARALLELISM, 1, 0, &[handle])?;
    let state = restored.value_state(&d())?;
    for k in 0..2 * N {
        restored.set_current_key(k)?;
        let expected = (k < N).then_some(k);
        assert_eq!(
            state.on(&mut restored).get()?,
            expected,
            "restored value of key {k} is the one at the synchronous part"
        );
    }
    assert_eq!(
        restored.num_entries()?,
        N as usize,
        "restored entry count is the one at the synchronous part"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// List state
// ---------------------------------------------------------------------------

/// List `add` appends one element at a time, in order, per key.
pub fn list_add<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, String>(backend)?;
    let state = b.list_state(&ListStateDescriptor::<i64>::new("l"))?;
    b.set_current_key("a".into())?;
    for e in [3, 1, 2, 1] {
        state.on(&mut b).add(e)?;
    }
    b.set_current_key("b".into())?;
    state.on(&mut b).add(10)?;
    b.set_current_key("a".into())?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some(vec![3, 1, 2, 1]),
        "elements in insertion order, duplicates kept"
    );
    b.set_current_key("b".into())?;
    assert_eq!(state.on(&mut b).get()?, Some(vec![10]), "other key's list");
    Ok(())
}

/// List `add_all` appends a batch, after what is already there.
pub fn list_add_all<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, String>(backend)?;
    let state = b.list_state(&ListStateDescriptor::<String>::new("l"))?;
    b.set_current_key("a".into())?;
    state.on(&mut b).add_all(vec!["x".into(), "y".into()])?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some(vec!["x".to_string(), "y".to_string()]),
        "add_all to an absent list"
    );
    state.on(&mut b).add("z".into())?;
    state.on(&mut b).add_all(vec!["u".into(), "v".into()])?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some(["x", "y", "z", "u", "v"].map(String::from).to_vec()),
        "add_all appends after existing elements"
    );
    Ok(())
}

/// List `update` replaces the whole list (and creates an absent one).
pub fn list_update<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.list_state(&ListStateDescriptor::<i64>::new("l"))?;
    b.set_current_key(1)?;
    state.on(&mut b).add_all(vec![1, 2, 3])?;
    state.on(&mut b).update(vec![7, 8])?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some(vec![7, 8]),
        "update replaces the elements"
    );
    state.on(&mut b).add(9)?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some(vec![7, 8, 9]),
        "add after update appends"
    );
    b.set_current_key(2)?;
    state.on(&mut b).update(vec![5])?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some(vec![5]),
        "update of an absent list creates it"
    );
    assert_eq!(b.num_entries()?, 2, "two lists");
    Ok(())
}

/// List `get`: `None` when absent, a copy of the elements otherwise.
pub fn list_get<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.list_state(&ListStateDescriptor::<i64>::new("l"))?;
    b.set_current_key(1)?;
    assert_eq!(state.on(&mut b).get()?, None, "absent list reads as None");
    assert_eq!(
        state.on(&mut b).read(|l| l.len())?,
        0,
        "absent list reads as empty slice"
    );
    state.on(&mut b).add_all(vec![4, 5])?;
    let mut copy = state.on(&mut b).get()?.expect("list was written");
    copy.push(6);
    assert_eq!(
        state.on(&mut b).get()?,
        Some(vec![4, 5]),
        "changing a returned list does not change the state"
    );
    assert_eq!(
        state.on(&mut b).read(|l| l.to_vec())?,
        vec![4, 5],
        "read sees the elements"
    );
    Ok(())
}

/// List `clear` removes the list and its entry.
pub fn list_clear<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.list_state(&ListStateDescriptor::<i64>::new("l"))?;
    for k in [1, 2] {
        b.set_current_key(k)?;
        state.on(&mut b).add_all(vec![1, 2])?;
    }
    b.set_current_key(1)?;
    state.on(&mut b).clear()?;
    assert_eq!(state.on(&mut b).get()?, None, "cleared list");
    assert_eq!(
        b.keys(state.handle(), &VoidNamespace)?,
        vec![2],
        "cleared key no longer listed"
    );
    state.on(&mut b).clear()?;
    assert_eq!(state.on(&mut b).get()?, None, "clearing twice is harmless");
    b.set_current_key(2)?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some(vec![1, 2]),
        "other key untouched"
    );
    state.on(&mut b).clear()?;
    assert_eq!(b.num_entries()?, 0, "no entries after clearing every list");
    Ok(())
}

/// `update(vec![])` clears the list: `get` is `None` and the entry is gone.
pub fn list_update_empty_clears<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.list_state(&ListStateDescriptor::<i64>::new("l"))?;
    b.set_current_key(1)?;
    state.on(&mut b).add_all(vec![1, 2])?;
    state.on(&mut b).update(vec![])?;
    assert_eq!(state.on(&mut b).get()?, None, "update([]) clears");
    assert!(
        b.keys(state.handle(), &VoidNamespace)?.is_empty(),
        "update([]) removes the key's entry"
    );
    assert_eq!(b.num_entries()?, 0, "update([]) leaves no entry");
    b.set_current_key(2)?;
    state.on(&mut b).update(vec![])?;
    assert_eq!(
        b.num_entries()?,
        0,
        "update([]) of an absent list adds none"
    );
    Ok(())
}

/// Adding an empty batch is a no-op: nothing is created, nothing changed.
pub fn list_add_all_empty_is_noop<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.list_state(&ListStateDescriptor::<i64>::new("l"))?;
    b.set_current_key(1)?;
    state.on(&mut b).add_all(vec![])?;
    assert_eq!(state.on(&mut b).get()?, None, "still absent");
    assert_eq!(b.num_entries()?, 0, "an empty batch creates no entry");
    // The backend contract itself: appending nothing is a no-op.
    b.list_append(state.handle(), &VoidNamespace, Vec::new())?;
    assert_eq!(b.num_entries()?, 0, "list_append([]) creates no entry");
    assert!(
        b.keys(state.handle(), &VoidNamespace)?.is_empty(),
        "no key listed after empty appends"
    );
    state.on(&mut b).add_all(vec![1, 2])?;
    state.on(&mut b).add_all(vec![])?;
    b.list_append(state.handle(), &VoidNamespace, Vec::new())?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some(vec![1, 2]),
        "an empty batch leaves an existing list unchanged"
    );
    Ok(())
}

/// List `merge_namespaces` appends the sources' elements to the target and
/// clears the sources; absent sources and the target among the sources are
/// harmless.
pub fn list_merge_namespaces<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state =
        b.list_state(&ListStateDescriptor::<i64>::new("l").with_namespace(postcard::<u64>()))?;
    for k in [1, 2] {
        b.set_current_key(k)?;
        state.on_ns(&mut b, &0).add(k as i64 * 100)?;
        state.on_ns(&mut b, &1).add_all(vec![1, 2])?;
        state.on_ns(&mut b, &2).add(3)?;
    }
    b.set_current_key(1)?;
    // 3 is absent; 0 (the target) listed among the sources is skipped.
    state.merge_namespaces(&mut b, &0, &[1, 3, 0, 2])?;
    assert_eq!(
        state.on_ns(&mut b, &0).get()?,
        Some(vec![100, 1, 2, 3]),
        "target holds its own elements, then the sources' in order"
    );
    for ns in [1, 2, 3] {
        assert_eq!(
            state.on_ns(&mut b, &ns).get()?,
            None,
            "source namespace {ns} cleared"
        );
    }
    // Into an absent target.
    state.on_ns(&mut b, &5).add(50)?;
    state.merge_namespaces(&mut b, &4, &[5])?;
    assert_eq!(
        state.on_ns(&mut b, &4).get()?,
        Some(vec![50]),
        "merge into an absent target"
    );
    assert_eq!(state.on_ns(&mut b, &5).get()?, None, "source cleared");
    b.set_current_key(2)?;
    assert_eq!(
        state.on_ns(&mut b, &0).get()?,
        Some(vec![200]),
        "other key's target untouched"
    );
    assert_eq!(
        state.on_ns(&mut b, &1).get()?,
        Some(vec![1, 2]),
        "other key's sources untouched"
    );
    assert_eq!(
        sorted(b.keys_and_namespaces(state.handle())?),
        vec![(1, 0), (1, 4), (2, 0), (2, 1), (2, 2)],
        "entries after the merges"
    );
    Ok(())
}

/// List `merge_namespaces` with no sources changes nothing.
pub fn list_merge_namespaces_no_sources<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state =
        b.list_state(&ListStateDescriptor::<i64>::new("l").with_namespace(postcard::<u64>()))?;
    b.set_current_key(1)?;
    state.on_ns(&mut b, &0).add_all(vec![1, 2])?;
    state.on_ns(&mut b, &1).add(3)?;
    state.merge_namespaces(&mut b, &0, &[])?;
    state.merge_namespaces(&mut b, &7, &[])?;
    assert_eq!(
        state.on_ns(&mut b, &0).get()?,
        Some(vec![1, 2]),
        "target unchanged"
    );
    assert_eq!(
        state.on_ns(&mut b, &1).get()?,
        Some(vec![3]),
        "other namespace unchanged"
    );
    assert_eq!(
        state.on_ns(&mut b, &7).get()?,
        None,
        "an absent target stays absent"
    );
    assert_eq!(b.num_entries()?, 2, "no entry created or removed");
    Ok(())
}

// ---------------------------------------------------------------------------
// Reducing state
// ---------------------------------------------------------------------------

/// Reducing state: added values are reduced into one, per key.
pub fn reducing_add_get<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, String>(backend)?;
    let state = b.reducing_state(&ReducingStateDescriptor::new("sum", |a: &i64, b: &i64| {
        a + b
    }))?;
    b.set_current_key("a".into())?;
    assert_eq!(state.on(&mut b).get()?, None, "nothing added yet");
    state.on(&mut b).add(5)?;
    assert_eq!(state.on(&mut b).get()?, Some(5), "first value as is");
    state.on(&mut b).add(10)?;
    state.on(&mut b).add(-3)?;
    assert_eq!(state.on(&mut b).get()?, Some(12), "reduced sum");
    b.set_current_key("b".into())?;
    state.on(&mut b).add(1)?;
    assert_eq!(state.on(&mut b).get()?, Some(1), "other key reduces alone");
    state.on(&mut b).clear()?;
    assert_eq!(state.on(&mut b).get()?, None, "cleared");
    state.on(&mut b).add(2)?;
    assert_eq!(state.on(&mut b).get()?, Some(2), "starts over after clear");
    b.set_current_key("a".into())?;
    assert_eq!(state.on(&mut b).get()?, Some(12), "first key untouched");
    // A non-commutative reduce sees (stored, added) in that order.
    let concat = b.reducing_state(&ReducingStateDescriptor::new(
        "concat",
        |a: &String, b: &String| format!("{a}{b}"),
    ))?;
    for s in ["x", "y", "z"] {
        concat.on(&mut b).add(s.to_string())?;
    }
    assert_eq!(
        concat.on(&mut b).get()?,
        Some("xyz".to_string()),
        "reduce(stored, added) in order"
    );
    Ok(())
}

/// Reducing `merge_namespaces` reduces the sources into the target and clears them.
pub fn reducing_merge_namespaces<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.reducing_state(
        &ReducingStateDescriptor::new("sum", |a: &i64, b: &i64| a + b)
            .with_namespace(postcard::<u64>()),
    )?;
    for k in [1, 2] {
        b.set_current_key(k)?;
        state.on_ns(&mut b, &0).add(100)?;
        state.on_ns(&mut b, &1).add(1)?;
        state.on_ns(&mut b, &1).add(2)?;
        state.on_ns(&mut b, &2).add(10)?;
    }
    b.set_current_key(1)?;
    state.merge_namespaces(&mut b, &0, &[1, 2, 3])?;
    assert_eq!(
        state.on_ns(&mut b, &0).get()?,
        Some(113),
        "target reduced with every source"
    );
    for ns in [1, 2, 3] {
        assert_eq!(
            state.on_ns(&mut b, &ns).get()?,
            None,
            "source namespace {ns} cleared"
        );
    }
    state.on_ns(&mut b, &5).add(7)?;
    state.merge_namespaces(&mut b, &4, &[5])?;
    assert_eq!(
        state.on_ns(&mut b, &4).get()?,
        Some(7),
        "merge into an absent target takes the source"
    );
    state.merge_namespaces(&mut b, &4, &[])?;
    assert_eq!(
        state.on_ns(&mut b, &4).get()?,
        Some(7),
        "merge with no sources is a no-op"
    );
    b.set_current_key(2)?;
    assert_eq!(
        state.on_ns(&mut b, &1).get()?,
        Some(3),
        "other key untouched by the merge"
    );
    assert_eq!(
        state.on_ns(&mut b, &0).get()?,
        Some(100),
        "other key's target untouched"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Aggregating state
// ---------------------------------------------------------------------------

/// A mean accumulator changed in place.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct MeanAcc {
    sum: i64,
    count: u64,
}

/// Mutates its accumulator in place.
struct MutableMean;

impl AggregateFunction<i64, MeanAcc, (i64, u64)> for MutableMean {
    fn create_accumulator(&self) -> MeanAcc {
        MeanAcc::default()
    }

    fn add(&self, value: &i64, acc: &mut MeanAcc) {
        acc.sum += value;
        acc.count += 1;
    }

    fn get_result(&self, acc: &MeanAcc) -> (i64, u64) {
        (acc.sum, acc.count)
    }

    fn merge(&self, acc: &mut MeanAcc, other: MeanAcc) {
        acc.sum += other.sum;
        acc.count += other.count;
    }
}

/// Treats its accumulator as immutable: every call assigns a new value.
struct ImmutableMean;

impl AggregateFunction<i64, (i64, u64), String> for ImmutableMean {
    fn create_accumulator(&self) -> (i64, u64) {
        (0, 0)
    }

    fn add(&self, value: &i64, acc: &mut (i64, u64)) {
        *acc = (acc.0 + value, acc.1 + 1);
    }

    fn get_result(&self, acc: &(i64, u64)) -> String {
        format!("{}/{}", acc.0, acc.1)
    }

    fn merge(&self, acc: &mut (i64, u64), other: (i64, u64)) {
        *acc = (acc.0 + other.0, acc.1 + other.1);
    }
}

/// Aggregating state with an accumulator mutated in place: add and get.
pub fn aggregating_mutable_accumulator<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, String>(backend)?;
    let state = b.aggregating_state(&AggregatingStateDescriptor::new("mean", MutableMean))?;
    b.set_current_key("a".into())?;
    assert_eq!(state.on(&mut b).get()?, None, "nothing added yet");
    for v in [4, 6, 8] {
        state.on(&mut b).add(v)?;
    }
    assert_eq!(
        state.on(&mut b).get()?,
        Some((18, 3)),
        "in-place accumulator"
    );
    assert_eq!(
        b.cell_get(state.handle(), &VoidNamespace, |acc| acc.cloned())?,
        Some(MeanAcc { sum: 18, count: 3 }),
        "the stored accumulator"
    );
    b.set_current_key("b".into())?;
    state.on(&mut b).add(-1)?;
    assert_eq!(state.on(&mut b).get()?, Some((-1, 1)), "other key");
    state.on(&mut b).clear()?;
    assert_eq!(state.on(&mut b).get()?, None, "cleared");
    b.set_current_key("a".into())?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some((18, 3)),
        "first key untouched"
    );
    Ok(())
}

/// Aggregating state with an accumulator replaced on every add: add and get.
pub fn aggregating_immutable_accumulator<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, String>(backend)?;
    let state = b.aggregating_state(&AggregatingStateDescriptor::new("mean", ImmutableMean))?;
    b.set_current_key("a".into())?;
    assert_eq!(state.on(&mut b).get()?, None, "nothing added yet");
    for v in [4, 6, 8] {
        state.on(&mut b).add(v)?;
    }
    assert_eq!(
        state.on(&mut b).get()?,
        Some("18/3".to_string()),
        "replaced accumulator is stored"
    );
    b.set_current_key("b".into())?;
    state.on(&mut b).add(5)?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some("5/1".to_string()),
        "other key"
    );
    b.set_current_key("a".into())?;
    state.on(&mut b).add(2)?;
    assert_eq!(
        state.on(&mut b).get()?,
        Some("20/4".to_string()),
        "later adds see the replaced accumulator"
    );
    state.on(&mut b).clear()?;
    assert_eq!(state.on(&mut b).get()?, None, "cleared");
    Ok(())
}

/// Aggregating `merge_namespaces` merges accumulators into the target and
/// clears the sources.
pub fn aggregating_merge_namespaces<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.aggregating_state(
        &AggregatingStateDescriptor::new("mean", MutableMean).with_namespace(postcard::<u64>()),
    )?;
    let imm = b.aggregating_state(
        &AggregatingStateDescriptor::new("imm", ImmutableMean).with_namespace(postcard::<u64>()),
    )?;
    b.set_current_key(1)?;
    for (ns, values) in [(0_u64, vec![10]), (1, vec![1, 2]), (2, vec![3])] {
        for v in values {
            state.on_ns(&mut b, &ns).add(v)?;
            imm.on_ns(&mut b, &ns).add(v)?;
        }
    }
    b.set_current_key(2)?;
    state.on_ns(&mut b, &1).add(99)?;
    b.set_current_key(1)?;
    state.merge_namespaces(&mut b, &0, &[1, 2, 3])?;
    imm.merge_namespaces(&mut b, &0, &[1, 2, 3])?;
    assert_eq!(
        state.on_ns(&mut b, &0).get()?,
        Some((16, 4)),
        "merged in-place accumulators"
    );
    assert_eq!(
        imm.on_ns(&mut b, &0).get()?,
        Some("16/4".to_string()),
        "merged replaced accumulators"
    );
    for ns in [1, 2, 3] {
        assert_eq!(state.on_ns(&mut b, &ns).get()?, None, "source {ns} cleared");
        assert_eq!(imm.on_ns(&mut b, &ns).get()?, None, "source {ns} cleared");
    }
    state.merge_namespaces(&mut b, &0, &[])?;
    assert_eq!(
        state.on_ns(&mut b, &0).get()?,
        Some((16, 4)),
        "no sources: no-op"
    );
    b.set_current_key(2)?;
    state.merge_namespaces(&mut b, &5, &[1])?;
    assert_eq!(
        state.on_ns(&mut b, &5).get()?,
        Some((99, 1)),
        "merge into an absent target"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Map state
// ---------------------------------------------------------------------------

/// Map `put` and `get`: per user key, overwriting, per key.
pub fn map_put_get<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, String>(backend)?;
    let state = b.map_state(&MapStateDescriptor::<String, i64>::new("m"))?;
    b.set_current_key("a".into())?;
    assert_eq!(state.on(&mut b).get(&"x".into())?, None, "absent user key");
    state.on(&mut b).put("x".into(), 1)?;
    state.on(&mut b).put("y".into(), 2)?;
    state.on(&mut b).put("x".into(), 3)?;
    assert_eq!(state.on(&mut b).get(&"x".into())?, Some(3), "overwritten");
    assert_eq!(state.on(&mut b).get(&"y".into())?, Some(2), "second entry");
    assert_eq!(state.on(&mut b).get(&"z".into())?, None, "never put");
    b.set_current_key("b".into())?;
    assert_eq!(
        state.on(&mut b).get(&"x".into())?,
        None,
        "other key's map is separate"
    );
    state.on(&mut b).put("x".into(), 10)?;
    b.set_current_key("a".into())?;
    assert_eq!(
        state.on(&mut b).get(&"x".into())?,
        Some(3),
        "first key untouched"
    );
    Ok(())
}

/// Map `contains`.
pub fn map_contains<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.map_state(&MapStateDescriptor::<u32, String>::new("m"))?;
    b.set_current_key(1)?;
    assert!(
        !state.on(&mut b).contains(&1)?,
        "empty map contains nothing"
    );
    state.on(&mut b).put(1, "one".into())?;
    assert!(state.on(&mut b).contains(&1)?, "contains a put key");
    assert!(!state.on(&mut b).contains(&2)?, "does not contain another");
    state.on(&mut b).remove(&1)?;
    assert!(!state.on(&mut b).contains(&1)?, "not after removal");
    b.set_current_key(2)?;
    state.on(&mut b).put(5, "five".into())?;
    b.set_current_key(1)?;
    assert!(
        !state.on(&mut b).contains(&5)?,
        "does not see another key's entries"
    );
    Ok(())
}

/// Map `remove` returns the removed value; the last removal drops the entry.
pub fn map_remove<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.map_state(&MapStateDescriptor::<u32, String>::new("m"))?;
    b.set_current_key(1)?;
    state.on(&mut b).put(1, "one".into())?;
    state.on(&mut b).put(2, "two".into())?;
    assert_eq!(
        state.on(&mut b).remove(&1)?,
        Some("one".to_string()),
        "remove returns the value"
    );
    assert_eq!(
        state.on(&mut b).remove(&1)?,
        None,
        "second remove finds none"
    );
    assert_eq!(state.on(&mut b).remove(&9)?, None, "absent user key");
    assert_eq!(
        state.on(&mut b).get(&2)?,
        Some("two".to_string()),
        "other entry kept"
    );
    assert_eq!(b.num_entries()?, 1, "map entry still there");
    state.on(&mut b).remove(&2)?;
    assert!(state.on(&mut b).is_empty()?, "empty after removing all");
    assert_eq!(b.num_entries()?, 0, "entry gone with its last user entry");
    assert!(
        b.keys(state.handle(), &VoidNamespace)?.is_empty(),
        "key no longer listed"
    );
    b.set_current_key(2)?;
    assert_eq!(
        state.on(&mut b).remove(&1)?,
        None,
        "remove on an absent map"
    );
    assert_eq!(
        b.num_entries()?,
        0,
        "removing from an absent map creates none"
    );
    Ok(())
}

/// Map `put_all` puts every entry, overwriting existing ones.
pub fn map_put_all<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.map_state(&MapStateDescriptor::<u32, i64>::new("m"))?;
    b.set_current_key(1)?;
    state.on(&mut b).put(1, -1)?;
    state.on(&mut b).put(9, -9)?;
    state
        .on(&mut b)
        .put_all((1..=5).map(|i| (i, i64::from(i) * 10)))?;
    let expected: Vec<(u32, i64)> = vec![(1, 10), (2, 20), (3, 30), (4, 40), (5, 50), (9, -9)];
    assert_eq!(
        sorted(state.on(&mut b).entries()?),
        expected,
        "put_all adds and overwrites"
    );
    state.on(&mut b).put_all(Vec::new())?;
    assert_eq!(
        sorted(state.on(&mut b).entries()?),
        expected,
        "put_all of nothing is a no-op"
    );
    Ok(())
}

/// Map `keys`: every user key once.
pub fn map_keys<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.map_state(&MapStateDescriptor::<String, i64>::new("m"))?;
    b.set_current_key(1)?;
    assert!(
        state.on(&mut b).keys()?.is_empty(),
        "no keys in an absent map"
    );
    for (i, k) in ["c", "a", "b", "a"].iter().enumerate() {
        state.on(&mut b).put(k.to_string(), i as i64)?;
    }
    assert_eq!(
        sorted(state.on(&mut b).keys()?),
        vec!["a".to_string(), "b".into(), "c".into()],
        "user keys, each once"
    );
    b.set_current_key(2)?;
    state.on(&mut b).put("z".into(), 0)?;
    assert_eq!(
        state.on(&mut b).keys()?,
        vec!["z".to_string()],
        "only this key's user keys"
    );
    Ok(())
}

/// Map `values`: every user value.
pub fn map_values<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.map_state(&MapStateDescriptor::<String, i64>::new("m"))?;
    b.set_current_key(1)?;
    assert!(
        state.on(&mut b).values()?.is_empty(),
        "no values in an absent map"
    );
    state.on(&mut b).put("a".into(), 1)?;
    state.on(&mut b).put("b".into(), 1)?;
    state.on(&mut b).put("c".into(), 3)?;
    state.on(&mut b).put("c".into(), 2)?;
    assert_eq!(
        sorted(state.on(&mut b).values()?),
        vec![1, 1, 2],
        "every value (duplicates kept, overwritten ones gone)"
    );
    Ok(())
}

/// Map `entries`: every (user key, user value) pair.
pub fn map_entries<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.map_state(&MapStateDescriptor::<u32, String>::new("m"))?;
    b.set_current_key(1)?;
    assert!(
        state.on(&mut b).entries()?.is_empty(),
        "no entries in an absent map"
    );
    let expected: Vec<(u32, String)> = (0..50).map(|i| (i, format!("v{i}"))).collect();
    for (k, v) in expected.iter().rev() {
        state.on(&mut b).put(*k, v.clone())?;
    }
    assert_eq!(sorted(state.on(&mut b).entries()?), expected, "every entry");
    b.set_current_key(2)?;
    state.on(&mut b).put(7, "other".into())?;
    assert_eq!(
        state.on(&mut b).entries()?,
        vec![(7, "other".to_string())],
        "entries of the current key only"
    );
    Ok(())
}

/// Map iteration with removal through `retain`.
pub fn map_retain<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.map_state(&MapStateDescriptor::<u32, u32>::new("m"))?;
    b.set_current_key(1)?;
    state.on(&mut b).put_all((0..20).map(|i| (i, i * i)))?;
    let mut seen = Vec::new();
    state.on(&mut b).retain(|k, v| {
        seen.push(*k);
        assert_eq!(*v, k * k, "retain sees the value of {k}");
        k % 3 == 0
    })?;
    assert_eq!(
        sorted(seen),
        (0..20).collect::<Vec<_>>(),
        "retain visits every entry once"
    );
    assert_eq!(
        sorted(state.on(&mut b).entries()?),
        (0..20)
            .filter(|k| k % 3 == 0)
            .map(|k| (k, k * k))
            .collect::<Vec<_>>(),
        "only kept entries remain"
    );
    state.on(&mut b).retain(|_, _| false)?;
    assert!(state.on(&mut b).is_empty()?, "removing all leaves it empty");
    assert_eq!(
        b.num_entries()?,
        0,
        "removing every entry drops the map entry"
    );
    Ok(())
}

/// Map iteration with removal: removing and changing entries while walking
/// `entries()`.
pub fn map_remove_while_iterating<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.map_state(&MapStateDescriptor::<u32, u32>::new("m"))?;
    b.set_current_key(1)?;
    state.on(&mut b).put_all((0..30).map(|i| (i, i)))?;
    let mut visited = 0;
    for (k, v) in state.on(&mut b).entries()? {
        visited += 1;
        if k % 2 == 0 {
            assert_eq!(state.on(&mut b).remove(&k)?, Some(v), "removing {k}");
        } else {
            state.on(&mut b).put(k, v + 100)?;
        }
        // Adding new keys while walking does not disturb the walk.
        if k == 5 {
            state.on(&mut b).put(1000, 0)?;
        }
    }
    assert_eq!(visited, 30, "every entry of the walk's copy visited");
    let mut expected: Vec<(u32, u32)> = (0..30)
        .filter(|k| k % 2 == 1)
        .map(|k| (k, k + 100))
        .collect();
    expected.push((1000, 0));
    assert_eq!(
        sorted(state.on(&mut b).entries()?),
        expected,
        "entries after removing while iterating"
    );
    Ok(())
}

/// Map `is_empty`.
pub fn map_is_empty<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.map_state(&MapStateDescriptor::<u32, u32>::new("m"))?;
    b.set_current_key(1)?;
    assert!(state.on(&mut b).is_empty()?, "absent map is empty");
    state.on(&mut b).put(1, 1)?;
    assert!(!state.on(&mut b).is_empty()?, "not empty after put");
    b.set_current_key(2)?;
    assert!(
        state.on(&mut b).is_empty()?,
        "another key's map is still empty"
    );
    b.set_current_key(1)?;
    state.on(&mut b).clear()?;
    assert!(state.on(&mut b).is_empty()?, "empty after clear");
    state.on(&mut b).put(2, 2)?;
    state.on(&mut b).remove(&2)?;
    assert!(
        state.on(&mut b).is_empty()?,
        "empty after removing the last entry"
    );
    Ok(())
}

/// An absent map reads as an empty map (Flink's default map): no entries, no
/// keys, no values, nothing contained, and no entry is created by reading.
pub fn map_default_empty<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.map_state(&MapStateDescriptor::<String, i64>::new("m"))?;
    b.set_current_key(1)?;
    assert!(state.on(&mut b).is_empty()?, "is_empty");
    assert!(state.on(&mut b).entries()?.is_empty(), "entries");
    assert!(state.on(&mut b).keys()?.is_empty(), "keys");
    assert!(state.on(&mut b).values()?.is_empty(), "values");
    assert_eq!(state.on(&mut b).get(&"a".into())?, None, "get");
    assert!(!state.on(&mut b).contains(&"a".into())?, "contains");
    state.on(&mut b).clear()?;
    state.on(&mut b).retain(|_, _| false)?;
    assert_eq!(
        b.num_entries()?,
        0,
        "reading an absent map creates no entry"
    );
    assert!(
        b.keys(state.handle(), &VoidNamespace)?.is_empty(),
        "reading an absent map lists no key"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------

/// States in different namespaces are independent (value, list and map).
pub fn namespaces_independent<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, String>(backend)?;
    let value =
        b.value_state(&ValueStateDescriptor::<String>::new("v").with_namespace(postcard::<u64>()))?;
    let list =
        b.list_state(&ListStateDescriptor::<i64>::new("l").with_namespace(postcard::<u64>()))?;
    let map =
        b.map_state(&MapStateDescriptor::<u32, u32>::new("m").with_namespace(postcard::<u64>()))?;
    b.set_current_key("k".into())?;
    for ns in [1_u64, 2] {
        value.on_ns(&mut b, &ns).update(Some(format!("ns{ns}")))?;
        list.on_ns(&mut b, &ns).add(ns as i64)?;
        map.on_ns(&mut b, &ns).put(ns as u32, ns as u32)?;
    }
    assert_eq!(
        value.on_ns(&mut b, &1).get()?,
        Some("ns1".to_string()),
        "value in ns 1"
    );
    assert_eq!(
        value.on_ns(&mut b, &2).get()?,
        Some("ns2".to_string()),
        "value in ns 2"
    );
    assert_eq!(value.on_ns(&mut b, &3).get()?, None, "value in unused ns 3");
    value.on_ns(&mut b, &1).clear()?;
    list.on_ns(&mut b, &1).clear()?;
    map.on_ns(&mut b, &1).clear()?;
    assert_eq!(
        value.on_ns(&mut b, &2).get()?,
        Some("ns2".to_string()),
        "clearing ns 1 keeps the value of ns 2"
    );
    assert_eq!(
        list.on_ns(&mut b, &2).get()?,
        Some(vec![2]),
        "clearing ns 1 keeps the list of ns 2"
    );
    assert_eq!(
        map.on_ns(&mut b, &2).entries()?,
        vec![(2, 2)],
        "clearing ns 1 keeps the map of ns 2"
    );
    assert!(map.on_ns(&mut b, &1).is_empty()?, "map of ns 1 cleared");
    assert_eq!(b.num_entries()?, 3, "one entry per state left (ns 2)");
    Ok(())
}

/// `keys(state, namespace)` lists exactly the keys with an entry in that
/// namespace.
pub fn namespaces_keys_listing<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state =
        b.value_state(&ValueStateDescriptor::<u64>::new("v").with_namespace(postcard::<u64>()))?;
    let mut expected: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for k in 0..60_u64 {
        b.set_current_key(k)?;
        for ns in 0..4_u64 {
            if (k + ns) % 3 != 0 {
                state.on_ns(&mut b, &ns).update(Some(k))?;
                expected.entry(ns).or_default().insert(k);
            }
        }
    }
    b.set_current_key(1)?;
    state.on_ns(&mut b, &1).clear()?;
    if let Some(keys) = expected.get_mut(&1) {
        keys.remove(&1);
    }
    for ns in 0..5_u64 {
        let listed = b.keys(state.handle(), &ns)?;
        let set: BTreeSet<u64> = listed.iter().copied().collect();
        assert_eq!(set.len(), listed.len(), "keys of ns {ns} listed once each");
        assert_eq!(
            set,
            expected.get(&ns).cloned().unwrap_or_default(),
            "keys of ns {ns}"
        );
    }
    Ok(())
}

/// `keys_and_namespaces(state)` lists every (key, namespace) pair with an entry.
pub fn namespaces_keys_and_namespaces<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, String>(backend)?;
    let state =
        b.list_state(&ListStateDescriptor::<u8>::new("l").with_namespace(postcard::<u64>()))?;
    let other =
        b.value_state(&ValueStateDescriptor::<u8>::new("v").with_namespace(postcard::<u64>()))?;
    let mut expected = Vec::new();
    for k in ["a", "b", "c"] {
        b.set_current_key(k.into())?;
        for ns in [10_u64, 20, 30] {
            if !(k == "b" && ns == 20) {
                state.on_ns(&mut b, &ns).add(1)?;
                expected.push((k.to_string(), ns));
            }
        }
        other.on_ns(&mut b, &99).update(Some(0))?;
    }
    b.set_current_key("c".into())?;
    state.on_ns(&mut b, &30).clear()?;
    expected.retain(|e| *e != ("c".to_string(), 30));
    assert_eq!(
        sorted(b.keys_and_namespaces(state.handle())?),
        sorted(expected),
        "pairs of the list state (not of the other state)"
    );
    assert_eq!(
        sorted(b.keys_and_namespaces(other.handle())?),
        vec![("a".to_string(), 99), ("b".into(), 99), ("c".into(), 99)],
        "pairs of the value state"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Whole backend
// ---------------------------------------------------------------------------

/// `num_entries` counts (key, namespace) entries over all states, and is 0
/// once everything is cleared.
pub fn backend_num_entries<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    assert_eq!(b.num_entries()?, 0, "fresh backend");
    let value =
        b.value_state(&ValueStateDescriptor::<u64>::new("v").with_namespace(postcard::<u64>()))?;
    let list = b.list_state(&ListStateDescriptor::<u64>::new("l"))?;
    let map = b.map_state(&MapStateDescriptor::<u32, u32>::new("m"))?;
    assert_eq!(b.num_entries()?, 0, "registering creates no entry");
    for k in 0..10_u64 {
        b.set_current_key(k)?;
        value.on_ns(&mut b, &0).update(Some(k))?;
        value.on_ns(&mut b, &1).update(Some(k))?;
        list.on(&mut b).add_all(vec![k, k])?;
        map.on(&mut b).put_all([(1, 1), (2, 2), (3, 3)])?;
    }
    assert_eq!(
        b.num_entries()?,
        40,
        "2 namespaces of value + 1 list + 1 map (not per user key) per key"
    );
    for k in 0..10_u64 {
        b.set_current_key(k)?;
        value.on_ns(&mut b, &0).clear()?;
        value.on_ns(&mut b, &1).update(None)?;
        if k % 2 == 0 {
            list.on(&mut b).clear()?;
        } else {
            list.on(&mut b).update(vec![])?;
        }
        map.on(&mut b).clear()?;
    }
    assert_eq!(b.num_entries()?, 0, "0 after clearing everything");
    Ok(())
}

/// `apply_to_all_keys` calls the function once per key with an entry, with
/// that key current.
pub fn backend_apply_to_all_keys<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.value_state(&ValueStateDescriptor::<u64>::new("v"))?;
    let written: BTreeSet<u64> = (0..100).map(|i| i * 7).collect();
    for k in &written {
        b.set_current_key(*k)?;
        state.on(&mut b).update(Some(k * 2))?;
    }
    let mut visited = Vec::new();
    apply_to_all_keys(&mut b, state.handle(), &VoidNamespace, |b, k| {
        assert_eq!(b.current_key(), Some(k), "the visited key is current");
        assert_eq!(state.on(b).get()?, Some(k * 2), "value of visited key {k}");
        visited.push(*k);
        Ok(())
    })?;
    assert_eq!(visited.len(), written.len(), "each key visited once");
    assert_eq!(
        visited.into_iter().collect::<BTreeSet<_>>(),
        written,
        "every written key visited"
    );
    // An error from the function stops the walk and is returned.
    let mut calls = 0;
    let r = apply_to_all_keys(&mut b, state.handle(), &VoidNamespace, |_, _| {
        calls += 1;
        Err(Error::user("stop"))
    });
    let e = expect_err(
        r,
        ErrorKind::User,
        "apply_to_all_keys with a failing function",
    );
    assert!(
        e.to_string().contains("stop"),
        "the function's error is returned: {e}"
    );
    assert_eq!(calls, 1, "the walk stops at the first error");
    Ok(())
}

/// `apply_to_all_keys` while the function modifies state: clearing the
/// iterated state, updating it, and writing another state.
pub fn backend_apply_to_all_keys_while_modifying<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let state = b.value_state(&ValueStateDescriptor::<u64>::new("v"))?;
    let list = b.list_state(&ListStateDescriptor::<u64>::new("l"))?;
    for k in 0..200_u64 {
        b.set_current_key(k)?;
        state.on(&mut b).update(Some(k))?;
        list.on(&mut b).add(k)?;
    }
    // Update every value and write another state for every key.
    let mut count = 0;
    apply_to_all_keys(&mut b, state.handle(), &VoidNamespace, |b, k| {
        state.on(b).update(Some(k + 1000))?;
        list.on(b).add(k + 1)?;
        count += 1;
        Ok(())
    })?;
    assert_eq!(count, 200, "each key visited once while updating");
    for k in 0..200_u64 {
        b.set_current_key(k)?;
        assert_eq!(
            state.on(&mut b).get()?,
            Some(k + 1000),
            "updated value of {k}"
        );
        assert_eq!(list.on(&mut b).get()?, Some(vec![k, k + 1]), "list of {k}");
    }
    // Clear the iterated state for every key.
    let mut count = 0;
    apply_to_all_keys(&mut b, state.handle(), &VoidNamespace, |b, _| {
        state.on(b).clear()?;
        count += 1;
        Ok(())
    })?;
    assert_eq!(count, 200, "each key visited once while clearing");
    assert!(
        b.keys(state.handle(), &VoidNamespace)?.is_empty(),
        "no key left after clearing each"
    );
    assert_eq!(b.num_entries()?, 200, "only the list entries remain");
    // Clearing the other state through the iteration too.
    apply_to_all_keys(&mut b, list.handle(), &VoidNamespace, |b, _| {
        list.on(b).clear()
    })?;
    assert_eq!(b.num_entries()?, 0, "0 after clearing both states");
    Ok(())
}

/// The keys listed for a state are exactly the keys written (each once),
/// across value, list and map state, after removals too.
pub fn backend_keys_match_written<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, String>(backend)?;
    let value = b.value_state(&ValueStateDescriptor::<u64>::new("v"))?;
    let list = b.list_state(&ListStateDescriptor::<u64>::new("l"))?;
    let map = b.map_state(&MapStateDescriptor::<u64, u64>::new("m"))?;
    let mut in_value = BTreeSet::new();
    let mut in_list = BTreeSet::new();
    let mut in_map = BTreeSet::new();
    for i in 0..300_u64 {
        let k = format!("key-{i}");
        b.set_current_key(k.clone())?;
        value.on(&mut b).update(Some(i))?;
        in_value.insert(k.clone());
        if i % 2 == 0 {
            list.on(&mut b).add(i)?;
            in_list.insert(k.clone());
        }
        if i % 3 == 0 {
            map.on(&mut b).put(i, i)?;
            in_map.insert(k);
        }
    }
    for i in (0..300_u64).step_by(5) {
        let k = format!("key-{i}");
        b.set_current_key(k.clone())?;
        value.on(&mut b).clear()?;
        in_value.remove(&k);
        list.on(&mut b).clear()?;
        in_list.remove(&k);
        map.on(&mut b).remove(&i)?;
        in_map.remove(&k);
    }
    let check = |listed: Vec<String>, expected: &BTreeSet<String>, what: &str| {
        let set: BTreeSet<String> = listed.iter().cloned().collect();
        assert_eq!(set.len(), listed.len(), "{what}: no key listed twice");
        assert_eq!(&set, expected, "{what}: keys listed equal keys written");
    };
    check(
        b.keys(value.handle(), &VoidNamespace)?,
        &in_value,
        "value state",
    );
    check(
        b.keys(list.handle(), &VoidNamespace)?,
        &in_list,
        "list state",
    );
    check(b.keys(map.handle(), &VoidNamespace)?, &in_map, "map state");
    Ok(())
}

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------

/// Registering the same descriptor again returns the same state (with its data).
pub fn register_same_name_again_returns_same_state<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let first = b.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    let l1 = b.list_state(&ListStateDescriptor::<i64>::new("l"))?;
    b.set_current_key(1)?;
    first.on(&mut b).update(Some(5))?;
    l1.on(&mut b).add(6)?;
    let second = b.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    let l2 = b.list_state(&ListStateDescriptor::<i64>::new("l"))?;
    assert_eq!(
        second.on(&mut b).get()?,
        Some(5),
        "re-registered value state sees the data"
    );
    assert_eq!(
        l2.on(&mut b).get()?,
        Some(vec![6]),
        "re-registered list state sees the data"
    );
    second.on(&mut b).update(Some(7))?;
    assert_eq!(
        first.on(&mut b).get()?,
        Some(7),
        "both handles name one state"
    );
    assert_eq!(
        b.state_metas().len(),
        2,
        "no state was added by re-registering"
    );
    Ok(())
}

/// Registering a name again as another kind fails with `IncompatibleState`,
/// and the registered state keeps working.
pub fn register_same_name_other_kind_fails<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let value = b.value_state(&ValueStateDescriptor::<i64>::new("s"))?;
    b.set_current_key(1)?;
    value.on(&mut b).update(Some(3))?;
    let kind = ErrorKind::IncompatibleState;
    expect_err(
        b.list_state(&ListStateDescriptor::<i64>::new("s")),
        kind,
        "value state re-registered as list state",
    );
    expect_err(
        b.reducing_state(&ReducingStateDescriptor::new("s", |a: &i64, b: &i64| a + b)),
        kind,
        "value state re-registered as reducing state",
    );
    expect_err(
        b.aggregating_state(&AggregatingStateDescriptor::new("s", MutableMean)),
        kind,
        "value state re-registered as aggregating state",
    );
    expect_err(
        b.map_state(&MapStateDescriptor::<i64, i64>::new("s")),
        kind,
        "value state re-registered as map state",
    );
    let list = b.list_state(&ListStateDescriptor::<i64>::new("l"))?;
    expect_err(
        b.value_state(&ValueStateDescriptor::<i64>::new("l")),
        kind,
        "list state re-registered as value state",
    );
    let map = b.map_state(&MapStateDescriptor::<i64, i64>::new("m"))?;
    expect_err(
        b.list_state(&ListStateDescriptor::<i64>::new("m")),
        kind,
        "map state re-registered as list state",
    );
    assert_eq!(
        value.on(&mut b).get()?,
        Some(3),
        "the registered state still works after failed registrations"
    );
    list.on(&mut b).add(1)?;
    map.on(&mut b).put(1, 1)?;
    assert_eq!(
        b.state_metas().len(),
        3,
        "failed registrations added no state"
    );
    Ok(())
}

/// Registering a name again with other value types (same kind, same codec
/// schema name) fails with `IncompatibleState`.
pub fn register_same_name_other_types_fails<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    b.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    expect_err(
        b.value_state(&ValueStateDescriptor::<String>::new("v")),
        ErrorKind::IncompatibleState,
        "value state of i64 re-registered with String values",
    );
    b.value_state(&ValueStateDescriptor::<i64>::new("n").with_namespace(postcard::<u64>()))?;
    expect_err(
        b.value_state(&ValueStateDescriptor::<i64>::new("n").with_namespace(postcard::<String>())),
        ErrorKind::IncompatibleState,
        "value state with u64 namespaces re-registered with String namespaces",
    );
    Ok(())
}

/// Registering a name again with an incompatible codec (value, element, user
/// value or namespace codec) fails with `IncompatibleState`.
pub fn register_same_name_incompatible_codec_fails<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let kind = ErrorKind::IncompatibleState;
    let value = b.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    b.set_current_key(1)?;
    value.on(&mut b).update(Some(1))?;
    expect_err(
        b.value_state(&ValueStateDescriptor::<i64>::with_codec(
            "v",
            Arc::new(PostcardCodec::<i64>::with_schema("x", 2)),
        )),
        kind,
        "value codec postcard@v1 then x@v2",
    );
    b.value_state(&ValueStateDescriptor::<i64>::with_codec(
        "w",
        Arc::new(PostcardCodec::<i64>::with_schema("x", 2)),
    ))?;
    expect_err(
        b.value_state(&ValueStateDescriptor::<i64>::new("w")),
        kind,
        "value codec x@v2 then postcard@v1",
    );
    b.list_state(&ListStateDescriptor::<i64>::new("l"))?;
    expect_err(
        b.list_state(&ListStateDescriptor::<i64>::with_codec(
            "l",
            Arc::new(PostcardCodec::<i64>::with_schema("x", 2)),
        )),
        kind,
        "list element codec",
    );
    b.map_state(&MapStateDescriptor::<u32, i64>::new("m"))?;
    expect_err(
        b.map_state(&MapStateDescriptor::<u32, i64>::with_codecs(
            "m",
            postcard::<u32>(),
            Arc::new(PostcardCodec::<i64>::with_schema("x", 2)),
        )),
        kind,
        "map user value codec",
    );
    expect_err(
        b.map_state(&MapStateDescriptor::<u32, i64>::with_codecs(
            "m",
            Arc::new(PostcardCodec::<u32>::with_schema("x", 2)),
            postcard::<i64>(),
        )),
        kind,
        "map user key codec",
    );
    b.value_state(&ValueStateDescriptor::<i64>::new("n").with_namespace(postcard::<u64>()))?;
    expect_err(
        b.value_state(
            &ValueStateDescriptor::<i64>::new("n")
                .with_namespace(Arc::new(PostcardCodec::<u64>::with_schema("x", 2))),
        ),
        kind,
        "namespace codec",
    );
    assert_eq!(
        value.on(&mut b).get()?,
        Some(1),
        "the registered state keeps its data"
    );
    Ok(())
}

/// Restoring with an incompatible key codec fails with a clear error naming
/// the key codec and both schemas.
pub fn restore_incompatible_key_codec_fails<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = keyed_with_codec::<S, u64>(backend, MAX_PARALLELISM, 1, 0, postcard::<u64>(), &[])?;
    let state = b.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    b.set_current_key(1)?;
    state.on(&mut b).update(Some(1))?;
    let handle = snapshot(backend, &mut b, 1)?.expect("state was written");
    let r = keyed_with_codec::<S, u64>(
        backend,
        MAX_PARALLELISM,
        1,
        0,
        Arc::new(PostcardCodec::<u64>::with_schema("other", 1)),
        std::slice::from_ref(&handle),
    );
    let e = expect_err(
        r,
        ErrorKind::IncompatibleState,
        "restore with key codec other@v1 of a snapshot written with the default codec",
    );
    assert!(
        matches!(&e, Error::IncompatibleCodec { role: "key", .. }),
        "the error names the key codec: {e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("other@v1") && msg.contains("postcard:u64#"),
        "the message names both schemas: {msg}"
    );
    // The same key type with a compatible codec still restores.
    let mut ok =
        keyed_with_codec::<S, u64>(backend, MAX_PARALLELISM, 1, 0, postcard::<u64>(), &[handle])?;
    let state = ok.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    ok.set_current_key(1)?;
    assert_eq!(
        state.on(&mut ok).get()?,
        Some(1),
        "compatible key codec restores"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Current key and handles (the contract common to every method)
// ---------------------------------------------------------------------------

/// State access before any key is set fails with `NoCurrentKey`
/// (`InvalidArgument`); key listing needs no current key.
pub fn backend_no_current_key_fails<S: StateBackend>(backend: &S) -> Result<()> {
    let mut b = single::<S, u64>(backend)?;
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("v"))?;
    let l = b.list_state(&ListStateDescriptor::<u64>::new("l"))?;
    let m = b.map_state(&MapStateDescriptor::<u32, u32>::new("m"))?;
    assert_eq!(b.current_key(), None, "no current key on a fresh backend");
    assert_eq!(b.current_key_group(), None, "no current key group either");
    let kind = ErrorKind::InvalidArgument;
    let e = expect_err(v.on(&mut b).get(), kind, "value get without a key");
    assert!(matches!(e, Error::NoCurrentKey), "NoCurrentKey: {e:?}");
    expect_err(
        v.on(&mut b).update(Some(1)),
        kind,
        "value update without a key",
    );
    expect_err(l.on(&mut b).add(1), kind, "list add without a key");
    expect_err(m.on(&mut b).put(1, 1), kind, "map put without a key");
    assert!(
        b.keys(v.handle(), &VoidNamespace)?.is_empty(),
        "keys() works without a current key"
    );
    assert_eq!(b.num_entries()?, 0, "failed writes stored nothing");
    Ok(())
}

/// A key of a key group the backend does not own is refused with
/// `KeyGroupOutOfRange` (`InvalidArgument`), and the previous key stays current.
pub fn backend_set_current_key_out_of_range_keeps_previous<S: StateBackend>(
    backend: &S,
) -> Result<()> {
    let parallelism = 4;
    let mut b = keyed::<S, u64>(backend, MAX_PARALLELISM, parallelism, 1, &[])?;
    let range = b.key_group_range();
    let own = (0..1000_u64)
        .find(|k| owner(k, MAX_PARALLELISM, parallelism).ok() == Some(1))
        .expect("some key of 1000 belongs to subtask 1 of 4");
    let foreign = (0..1000_u64)
        .find(|k| owner(k, MAX_PARALLELISM, parallelism).ok() == Some(2))
        .expect("some key of 1000 belongs to subtask 2 of 4");
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("v"))?;
    b.set_current_key(own)?;
    let group = b.current_key_group().expect("a key is set");
    assert!(
        range.contains(group),
        "current key group {group} in {range}"
    );
    v.on(&mut b).update(Some(own))?;
    let e = expect_err(
        b.set_current_key(foreign),
        ErrorKind::InvalidArgument,
        "a key of another subtask's key group",
    );
    assert!(
        matches!(e, Error::KeyGroupOutOfRange { .. }),
        "KeyGroupOutOfRange: {e:?}"
    );
    assert_eq!(
        b.current_key(),
        Some(&own),
        "the previous key stays current"
    );
    assert_eq!(b.current_key_group(), Some(group), "and its key group");
    assert_eq!(
        v.on(&mut b).get()?,
        Some(own),
        "reads still go to the previous key"
    );
    Ok(())
}

/// A handle of another backend instance is refused with `ForeignHandle`
/// (`InvalidArgument`), even when that backend has the same state.
pub fn backend_foreign_handle_fails<S: StateBackend>(backend: &S) -> Result<()> {
    let mut a = single::<S, u64>(backend)?;
    let mut b = single::<S, u64>(backend)?;
    let va = a.value_state(&ValueStateDescriptor::<u64>::new("v"))?;
    let vb = b.value_state(&ValueStateDescriptor::<u64>::new("v"))?;
    a.set_current_key(1)?;
    b.set_current_key(1)?;
    va.on(&mut a).update(Some(1))?;
    vb.on(&mut b).update(Some(2))?;
    let kind = ErrorKind::InvalidArgument;
    let e = expect_err(va.on(&mut b).get(), kind, "a's handle used on b");
    assert!(
        matches!(e, Error::ForeignHandle { .. }),
        "ForeignHandle: {e:?}"
    );
    expect_err(
        va.on(&mut b).update(Some(3)),
        kind,
        "a's handle written on b",
    );
    expect_err(
        b.keys(va.handle(), &VoidNamespace),
        kind,
        "a's handle listed on b",
    );
    assert_eq!(vb.on(&mut b).get()?, Some(2), "b's own value untouched");
    assert_eq!(va.on(&mut a).get()?, Some(1), "a's own value untouched");
    Ok(())
}
