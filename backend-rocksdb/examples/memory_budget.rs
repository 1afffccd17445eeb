//! Resident memory of many RocksDB keyed backends in one process: under one
//! shared memory budget, and with a cache, memtables and write buffer per
//! instance.
//!
//! `cargo run --release -p backend-rocksdb --example memory_budget [instances] [keys] [budget MiB]`
//!
//! (defaults: 32 instances, 200,000 keys each, 256 MiB). Each instance gets
//! `keys` ValueState entries of 100 bytes, written instance after instance,
//! then a quarter of them is read back from every instance. Each
//! configuration runs in its own child process, since a process's resident
//! size hardly shrinks once grown; the child reports its peak resident size
//! (`VmHWM` in `/proc/self/status`) above what it had before opening any
//! instance. With the budget, that stays within the budget plus
//! [`allowance_mib`]: what the budget does not cover (see
//! `backend_rocksdb::memory`). The example exits with an error unless the
//! budget run stays within that bound and the per-instance run exceeds it.

use std::process::Command;
use std::time::Instant;

use backend_rocksdb::{MemoryBudget, RocksDbStateBackend, RocksKeyedStateBackend, RocksOptions};
use state_api::backend::KeyedBackendParams;
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::ValueStateDescriptor;
use state_api::{codec, Error, KeyedStateBackend, Result, StateBackend};

/// What the budget does not cover, in MiB: 32 MiB for the allocator's
/// per-thread arenas (RocksDB's flush and compaction threads), plus 1 MiB per
/// instance for RocksDB's bookkeeping and open table readers.
fn allowance_mib(instances: u64) -> u64 {
    32 + instances
}

const VALUE_BYTES: usize = 100;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        return child(&args[2..]);
    }
    let arg = |i: usize, default: u64| {
        args.get(i)
            .and_then(|a| a.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let (instances, keys, budget_mib) = (arg(1, 32), arg(2, 200_000), arg(3, 256));
    println!(
        "{instances} keyed backends x {keys} keys of {VALUE_BYTES} bytes, budget {budget_mib} MiB"
    );
    let exe = std::env::current_exe().map_err(|e| Error::io("finding this program", e))?;
    let mut peaks = Vec::new();
    for mode in ["budget", "per-instance"] {
        let out = Command::new(&exe)
            .args(["--child", mode])
            .args([instances, keys, budget_mib].map(|n| n.to_string()))
            .output()
            .map_err(|e| Error::io("running a child", e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        print!("{text}");
        if !out.status.success() {
            return Err(Error::user(format!(
                "the {mode} run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let peak = text
            .lines()
            .find_map(|l| l.strip_prefix("peak above start MiB: "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| Error::user(format!("no peak in the {mode} run's output")))?;
        peaks.push((mode, peak));
    }
    let allowance = allowance_mib(instances);
    let bound = budget_mib + allowance;
    println!(
        "\nmode          peak RSS above start   within budget + {allowance} MiB ({bound} MiB)"
    );
    for (mode, peak) in &peaks {
        println!("{mode:<13} {peak:>10} MiB         {}", peak <= &bound);
    }
    // What this example shows, checked: it exits with an error otherwise.
    match peaks[..] {
        [("budget", shared), ("per-instance", separate)] if shared <= bound && separate > bound => {
            println!("OK: the budget holds, and separate instances exceed it");
            Ok(())
        }
        _ => Err(Error::user(format!(
            "expected the budget run within {bound} MiB and the per-instance run above it: {peaks:?}"
        ))),
    }
}

/// Resident size (`VmRSS`) and its peak (`VmHWM`) in MiB.
fn resident() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A value of `VALUE_BYTES` pseudo-random bytes (so that compression does
/// not shrink the files to nothing).
fn value(key: u64) -> Vec<u8> {
    let mut x = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..VALUE_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn child(args: &[String]) -> Result<()> {
    let mode = args.first().map(String::as_str).unwrap_or("budget");
    let num = |i: usize| {
        args.get(i)
            .and_then(|a| a.parse::<u64>().ok())
            .ok_or_else(|| Error::user("missing argument"))
    };
    let (instances, keys, budget_mib) = (num(1)?, num(2)?, num(3)?);
    let dir = tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
    let budget = MemoryBudget::new((budget_mib << 20) as usize)?;
    let options = match mode {
        "budget" => RocksOptions::default().with_memory_budget(budget.clone()),
        _ => RocksOptions::default().with_memory_per_instance(),
    };
    let backend =
        RocksDbStateBackend::new(&dir.path().join("work"), &dir.path().join("chk"), "job")?
            .with_options(options);
    let descriptor = ValueStateDescriptor::<Vec<u8>>::new("v");
    let (start, _) = resident();
    let began = Instant::now();

    let mut all: Vec<RocksKeyedStateBackend<u64>> = Vec::new();
    for i in 0..instances {
        let params = KeyedBackendParams::for_subtask(128, 1, 0, codec::postcard::<u64>())?;
        let mut k = backend.create_keyed_backend(params, &[])?;
        let v = k.value_state(&descriptor)?;
        for key in 0..keys {
            k.set_current_key(key)?;
            v.on(&mut k).update(Some(value(key)))?;
        }
        all.push(k);
        let (rss, _) = resident();
        if (i + 1) % 8 == 0 {
            println!(
                "  [{mode}] {:>2} instances written: RSS {:>5} MiB",
                i + 1,
                rss.saturating_sub(start)
            );
        }
    }
    let written = began.elapsed();
    for k in &mut all {
        let v = k.value_state(&descriptor)?;
        for key in (0..keys).step_by(4) {
            k.set_current_key(key)?;
            if v.on(k).get()?.as_deref() != Some(&value(key)[..]) {
                return Err(Error::user(format!("key {key} reads back wrong")));
            }
        }
    }
    let (now, peak) = resident();
    println!(
        "  [{mode}] written in {:.1} s, read back in {:.1} s",
        written.as_secs_f64(),
        (began.elapsed() - written).as_secs_f64()
    );
    if mode == "budget" {
        let u = budget.usage();
        println!(
            "  [{mode}] budget usage: cache {} MiB (memtables {} MiB, pinned {} MiB), write buffer {} KiB per instance",
            u.cache_bytes >> 20,
            u.memtable_bytes >> 20,
            u.pinned_bytes >> 20,
            u.task_buffer_bytes >> 10
        );
    }
    println!(
        "  [{mode}] RSS at start {start} MiB, now {} MiB above start",
        now.saturating_sub(start)
    );
    println!("peak above start MiB: {}", peak.saturating_sub(start));
    drop(all);
    Ok(())
}
