//! A quick measurement of the heap backend's hot path and snapshot cost.
//! (The benchmark suite proper is `benches`; this is a smoke-level harness.)
//!
//! `cargo run --release -p backend-memory --example heap_throughput [keys] [snapshot_keys]`

use std::hint::black_box;
use std::time::Instant;

use backend_memory::MemoryStateBackend;
use state_api::backend::KeyedBackendParams;
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::ValueStateDescriptor;
use state_api::{codec, KeyedStateBackend, StateBackend};

fn main() -> state_api::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<i64>());
    let keys = args.next().and_then(Result::ok).unwrap_or(100_000);
    let snapshot_keys = args.next().and_then(Result::ok).unwrap_or(1_000_000);
    let backend = MemoryStateBackend::new().with_max_state_size(usize::MAX);
    let params = KeyedBackendParams::for_subtask(128, 1, 0, codec::postcard::<i64>())?;
    let mut b = backend.create_keyed_backend(params.clone(), &[])?;
    let v = b.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    for round in 0..3 {
        let t = Instant::now();
        for k in 0..keys {
            b.set_current_key(k)?;
            v.on(&mut b).update(Some(k + round))?;
        }
        let update = t.elapsed();
        let t = Instant::now();
        let mut sum = 0i64;
        for k in 0..keys {
            b.set_current_key(k)?;
            sum = sum.wrapping_add(v.on(&mut b).get()?.unwrap_or(0));
        }
        let get = t.elapsed();
        black_box(sum);
        println!(
            "round {round}: ValueState<i64> over {keys} i64 keys: update {:.2} M ops/s, get {:.2} M ops/s",
            keys as f64 / update.as_secs_f64() / 1e6,
            keys as f64 / get.as_secs_f64() / 1e6
        );
    }

    let mut big = backend.create_keyed_backend(params, &[])?;
    let v = big.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    for k in 0..snapshot_keys {
        big.set_current_key(k)?;
        v.on(&mut big).update(Some(k))?;
    }
    for round in 0..3 {
        let streams = backend.stream_factory(round)?;
        let t = Instant::now();
        let task = big.snapshot(round, streams, SnapshotOptions::default())?;
        let sync = t.elapsed();
        // Writes while the snapshot is pending copy only what they touch.
        let t = Instant::now();
        for k in 0..1_000 {
            big.set_current_key(k)?;
            v.on(&mut big).update(Some(-k))?;
        }
        let cow = t.elapsed();
        let t = Instant::now();
        let handle = task.run()?;
        let total = t.elapsed() + sync;
        let size = handle.as_ref().map(|h| h.total_size()).unwrap_or(0);
        let t = Instant::now();
        let params = KeyedBackendParams::for_subtask(128, 1, 0, codec::postcard::<i64>())?;
        let mut restored =
            backend.create_keyed_backend(params, &handle.into_iter().collect::<Vec<_>>())?;
        let opened = t.elapsed();
        let rv = restored.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
        let registered = t.elapsed();
        restored.set_current_key(5)?;
        black_box(rv.on(&mut restored).get()?);
        println!("round {round}: restore of {snapshot_keys} keys: open + check {:.1} ms, decode on registration {:.1} ms", opened.as_secs_f64() * 1e3, (registered - opened).as_secs_f64() * 1e3);
        println!(
            "round {round}: snapshot of {snapshot_keys} keys: synchronous part {:.1} us, async part {:.1} ms, {} bytes; 1000 writes during it {:.1} us",
            sync.as_secs_f64() * 1e6,
            (total - sync).as_secs_f64() * 1e3,
            size,
            cow.as_secs_f64() * 1e6
        );
    }
    Ok(())
}
