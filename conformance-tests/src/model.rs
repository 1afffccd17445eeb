//! Model-based property tests against a `BTreeMap` reference model.
//!
//! A generated sequence of [`Op`]s runs against a job of several subtask
//! backends (each key routed to the subtask that owns its key group) and
//! against a plain `BTreeMap` model. Lifecycle operations are part of the
//! alphabet: `Snapshot` stores the handles with a clone of the model,
//! `Restore` goes back to any stored snapshot at another parallelism (spread
//! over several subtasks), `Reopen` snapshots and restores in place. Every
//! read is compared with the model, and so is the whole content after each
//! lifecycle step.
//!
//! A backend crate runs it with [`model_test!`](crate::model_test).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::state::access::{KeyedStateBackendExt, ListState, MapState, TypedState, ValueState};
use state_api::state::descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use state_api::timers::TimerService;
use state_api::{codec, KeyedStateBackend, Result, StateBackend};

use crate::harness::{keyed, owner, rescale_keyed, snapshot};

/// Max parallelism of the modelled job.
pub const MODEL_MAX_PARALLELISM: u32 = 64;

type Key = u16;
type Ns = u8;

/// One step of the model test.
#[derive(Clone, Debug)]
pub enum Op {
    /// Value state: set or clear (`None`).
    ValueSet(Key, Ns, Option<i64>),
    /// Value state: read and compare.
    ValueGet(Key, Ns),
    /// List state: append.
    ListAdd(Key, Ns, Vec<u8>),
    /// List state: replace (empty clears).
    ListUpdate(Key, Ns, Vec<u8>),
    /// List state: read and compare.
    ListGet(Key, Ns),
    /// Map state: put.
    MapPut(Key, Ns, u8, u16),
    /// Map state: remove.
    MapRemove(Key, Ns, u8),
    /// Map state: read one entry and the whole map, and compare.
    MapGet(Key, Ns, u8),
    /// Timers: register an event-time timer.
    TimerRegister(Key, Ns, i64),
    /// Timers: delete one.
    TimerDelete(Key, Ns, i64),
    /// Timers: advance the watermark of every subtask and compare what fires.
    AdvanceWatermark(i64),
    /// Snapshot every subtask; remember the handles and the model.
    Snapshot,
    /// Restore the `n`-th stored snapshot (modulo their count) at a parallelism.
    Restore(usize, u32),
    /// Snapshot and restore at the same parallelism.
    Reopen,
}

/// The strategy for operation sequences.
pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    let key = 0u16..48;
    let ns = 0u8..3;
    let op = prop_oneof![
        4 => (key.clone(), ns.clone(), proptest::option::weighted(0.8, any::<i64>())).prop_map(|(k, n, v)| Op::ValueSet(k, n, v)),
        2 => (key.clone(), ns.clone()).prop_map(|(k, n)| Op::ValueGet(k, n)),
        3 => (key.clone(), ns.clone(), proptest::collection::vec(any::<u8>(), 0..4)).prop_map(|(k, n, e)| Op::ListAdd(k, n, e)),
        1 => (key.clone(), ns.clone(), proptest::collection::vec(any::<u8>(), 0..3)).prop_map(|(k, n, e)| Op::ListUpdate(k, n, e)),
        2 => (key.clone(), ns.clone()).prop_map(|(k, n)| Op::ListGet(k, n)),
        3 => (key.clone(), ns.clone(), 0u8..8, any::<u16>()).prop_map(|(k, n, u, v)| Op::MapPut(k, n, u, v)),
        1 => (key.clone(), ns.clone(), 0u8..8).prop_map(|(k, n, u)| Op::MapRemove(k, n, u)),
        2 => (key.clone(), ns.clone(), 0u8..8).prop_map(|(k, n, u)| Op::MapGet(k, n, u)),
        2 => (key.clone(), ns.clone(), 0i64..60).prop_map(|(k, n, t)| Op::TimerRegister(k, n, t)),
        1 => (key, ns, 0i64..60).prop_map(|(k, n, t)| Op::TimerDelete(k, n, t)),
        1 => (0i64..70).prop_map(Op::AdvanceWatermark),
        1 => Just(Op::Snapshot),
        1 => (any::<usize>(), 1u32..6).prop_map(|(i, p)| Op::Restore(i, p)),
        1 => Just(Op::Reopen),
    ];
    proptest::collection::vec(op, 1..120)
}

/// The reference model: plain ordered maps.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    values: BTreeMap<(Key, Ns), i64>,
    lists: BTreeMap<(Key, Ns), Vec<u8>>,
    maps: BTreeMap<(Key, Ns), BTreeMap<u8, u16>>,
    /// Pending timers: (timestamp, key, namespace).
    timers: BTreeSet<(i64, Key, Ns)>,
}

impl Model {
    /// The model without its timers, which reads do not list: they are
    /// compared by firing them.
    fn stored(&self) -> Model {
        Model {
            timers: BTreeSet::new(),
            ..self.clone()
        }
    }
}

struct States {
    value: ValueState<i64, Ns>,
    list: ListState<u8, Ns>,
    map: MapState<u8, u16, Ns>,
    timers: TimerService<Ns>,
}

fn register<B: KeyedStateBackend>(b: &mut B) -> Result<States> {
    Ok(States {
        value: b.value_state(
            &ValueStateDescriptor::<i64>::new("value").with_namespace(codec::postcard::<Ns>()),
        )?,
        list: b.list_state(
            &ListStateDescriptor::<u8>::new("list").with_namespace(codec::postcard::<Ns>()),
        )?,
        map: b.map_state(
            &MapStateDescriptor::<u8, u16>::new("map").with_namespace(codec::postcard::<Ns>()),
        )?,
        timers: TimerService::new(b, "timers", codec::postcard::<Ns>())?,
    })
}

struct Job<B> {
    subtasks: Vec<(B, States)>,
}

impl<B: KeyedStateBackend<Key = Key>> Job<B> {
    fn parallelism(&self) -> u32 {
        self.subtasks.len() as u32
    }

    fn at(&mut self, key: Key) -> Result<&mut (B, States)> {
        let i = owner(&key, MODEL_MAX_PARALLELISM, self.parallelism())?;
        let sub = &mut self.subtasks[i as usize];
        sub.0.set_current_key(key)?;
        Ok(sub)
    }

    /// Fires every timer at or before `watermark` on every subtask; returns
    /// them, checking each subtask fires in timestamp order and only timers
    /// of keys it owns.
    fn fire(&mut self, watermark: i64) -> Result<BTreeSet<(i64, Key, Ns)>> {
        let p = self.parallelism();
        let mut all = BTreeSet::new();
        for (i, (b, s)) in self.subtasks.iter_mut().enumerate() {
            let mut fired = Vec::new();
            s.timers.advance_watermark(b, watermark, |_, t| {
                fired.push((t.timestamp, t.key, t.namespace));
                Ok(())
            })?;
            for w in fired.windows(2) {
                assert!(w[0].0 <= w[1].0, "subtask {i} fired out of order: {w:?}");
            }
            for f in fired {
                assert_eq!(owner(&f.1, MODEL_MAX_PARALLELISM, p)?, i as u32);
                assert!(all.insert(f), "{f:?} fired twice");
            }
        }
        Ok(all)
    }

    /// Reads every entry of every state from every subtask into a model,
    /// checking that each key lives only on its owner.
    fn contents(&mut self) -> Result<Model> {
        let mut m = Model::default();
        let p = self.parallelism();
        for (i, (b, s)) in self.subtasks.iter_mut().enumerate() {
            let mut pairs = BTreeSet::new();
            for (k, n) in b.keys_and_namespaces(s.value.state_handle())? {
                pairs.insert((k, n, 0));
            }
            for (k, n) in b.keys_and_namespaces(s.list.state_handle())? {
                pairs.insert((k, n, 1));
            }
            for (k, n) in b.keys_and_namespaces(s.map.state_handle())? {
                pairs.insert((k, n, 2));
            }
            for (k, n, which) in pairs {
                assert_eq!(
                    owner(&k, MODEL_MAX_PARALLELISM, p)?,
                    i as u32,
                    "key {k} found on subtask {i}, which does not own it"
                );
                b.set_current_key(k)?;
                match which {
                    0 => {
                        let v = s.value.on_ns(b, &n).get()?;
                        let v = v.unwrap_or_else(|| panic!("listed value ({k}, {n}) has no value"));
                        assert!(
                            m.values.insert((k, n), v).is_none(),
                            "({k}, {n}) listed twice"
                        );
                    }
                    1 => {
                        let l = s.list.on_ns(b, &n).get()?;
                        let l = l.unwrap_or_else(|| panic!("listed list ({k}, {n}) is empty"));
                        assert!(
                            m.lists.insert((k, n), l).is_none(),
                            "({k}, {n}) listed twice"
                        );
                    }
                    _ => {
                        let e: BTreeMap<u8, u16> =
                            s.map.on_ns(b, &n).entries()?.into_iter().collect();
                        assert!(!e.is_empty(), "listed map ({k}, {n}) is empty");
                        assert!(
                            m.maps.insert((k, n), e).is_none(),
                            "({k}, {n}) listed twice"
                        );
                    }
                }
            }
        }
        Ok(m)
    }
}

/// Runs `ops` against `backend` and the model; panics on a divergence.
pub fn check<S: StateBackend>(backend: &S, ops: &[Op]) -> Result<()> {
    let open = |restore: &[Vec<KeyedStateHandle>]| -> Result<Job<S::Keyed<Key>>> {
        let p = restore.len() as u32;
        let mut subtasks = Vec::new();
        for (i, r) in restore.iter().enumerate() {
            let mut b = keyed::<S, Key>(backend, MODEL_MAX_PARALLELISM, p, i as u32, r)?;
            let s = register(&mut b)?;
            subtasks.push((b, s));
        }
        Ok(Job { subtasks })
    };
    let mut job = open(&[vec![], vec![]])?;
    let mut model = Model::default();
    let mut saved: Vec<(Vec<KeyedStateHandle>, Model)> = Vec::new();
    let mut checkpoint = 0u64;
    let mut take = |job: &mut Job<S::Keyed<Key>>| -> Result<Vec<KeyedStateHandle>> {
        checkpoint += 1;
        let mut handles = Vec::new();
        for (b, _) in job.subtasks.iter_mut() {
            handles.extend(snapshot(backend, b, checkpoint)?);
        }
        Ok(handles)
    };
    for op in ops {
        match op {
            Op::ValueSet(k, n, v) => {
                let (b, s) = job.at(*k)?;
                s.value.on_ns(b, n).update(*v)?;
                match v {
                    Some(v) => model.values.insert((*k, *n), *v),
                    None => model.values.remove(&(*k, *n)),
                };
            }
            Op::ValueGet(k, n) => {
                let (b, s) = job.at(*k)?;
                assert_eq!(
                    s.value.on_ns(b, n).get()?,
                    model.values.get(&(*k, *n)).copied(),
                    "value ({k}, {n})"
                );
            }
            Op::ListAdd(k, n, e) => {
                let (b, s) = job.at(*k)?;
                s.list.on_ns(b, n).add_all(e.clone())?;
                if !e.is_empty() {
                    model.lists.entry((*k, *n)).or_default().extend(e);
                }
            }
            Op::ListUpdate(k, n, e) => {
                let (b, s) = job.at(*k)?;
                s.list.on_ns(b, n).update(e.clone())?;
                if e.is_empty() {
                    model.lists.remove(&(*k, *n));
                } else {
                    model.lists.insert((*k, *n), e.clone());
                }
            }
            Op::ListGet(k, n) => {
                let (b, s) = job.at(*k)?;
                assert_eq!(
                    s.list.on_ns(b, n).get()?,
                    model.lists.get(&(*k, *n)).cloned(),
                    "list ({k}, {n})"
                );
            }
            Op::MapPut(k, n, u, v) => {
                let (b, s) = job.at(*k)?;
                s.map.on_ns(b, n).put(*u, *v)?;
                model.maps.entry((*k, *n)).or_default().insert(*u, *v);
            }
            Op::MapRemove(k, n, u) => {
                let (b, s) = job.at(*k)?;
                let removed = s.map.on_ns(b, n).remove(u)?;
                let expected = model.maps.get_mut(&(*k, *n)).and_then(|m| m.remove(u));
                model.maps.retain(|_, m| !m.is_empty());
                assert_eq!(removed, expected, "removed map entry ({k}, {n}, {u})");
            }
            Op::MapGet(k, n, u) => {
                let (b, s) = job.at(*k)?;
                let expected = model.maps.get(&(*k, *n));
                assert_eq!(
                    s.map.on_ns(b, n).get(u)?,
                    expected.and_then(|m| m.get(u)).copied(),
                    "map ({k}, {n}, {u})"
                );
                let all: BTreeMap<u8, u16> = s.map.on_ns(b, n).entries()?.into_iter().collect();
                assert_eq!(
                    all,
                    expected.cloned().unwrap_or_default(),
                    "map entries ({k}, {n})"
                );
                assert_eq!(
                    s.map.on_ns(b, n).is_empty()?,
                    expected.is_none(),
                    "map is_empty ({k}, {n})"
                );
            }
            Op::TimerRegister(k, n, t) => {
                let (b, s) = job.at(*k)?;
                let fresh = s.timers.register_event_time_timer(b, n, *t)?;
                assert_eq!(
                    fresh,
                    model.timers.insert((*t, *k, *n)),
                    "timer ({k}, {n}, {t})"
                );
            }
            Op::TimerDelete(k, n, t) => {
                let (b, s) = job.at(*k)?;
                let was = s.timers.delete_event_time_timer(b, n, *t)?;
                assert_eq!(
                    was,
                    model.timers.remove(&(*t, *k, *n)),
                    "timer ({k}, {n}, {t})"
                );
            }
            Op::AdvanceWatermark(w) => {
                let due: BTreeSet<_> = model.timers.iter().filter(|t| t.0 <= *w).copied().collect();
                model.timers.retain(|t| t.0 > *w);
                assert_eq!(job.fire(*w)?, due, "timers fired at watermark {w}");
            }
            Op::Snapshot => {
                let handles = take(&mut job)?;
                saved.push((handles, model.clone()));
            }
            Op::Restore(i, p) => {
                if saved.is_empty() {
                    continue;
                }
                let (handles, m) = saved[i % saved.len()].clone();
                for (b, _) in job.subtasks.iter_mut() {
                    b.close();
                }
                let restored =
                    rescale_keyed::<S, Key>(backend, &handles, MODEL_MAX_PARALLELISM, *p)?;
                let mut subtasks = Vec::new();
                for mut b in restored {
                    let s = register(&mut b)?;
                    subtasks.push((b, s));
                }
                job = Job { subtasks };
                model = m;
                assert_eq!(
                    job.contents()?,
                    model.stored(),
                    "contents after restoring at parallelism {p}"
                );
            }
            Op::Reopen => {
                let handles = take(&mut job)?;
                let p = job.parallelism();
                let assigned = state_api::snapshot::rescale::assign_keyed_state(
                    &handles,
                    MODEL_MAX_PARALLELISM,
                    p,
                )?;
                job = open(&assigned)?;
                assert_eq!(job.contents()?, model.stored(), "contents after reopening");
            }
        }
    }
    let pending = std::mem::take(&mut model.timers);
    assert_eq!(job.contents()?, model, "final contents");
    assert_eq!(
        job.fire(i64::MAX)?,
        pending,
        "every pending timer fires once"
    );
    Ok(())
}

/// Expands into a proptest running [`check`] on the backend built by `$backend`.
#[macro_export]
macro_rules! model_test {
    ($backend:expr) => {
        $crate::model_test!($backend, 48);
    };
    ($backend:expr, $cases:expr) => {
        ::proptest::proptest! {
            #![proptest_config(::proptest::prelude::ProptestConfig::with_cases($cases))]
            #[test]
            fn model_based(ops in $crate::model::ops()) {
                let backend = $backend;
                if let Err(e) = $crate::model::check(&backend, &ops) {
                    panic!("backend error: {e} ({e:?})");
                }
            }
        }
    };
}
