//! `flowbench`: every backend and baseline on the same workloads, side by
//! side, written to `results.json`, `report.md` and SVG charts.
//!
//! `cargo run --release -p benches --bin flowbench -- --quick` is the smoke
//! run; without `--quick` it runs the full sizes (see `docs/benchmarks.md`).

use std::path::PathBuf;
use std::process::ExitCode;

use benches::memory::{self, CHILD_FLAG};
use benches::progress::Progress;
use benches::runner::{self, RunConfig, Selection};
use benches::subject::Subject;
use clap::Parser;

/// Measures every state backend beside raw baselines and sled, on Apache
/// Flink's StateBackendBenchmark workloads, and writes a report.
#[derive(Parser, Debug)]
#[command(name = "flowbench", version, about, long_about = None)]
struct Cli {
    /// Small sizes and one round: a smoke run for CI (under two minutes
    /// after a release build).
    #[arg(long)]
    quick: bool,
    /// Families (throughput, throughput-string, large-state, checkpoint,
    /// memory), workloads (value.update, value.get, list.add, list.get,
    /// map.put, map.get) or family/workload; default: everything.
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Backends and baselines: memory, fs, fs-incremental, rocksdb,
    /// rocksdb-full, raw-hashmap, raw-rocksdb, raw-rocksdb-layout, sled;
    /// default: all.
    #[arg(long, value_delimiter = ',')]
    backends: Vec<Subject>,
    /// Keys of the throughput workloads; the other sizes scale with it
    /// (large state 200×, checkpoints 10×, memory 100×) unless given.
    #[arg(long)]
    keys: Option<u32>,
    /// Keys of the large-state workloads.
    #[arg(long)]
    large_keys: Option<u32>,
    /// Keys of the checkpoint workloads.
    #[arg(long)]
    checkpoint_keys: Option<u32>,
    /// Also run the checkpoint family with checkpoints at this object-store
    /// location (`s3://bucket/prefix`, credentials and endpoint from the
    /// AWS_* variables), beside local disk in the same run; its subjects are
    /// named `fs@s3`, `rocksdb@s3`...
    #[arg(long)]
    checkpoint_location: Option<String>,
    /// Entries of the memory measurement.
    #[arg(long)]
    memory_entries: Option<u32>,
    /// Operations per round of a throughput workload.
    #[arg(long)]
    operations: Option<usize>,
    /// Rounds of every measurement (medians and spreads are over them).
    #[arg(long)]
    rounds: Option<u32>,
    /// Seed of the access streams.
    #[arg(long)]
    seed: Option<u64>,
    /// Where results.json, report.md and the charts go.
    #[arg(long, default_value = "target/flowbench")]
    out: PathBuf,
    /// Where the backends keep their files while they run (default: a
    /// folder in OUT).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// A results.json of another run (commit, machine) to compare with.
    #[arg(long)]
    compare_with: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD_FLAG) {
        return memory_child(&args[2..]);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowbench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    // Read the comparison first: a wrong path fails before a long run.
    let previous = cli.compare_with.as_deref().map(runner::read).transpose()?;
    let work = cli.work_dir.clone().unwrap_or_else(|| cli.out.join("work"));
    let mut config = if cli.quick {
        RunConfig::quick(work.clone())
    } else {
        RunConfig::full(work.clone())
    };
    if let Some(keys) = cli.keys {
        config.scale_to(keys);
    }
    if let Some(n) = cli.large_keys {
        config.large_keys = n;
    }
    if let Some(n) = cli.checkpoint_keys {
        config.checkpoint_keys = n;
    }
    if let Some(l) = cli.checkpoint_location {
        config.checkpoint_location = Some(l);
    }
    if let Some(n) = cli.memory_entries {
        config.memory_entries = n;
    }
    if let Some(n) = cli.operations {
        config.operations = n;
    }
    if let Some(n) = cli.rounds {
        config.rounds = n;
    }
    if let Some(s) = cli.seed {
        config.seed = s;
    }
    if !cli.workloads.is_empty() {
        config.selection = Selection::parse(&cli.workloads)?;
    }
    if !cli.backends.is_empty() {
        config.subjects = Subject::ALL
            .into_iter()
            .filter(|s| cli.backends.contains(s))
            .collect();
    }
    config.memory_exe = Some(std::env::current_exe()?);
    if cfg!(debug_assertions) {
        eprintln!("flowbench: a debug build; the figures are not meaningful (use --release)");
    }
    let progress = Progress::for_stdout();
    let results = runner::run(&config, &progress);
    let _ = std::fs::remove_dir_all(&work);
    let results = results?;
    let report = runner::write(&results, previous.as_ref(), &cli.out)?;
    println!(
        "wrote {} and {}",
        cli.out.join("results.json").display(),
        report.display()
    );
    Ok(())
}

/// The memory family's child: `--memory-child SUBJECT ENTRIES` prints the
/// resident bytes per entry.
fn memory_child(args: &[String]) -> ExitCode {
    let parsed = match args {
        [subject, entries] => subject
            .parse::<Subject>()
            .map_err(|e| e.to_string())
            .and_then(|s| {
                entries
                    .parse::<u32>()
                    .map(|n| (s, n))
                    .map_err(|e| format!("entries: {e}"))
            }),
        _ => Err(format!("usage: flowbench {CHILD_FLAG} SUBJECT ENTRIES")),
    };
    match parsed.and_then(|(s, n)| memory::measure_here(s, n).map_err(|e| e.to_string())) {
        Ok(bytes) => {
            println!("{bytes}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flowbench: {e}");
            ExitCode::FAILURE
        }
    }
}
