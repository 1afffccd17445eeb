//! Resident memory per entry: `entries` `i64` → `i64` entries on the
//! `memory` backend and on `raw-hashmap`, each measured in a fresh process
//! (the runner starts itself as a child per round and subject), so neither
//! inherits the other's heap.
//!
//! In the child: the keys and the population order are built first, the
//! resident set (`VmRSS`) is read, the entries are written, the resident set
//! is read again; the difference over the entries is the figure. Then a
//! sample of the entries is read back and checked.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use state_api::StateBackend;

use crate::driver::{Driver, HashMapDriver, Setup, StateDriver};
use crate::progress::Progress;
use crate::results::{Better, Measurement};
use crate::subject::{params, Subject};
use crate::workload::{AccessStream, Model, Workload};
use crate::{BenchError, Result};

/// The family name in the results.
pub const FAMILY: &str = "memory";
/// The option the runner's child process is started with.
pub const CHILD_FLAG: &str = "--memory-child";

/// The resident set of this process in bytes (`VmRSS` in
/// `/proc/self/status`).
pub fn resident_bytes() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| BenchError::Store("no VmRSS in /proc/self/status".into()))
}

/// Writes `entries` entries on `subject` in this process and returns the
/// resident bytes they added per entry; checks a sample of them afterwards.
pub fn measure_here(subject: Subject, entries: u32) -> Result<f64> {
    if !subject.in_memory() {
        return Err(BenchError::Store(format!(
            "the memory figure is taken for memory and raw-hashmap, not {subject}"
        )));
    }
    let stream = Arc::new(AccessStream::uniform(entries.max(1), 0, 0));
    let population: Arc<[u32]> = (0..entries).collect();
    let setup = Setup::<i64>::new(Workload::ValueGet, stream.clone(), population);
    let before = resident_bytes()?;
    let mut driver: Box<dyn Driver> = match subject {
        Subject::Memory => {
            let keyed = backend_memory::MemoryStateBackend::new()
                .create_keyed_backend(params::<i64>()?, &[])?;
            Box::new(StateDriver::new(setup, keyed, Vec::new())?)
        }
        _ => Box::new(HashMapDriver::new(setup)),
    };
    let after = resident_bytes()?;
    let model = Model::new(Workload::ValueGet, &stream, 0);
    model.verify(subject.name(), Some(10_000), |k| driver.observe(k))?;
    drop(driver);
    Ok(after.saturating_sub(before) as f64 / f64::from(entries.max(1)))
}

/// Runs `exe CHILD_FLAG subject entries` per round and subject and collects
/// the figures it prints.
pub fn run(
    exe: &Path,
    subjects: &[Subject],
    entries: u32,
    rounds: u32,
    progress: &Progress,
) -> Result<Vec<Measurement>> {
    let subjects: Vec<Subject> = subjects.iter().copied().filter(|s| s.in_memory()).collect();
    let mut figures = vec![Vec::new(); subjects.len()];
    for round in 0..rounds {
        for (i, subject) in subjects.iter().enumerate() {
            let bar = progress.spinner(format!(
                "memory: {subject}, {entries} entries in a child process, round {}",
                round + 1
            ));
            let out = Command::new(exe)
                .arg(CHILD_FLAG)
                .arg(subject.name())
                .arg(entries.to_string())
                .output();
            bar.finish_and_clear();
            let out = out?;
            if !out.status.success() {
                return Err(BenchError::Store(format!(
                    "memory child for {subject} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let v: f64 = text.trim().parse().map_err(|_| {
                BenchError::Store(format!("memory child for {subject} printed {text:?}"))
            })?;
            figures[i].push(v);
        }
    }
    let mut out = Vec::new();
    for (subject, values) in subjects.iter().zip(figures) {
        let m = Measurement::new(
            FAMILY,
            "resident",
            subject.name(),
            "bytes/entry",
            Better::Lower,
            values,
        );
        progress.line(&format!(
            "{FAMILY:<18} {:<13} {:<19} {:>10.1} bytes/entry",
            "resident",
            subject.name(),
            m.median
        ));
        out.push(m);
    }
    Ok(out)
}
