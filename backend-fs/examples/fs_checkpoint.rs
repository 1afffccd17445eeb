//! Measures file checkpoints of the heap backend at scale: 1,000,000 `i64`
//! keys of `ValueState<i64>` by default. Reports the synchronous part and the
//! total time of a full checkpoint and of an incremental one after 1% of the
//! keys changed, the bytes each wrote, and the restore time.
//!
//! `cargo run --release -p backend-fs --example fs_checkpoint [keys] [rounds]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use backend_fs::FsStateBackend;
use state_api::backend::KeyedBackendParams;
use state_api::checkpoint::{CheckpointConfig, OperatorState, SubtaskState};
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::ValueStateDescriptor;
use state_api::{codec, KeyedStateBackend, Result, StateBackend};

struct Measured {
    sync: Duration,
    total: Duration,
    bytes: u64,
    handle: KeyedStateHandle,
}

fn checkpoint<B: KeyedStateBackend>(
    backend: &FsStateBackend,
    coordinator: &mut state_api::checkpoint::CheckpointCoordinator,
    keyed: &mut B,
) -> Result<Measured> {
    let pending = coordinator.begin_checkpoint()?;
    let started = Instant::now();
    let task = keyed.snapshot(
        pending.id,
        pending.streams.clone(),
        SnapshotOptions::default(),
    )?;
    let sync = started.elapsed();
    let handle = task.run()?.expect("state was written");
    let written_at = started.elapsed();
    let written: u64 = pending
        .created_files()
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let operators = vec![OperatorState {
        operator_id: "values".into(),
        parallelism: 1,
        max_parallelism: 128,
        subtasks: vec![SubtaskState {
            keyed: vec![handle.clone()],
            ..Default::default()
        }],
    }];
    coordinator.complete_checkpoint(pending.id, operators)?;
    let total = started.elapsed();
    if std::env::var_os("VERBOSE").is_some() {
        eprintln!(
            "  checkpoint {}: snapshot task done at {:.1} ms, metadata published at {:.1} ms",
            pending.id,
            written_at.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        );
    }
    keyed.notify_checkpoint_complete(pending.id)?;
    let _ = backend;
    Ok(Measured {
        sync,
        total,
        bytes: written,
        handle,
    })
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<i64>());
    let keys = args.next().and_then(Result::ok).unwrap_or(1_000_000);
    let rounds = args.next().and_then(Result::ok).unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("fs-checkpoint-bench-{}", std::process::id()));
    for round in 0..rounds {
        let _ = std::fs::remove_dir_all(&dir);
        let backend = FsStateBackend::new(&dir, "bench")?.with_incremental(true);
        let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
        let params = KeyedBackendParams::for_subtask(128, 1, 0, codec::postcard::<i64>())?;
        let mut keyed = backend.create_keyed_backend(params.clone(), &[])?;
        let v = keyed.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
        for k in 0..keys {
            keyed.set_current_key(k)?;
            v.on(&mut keyed).update(Some(k))?;
        }
        let full = checkpoint(&backend, &mut coordinator, &mut keyed)?;
        // Change 1% of the keys, spread over the key space.
        let changed = keys / 100;
        for i in 0..changed {
            keyed.set_current_key(i * 100 + 7)?;
            v.on(&mut keyed).update(Some(-i))?;
        }
        let delta = checkpoint(&backend, &mut coordinator, &mut keyed)?;
        // Bytes the changed entries take in the canonical record layout:
        // state index, key, namespace and value, each length-prefixed.
        let mut changed_bytes = 0u64;
        for i in 0..changed {
            let k = i * 100 + 7;
            let mut key = Vec::new();
            codec::postcard::<i64>()
                .encode(&k, &mut key)
                .map_err(state_api::Error::user)?;
            let mut value = Vec::new();
            codec::postcard::<i64>()
                .encode(&-i, &mut value)
                .map_err(state_api::Error::user)?;
            changed_bytes += 1 + 1 + key.len() as u64 + 1 + 1 + value.len() as u64;
        }
        let started = Instant::now();
        let mut restored =
            backend.create_keyed_backend(params, std::slice::from_ref(&delta.handle))?;
        let rv = restored.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
        let restore = started.elapsed();
        restored.set_current_key(7)?;
        assert_eq!(
            rv.on(&mut restored).get()?,
            Some(0),
            "the delta was applied"
        );
        restored.set_current_key(8)?;
        black_box(rv.on(&mut restored).get()?);
        println!(
            "round {round}: {keys} keys | full checkpoint: sync {:.1} us, total {:.1} ms, {} bytes | \
             incremental after {changed} changes: sync {:.1} us, total {:.1} ms, {} bytes ({:.2}x the {} changed record bytes) | \
             restore base + delta: {:.1} ms",
            full.sync.as_secs_f64() * 1e6,
            full.total.as_secs_f64() * 1e3,
            full.bytes,
            delta.sync.as_secs_f64() * 1e6,
            delta.total.as_secs_f64() * 1e3,
            delta.bytes,
            delta.bytes as f64 / changed_bytes as f64,
            changed_bytes,
            restore.as_secs_f64() * 1e3,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
