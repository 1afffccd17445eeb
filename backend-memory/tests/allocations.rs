//! The per-record state path allocates nothing once a key's entry exists:
//! setting the current key and reading or writing fixed-size values, map
//! entries and lists, on the heap backend with full and with incremental
//! checkpoints (the latter records changed entries). List appends allocate
//! only when the list's vector grows, as a plain `Vec` does.
//!
//! One test in its own binary: the allocation counter is process-wide, and
//! other tests running on other threads would count too.

use std::alloc::System;

use backend_memory::heap::{HeapKeyedStateBackend, HeapOptions, IncrementalOptions};
use state_api::backend::KeyedBackendParams;
use state_api::codec::postcard;
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::{
    ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor, ValueStateDescriptor,
};
use state_api::{KeyGroupRange, KeyedStateBackend, Result};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const KEYS: i64 = 10_000;
const OPS: i64 = 100_000;

fn backend(incremental: bool) -> Result<HeapKeyedStateBackend<i64>> {
    let params = KeyedBackendParams {
        max_parallelism: 128,
        key_group_range: KeyGroupRange::all(128),
        key_codec: postcard::<i64>(),
        clock: Default::default(),
        files: None,
    };
    let options = HeapOptions {
        incremental: incremental.then(IncrementalOptions::default),
    };
    HeapKeyedStateBackend::with_options(params, &[], options)
}

/// Allocations made by `f`.
fn allocations(f: impl FnOnce() -> Result<()>) -> Result<usize> {
    let region = Region::new(GLOBAL);
    f()?;
    Ok(region.change().allocations)
}

fn check(incremental: bool) -> Result<()> {
    let mode = if incremental { "incremental" } else { "full" };
    let mut b = backend(incremental)?;
    let value = b.value_state(&ValueStateDescriptor::<i64>::new("value"))?;
    let sum = b.reducing_state(&ReducingStateDescriptor::new("sum", |a: &i64, b: &i64| {
        a + b
    }))?;
    let list = b.list_state(&ListStateDescriptor::<i64>::new("list"))?;
    let map = b.map_state(&MapStateDescriptor::<i64, f64>::new("map"))?;
    let key = |j: i64| (j * 7_919) % KEYS;
    // Every entry exists (and, incremental, is already recorded as changed).
    for k in 0..KEYS {
        b.set_current_key(k)?;
        value.on(&mut b).update(Some(k))?;
        sum.on(&mut b).add(k)?;
        list.on(&mut b).add(k)?;
        for u in 0..10 {
            map.on(&mut b).put(u, k as f64)?;
        }
    }

    let n = allocations(|| {
        let mut total = 0i64;
        for j in 0..OPS {
            b.set_current_key(key(j))?;
            value.on(&mut b).update(Some(j))?;
            total += value.on(&mut b).get()?.unwrap_or(0);
            sum.on(&mut b).add(1)?;
            total += sum.on(&mut b).get()?.unwrap_or(0);
            map.on(&mut b).put(j % 10, j as f64)?;
            total += map.on(&mut b).get(&(j % 10))?.unwrap_or(0.0) as i64;
            total += list.on(&mut b).read(|xs| xs.len() as i64)?;
        }
        assert!(total > 0);
        Ok(())
    })?;
    assert_eq!(
        n, 0,
        "{mode}: {n} allocations in {OPS} rounds of value, reducing and map reads and writes"
    );

    // Appends: the list's vector grows by doubling, nothing else allocates.
    let appends = allocations(|| {
        for j in 0..OPS {
            b.set_current_key(key(j))?;
            list.on(&mut b).add(j)?;
        }
        Ok(())
    })?;
    // Each key gets OPS / KEYS = 10 more elements on top of one: its vector
    // grows from capacity 1 to 4, 8 and 16 (three reallocations).
    let growth = (KEYS * 3) as usize;
    assert!(
        appends <= growth,
        "{mode}: {appends} allocations for {OPS} appends, more than the {growth} reallocations of the vectors"
    );
    Ok(())
}

#[test]
fn the_per_record_path_allocates_nothing() -> Result<()> {
    check(false)?;
    check(true)
}
