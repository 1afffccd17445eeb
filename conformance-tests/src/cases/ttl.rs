//! State time-to-live: expiry per state kind, update types, visibility,
//! processing and event time, cleanup that reclaims (snapshots, explicit
//! cleanup), and TTL switched on, off or changed on restore. Every case runs
//! on a manual [`StateClock`]: nothing sleeps.

use std::time::Duration;

use state_api::backend::KeyedBackendParams;
use state_api::codec::postcard;
use state_api::format::frame::Compression;
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, ValueStateDescriptor,
};
use state_api::state::ttl::{
    StateClock, StateTtlConfig, TtlCleanup, TtlTimeDomain, TtlUpdateType, TtlVisibility,
};
use state_api::{KeyedStateBackend, Result, StateBackend};

use crate::harness::MAX_PARALLELISM;

/// The TTL of most cases: 100 ms.
const TTL: u64 = 100;

/// A TTL of [`TTL`] ms that only the cases' own calls clean up (no
/// incremental cleanup, so what a case reads is what its calls did).
fn ttl() -> StateTtlConfig {
    StateTtlConfig::new(Duration::from_millis(TTL)).with_incremental_cleanup(0, false)
}

/// A keyed backend owning every key group, on `clock`, restored from `restore`.
pub fn keyed_on<S: StateBackend>(
    backend: &S,
    clock: &StateClock,
    parallelism: u32,
    index: u32,
    restore: &[KeyedStateHandle],
) -> Result<S::Keyed<u64>> {
    let params = KeyedBackendParams::for_subtask(MAX_PARALLELISM, parallelism, index, postcard())?
        .with_clock(clock.clone());
    backend.create_keyed_backend(params, restore)
}

fn at(clock: &StateClock, millis: i64) -> Result<()> {
    clock.advance_processing_time(millis)
}

/// A savepoint (a full file on every backend), run on the calling thread.
pub fn savepoint<S: StateBackend, B: KeyedStateBackend>(
    backend: &S,
    keyed: &mut B,
    id: u64,
) -> Result<KeyedStateHandle> {
    let handle = keyed
        .snapshot(
            id,
            backend.stream_factory(id)?,
            SnapshotOptions::savepoint(Compression::None),
        )?
        .run()?;
    Ok(handle.expect("the backend holds state"))
}

/// A value expires `ttl` after its last write: visible one millisecond
/// before, gone (and removed from the backend) at the instant.
pub fn ttl_value_expires<S: StateBackend>(backend: &S) -> Result<()> {
    let clock = StateClock::manual(1_000);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(ttl()))?;
    b.set_current_key(1)?;
    v.on(&mut b).set(7)?;
    at(&clock, 1_099)?;
    assert_eq!(v.on(&mut b).get()?, Some(7), "alive before the TTL passed");
    b.set_current_key(2)?;
    v.on(&mut b).set(8)?;
    at(&clock, 1_100)?;
    b.set_current_key(1)?;
    assert_eq!(v.on(&mut b).get()?, None, "expired at write time + TTL");
    assert_eq!(b.num_entries()?, 1, "the expired value was removed on read");
    b.set_current_key(2)?;
    assert_eq!(v.on(&mut b).get()?, Some(8), "a later write lives on");
    // A write refreshes the timestamp.
    v.on(&mut b).set(9)?;
    at(&clock, 1_199)?;
    assert_eq!(v.on(&mut b).get()?, Some(9));
    // modify sees an expired value as absent.
    at(&clock, 1_300)?;
    v.on(&mut b).modify(|old| {
        assert_eq!(old, None, "modify does not see the expired value");
        Some(1)
    })?;
    assert_eq!(v.on(&mut b).get()?, Some(1));
    Ok(())
}

/// With OnReadAndWrite a read extends the life of a value; with the default
/// OnCreateAndWrite it does not.
pub fn ttl_update_on_read<S: StateBackend>(backend: &S) -> Result<()> {
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let on_read = b.value_state(
        &ValueStateDescriptor::<u64>::new("read")
            .with_ttl(ttl().with_update_type(TtlUpdateType::OnReadAndWrite)),
    )?;
    let on_write = b.value_state(&ValueStateDescriptor::<u64>::new("write").with_ttl(ttl()))?;
    let list = b.list_state(
        &ListStateDescriptor::<u64>::new("list")
            .with_ttl(ttl().with_update_type(TtlUpdateType::OnReadAndWrite)),
    )?;
    let map = b.map_state(
        &MapStateDescriptor::<u32, u64>::new("map")
            .with_ttl(ttl().with_update_type(TtlUpdateType::OnReadAndWrite)),
    )?;
    b.set_current_key(1)?;
    on_read.on(&mut b).set(1)?;
    on_write.on(&mut b).set(2)?;
    list.on(&mut b).add(3)?;
    map.on(&mut b).put(4, 5)?;
    for t in [60, 120, 180] {
        at(&clock, t)?;
        assert_eq!(on_read.on(&mut b).get()?, Some(1), "read at {t} refreshes");
        assert_eq!(list.on(&mut b).get()?, Some(vec![3]), "list read at {t}");
        assert_eq!(map.on(&mut b).get(&4)?, Some(5), "map read at {t}");
    }
    assert_eq!(
        on_write.on(&mut b).get()?,
        None,
        "reads do not refresh OnCreateAndWrite"
    );
    at(&clock, 280)?;
    assert_eq!(
        on_read.on(&mut b).get()?,
        None,
        "100 ms after the last read"
    );
    assert_eq!(list.on(&mut b).get()?, None);
    assert_eq!(map.on(&mut b).entries()?, vec![]);
    Ok(())
}

/// ReturnExpiredIfNotCleanedUp returns an expired value still stored (once:
/// the read removes it); NeverReturnExpired never does.
pub fn ttl_return_expired_if_not_cleaned_up<S: StateBackend>(backend: &S) -> Result<()> {
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let returning = ttl().with_visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp);
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(returning.clone()))?;
    let l = b.list_state(&ListStateDescriptor::<u64>::new("l").with_ttl(returning.clone()))?;
    let m = b.map_state(&MapStateDescriptor::<u32, u64>::new("m").with_ttl(returning))?;
    let never = b.value_state(&ValueStateDescriptor::<u64>::new("never").with_ttl(ttl()))?;
    b.set_current_key(1)?;
    v.on(&mut b).set(1)?;
    l.on(&mut b).add_all(vec![2, 3])?;
    m.on(&mut b).put(4, 5)?;
    never.on(&mut b).set(6)?;
    at(&clock, 500)?;
    assert_eq!(v.on(&mut b).get()?, Some(1), "expired but not cleaned up");
    assert_eq!(v.on(&mut b).get()?, None, "the first read cleaned it up");
    assert_eq!(l.on(&mut b).get()?, Some(vec![2, 3]));
    assert_eq!(l.on(&mut b).get()?, None);
    assert_eq!(m.on(&mut b).get(&4)?, Some(5));
    assert_eq!(m.on(&mut b).get(&4)?, None);
    assert_eq!(never.on(&mut b).get()?, None, "never returned");
    Ok(())
}

/// Event-time TTL measures age against the watermark only.
pub fn ttl_event_time<S: StateBackend>(backend: &S) -> Result<()> {
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let v = b.value_state(
        &ValueStateDescriptor::<u64>::new("v")
            .with_ttl(ttl().with_time_domain(TtlTimeDomain::EventTime)),
    )?;
    clock.advance_watermark(10_000);
    b.set_current_key(1)?;
    v.on(&mut b).set(1)?;
    at(&clock, 1_000_000)?;
    assert_eq!(
        v.on(&mut b).get()?,
        Some(1),
        "processing time does not age it"
    );
    clock.advance_watermark(10_099);
    assert_eq!(v.on(&mut b).get()?, Some(1));
    clock.advance_watermark(10_100);
    assert_eq!(v.on(&mut b).get()?, None, "watermark reached write + TTL");
    assert_eq!(b.cleanup_expired()?, 0, "already removed on read");
    Ok(())
}

/// Lists expire per element, maps per entry.
pub fn ttl_list_and_map_expire_per_element<S: StateBackend>(backend: &S) -> Result<()> {
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let l = b.list_state(&ListStateDescriptor::<u64>::new("l").with_ttl(ttl()))?;
    let m = b.map_state(&MapStateDescriptor::<u32, String>::new("m").with_ttl(ttl()))?;
    b.set_current_key(1)?;
    l.on(&mut b).add(1)?;
    l.on(&mut b).add_all(vec![2, 3])?;
    m.on(&mut b).put(1, "one".into())?;
    at(&clock, 50)?;
    l.on(&mut b).add(4)?;
    m.on(&mut b).put(2, "two".into())?;
    at(&clock, 100)?;
    assert_eq!(l.on(&mut b).get()?, Some(vec![4]), "older elements expired");
    assert!(!m.on(&mut b).contains(&1)?);
    assert_eq!(m.on(&mut b).get(&2)?, Some("two".to_string()));
    assert_eq!(m.on(&mut b).keys()?, vec![2]);
    assert!(!m.on(&mut b).is_empty()?);
    // update() stamps every element now.
    l.on(&mut b).update(vec![7, 8])?;
    at(&clock, 149)?;
    assert_eq!(l.on(&mut b).get()?, Some(vec![7, 8]));
    at(&clock, 150)?;
    assert!(m.on(&mut b).is_empty()?, "the last entry expired");
    assert_eq!(m.on(&mut b).remove(&2)?, None);
    at(&clock, 250)?;
    assert_eq!(l.on(&mut b).get()?, None);
    assert_eq!(b.num_entries()?, 0, "reads removed every expired entry");
    Ok(())
}

/// Reducing and aggregating state start afresh after their value expired.
pub fn ttl_reducing_and_aggregating_restart<S: StateBackend>(backend: &S) -> Result<()> {
    struct Count;
    impl AggregateFunction<u64, u64, u64> for Count {
        fn create_accumulator(&self) -> u64 {
            0
        }
        fn add(&self, _: &u64, acc: &mut u64) {
            *acc += 1;
        }
        fn get_result(&self, acc: &u64) -> u64 {
            *acc
        }
        fn merge(&self, acc: &mut u64, other: u64) {
            *acc += other;
        }
    }
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let sum = b.reducing_state(
        &ReducingStateDescriptor::new("sum", |a: &u64, b: &u64| a + b).with_ttl(ttl()),
    )?;
    let count =
        b.aggregating_state(&AggregatingStateDescriptor::new("count", Count).with_ttl(ttl()))?;
    b.set_current_key(1)?;
    for v in [1, 2, 3] {
        sum.on(&mut b).add(v)?;
        count.on(&mut b).add(v)?;
    }
    at(&clock, 90)?;
    sum.on(&mut b).add(4)?;
    count.on(&mut b).add(4)?;
    at(&clock, 189)?;
    assert_eq!(sum.on(&mut b).get()?, Some(10), "each add refreshed it");
    assert_eq!(count.on(&mut b).get()?, Some(4));
    at(&clock, 190)?;
    sum.on(&mut b).add(5)?;
    count.on(&mut b).add(5)?;
    assert_eq!(sum.on(&mut b).get()?, Some(5), "restarted after expiry");
    assert_eq!(count.on(&mut b).get()?, Some(1));
    Ok(())
}

/// Writes `n` keys into a value, a list (two elements) and a map (two
/// entries) with TTL at time 0, and `n` more keys at time 500.
fn write_two_generations<B: KeyedStateBackend<Key = u64>>(
    b: &mut B,
    clock: &StateClock,
    n: u64,
    config: &StateTtlConfig,
) -> Result<()> {
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(config.clone()))?;
    let l = b.list_state(&ListStateDescriptor::<u64>::new("l").with_ttl(config.clone()))?;
    let m = b.map_state(&MapStateDescriptor::<u32, u64>::new("m").with_ttl(config.clone()))?;
    for (start, t) in [(0, 0), (n, 500)] {
        at(clock, t)?;
        for k in start..start + n {
            b.set_current_key(k)?;
            v.on(b).set(k)?;
            l.on(b).add_all(vec![k, k + 1])?;
            m.on(b).put(1, k)?;
            m.on(b).put(2, k)?;
        }
    }
    Ok(())
}

/// A full snapshot or savepoint leaves expired entries out, so a restore
/// (even with TTL off) holds only the live ones; cleanup that the state's
/// TTL turns off keeps them.
pub fn ttl_full_snapshot_drops_expired<S: StateBackend>(backend: &S) -> Result<()> {
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let config = StateTtlConfig::new(Duration::from_millis(300)).with_incremental_cleanup(0, false);
    write_two_generations(&mut b, &clock, 50, &config)?;
    // The first generation expired at 300; the second lives until 800.
    at(&clock, 600)?;
    let handle = savepoint(backend, &mut b, 1)?;
    let later = StateClock::manual(0);
    let mut r = keyed_on(backend, &later, 1, 0, std::slice::from_ref(&handle))?;
    assert_eq!(
        r.num_entries()?,
        150,
        "50 live keys in three states, the expired 50 left out"
    );
    // Restored at other parallelisms, the key groups still hold only them.
    let mut total = 0;
    for i in 0..3 {
        let mut part = keyed_on(backend, &later, 3, i, std::slice::from_ref(&handle))?;
        total += part.num_entries()?;
        part.close();
    }
    assert_eq!(total, 150);
    let v = r.value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(config.clone()))?;
    let l = r.list_state(&ListStateDescriptor::<u64>::new("l").with_ttl(config.clone()))?;
    for k in 50..100 {
        r.set_current_key(k)?;
        assert_eq!(v.on(&mut r).get()?, Some(k));
        assert_eq!(l.on(&mut r).get()?, Some(vec![k, k + 1]));
    }

    // With full-snapshot cleanup off, expired entries are kept.
    let keep = config.with_cleanup(TtlCleanup {
        full_snapshot: false,
        incremental: None,
        compaction_filter: true,
    });
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    write_two_generations(&mut b, &clock, 50, &keep)?;
    at(&clock, 600)?;
    let handle = savepoint(backend, &mut b, 2)?;
    let r = keyed_on(backend, &StateClock::manual(0), 1, 0, &[handle])?;
    assert_eq!(r.num_entries()?, 300, "nothing left out");
    Ok(())
}

/// `cleanup_expired` removes every expired entry, element and map entry
/// (and counts them), whatever the cleanup strategies.
pub fn ttl_cleanup_expired_removes_all<S: StateBackend>(backend: &S) -> Result<()> {
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let config = StateTtlConfig::new(Duration::from_millis(300)).with_cleanup(TtlCleanup {
        full_snapshot: false,
        incremental: None,
        compaction_filter: false,
    });
    // A list with one element from each generation: trimmed, not removed.
    let l = b.list_state(&ListStateDescriptor::<u64>::new("l").with_ttl(config.clone()))?;
    b.set_current_key(1_000)?;
    l.on(&mut b).add(1)?;
    write_two_generations(&mut b, &clock, 40, &config)?;
    b.set_current_key(1_000)?;
    l.on(&mut b).add(2)?;
    assert_eq!(b.num_entries()?, 241);
    at(&clock, 600)?;
    assert_eq!(
        b.cleanup_expired()?,
        40 + 80 + 80 + 1,
        "40 values, 80 + 1 list elements, 80 map entries"
    );
    assert_eq!(b.num_entries()?, 121);
    assert_eq!(b.cleanup_expired()?, 0, "nothing left to remove");
    b.set_current_key(45)?;
    assert_eq!(l.on(&mut b).get()?, Some(vec![45, 46]));
    b.set_current_key(1_000)?;
    assert_eq!(l.on(&mut b).get()?, Some(vec![2]), "the list was trimmed");
    at(&clock, 800)?;
    assert_eq!(b.cleanup_expired()?, 40 + 80 + 80 + 1);
    assert_eq!(b.num_entries()?, 0);
    Ok(())
}

/// TTL switched on for restored state: the old entries count as written at
/// restore time.
pub fn ttl_enabled_on_restore<S: StateBackend>(backend: &S) -> Result<()> {
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("v"))?;
    let l = b.list_state(&ListStateDescriptor::<u64>::new("l"))?;
    let m = b.map_state(&MapStateDescriptor::<u32, u64>::new("m"))?;
    for k in 0..20 {
        b.set_current_key(k)?;
        v.on(&mut b).set(k)?;
        l.on(&mut b).add_all(vec![k, k])?;
        m.on(&mut b).put(1, k)?;
    }
    let handle = savepoint(backend, &mut b, 1)?;
    let clock = StateClock::manual(5_000);
    let mut r = keyed_on(backend, &clock, 1, 0, &[handle])?;
    let v = r.value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(ttl()))?;
    let l = r.list_state(&ListStateDescriptor::<u64>::new("l").with_ttl(ttl()))?;
    let m = r.map_state(&MapStateDescriptor::<u32, u64>::new("m").with_ttl(ttl()))?;
    at(&clock, 5_099)?;
    for k in 0..20 {
        r.set_current_key(k)?;
        assert_eq!(v.on(&mut r).get()?, Some(k), "key {k} restored");
        assert_eq!(l.on(&mut r).get()?, Some(vec![k, k]));
        assert_eq!(m.on(&mut r).get(&1)?, Some(k));
    }
    at(&clock, 5_100)?;
    assert_eq!(
        r.cleanup_expired()?,
        20 + 40 + 20,
        "stamped at restore time"
    );
    assert_eq!(r.num_entries()?, 0);
    Ok(())
}

/// TTL switched off for restored state: the timestamps are dropped and the
/// values never expire; a changed duration applies to the stored timestamps.
pub fn ttl_disabled_or_changed_on_restore<S: StateBackend>(backend: &S) -> Result<()> {
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let long = StateTtlConfig::new(Duration::from_millis(1_000)).with_incremental_cleanup(0, false);
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(long.clone()))?;
    let l = b.list_state(&ListStateDescriptor::<u64>::new("l").with_ttl(long.clone()))?;
    let m = b.map_state(&MapStateDescriptor::<u32, u64>::new("m").with_ttl(long))?;
    for k in 0..10 {
        b.set_current_key(k)?;
        v.on(&mut b).set(k)?;
        l.on(&mut b).add(k)?;
        m.on(&mut b).put(1, k)?;
    }
    let handle = savepoint(backend, &mut b, 1)?;

    // Off: plain values, forever.
    let clock = StateClock::manual(0);
    let mut r = keyed_on(backend, &clock, 1, 0, std::slice::from_ref(&handle))?;
    let v = r.value_state(&ValueStateDescriptor::<u64>::new("v"))?;
    let l = r.list_state(&ListStateDescriptor::<u64>::new("l"))?;
    let m = r.map_state(&MapStateDescriptor::<u32, u64>::new("m"))?;
    at(&clock, i64::MAX / 2)?;
    for k in 0..10 {
        r.set_current_key(k)?;
        assert_eq!(v.on(&mut r).get()?, Some(k));
        assert_eq!(l.on(&mut r).get()?, Some(vec![k]));
        assert_eq!(m.on(&mut r).get(&1)?, Some(k));
    }
    // Its savepoint has no TTL and restores as plain state.
    let plain = savepoint(backend, &mut r, 2)?;
    let mut again = keyed_on(backend, &clock, 1, 0, &[plain])?;
    let v2 = again.value_state(&ValueStateDescriptor::<u64>::new("v"))?;
    again.set_current_key(3)?;
    assert_eq!(v2.on(&mut again).get()?, Some(3));

    // Shorter: the entries written at 0 are expired at 150 under 100 ms.
    let clock = StateClock::manual(150);
    let mut r = keyed_on(backend, &clock, 1, 0, std::slice::from_ref(&handle))?;
    let v = r.value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(ttl()))?;
    r.set_current_key(1)?;
    assert_eq!(v.on(&mut r).get()?, None, "the new, shorter TTL applies");
    // Longer: alive at 1,500 under 2 s.
    let clock = StateClock::manual(1_500);
    let mut r = keyed_on(backend, &clock, 1, 0, &[handle])?;
    let v = r.value_state(
        &ValueStateDescriptor::<u64>::new("v")
            .with_ttl(StateTtlConfig::new(Duration::from_secs(2))),
    )?;
    r.set_current_key(1)?;
    assert_eq!(v.on(&mut r).get()?, Some(1), "the new, longer TTL applies");
    Ok(())
}

/// Timestamps survive checkpoints (full or incremental) and restore at
/// another parallelism: restored entries expire when they would have.
pub fn ttl_timestamps_survive_checkpoints<S: StateBackend>(backend: &S) -> Result<()> {
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(ttl()))?;
    for k in 0..30 {
        b.set_current_key(k)?;
        v.on(&mut b).set(k)?;
    }
    let first = crate::harness::snapshot(backend, &mut b, 1)?.expect("state");
    at(&clock, 50)?;
    for k in 30..60 {
        b.set_current_key(k)?;
        v.on(&mut b).set(k)?;
    }
    let second = crate::harness::snapshot(backend, &mut b, 2)?.expect("state");
    drop(first);
    let clock = StateClock::manual(120);
    let mut seen = 0;
    for i in 0..2 {
        let mut r = keyed_on(backend, &clock, 2, i, std::slice::from_ref(&second))?;
        let v = r.value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(ttl()))?;
        for k in 0..60 {
            if r.set_current_key(k).is_err() {
                continue;
            }
            let expected = (k >= 30).then_some(k);
            assert_eq!(v.on(&mut r).get()?, expected, "key {k} at 120");
            seen += 1;
        }
    }
    assert_eq!(seen, 60, "every key has one owner");
    Ok(())
}

/// Entries and bytes of TTL state before and after a cleanup
/// ([`reclamation`]).
#[derive(Clone, Copy, Debug)]
pub struct Reclaimed {
    /// (key, namespace) entries before the cleanup.
    pub entries_before: usize,
    /// And after.
    pub entries_after: usize,
    /// Bytes (as the caller measures them) before the cleanup.
    pub bytes_before: u64,
    /// And after.
    pub bytes_after: u64,
}

impl Reclaimed {
    /// Asserts both dropped by at least 99%.
    pub fn assert_reclaimed(&self, what: &str) {
        assert!(
            self.entries_after * 100 <= self.entries_before,
            "{what}: entries {} -> {}",
            self.entries_before,
            self.entries_after
        );
        assert!(
            self.bytes_after * 100 <= self.bytes_before,
            "{what}: bytes {} -> {}",
            self.bytes_before,
            self.bytes_after
        );
    }
}

impl std::fmt::Display for Reclaimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "entries {} -> {}, bytes {} -> {}",
            self.entries_before, self.entries_after, self.bytes_before, self.bytes_after
        )
    }
}

/// Bytes of a checkpoint of `keyed` (0 when it holds nothing).
pub fn checkpoint_bytes<S: StateBackend, B: KeyedStateBackend>(
    backend: &S,
    keyed: &mut B,
    id: u64,
) -> Result<u64> {
    Ok(crate::harness::snapshot(backend, keyed, id)?.map_or(0, |h| h.state_size()))
}

/// Writes `n` keys into a value (100 bytes), a list (two elements) and a
/// map (two entries), all with a TTL of 1 s and `config`'s cleanup, lets
/// every entry expire, runs `cleanup`, and measures entries and `bytes`
/// (called with a checkpoint id) before and after.
pub fn reclamation<S: StateBackend>(
    backend: &S,
    n: u64,
    cleanup: TtlCleanup,
    run_cleanup: impl FnOnce(&mut S::Keyed<u64>, &ReclaimStates) -> Result<()>,
    bytes: impl Fn(&mut S::Keyed<u64>, u64) -> Result<u64>,
) -> Result<Reclaimed> {
    let clock = StateClock::manual(0);
    let mut b = keyed_on(backend, &clock, 1, 0, &[])?;
    let config = StateTtlConfig::new(Duration::from_secs(1)).with_cleanup(cleanup);
    let states = ReclaimStates {
        value: b.value_state(&ValueStateDescriptor::<String>::new("v").with_ttl(config.clone()))?,
        list: b.list_state(&ListStateDescriptor::<u64>::new("l").with_ttl(config.clone()))?,
        map: b.map_state(&MapStateDescriptor::<u32, u64>::new("m").with_ttl(config))?,
    };
    let payload = "x".repeat(100);
    for k in 0..n {
        b.set_current_key(k)?;
        states.value.on(&mut b).set(payload.clone())?;
        states.list.on(&mut b).add_all(vec![k, k])?;
        states.map.on(&mut b).put(1, k)?;
        states.map.on(&mut b).put(2, k)?;
    }
    let entries_before = b.num_entries()?;
    let bytes_before = bytes(&mut b, 1)?;
    at(&clock, 10_000)?;
    run_cleanup(&mut b, &states)?;
    Ok(Reclaimed {
        entries_before,
        entries_after: b.num_entries()?,
        bytes_before,
        bytes_after: bytes(&mut b, 2)?,
    })
}

/// The states [`reclamation`] writes, for cleanups that access them.
pub struct ReclaimStates {
    /// A value of 100 bytes per key.
    pub value: state_api::state::access::ValueState<String>,
    /// Two elements per key.
    pub list: state_api::state::access::ListState<u64>,
    /// Two entries per key.
    pub map: state_api::state::access::MapState<u32, u64>,
}
