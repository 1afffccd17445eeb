//! What the RocksDB options gain: ValueState updates, gets of present keys
//! and gets of absent keys on the backend, for memtable sizes, bloom filters
//! and block-cache sizes, side by side in one run (keys in a fixed random
//! order).
//!
//! `cargo run --release -p backend-rocksdb --example rocksdb_tuning [keys]`

use std::hint::black_box;
use std::time::Instant;

use backend_rocksdb::{RocksDbStateBackend, RocksOptions};
use state_api::backend::KeyedBackendParams;
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::ValueStateDescriptor;
use state_api::{codec, KeyedStateBackend, Result, StateBackend};

/// The `i`-th key visited: a fixed permutation of `0..keys`.
fn order(i: i64, keys: i64) -> i64 {
    (i as i128 * 2_654_435_761 % keys as i128) as i64
}

fn main() -> Result<()> {
    let keys: i64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let root = std::env::temp_dir().join(format!("rocksdb-tuning-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let default = RocksOptions::default();
    let configs = [
        ("defaults", default.clone()),
        (
            "no bloom filter",
            RocksOptions {
                bloom_bits_per_key: 0.0,
                ..default.clone()
            },
        ),
        (
            "memtable bloom filter",
            RocksOptions {
                memtable_bloom_ratio: 0.1,
                ..default.clone()
            },
        ),
        (
            "8 MiB memtable",
            RocksOptions {
                write_buffer_bytes: 8 << 20,
                ..default.clone()
            },
        ),
        (
            "8 MiB memtable, no bloom",
            RocksOptions {
                write_buffer_bytes: 8 << 20,
                bloom_bits_per_key: 0.0,
                ..default.clone()
            },
        ),
        (
            "8 MiB memtable, 4 MiB cache",
            RocksOptions {
                write_buffer_bytes: 8 << 20,
                block_cache_bytes: 4 << 20,
                ..default.clone()
            },
        ),
    ];
    for (i, (name, options)) in configs.into_iter().enumerate() {
        let backend = RocksDbStateBackend::new(
            &root.join(format!("work-{i}")),
            &root.join("checkpoints"),
            &format!("job{i}"),
        )?
        .with_options(options);
        let params = KeyedBackendParams::for_subtask(128, 1, 0, codec::postcard::<i64>())?;
        let mut b = backend.create_keyed_backend(params, &[])?;
        let v = b.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
        let t = Instant::now();
        for k in (0..keys).map(|i| order(i, keys)) {
            b.set_current_key(k)?;
            v.on(&mut b).update(Some(k))?;
        }
        let put = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut sum = 0i64;
        for k in (0..keys).map(|i| order(i, keys)) {
            b.set_current_key(k)?;
            sum = sum.wrapping_add(v.on(&mut b).get()?.unwrap_or(0));
        }
        let get = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for k in (0..keys).map(|i| keys + order(i, keys)) {
            b.set_current_key(k)?;
            sum = sum.wrapping_add(v.on(&mut b).get()?.unwrap_or(0));
        }
        let absent = t.elapsed().as_secs_f64();
        black_box(sum);
        let m = |secs: f64| keys as f64 / secs / 1e6;
        println!(
            "{name:>28}: update {:.2} M/s | get present {:.2} M/s | get absent {:.2} M/s",
            m(put),
            m(get),
            m(absent)
        );
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
