//! What a run measured, as written to `results.json` and read back by
//! `--compare-with`.

use serde::{Deserialize, Serialize};

/// Version of the `results.json` layout; bumped when a field changes meaning.
pub const RESULTS_VERSION: u32 = 1;

/// One run of `flowbench`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Results {
    /// [`RESULTS_VERSION`] of the writer.
    pub version: u32,
    /// The machine the run was on.
    pub machine: Machine,
    /// When the run started, UTC, as `YYYY-MM-DDTHH:MM:SSZ`.
    pub date: String,
    /// `git rev-parse HEAD` of the checkout, with `-dirty` when it had
    /// uncommitted changes; `None` outside a git checkout.
    pub commit: Option<String>,
    /// The options of the run, with every size actually used.
    pub options: RunOptions,
    /// Every measurement, in the order they were taken.
    pub measurements: Vec<Measurement>,
}

/// The machine a run was on.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    /// CPU model name (`/proc/cpuinfo`), or `unknown`.
    pub cpu: String,
    /// Cores the process may use.
    pub cores: usize,
    /// Total memory in bytes (`/proc/meminfo`), 0 when unknown.
    pub memory_bytes: u64,
    /// Operating system and kernel release.
    pub os: String,
    /// Whether the binary was built with optimisations.
    pub optimized: bool,
}

/// The options of a run and the sizes it used.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunOptions {
    /// `--quick`: small sizes, one round.
    pub quick: bool,
    /// Rounds of every measurement.
    pub rounds: u32,
    /// Workload families and workloads that ran.
    pub workloads: Vec<String>,
    /// Backends and baselines that ran.
    pub backends: Vec<String>,
    /// Keys populated before the throughput workloads.
    pub keys: u64,
    /// Operations of one round of a throughput workload (the access stream).
    pub operations: u64,
    /// Keys of the large-state workloads.
    pub large_keys: u64,
    /// Keys of the checkpoint workloads.
    pub checkpoint_keys: u64,
    /// Entries of the memory measurement.
    pub memory_entries: u64,
    /// Seed of the access streams.
    pub seed: u64,
    /// Timers of the timer workloads (0 in runs from before they existed).
    #[serde(default)]
    pub timers: u64,
    /// The object-store location the checkpoint family also ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_location: Option<String>,
}

/// Whether a larger or a smaller figure is better.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Throughput.
    Higher,
    /// Times, bytes.
    Lower,
}

/// One figure of one subject (backend or baseline) on one workload, over
/// all rounds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Measurement {
    /// The workload family: `throughput`, `throughput-string`,
    /// `large-state`, `checkpoint` or `memory`.
    pub family: String,
    /// The workload within the family, e.g. `value.update` or
    /// `first.sync`.
    pub workload: String,
    /// The backend or baseline, e.g. `fs-incremental` or `raw-hashmap`.
    pub subject: String,
    /// Unit of the figures: `ops/s`, `ms`, `bytes` or `bytes/entry`.
    pub unit: String,
    /// Which way is better.
    pub better: Better,
    /// The figure of every round, in order.
    pub rounds: Vec<f64>,
    /// Median of the rounds.
    pub median: f64,
    /// Smallest round.
    pub min: f64,
    /// Largest round.
    pub max: f64,
}

impl Measurement {
    /// A measurement of `rounds` (at least one).
    pub fn new(
        family: &str,
        workload: &str,
        subject: &str,
        unit: &str,
        better: Better,
        rounds: Vec<f64>,
    ) -> Self {
        let (median, min, max) = summarize(&rounds);
        Measurement {
            family: family.to_string(),
            workload: workload.to_string(),
            subject: subject.to_string(),
            unit: unit.to_string(),
            better,
            rounds,
            median,
            min,
            max,
        }
    }

    /// Spread of the rounds: (max - min) / median, 0 for one round.
    pub fn spread(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / self.median.abs()
        }
    }
}

/// Median (mean of the middle two for an even count), min and max; zeros
/// for no figures.
pub fn summarize(values: &[f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

impl Results {
    /// The measurement of `subject` on `family`/`workload`, if taken.
    pub fn find(&self, family: &str, workload: &str, subject: &str) -> Option<&Measurement> {
        self.measurements
            .iter()
            .find(|m| m.family == family && m.workload == workload && m.subject == subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        assert_eq!(summarize(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(summarize(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert_eq!(summarize(&[]), (0.0, 0.0, 0.0));
        let m = Measurement::new(
            "f",
            "w",
            "s",
            "ops/s",
            Better::Higher,
            vec![10.0, 12.0, 8.0],
        );
        assert!((m.spread() - 0.4).abs() < 1e-12);
    }
}
