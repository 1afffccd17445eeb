//! A whole run: which families, workloads and subjects, at which sizes;
//! running them; writing `results.json`, `report.md` and the charts.

use std::path::{Path, PathBuf};

use crate::progress::Progress;
use crate::report::FAMILIES;
use crate::results::{Machine, Results, RunOptions, RESULTS_VERSION};
use crate::subject::Subject;
use crate::throughput::ThroughputConfig;
use crate::workload::{Kind, Workload, KEYS, SEED, STREAM_LEN};
use crate::{checkpoint, machine, memory, throughput, BenchError, Result};

/// Which workloads of which family run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// `throughput` workloads (`i64` keys).
    pub throughput: Vec<Workload>,
    /// `throughput-string` workloads (value workloads only).
    pub string: Vec<Workload>,
    /// `large-state` workloads (value workloads only).
    pub large: Vec<Workload>,
    /// The checkpoint family.
    pub checkpoint: bool,
    /// The memory family.
    pub memory: bool,
    /// The timers family.
    pub timers: bool,
}

fn value_workloads() -> Vec<Workload> {
    vec![Workload::ValueUpdate, Workload::ValueGet]
}

impl Selection {
    /// Everything.
    pub fn all() -> Self {
        Selection {
            throughput: Workload::ALL.to_vec(),
            string: value_workloads(),
            large: value_workloads(),
            checkpoint: true,
            memory: true,
            timers: true,
        }
    }

    /// Parses `--workloads`: family names (`throughput`, `throughput-string`,
    /// `large-state`, `checkpoint`, `memory`), workload names (`value.get`:
    /// that workload in every throughput family that has it) and
    /// `family/workload`.
    pub fn parse(items: &[String]) -> std::result::Result<Self, String> {
        let mut s = Selection::default();
        fn add(list: &mut Vec<Workload>, w: Workload) {
            if !list.contains(&w) {
                list.push(w);
            }
        }
        for item in items {
            let item = item.trim();
            match item {
                "throughput" => Workload::ALL
                    .iter()
                    .for_each(|w| add(&mut s.throughput, *w)),
                "throughput-string" => value_workloads()
                    .into_iter()
                    .for_each(|w| add(&mut s.string, w)),
                "large-state" => value_workloads()
                    .into_iter()
                    .for_each(|w| add(&mut s.large, w)),
                "checkpoint" => s.checkpoint = true,
                "memory" => s.memory = true,
                "timers" => s.timers = true,
                _ => {
                    let (family, name) = match item.split_once('/') {
                        Some((f, n)) => (Some(f), n),
                        None => (None, item),
                    };
                    let w: Workload = name.parse().map_err(|e: String| {
                        format!(
                            "{e} (known: families {}, workloads {})",
                            FAMILIES.join(", "),
                            Workload::ALL
                                .iter()
                                .map(|w| w.name())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?;
                    let value = w.kind() == Kind::Value;
                    match family {
                        None => {
                            add(&mut s.throughput, w);
                            if value {
                                add(&mut s.string, w);
                                add(&mut s.large, w);
                            }
                        }
                        Some("throughput") => add(&mut s.throughput, w),
                        Some("throughput-string") if value => add(&mut s.string, w),
                        Some("large-state") if value => add(&mut s.large, w),
                        Some(f) => return Err(format!("family {f:?} has no workload {name:?}")),
                    }
                }
            }
        }
        // Report order, whatever the order given.
        for list in [&mut s.throughput, &mut s.string, &mut s.large] {
            list.sort_by_key(|w| Workload::ALL.iter().position(|x| x == w));
        }
        Ok(s)
    }

    /// The selection's names, for the results.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (family, list) in [
            ("throughput", &self.throughput),
            ("throughput-string", &self.string),
            ("large-state", &self.large),
        ] {
            out.extend(list.iter().map(|w| format!("{family}/{w}")));
        }
        if self.checkpoint {
            out.push("checkpoint".into());
        }
        if self.memory {
            out.push("memory".into());
        }
        if self.timers {
            out.push("timers".into());
        }
        out
    }
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Small sizes, one round.
    pub quick: bool,
    /// Rounds of every measurement.
    pub rounds: u32,
    /// What runs.
    pub selection: Selection,
    /// Who runs it, in report order.
    pub subjects: Vec<Subject>,
    /// Keys of the throughput families.
    pub keys: u32,
    /// Operations per round of a throughput workload.
    pub operations: usize,
    /// Keys of the large-state family.
    pub large_keys: u32,
    /// Keys of the checkpoint family.
    pub checkpoint_keys: u32,
    /// Entries of the memory family.
    pub memory_entries: u32,
    /// Timers of the timers family.
    pub timers: u32,
    /// An object-store location (`s3://bucket/prefix`) the checkpoint family
    /// also runs on, beside local disk, in the same run.
    pub checkpoint_location: Option<String>,
    /// Seed of the access streams.
    pub seed: u64,
    /// Folder for the backends' files while they run.
    pub work: PathBuf,
    /// The program started as the memory family's child process (the
    /// `flowbench` binary itself); `None` skips the memory family.
    pub memory_exe: Option<PathBuf>,
}

impl RunConfig {
    /// The full-size run: 100,000 keys, 2^20 operations per round, 3
    /// rounds, 20,000,000 keys of large state, 1,000,000 keys checkpointed,
    /// 10,000,000 entries for memory.
    pub fn full(work: PathBuf) -> Self {
        RunConfig {
            quick: false,
            rounds: 3,
            selection: Selection::all(),
            subjects: Subject::ALL.to_vec(),
            keys: KEYS,
            operations: STREAM_LEN,
            large_keys: 20_000_000,
            checkpoint_keys: 1_000_000,
            memory_entries: 10_000_000,
            timers: 1_000_000,
            checkpoint_location: None,
            seed: SEED,
            work,
            memory_exe: None,
        }
    }

    /// The smoke run: small sizes, one round (under two minutes on two
    /// cores in a release build).
    pub fn quick(work: PathBuf) -> Self {
        RunConfig {
            quick: true,
            rounds: 1,
            keys: 10_000,
            operations: 1 << 16,
            large_keys: 200_000,
            checkpoint_keys: 50_000,
            memory_entries: 200_000,
            timers: 50_000,
            ..RunConfig::full(work)
        }
    }

    /// Scales every size from `keys` throughput keys: large state 200×,
    /// checkpoints 10×, memory 100× (the full run's proportions).
    pub fn scale_to(&mut self, keys: u32) {
        self.keys = keys;
        self.large_keys = keys.saturating_mul(200);
        self.checkpoint_keys = keys.saturating_mul(10);
        self.memory_entries = keys.saturating_mul(100);
    }

    fn options(&self) -> RunOptions {
        RunOptions {
            quick: self.quick,
            rounds: self.rounds,
            workloads: self.selection.names(),
            backends: self.subjects.iter().map(|s| s.name().to_string()).collect(),
            keys: u64::from(self.keys),
            operations: self.operations as u64,
            large_keys: u64::from(self.large_keys),
            checkpoint_keys: u64::from(self.checkpoint_keys),
            memory_entries: u64::from(self.memory_entries),
            seed: self.seed,
            timers: u64::from(self.timers),
            checkpoint_location: self.checkpoint_location.clone(),
        }
    }
}

/// Runs every selected family.
pub fn run(config: &RunConfig, progress: &Progress) -> Result<Results> {
    if config.rounds == 0 {
        return Err(BenchError::Store("--rounds must be at least 1".into()));
    }
    if config.keys == 0
        || config.large_keys == 0
        || config.checkpoint_keys == 0
        || config.memory_entries == 0
    {
        return Err(BenchError::Store("every size must be at least 1".into()));
    }
    let mut results = Results {
        version: RESULTS_VERSION,
        machine: Machine::detect(),
        date: machine::now_utc(),
        commit: machine::git_commit(),
        options: config.options(),
        measurements: Vec::new(),
    };
    let families = [
        (
            "throughput",
            &config.selection.throughput,
            config.keys,
            false,
            false,
        ),
        (
            "throughput-string",
            &config.selection.string,
            config.keys,
            true,
            false,
        ),
        (
            "large-state",
            &config.selection.large,
            config.large_keys,
            false,
            true,
        ),
    ];
    for (family, workloads, keys, strings, large) in families {
        let subjects: Vec<Subject> = config
            .subjects
            .iter()
            .copied()
            .filter(|s| {
                if large {
                    s.in_large_state()
                } else {
                    s.in_throughput()
                }
            })
            .collect();
        if workloads.is_empty() || subjects.is_empty() {
            continue;
        }
        let t = ThroughputConfig {
            family: family.to_string(),
            keys,
            operations: config.operations,
            rounds: config.rounds,
            seed: config.seed,
            random_population: large,
            workloads: workloads.clone(),
            subjects,
            verify_sample: large.then_some(100_000),
            work: config.work.clone(),
        };
        let m = if strings {
            throughput::run::<String>(&t, progress)?
        } else {
            throughput::run::<i64>(&t, progress)?
        };
        results.measurements.extend(m);
    }
    if config.selection.checkpoint {
        let c = checkpoint::CheckpointBenchConfig {
            keys: config.checkpoint_keys,
            rounds: config.rounds,
            subjects: config.subjects.clone(),
            work: config.work.clone(),
            object_store: config.checkpoint_location.clone(),
        };
        results.measurements.extend(checkpoint::run(&c, progress)?);
    }
    if config.selection.timers && config.timers > 0 {
        let t = crate::timers::TimersBenchConfig {
            timers: config.timers,
            rounds: config.rounds,
            subjects: config.subjects.clone(),
            seed: config.seed,
            work: config.work.clone(),
        };
        results
            .measurements
            .extend(crate::timers::run(&t, progress)?);
    }
    if config.selection.memory {
        if let Some(exe) = &config.memory_exe {
            results.measurements.extend(memory::run(
                exe,
                &config.subjects,
                config.memory_entries,
                config.rounds,
                progress,
            )?);
        }
    }
    Ok(results)
}

/// Writes `results.json`, the charts and `report.md` into `out`; with
/// `previous` the report compares the two runs. Returns the report's path.
pub fn write(results: &Results, previous: Option<&Results>, out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let json = serde_json::to_string_pretty(results)
        .map_err(|e| BenchError::Store(format!("results.json: {e}")))?;
    std::fs::write(out.join("results.json"), json + "\n")?;
    let charts = crate::charts::write_charts(results, out)?;
    let report = crate::report::render_report(results, previous, &charts);
    let path = out.join("report.md");
    std::fs::write(&path, report)?;
    Ok(path)
}

/// Reads a `results.json` written by an earlier run.
pub fn read(path: &Path) -> Result<Results> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BenchError::Store(format!("reading {}: {e}", path.display())))?;
    let results: Results = serde_json::from_str(&text).map_err(|e| {
        BenchError::Store(format!(
            "{} is not a flowbench results.json: {e}",
            path.display()
        ))
    })?;
    if results.version != RESULTS_VERSION {
        return Err(BenchError::Store(format!(
            "{} has results version {}, this flowbench reads {RESULTS_VERSION}",
            path.display(),
            results.version
        )));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn workloads_select_families_and_workloads() {
        let s = Selection::parse(&names(&["value.get"])).expect("parses");
        assert_eq!(s.throughput, vec![Workload::ValueGet]);
        assert_eq!(s.string, vec![Workload::ValueGet]);
        assert_eq!(s.large, vec![Workload::ValueGet]);
        assert!(!s.checkpoint && !s.memory);

        let s = Selection::parse(&names(&[
            "map.get",
            "throughput-string/value.update",
            "checkpoint",
        ]))
        .expect("parses");
        assert_eq!(s.throughput, vec![Workload::MapGet]);
        assert_eq!(s.string, vec![Workload::ValueUpdate]);
        assert!(s.large.is_empty() && s.checkpoint);

        let s = Selection::parse(&names(&["list.add", "throughput"])).expect("parses");
        assert_eq!(s.throughput, Workload::ALL.to_vec());

        assert!(Selection::parse(&names(&["value.put"])).is_err());
        assert!(Selection::parse(&names(&["large-state/map.get"])).is_err());
        assert_eq!(
            Selection::parse(&names(&[
                "throughput",
                "throughput-string",
                "large-state",
                "checkpoint",
                "memory",
                "timers"
            ])),
            Ok(Selection::all())
        );
    }

    #[test]
    fn keys_scale_every_size() {
        let mut c = RunConfig::full(PathBuf::from("w"));
        c.scale_to(1_000);
        assert_eq!(
            (c.keys, c.large_keys, c.checkpoint_keys, c.memory_entries),
            (1_000, 200_000, 10_000, 100_000)
        );
    }
}
