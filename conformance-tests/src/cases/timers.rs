//! Key-grouped timers: order, deduplication, deletion, firing while
//! processing, snapshots with pending timers (full and incremental), and
//! rescaling 1 → 3 → 1 with every timer firing exactly once in total.

use std::collections::BTreeSet;

use state_api::codec::postcard;
use state_api::key_group::key_group_for_bytes;
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::state::ttl::StateClock;
use state_api::timers::{TimeDomain, TimerService};
use state_api::{KeyedStateBackend, Result, StateBackend};

use super::ttl::{keyed_on, savepoint};
use crate::harness::{snapshot, MAX_PARALLELISM};

fn service<B: KeyedStateBackend>(b: &mut B) -> Result<TimerService<u32>> {
    TimerService::new(b, "timers", postcard::<u32>())
}

/// Fires every event-time timer up to `watermark`; returns (timestamp, key,
/// namespace) in firing order, checking the current key at each.
fn fire<B: KeyedStateBackend<Key = u64>>(
    b: &mut B,
    timers: &TimerService<u32>,
    watermark: i64,
) -> Result<Vec<(i64, u64, u32)>> {
    let mut fired = Vec::new();
    timers.advance_watermark(b, watermark, |b, t| {
        assert_eq!(b.current_key(), Some(&t.key), "the timer's key is current");
        fired.push((t.timestamp, t.key, t.namespace));
        Ok(())
    })?;
    Ok(fired)
}

/// Timers fire in timestamp order (equal timestamps: smaller key group
/// first), once each, only when the watermark reaches them.
pub fn timers_fire_in_order<S: StateBackend>(backend: &S) -> Result<()> {
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let timers = service(&mut b)?;
    let plan = [(5, 30), (1, 10), (2, 30), (3, 20), (4, 10), (6, -5)];
    for (k, ts) in plan {
        b.set_current_key(k)?;
        assert!(timers.register_event_time_timer(&mut b, &(k as u32), ts)?);
        assert!(
            !timers.register_event_time_timer(&mut b, &(k as u32), ts)?,
            "a duplicate is not registered twice"
        );
    }
    assert_eq!(timers.next_timer(&mut b, TimeDomain::EventTime)?, Some(-5));
    assert_eq!(fire(&mut b, &timers, -6)?, vec![], "nothing due yet");
    let fired = fire(&mut b, &timers, 30)?;
    let stamps: Vec<i64> = fired.iter().map(|f| f.0).collect();
    assert_eq!(stamps, vec![-5, 10, 10, 20, 30, 30], "in timestamp order");
    for w in fired.windows(2) {
        if w[0].0 == w[1].0 {
            let g = |k: &u64| -> Result<u32> {
                let mut bytes = Vec::new();
                postcard::<u64>()
                    .encode(k, &mut bytes)
                    .map_err(state_api::Error::user)?;
                key_group_for_bytes(&bytes, MAX_PARALLELISM)
            };
            assert!(g(&w[0].1)? <= g(&w[1].1)?, "ties by key group: {w:?}");
        }
    }
    assert_eq!(fire(&mut b, &timers, 100)?, vec![], "each fired once");
    assert_eq!(timers.next_timer(&mut b, TimeDomain::EventTime)?, None);
    Ok(())
}

/// Deleted timers never fire; deleting an absent timer is false.
pub fn timers_delete<S: StateBackend>(backend: &S) -> Result<()> {
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let timers = service(&mut b)?;
    b.set_current_key(1)?;
    for ts in [10, 20, 30] {
        timers.register_event_time_timer(&mut b, &0, ts)?;
    }
    assert!(timers.delete_event_time_timer(&mut b, &0, 10)?, "the head");
    assert!(timers.delete_event_time_timer(&mut b, &0, 20)?);
    assert!(!timers.delete_event_time_timer(&mut b, &0, 20)?, "gone");
    assert!(
        !timers.delete_event_time_timer(&mut b, &1, 30)?,
        "other namespace"
    );
    b.set_current_key(2)?;
    assert!(
        !timers.delete_event_time_timer(&mut b, &0, 30)?,
        "other key"
    );
    assert_eq!(timers.next_timer(&mut b, TimeDomain::EventTime)?, Some(30));
    assert_eq!(fire(&mut b, &timers, 100)?, vec![(30, 1, 0)]);
    Ok(())
}

/// Event-time and processing-time timers are separate; a timer registered
/// while firing fires in the same call when it is due.
pub fn timers_domains_and_firing_while_processing<S: StateBackend>(backend: &S) -> Result<()> {
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let timers = service(&mut b)?;
    b.set_current_key(1)?;
    timers.register_event_time_timer(&mut b, &0, 10)?;
    timers.register_processing_time_timer(&mut b, &0, 10)?;
    assert_eq!(
        timers.advance_processing_time(&mut b, 10, |_, _| Ok(()))?,
        1,
        "only the processing-time timer"
    );
    let mut fired = Vec::new();
    let n = timers.advance_watermark(&mut b, 50, |b, t| {
        fired.push(t.timestamp);
        if t.timestamp == 10 {
            // Due now: fires in this call. Later: does not.
            timers.register_event_time_timer(b, &0, 40)?;
            timers.register_event_time_timer(b, &0, 60)?;
        }
        Ok(())
    })?;
    assert_eq!((n, fired), (2, vec![10, 40]));
    assert_eq!(clock.watermark(), 50, "the watermark reached the clock");
    assert_eq!(timers.next_timer(&mut b, TimeDomain::EventTime)?, Some(60));
    Ok(())
}

fn register_all<B: KeyedStateBackend<Key = u64>>(
    b: &mut B,
    timers: &TimerService<u32>,
    keys: std::ops::Range<u64>,
) -> Result<BTreeSet<(i64, u64, u32)>> {
    let mut all = BTreeSet::new();
    for k in keys {
        if b.set_current_key(k).is_err() {
            continue;
        }
        for (ns, ts) in [(0u32, 100 + (k as i64 % 7)), (1, 200 + k as i64)] {
            timers.register_event_time_timer(b, &ns, ts)?;
            all.insert((ts, k, ns));
        }
    }
    Ok(all)
}

fn fired_set<B: KeyedStateBackend<Key = u64>>(
    b: &mut B,
    timers: &TimerService<u32>,
) -> Result<BTreeSet<(i64, u64, u32)>> {
    let fired = fire(b, timers, i64::MAX)?;
    let set: BTreeSet<_> = fired.iter().copied().collect();
    assert_eq!(set.len(), fired.len(), "no timer fired twice");
    Ok(set)
}

/// Pending timers are in snapshots (checkpoints and savepoints); timers
/// registered after a snapshot are not in it; fired ones stay fired.
pub fn timers_snapshot_with_pending<S: StateBackend>(backend: &S) -> Result<()> {
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let timers = service(&mut b)?;
    let all = register_all(&mut b, &timers, 0..40)?;
    let first = snapshot(backend, &mut b, 1)?.expect("state");
    // Fire some, add some, then an (incremental, where the backend is)
    // checkpoint and a savepoint.
    let early: BTreeSet<_> = fire(&mut b, &timers, 103)?.into_iter().collect();
    b.set_current_key(1_000)?;
    timers.register_event_time_timer(&mut b, &9, 150)?;
    let second = snapshot(backend, &mut b, 2)?.expect("state");
    let saved = savepoint(backend, &mut b, 3)?;
    b.set_current_key(2_000)?;
    timers.register_event_time_timer(&mut b, &9, 160)?;

    let restore = |handle: KeyedStateHandle| -> Result<BTreeSet<(i64, u64, u32)>> {
        let mut r = keyed_on(backend, &StateClock::manual(0), 1, 0, &[handle])?;
        let t = service(&mut r)?;
        fired_set(&mut r, &t)
    };
    assert_eq!(restore(first)?, all, "every pending timer of checkpoint 1");
    let mut expected: BTreeSet<_> = all.difference(&early).copied().collect();
    expected.insert((150, 1_000, 9));
    assert_eq!(restore(second)?, expected, "checkpoint 2");
    assert_eq!(restore(saved)?, expected, "the savepoint");
    Ok(())
}

/// Rescaled 1 → 3, each subtask fires the timers of its key groups; every
/// timer fires exactly once in total. The same from 3 back to 1.
pub fn timers_rescale_1_to_3_and_3_to_1<S: StateBackend>(backend: &S) -> Result<()> {
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let timers = service(&mut b)?;
    let all = register_all(&mut b, &timers, 0..90)?;
    let one = snapshot(backend, &mut b, 1)?.expect("state");

    let mut fired = BTreeSet::new();
    let mut three = Vec::new();
    for i in 0..3 {
        let mut part = keyed_on(backend, &clock, 3, i, std::slice::from_ref(&one))?;
        let t = service(&mut part)?;
        three.push(snapshot(backend, &mut part, 2)?.expect("state"));
        let mine = fired_set(&mut part, &t)?;
        assert!(!mine.is_empty(), "subtask {i} owns timers");
        for f in mine {
            assert!(fired.insert(f), "{f:?} fired on two subtasks");
        }
    }
    assert_eq!(fired, all, "1 -> 3: every timer exactly once");

    let mut merged = keyed_on(backend, &clock, 1, 0, &three)?;
    let t = service(&mut merged)?;
    assert_eq!(fired_set(&mut merged, &t)?, all, "3 -> 1: every timer once");
    Ok(())
}
