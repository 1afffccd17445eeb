//! Many timers per key group on RocksDB, past what it reads ahead into
//! memory (64 per key group): registrations before and after the cached
//! ones, deletions inside and outside the cache, and firing in steps, all
//! compared with a sorted set.

use std::collections::BTreeSet;

use backend_rocksdb::RocksDbStateBackend;
use conformance_tests::cases::ttl::keyed_on;
use state_api::codec::postcard;
use state_api::state::ttl::StateClock;
use state_api::timers::TimerService;
use state_api::{Error, KeyedStateBackend, Result};

/// A small deterministic generator (SplitMix64).
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn many_timers_per_key_group_fire_like_a_sorted_set() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
    let backend =
        RocksDbStateBackend::new(&dir.path().join("work"), &dir.path().join("cp"), "job")?;
    let mut b = keyed_on(&backend, &StateClock::manual(0), 1, 0, &[])?;
    let timers = TimerService::new(&mut b, "t", postcard::<u32>())?;
    let mut model: BTreeSet<(i64, u64, u32)> = BTreeSet::new();
    let mut rng = 7u64;
    let mut watermark = 0i64;
    for step in 0..40_000u64 {
        let r = next(&mut rng);
        let key = next(&mut rng) % 20;
        let ts = watermark + (next(&mut rng) % 50_000) as i64;
        let ns = (r % 2) as u32;
        b.set_current_key(key)?;
        match r % 100 {
            0..=69 => {
                let fresh = timers.register_event_time_timer(&mut b, &ns, ts)?;
                assert_eq!(fresh, model.insert((ts, key, ns)), "step {step}");
            }
            70..=96 => {
                // Delete an existing timer half the time.
                let target = match model.iter().nth((r as usize / 10) % model.len().max(1)) {
                    Some(&t) if r.is_multiple_of(4) => t,
                    _ => (ts, key, ns),
                };
                b.set_current_key(target.1)?;
                let was = timers.delete_event_time_timer(&mut b, &target.2, target.0)?;
                assert_eq!(was, model.remove(&target), "step {step}");
            }
            _ => {
                watermark += (next(&mut rng) % 300) as i64;
                let mut fired = Vec::new();
                timers.advance_watermark(&mut b, watermark, |_, t| {
                    fired.push((t.timestamp, t.key, t.namespace));
                    Ok(())
                })?;
                let due: Vec<_> = model.iter().filter(|t| t.0 <= watermark).copied().collect();
                model.retain(|t| t.0 > watermark);
                let mut sorted = fired.clone();
                sorted.sort();
                assert!(
                    fired.windows(2).all(|w| w[0].0 <= w[1].0),
                    "step {step}: in order"
                );
                assert_eq!(sorted, due, "step {step}: fired at {watermark}");
            }
        }
    }
    assert!(
        model.len() > 20 * 64,
        "at most 20 key groups held more than 64 timers each on average: {}",
        model.len()
    );
    let mut rest = Vec::new();
    timers.advance_watermark(&mut b, i64::MAX, |_, t| {
        rest.push((t.timestamp, t.key, t.namespace));
        Ok(())
    })?;
    rest.sort();
    assert_eq!(rest, model.into_iter().collect::<Vec<_>>());
    Ok(())
}
