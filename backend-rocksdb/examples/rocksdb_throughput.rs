//! ValueState update and get throughput on the RocksDB backend, next to the
//! same operations on raw rust-rocksdb with the same options (WAL off, lz4,
//! bloom filter, same block cache), in one run; then a full checkpoint and a
//! restore at 1 and 2 subtasks.
//!
//! `cargo run --release -p backend-rocksdb --example rocksdb_throughput [keys] [rounds]`

use std::hint::black_box;
use std::time::Instant;

use backend_rocksdb::RocksDbStateBackend;
use rocksdb::{Options, WriteOptions, DB};
use state_api::backend::KeyedBackendParams;
use state_api::checkpoint::{CheckpointConfig, OperatorState, SubtaskState};
use state_api::snapshot::rescale::assign_keyed_state;
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::ValueStateDescriptor;
use state_api::{codec, KeyedStateBackend, Result, StateBackend};

fn mops(n: i64, secs: f64) -> f64 {
    n as f64 / secs / 1e6
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<i64>());
    let keys = args.next().and_then(|r| r.ok()).unwrap_or(1_000_000);
    let rounds = args.next().and_then(|r| r.ok()).unwrap_or(3);
    let root = std::env::temp_dir().join(format!("rocksdb-throughput-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for round in 0..rounds {
        // Raw rust-rocksdb: the same key bytes our layout writes for the
        // default column family of one state, WAL off.
        let raw_dir = root.join(format!("raw-{round}"));
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_block_cache(&rocksdb::Cache::new_lru_cache(64 << 20));
        opts.set_block_based_table_factory(&table);
        let db = DB::open(&opts, &raw_dir).map_err(|e| state_api::Error::user(e.into_string()))?;
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        let mut key = Vec::new();
        let mut val = Vec::new();
        let raw_key = |k: i64, key: &mut Vec<u8>| {
            key.clear();
            key.push(0);
            let mut kb = Vec::new();
            codec::postcard::<i64>()
                .encode(&k, &mut kb)
                .map_err(state_api::Error::user)?;
            key.push(kb.len() as u8);
            key.extend_from_slice(&kb);
            key.push(0);
            Ok::<(), state_api::Error>(())
        };
        let t = Instant::now();
        for k in 0..keys {
            raw_key(k, &mut key)?;
            val.clear();
            codec::postcard::<i64>()
                .encode(&k, &mut val)
                .map_err(state_api::Error::user)?;
            db.put_opt(&key, &val, &wo)
                .map_err(|e| state_api::Error::user(e.into_string()))?;
        }
        let raw_put = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut sum = 0usize;
        for k in 0..keys {
            raw_key(k, &mut key)?;
            sum += db
                .get_pinned(&key)
                .map_err(|e| state_api::Error::user(e.into_string()))?
                .map_or(0, |v| v.len());
        }
        let raw_get = t.elapsed().as_secs_f64();
        black_box(sum);
        drop(db);

        // The backend.
        let backend = RocksDbStateBackend::new(
            &root.join(format!("work-{round}")),
            &root.join("checkpoints"),
            &format!("job{round}"),
        )?;
        let params = KeyedBackendParams::for_subtask(128, 1, 0, codec::postcard::<i64>())?;
        let mut b = backend.create_keyed_backend(params, &[])?;
        let v = b.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
        let t = Instant::now();
        for k in 0..keys {
            b.set_current_key(k)?;
            v.on(&mut b).update(Some(k))?;
        }
        let put = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut sum = 0i64;
        for k in 0..keys {
            b.set_current_key(k)?;
            sum = sum.wrapping_add(v.on(&mut b).get()?.unwrap_or(0));
        }
        let get = t.elapsed().as_secs_f64();
        black_box(sum);

        // A full checkpoint through the coordinator, then restores.
        let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
        let pending = coordinator.begin_checkpoint()?;
        let t = Instant::now();
        let task = b.snapshot(
            pending.id,
            pending.streams.clone(),
            SnapshotOptions::default(),
        )?;
        let sync = t.elapsed();
        let handle = task.run()?.expect("state");
        let done = coordinator.complete_checkpoint(
            pending.id,
            vec![OperatorState {
                operator_id: "v".into(),
                parallelism: 1,
                max_parallelism: 128,
                subtasks: vec![SubtaskState {
                    keyed: vec![handle.clone()],
                    ..Default::default()
                }],
            }],
        )?;
        let total = t.elapsed();
        let t = Instant::now();
        let mut r = backend.create_keyed_backend(
            KeyedBackendParams::for_subtask(128, 1, 0, codec::postcard::<i64>())?,
            std::slice::from_ref(&handle),
        )?;
        r.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
        let restore1 = t.elapsed();
        drop(r);
        let t = Instant::now();
        for (i, part) in assign_keyed_state(&[handle], 2, 128)?.iter().enumerate() {
            let mut r = backend.create_keyed_backend(
                KeyedBackendParams::for_subtask(128, 2, i as u32, codec::postcard::<i64>())?,
                part,
            )?;
            r.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
        }
        let restore2 = t.elapsed();
        println!(
            "round {round}: {keys} keys | update: backend {:.2} M/s, raw rocksdb {:.2} M/s ({:.2}x) | get: backend {:.2} M/s, raw {:.2} M/s ({:.2}x) | \
             full checkpoint: sync {:.1} us, total {:.1} ms, {} bytes | restore 1 subtask {:.0} ms, 1->2 subtasks {:.0} ms",
            mops(keys, put),
            mops(keys, raw_put),
            put / raw_put,
            mops(keys, get),
            mops(keys, raw_get),
            get / raw_get,
            sync.as_secs_f64() * 1e6,
            total.as_secs_f64() * 1e3,
            done.metadata.files().iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum::<u64>(),
            restore1.as_secs_f64() * 1e3,
            restore2.as_secs_f64() * 1e3,
        );
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
