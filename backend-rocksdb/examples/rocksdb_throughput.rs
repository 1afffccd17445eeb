//! ValueState update and get throughput on the RocksDB backend, next to the
//! same operations on raw rust-rocksdb with the same options (WAL off, lz4,
//! bloom filter, same block cache), in one run. Then, with incremental and
//! with full checkpoints: a first checkpoint, a second one after 1% of the
//! keys changed (its new bytes), and restores at 1 subtask, 1 → 2 and 2 → 1.
//!
//! `cargo run --release -p backend-rocksdb --example rocksdb_throughput [keys] [rounds] [sequential|random]`

use std::hint::black_box;
use std::time::Instant;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use backend_rocksdb::{RocksDbStateBackend, RocksKeyedStateBackend, RocksOptions};
use rocksdb::{Options, WriteOptions, DB};
use state_api::backend::KeyedBackendParams;
use state_api::checkpoint::{CheckpointConfig, OperatorState, SubtaskState};
use state_api::checkpoint::{CheckpointCoordinator, CompletedCheckpoint};
use state_api::key_group::key_group_for_bytes;
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::snapshot::rescale::assign_keyed_state;
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::ValueStateDescriptor;
use state_api::{codec, KeyedStateBackend, Result, StateBackend};

/// The `i`-th key visited: `i` itself, or a fixed permutation of `0..keys`.
fn order(i: i64, keys: i64, random: bool) -> i64 {
    // A prime, so coprime with any smaller count: i -> i * STEP mod keys is
    // a permutation that jumps around the whole range.
    const STEP: i128 = 2_654_435_761;
    if random && keys > 0 {
        (i as i128 * STEP % keys as i128) as i64
    } else {
        i
    }
}

fn mops(n: i64, secs: f64) -> f64 {
    n as f64 / secs / 1e6
}

/// Puts then gets `keys` i64 keys on raw rust-rocksdb with the backend's
/// options (WAL off, lz4, bloom filter, 64 MiB block cache), keyed by the
/// postcard bytes of the key: alone (what a plain RocksDB user writes) or,
/// with `key_groups`, in the backend's exact layout (key-group prefix,
/// lengths, empty namespace). Returns the seconds of each phase.
fn raw(dir: &Path, keys: i64, key_groups: bool, random: bool) -> Result<(f64, f64)> {
    let err = |e: rocksdb::Error| state_api::Error::user(e.into_string());
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_block_cache(&rocksdb::Cache::new_lru_cache(64 << 20));
    opts.set_block_based_table_factory(&table);
    let db = DB::open(&opts, dir).map_err(err)?;
    let mut wo = WriteOptions::default();
    wo.disable_wal(true);
    let codec = codec::postcard::<i64>();
    let mut key = Vec::new();
    let mut val = Vec::new();
    let mut kb = Vec::new();
    let mut raw_key = |k: i64, key: &mut Vec<u8>| -> Result<()> {
        kb.clear();
        codec.encode(&k, &mut kb).map_err(state_api::Error::user)?;
        key.clear();
        if key_groups {
            key.push(key_group_for_bytes(&kb, 128)? as u8);
            key.push(kb.len() as u8);
            key.extend_from_slice(&kb);
            key.push(0);
        } else {
            key.extend_from_slice(&kb);
        }
        Ok(())
    };
    let t = Instant::now();
    for k in (0..keys).map(|i| order(i, keys, random)) {
        raw_key(k, &mut key)?;
        val.clear();
        codec.encode(&k, &mut val).map_err(state_api::Error::user)?;
        db.put_opt(&key, &val, &wo).map_err(err)?;
    }
    let put = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut sum = 0usize;
    for k in (0..keys).map(|i| order(i, keys, random)) {
        raw_key(k, &mut key)?;
        sum += db.get_pinned(&key).map_err(err)?.map_or(0, |v| v.len());
    }
    let get = t.elapsed().as_secs_f64();
    black_box(sum);
    Ok((put, get))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<i64>());
    let keys = args.next().and_then(|r| r.ok()).unwrap_or(1_000_000);
    let rounds = args.next().and_then(|r| r.ok()).unwrap_or(3);
    // "random": visit the keys in a fixed pseudo-random permutation instead
    // of 0, 1, 2, ... (which favours keys without a key-group prefix).
    let random = std::env::args().nth(3).is_some_and(|a| a == "random");
    let root = std::env::temp_dir().join(format!("rocksdb-throughput-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for round in 0..rounds {
        let (raw_put, raw_get) = raw(&root.join(format!("raw-{round}")), keys, false, random)?;
        let (kg_put, kg_get) = raw(&root.join(format!("raw-kg-{round}")), keys, true, random)?;

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
        for k in (0..keys).map(|i| order(i, keys, random)) {
            b.set_current_key(k)?;
            v.on(&mut b).update(Some(k))?;
        }
        let put = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut sum = 0i64;
        for k in (0..keys).map(|i| order(i, keys, random)) {
            b.set_current_key(k)?;
            sum = sum.wrapping_add(v.on(&mut b).get()?.unwrap_or(0));
        }
        let get = t.elapsed().as_secs_f64();
        black_box(sum);

        println!(
            "round {round}: {keys} keys | update: backend {:.2} M/s; raw rocksdb {:.2} M/s ({:.2}x), with our key bytes {:.2} M/s ({:.2}x) | get: backend {:.2} M/s; raw {:.2} M/s ({:.2}x), with our key bytes {:.2} M/s ({:.2}x)",
            mops(keys, put),
            mops(keys, raw_put),
            put / raw_put,
            mops(keys, kg_put),
            put / kg_put,
            mops(keys, get),
            mops(keys, raw_get),
            get / raw_get,
            mops(keys, kg_get),
            get / kg_get,
        );
        drop(b);
        for incremental in [true, false] {
            checkpoints(&root, round, keys, incremental)?;
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

type Keyed = RocksKeyedStateBackend<i64>;

fn open(
    backend: &RocksDbStateBackend,
    p: u32,
    i: u32,
    restore: &[KeyedStateHandle],
) -> Result<Keyed> {
    let mut r = backend.create_keyed_backend(
        KeyedBackendParams::for_subtask(128, p, i, codec::postcard::<i64>())?,
        restore,
    )?;
    r.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    Ok(r)
}

/// Checkpoints `subtasks` through the coordinator: the synchronous parts'
/// total, the time until the metadata is durable, and the checkpoint.
fn checkpoint(
    coordinator: &mut CheckpointCoordinator,
    subtasks: &mut [Keyed],
) -> Result<(Duration, Duration, CompletedCheckpoint)> {
    let pending = coordinator.begin_checkpoint()?;
    let start = Instant::now();
    let mut sync = Duration::ZERO;
    let mut tasks = Vec::new();
    for s in subtasks.iter_mut() {
        let t = Instant::now();
        tasks.push(s.snapshot(
            pending.id,
            pending.streams.clone(),
            SnapshotOptions::default(),
        )?);
        sync += t.elapsed();
    }
    let mut states = Vec::new();
    for task in tasks {
        states.push(SubtaskState {
            keyed: task.run()?.into_iter().collect(),
            ..Default::default()
        });
    }
    let done = coordinator.complete_checkpoint(
        pending.id,
        vec![OperatorState {
            operator_id: "v".into(),
            parallelism: subtasks.len() as u32,
            max_parallelism: 128,
            subtasks: states,
        }],
    )?;
    let total = start.elapsed();
    for s in subtasks.iter_mut() {
        s.notify_checkpoint_complete(pending.id)?;
    }
    Ok((sync, total, done))
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Bytes `done` wrote that `before` does not reference (its metadata included).
fn new_bytes(done: &CompletedCheckpoint, before: Option<&CompletedCheckpoint>) -> u64 {
    let old: BTreeSet<PathBuf> = before
        .map(|b| b.metadata.files().into_iter().collect())
        .unwrap_or_default();
    let files: u64 = done
        .metadata
        .files()
        .iter()
        .filter(|f| !old.contains(*f))
        .map(|f| size(f))
        .sum();
    files + size(&done.metadata_path)
}

/// Of those, the bytes of new SST files (in `shared/`).
fn new_sst_bytes(done: &CompletedCheckpoint, before: &CompletedCheckpoint) -> u64 {
    let old: BTreeSet<PathBuf> = before.metadata.files().into_iter().collect();
    done.metadata
        .files()
        .iter()
        .filter(|f| !old.contains(*f) && f.parent().is_some_and(|p| p.ends_with("shared")))
        .map(|f| size(f))
        .sum()
}

fn handles(done: &CompletedCheckpoint) -> Vec<KeyedStateHandle> {
    done.metadata.operators[0]
        .subtasks
        .iter()
        .flat_map(|s| s.keyed.clone())
        .collect()
}

fn checkpoints(root: &Path, round: i64, keys: i64, incremental: bool) -> Result<()> {
    let mode = if incremental { "incremental" } else { "full" };
    let backend = RocksDbStateBackend::new(
        &root.join(format!("work-{mode}-{round}")),
        &root.join("checkpoints"),
        &format!("job-{mode}-{round}"),
    )?
    .with_options(RocksOptions {
        incremental,
        ..RocksOptions::default()
    });
    let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
    let mut job = vec![open(&backend, 1, 0, &[])?];
    let v = job[0].value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    for k in 0..keys {
        job[0].set_current_key(k)?;
        v.on(&mut job[0]).update(Some(k))?;
    }
    let (sync1, total1, done1) = checkpoint(&mut coordinator, &mut job)?;
    let bytes1 = new_bytes(&done1, None);
    for k in (0..keys).step_by(100) {
        job[0].set_current_key(k)?;
        v.on(&mut job[0]).update(Some(-k))?;
    }
    let (sync2, total2, done2) = checkpoint(&mut coordinator, &mut job)?;
    let bytes2 = new_bytes(&done2, Some(&done1));
    let sst2 = new_sst_bytes(&done2, &done1);
    drop(job);
    let all = handles(&done2);
    let t = Instant::now();
    let one = open(&backend, 1, 0, &all)?;
    let restore1 = t.elapsed();
    drop(one);
    let t = Instant::now();
    let mut two = Vec::new();
    for (i, part) in assign_keyed_state(&all, 2, 128)?.iter().enumerate() {
        two.push(open(&backend, 2, i as u32, part)?);
    }
    let restore12 = t.elapsed();
    let (_, _, done3) = checkpoint(&mut coordinator, &mut two)?;
    drop(two);
    let parts = assign_keyed_state(&handles(&done3), 1, 128)?;
    let t = Instant::now();
    let merged = open(&backend, 1, 0, &parts[0])?;
    let restore21 = t.elapsed();
    drop(merged);
    println!(
        "  {mode:>11} checkpoints: first sync {:.2} ms, total {:.0} ms, {} bytes | after 1% changed: sync {:.2} ms, total {:.1} ms, {} new bytes ({} in new SSTs) | restore 1 subtask {:.0} ms, 1->2 {:.0} ms, 2->1 {:.0} ms",
        sync1.as_secs_f64() * 1e3,
        total1.as_secs_f64() * 1e3,
        bytes1,
        sync2.as_secs_f64() * 1e3,
        total2.as_secs_f64() * 1e3,
        bytes2,
        sst2,
        restore1.as_secs_f64() * 1e3,
        restore12.as_secs_f64() * 1e3,
        restore21.as_secs_f64() * 1e3,
    );
    Ok(())
}
