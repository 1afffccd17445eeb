//! Writes a large savepoint of one keyed operator ("count", max parallelism
//! 128, parallelism 1): keys `0..n` of type `u64`, each with a value state
//! holding `value_bytes` pseudo-random bytes, uncompressed. Used to measure
//! tools on big snapshots, for example the resident memory of
//! `statectl rewrite`.
//!
//! `cargo run --release -p backend-fs --example large_savepoint -- DIR [GIB] [VALUE_BYTES]`
//! prints the savepoint's folder;
//! `... --example large_savepoint -- --rewrite SOURCE TARGET MAX_PARALLELISM`
//! rewrites it (as `statectl rewrite` does, without RocksDB) and prints the
//! process's peak resident memory.

use std::path::PathBuf;
use std::process::ExitCode;

use backend_fs::FsStateBackend;
use checkpoint_store::{CheckpointConfig, OperatorState, SubtaskSpec, SubtaskState};
use state_api::codec::postcard;
use state_api::format::frame::Compression;
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::ValueStateDescriptor;
use state_api::{KeyedStateBackend, Result, StateBackend};

fn run(dir: PathBuf, gib: f64, value_bytes: usize) -> Result<PathBuf> {
    let backend = FsStateBackend::new(&dir.join("checkpoints"), "large")?;
    let mut coordinator = backend.coordinator(CheckpointConfig::default())?;
    let spec = SubtaskSpec::new("count", 128, 1, 0)?;
    let mut keyed = backend.create_keyed_backend(spec.keyed_params(postcard::<u64>()), &[])?;
    let state = keyed.value_state(&ValueStateDescriptor::<Vec<u8>>::new("payload"))?;
    let keys = (gib * f64::from(1u32 << 30) / value_bytes as f64) as u64;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for key in 0..keys {
        let value: Vec<u8> = (0..value_bytes)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        keyed.set_current_key(key)?;
        state.on(&mut keyed).set(value)?;
    }
    std::fs::create_dir_all(dir.join("savepoints"))
        .map_err(|e| state_api::Error::io("creating the savepoint root".to_string(), e))?;
    let pending = coordinator.begin_savepoint(&dir.join("savepoints"))?;
    let handle = keyed
        .snapshot(
            pending.id,
            pending.streams.clone(),
            SnapshotOptions::savepoint(Compression::None),
        )?
        .run()?;
    let path = coordinator.complete_savepoint(
        pending.id,
        vec![OperatorState {
            operator_id: "count".into(),
            parallelism: 1,
            max_parallelism: 128,
            subtasks: vec![SubtaskState {
                keyed: handle.into_iter().collect(),
                ..Default::default()
            }],
        }],
    )?;
    eprintln!("{keys} keys of {value_bytes} bytes");
    Ok(path)
}

fn rewrite(source: PathBuf, target: PathBuf, max: u32) -> Result<()> {
    use checkpoint_store::rewrite::{rewrite_snapshot, RewriteOptions};
    let scratch = target.with_extension("scratch");
    let report = rewrite_snapshot(
        std::sync::Arc::new(checkpoint_store::LocalStorage),
        &source,
        &target,
        &RewriteOptions {
            max_parallelism: Some(max),
            compression: Compression::None,
            scratch_dir: scratch.clone(),
        },
        None,
        &mut |_| {},
    );
    let _ = std::fs::remove_dir_all(&scratch);
    let report = report?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: unknown");
    println!(
        "rewrote {} records to {} (largest spill bucket {} bytes); peak resident memory {}",
        report.records,
        report.path.display(),
        report.largest_bucket,
        peak.trim_start_matches("VmHWM:").trim()
    );
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut peek = std::env::args().skip(1);
    if peek.next().as_deref() == Some("--rewrite") {
        let (Some(src), Some(dst), Some(Ok(max))) = (
            peek.next(),
            peek.next(),
            peek.next().map(|m| m.parse::<u32>()),
        ) else {
            eprintln!("usage: large_savepoint --rewrite SOURCE TARGET MAX_PARALLELISM");
            return ExitCode::from(2);
        };
        return match rewrite(src.into(), dst.into(), max) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("large_savepoint: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: large_savepoint DIR [GIB] [VALUE_BYTES]");
        return ExitCode::from(2);
    };
    let gib = args.next().and_then(|a| a.parse().ok()).unwrap_or(2.0);
    let value_bytes = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    match run(dir, gib, value_bytes) {
        Ok(path) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("large_savepoint: {e}");
            ExitCode::FAILURE
        }
    }
}
