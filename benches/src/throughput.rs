//! The throughput families: every workload on every subject, rounds
//! interleaved across subjects, state verified afterwards.
//!
//! * `throughput`: `i64` keys, every workload.
//! * `throughput-string`: `String` keys of 16–32 bytes, the value workloads.
//! * `large-state`: `value.get` and `value.update` on RocksDB and its raw
//!   baselines with far more keys than the caches hold, populated in random
//!   order.
//!
//! For each workload every subject is set up and populated first (untimed);
//! then each round runs the whole access stream on each subject in turn, so
//! machine noise spreads over all of them. A read round must return the
//! model's checksum; after the last round the state is read back and
//! compared with the model ([`crate::workload::Model`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::driver::{Driver, Setup};
use crate::progress::Progress;
use crate::report::format_rate;
use crate::results::{Better, Measurement};
use crate::subject::{driver, Subject};
use crate::workload::{population_order, AccessStream, BenchKey, Model, Workload};
use crate::{BenchError, Result};

/// Operations run between two progress updates.
const CHUNK: usize = 1 << 16;

/// What one throughput family runs.
#[derive(Clone, Debug)]
pub struct ThroughputConfig {
    /// The family name in the results.
    pub family: String,
    /// Keys populated first.
    pub keys: u32,
    /// Operations per round.
    pub operations: usize,
    /// Rounds per workload and subject.
    pub rounds: u32,
    /// Seed of the access stream.
    pub seed: u64,
    /// Populate in a random order instead of `0..keys`.
    pub random_population: bool,
    /// Workloads to run, in this order.
    pub workloads: Vec<Workload>,
    /// Subjects to run, in this order.
    pub subjects: Vec<Subject>,
    /// Keys read back per subject for verification (evenly spread); `None`
    /// reads every key.
    pub verify_sample: Option<u32>,
    /// Folder for the backends' and stores' files.
    pub work: PathBuf,
}

/// Runs the family with keys of type `K`; one measurement per workload and
/// subject, in ops/s.
pub fn run<K: BenchKey>(
    config: &ThroughputConfig,
    progress: &Progress,
) -> Result<Vec<Measurement>> {
    let stream = Arc::new(AccessStream::uniform(
        config.keys,
        config.operations,
        config.seed,
    ));
    let population: Arc<[u32]> =
        population_order(config.keys, config.random_population, config.seed).into();
    let base = Setup::<K>::new(Workload::ValueGet, stream.clone(), population);
    let mut out = Vec::new();
    // value.get runs before value.update on the same drivers: its state is
    // value.update's populated state, so large state is populated once.
    let mut order = config.workloads.clone();
    if let (Some(g), Some(u)) = (
        order.iter().position(|w| *w == Workload::ValueGet),
        order.iter().position(|w| *w == Workload::ValueUpdate),
    ) {
        if u < g {
            order.swap(u, g);
        }
    }
    let mut carried: Option<(Workload, Vec<Box<dyn Driver>>)> = None;
    for &workload in &order {
        // Every carried driver ran the same workload: all switch or none.
        let carried_on = carried.take().and_then(|(_, mut ds)| {
            let mut all = true;
            for d in ds.iter_mut() {
                all &= d.switch_to(workload);
            }
            all.then_some(ds)
        });
        let mut drivers = match carried_on {
            Some(ds) => ds,
            None => {
                let mut ds = Vec::with_capacity(config.subjects.len());
                for &subject in &config.subjects {
                    let bar = progress.spinner(format!(
                        "{} {workload}: populating {subject} with {} keys",
                        config.family, config.keys
                    ));
                    let d = driver(subject, base.for_workload(workload), &config.work);
                    bar.finish_and_clear();
                    ds.push(d?);
                }
                ds
            }
        };
        let model = Model::new(workload, &stream, config.rounds);
        let checksum = workload.is_read().then(|| model.checksum());
        let mut rates = vec![Vec::new(); drivers.len()];
        for round in 0..config.rounds {
            for (i, d) in drivers.iter_mut().enumerate() {
                let subject = config.subjects[i];
                d.prepare_round(round)?;
                let bar = progress.bar(
                    stream.len() as u64,
                    format!("{} {workload} {subject} round {}", config.family, round + 1),
                );
                let mut sum = 0i64;
                let started = Instant::now();
                let mut j = 0;
                while j < stream.len() {
                    let end = (j + CHUNK).min(stream.len());
                    sum = sum.wrapping_add(d.run(round, j..end)?);
                    bar.inc((end - j) as u64);
                    j = end;
                }
                let secs = started.elapsed().as_secs_f64();
                bar.finish_and_clear();
                if let Some(want) = checksum {
                    if sum != want {
                        return Err(BenchError::Verification(format!(
                            "{subject} {workload} round {round}: read a sum of {sum}, the state holds {want}"
                        )));
                    }
                }
                rates[i].push(stream.len() as f64 / secs.max(1e-9));
            }
        }
        for (i, d) in drivers.iter_mut().enumerate() {
            let subject = config.subjects[i];
            let bar =
                progress.spinner(format!("{} {workload}: verifying {subject}", config.family));
            let checked = model.verify(subject.name(), config.verify_sample, |k| d.observe(k));
            bar.finish_and_clear();
            checked?;
            let m = Measurement::new(
                &config.family,
                workload.name(),
                subject.name(),
                "ops/s",
                Better::Higher,
                std::mem::take(&mut rates[i]),
            );
            progress.line(&format!(
                "{:<18} {:<13} {:<19} {:>10} ops/s",
                config.family,
                workload.name(),
                subject.name(),
                format_rate(m.median)
            ));
            out.push(m);
        }
        carried = Some((workload, drivers));
    }
    Ok(out)
}
