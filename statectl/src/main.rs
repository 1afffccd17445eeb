//! `statectl`: run the example job with checkpoints, take and restore
//! savepoints, and list, inspect, verify and dispose checkpoints and
//! savepoints of any backend. `statectl --help` lists the commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Arc;

use checkpoint_store::inspect::{
    inspect_snapshot, list_snapshots, record_bytes, verify_snapshot, KeyGroupStat, Problem,
    VerifyReport,
};
use checkpoint_store::rewrite::{
    for_each_keyed_record, rewrite_snapshot, NativeRecords, RewriteOptions,
};
use checkpoint_store::{
    load_metadata, resolve_metadata_path, CancellationPolicy, CheckpointConfig,
    CheckpointCoordinator, LocalStorage, RestorePlan, SnapshotKind,
};
use state_api::format::frame::Compression;
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::StateBackend;

use statectl::backends::{with_backend, BackendKind, BackendSettings, WithBackend};
use statectl::control::{self, ControlServer, Request};
use statectl::job::{Job, JobEvent, JobOptions, JobOutcome, SourceConfig};
use statectl::output::{json, size, table, time};
use statectl::records::{record_json, RocksDbRecords};

#[derive(Parser)]
#[command(
    name = "statectl",
    version,
    about = "Run the example job with checkpoints and savepoints; list, inspect, verify and dispose checkpoints of any backend."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the example job as one coordinator (this process) and one worker
    /// process per subtask, checkpointing to a folder or an object store
    /// (`s3://bucket/prefix`); resumes from the job's latest checkpoint at
    /// the given number of workers.
    Cluster(ClusterArgs),
    /// One worker of `statectl cluster` (started by the coordinator; speaks
    /// JSON lines on stdin and stdout).
    #[command(hide = true)]
    Worker(WorkerArgs),
    /// The job across processes: 3 workers checkpointing to LOCATION, one
    /// killed with SIGKILL, the job resumed at 2 workers; ends with OK when
    /// every count is exact.
    ClusterDemo {
        /// Where checkpoints go: a folder, or `s3://bucket/prefix`
        /// [default: a temporary folder, removed afterwards].
        #[arg(long)]
        checkpoints: Option<String>,
        /// Records in the source.
        #[arg(long, default_value_t = 200_000)]
        records: u64,
        /// Records each worker reads per second before the kill.
        #[arg(long, default_value_t = 40_000)]
        rate: u64,
    },
    /// Runs the example job (a keyed count fed by a partitioned source) with
    /// periodic checkpoints until its source is exhausted or it is cancelled.
    Run(RunArgs),
    /// Takes a savepoint of the job running in JOB_DIR and prints its folder.
    Savepoint {
        /// The job's folder (`<checkpoint-dir>/<job-id>`, printed by `run`).
        job_dir: PathBuf,
        /// Where the savepoint folder is created [default: `savepoints/`
        /// beside the job's folder].
        #[arg(long)]
        target: Option<PathBuf>,
        /// Seconds to wait for the job's answer.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Stops the job running in JOB_DIR, after a savepoint when asked.
    Cancel {
        /// The job's folder.
        job_dir: PathBuf,
        /// Take a savepoint in this folder first, and print its path.
        #[arg(long)]
        savepoint: Option<PathBuf>,
        /// Seconds to wait for the job's answer.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// The workflow with real processes: run, SIGKILL, resume at another
    /// parallelism, savepoint, resume on another backend; ends with OK.
    Demo {
        /// Where checkpoints and savepoints go [default: a temporary folder,
        /// removed afterwards].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Records in the source.
        #[arg(long, default_value_t = 300_000)]
        records: u64,
        /// Records per second while the job is caught mid-stream.
        #[arg(long, default_value_t = 60_000)]
        rate: u64,
    },
    /// Lists the checkpoints and savepoints under DIR.
    List {
        /// A checkpoint root, a job folder, a savepoint root or one snapshot.
        dir: PathBuf,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows a checkpoint's or savepoint's operators, states, handles and files.
    Inspect {
        /// A `_metadata` file, its folder, or a job folder (its latest checkpoint).
        path: PathBuf,
        /// Entries and bytes per key group too.
        #[arg(long)]
        key_groups: bool,
        /// JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Checks every file, checksum and record of a checkpoint or savepoint;
    /// exits 1 listing every problem.
    Verify {
        /// A `_metadata` file, its folder, or a job folder (its latest checkpoint).
        path: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Writes a checkpoint or savepoint as a new self-contained canonical
    /// savepoint, optionally at another max parallelism.
    Rewrite {
        /// A `_metadata` file, its folder, or a job folder (its latest checkpoint).
        path: PathBuf,
        /// The new savepoint's folder (must not exist, or be empty).
        #[arg(long)]
        to: PathBuf,
        /// The format written (only `canonical`, which every backend restores).
        #[arg(long, value_enum, default_value_t = FormatArg::Canonical)]
        format: FormatArg,
        /// Re-partition every key for this max parallelism.
        #[arg(long)]
        max_parallelism: Option<u32>,
    },
    /// Prints a state's records as JSON lines (keys and values of primitive
    /// codecs decoded, others as hex).
    Dump {
        /// A `_metadata` file, its folder, or a job folder (its latest checkpoint).
        path: PathBuf,
        /// The state's name.
        #[arg(long)]
        state: String,
        /// Only this key group.
        #[arg(long)]
        key_group: Option<u32>,
        /// Only this operator.
        #[arg(long)]
        operator: Option<String>,
    },
    /// Deletes a savepoint (a checkpoint only with --force).
    Dispose {
        /// The savepoint's folder.
        path: PathBuf,
        /// Also delete a checkpoint, which its job's retention owns.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Clone, Debug)]
struct SourceArgs {
    /// Records in the source of a fresh job.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Source partitions of a fresh job.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Distinct keys of a fresh job.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
}

#[derive(Args, Clone, Debug)]
struct ClusterArgs {
    /// Where checkpoints go: a folder, `file:///...` or `s3://bucket/prefix`.
    #[arg(long)]
    checkpoints: String,
    /// The job's id.
    #[arg(long, default_value = "cluster")]
    job_id: String,
    /// Worker processes (the parallelism).
    #[arg(long, default_value_t = 3)]
    workers: u32,
    /// The state backend of the workers (fs or rocksdb).
    #[arg(long, value_enum, default_value_t = BackendArg::Fs)]
    backend: BackendArg,
    /// Max parallelism of a fresh job.
    #[arg(long, default_value_t = 128)]
    max_parallelism: u32,
    #[command(flatten)]
    source: SourceArgs,
    /// Records each worker reads per second.
    #[arg(long)]
    rate: Option<u64>,
    /// Milliseconds between checkpoints.
    #[arg(long, default_value_t = 500)]
    checkpoint_interval_ms: u64,
    /// A checkpoint not completed within this many milliseconds is aborted.
    #[arg(long, default_value_t = 30_000)]
    checkpoint_timeout_ms: u64,
    /// Completed checkpoints to keep.
    #[arg(long, default_value_t = 2)]
    retained: usize,
    /// The workers' local folder (RocksDB instances) [default: a folder in
    /// the system's temporary folder].
    #[arg(long)]
    local_dir: Option<PathBuf>,
    /// Snapshot streams up to this many bytes go into `_metadata` instead of
    /// an object of their own.
    #[arg(long, default_value_t = 1024)]
    inline_threshold: usize,
}

#[derive(Args, Clone, Debug)]
struct WorkerArgs {
    #[arg(long)]
    checkpoints: String,
    #[arg(long)]
    job_id: String,
    #[arg(long, value_enum)]
    backend: BackendArg,
    #[arg(long)]
    local_dir: PathBuf,
    #[arg(long)]
    index: u32,
    #[arg(long)]
    parallelism: u32,
    #[arg(long)]
    max_parallelism: u32,
    #[command(flatten)]
    source: SourceArgs,
    #[arg(long)]
    restore: Option<PathBuf>,
    #[arg(long)]
    rate: Option<u64>,
    #[arg(long)]
    inline_threshold: usize,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendArg {
    Memory,
    Fs,
    Rocksdb,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    /// The canonical format: key-group ordered records every backend restores.
    Canonical,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OnCancel {
    /// Keep the retained checkpoints (externalized checkpoints).
    Retain,
    /// Delete every checkpoint of the job.
    Delete,
}

#[derive(Args, Clone, Debug)]
struct RunArgs {
    /// The state backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Fs)]
    backend: BackendArg,
    /// Incremental checkpoints (fs backend; RocksDB's always are).
    #[arg(long)]
    incremental: bool,
    /// The checkpoint root; the job's folder is `<checkpoint-dir>/<job-id>`.
    #[arg(long, default_value = "checkpoints")]
    checkpoint_dir: PathBuf,
    /// The job's id [default: random].
    #[arg(long)]
    job_id: Option<String>,
    /// Parallelism of the source and the count.
    #[arg(long, default_value_t = 2)]
    parallelism: u32,
    /// Max parallelism of a fresh job (a restore keeps the snapshot's).
    #[arg(long, default_value_t = 128)]
    max_parallelism: u32,
    #[command(flatten)]
    source: SourceArgs,
    /// At most this many records per second.
    #[arg(long)]
    rate: Option<u64>,
    /// Milliseconds between checkpoints.
    #[arg(long, default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// Completed checkpoints to keep.
    #[arg(long, default_value_t = 2)]
    retained: usize,
    /// What happens to the checkpoints when the job is cancelled or finishes.
    #[arg(long, value_enum, default_value_t = OnCancel::Retain)]
    on_cancel: OnCancel,
    /// Resume from this savepoint.
    #[arg(long, conflicts_with = "from_checkpoint")]
    from_savepoint: Option<PathBuf>,
    /// Resume from this checkpoint (a `chk-N` folder, its `_metadata`, or a
    /// job folder for its latest checkpoint).
    #[arg(long)]
    from_checkpoint: Option<PathBuf>,
    /// Snapshot streams up to this many bytes go into `_metadata` instead of
    /// a file of their own (at most 1 MiB).
    #[arg(long, default_value_t = 20 * 1024)]
    inline_threshold: usize,
    /// RocksDB's working folder [default: a new folder in the system's
    /// temporary folder, removed when the job ends].
    #[arg(long)]
    local_dir: Option<PathBuf>,
}

/// A failed command: one line for stderr, and the exit code.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

type CmdResult = Result<ExitCode, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(Failure(message)) => {
            eprintln!("statectl: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Cmd) -> CmdResult {
    match command {
        Cmd::Run(args) => run(args),
        Cmd::Savepoint {
            job_dir,
            target,
            timeout,
        } => {
            let target = match target {
                Some(t) => t,
                None => job_dir
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("savepoints"),
            };
            std::fs::create_dir_all(&target)
                .map_err(|e| format!("creating {}: {e}", target.display()))?;
            let target = std::path::absolute(&target)?;
            let path = control::send(
                &job_dir,
                &Request::Savepoint { target },
                Duration::from_secs(timeout),
            )?;
            println!("{path}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Cancel {
            job_dir,
            savepoint,
            timeout,
        } => {
            let savepoint = match savepoint {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
                    Some(std::path::absolute(&dir)?)
                }
                None => None,
            };
            let answer = control::send(
                &job_dir,
                &Request::Cancel { savepoint },
                Duration::from_secs(timeout),
            )?;
            println!("{answer}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo { dir, records, rate } => demo(dir, records, rate),
        Cmd::Cluster(args) => cluster(args),
        Cmd::Worker(args) => worker(args),
        Cmd::ClusterDemo {
            checkpoints,
            records,
            rate,
        } => cluster_demo(checkpoints, records, rate),
        Cmd::List { dir, json } => list(&dir, json),
        Cmd::Inspect {
            path,
            key_groups,
            json,
        } => inspect(&path, key_groups, json),
        Cmd::Verify { path, json } => verify(&path, json),
        Cmd::Dispose { path, force } => dispose(&path, force),
        Cmd::Rewrite {
            path,
            to,
            format: FormatArg::Canonical,
            max_parallelism,
        } => rewrite(&path, &to, max_parallelism),
        Cmd::Dump {
            path,
            state,
            key_group,
            operator,
        } => dump(&path, &state, key_group, operator.as_deref()),
    }
}

fn random_job_id() -> String {
    format!("{:016x}", checkpoint_store::layout::random_u128() as u64)
}

fn run(args: RunArgs) -> CmdResult {
    let job_id = args.job_id.clone().unwrap_or_else(random_job_id);
    std::fs::create_dir_all(&args.checkpoint_dir)
        .map_err(|e| format!("creating {}: {e}", args.checkpoint_dir.display()))?;
    let checkpoint_dir = std::path::absolute(&args.checkpoint_dir)?;
    let restore = match (&args.from_savepoint, &args.from_checkpoint) {
        (Some(path), _) => {
            let plan = RestorePlan::load(&LocalStorage, path)?;
            if plan.metadata().kind != SnapshotKind::Savepoint {
                return Err(Failure(format!(
                    "{} is a checkpoint, not a savepoint; use --from-checkpoint",
                    path.display()
                )));
            }
            Some(plan)
        }
        (None, Some(path)) => Some(RestorePlan::load(&LocalStorage, path)?),
        (None, None) => None,
    };
    let kind = match args.backend {
        BackendArg::Memory => BackendKind::Memory,
        BackendArg::Fs => BackendKind::Fs,
        BackendArg::Rocksdb => BackendKind::RocksDb,
    };
    let job_dir = checkpoint_dir.join(&job_id);
    let settings = BackendSettings {
        kind,
        checkpoint_dir,
        job_id: job_id.clone(),
        incremental: args.incremental,
        local_dir: args.local_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("statectl-rocksdb-{job_id}-{}", random_job_id()))
        }),
        checkpoints: CheckpointConfig {
            num_retained: args.retained,
            cancellation: match args.on_cancel {
                OnCancel::Retain => CancellationPolicy::RetainOnCancellation,
                OnCancel::Delete => CancellationPolicy::DeleteOnCancellation,
            },
            ..CheckpointConfig::default()
        },
        inline_threshold: args.inline_threshold,
    };
    let options = JobOptions {
        source: SourceConfig::new(
            args.source.partitions,
            args.source.records,
            args.source.keys,
        )?,
        parallelism: args.parallelism,
        max_parallelism: args.max_parallelism,
        checkpoint_interval: Duration::from_millis(args.checkpoint_interval_ms.max(1)),
        rate: args.rate,
        savepoint_compression: Compression::Zstd { level: 3 },
    };
    let outcome = with_backend(
        &settings,
        RunJob {
            options,
            restore,
            job_dir: job_dir.clone(),
            kind,
        },
    );
    if kind == BackendKind::RocksDb && args.local_dir.is_none() {
        // The working copy is rebuilt from checkpoints on every restore.
        let _ = std::fs::remove_dir_all(&settings.local_dir);
    }
    match outcome? {
        JobOutcome::Finished { keys, total } => {
            println!("finished: every count is exact ({keys} keys, {total} records)");
        }
        JobOutcome::Cancelled { savepoint } => match savepoint {
            Some(path) => println!("cancelled with savepoint {}", path.display()),
            None => println!("cancelled"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

struct RunJob {
    options: JobOptions,
    restore: Option<RestorePlan>,
    job_dir: PathBuf,
    kind: BackendKind,
}

impl WithBackend for RunJob {
    type Output = JobOutcome;

    fn run<S: StateBackend>(
        self,
        backend: &S,
        coordinator: CheckpointCoordinator,
    ) -> state_api::Result<JobOutcome> {
        let server = ControlServer::start(&self.job_dir).map_err(state_api::Error::user)?;
        let job = Job::start(backend, coordinator, &self.options, self.restore.as_ref())?;
        let mut job = job;
        let consumed = job.consumed()?;
        let total = job.source().records;
        println!(
            "job {} running in {} (backend {}, parallelism {})",
            self.job_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            self.job_dir.display(),
            self.kind.name(),
            self.options.parallelism
        );
        if let Some(plan) = &self.restore {
            println!(
                "restored {} {} from {} at record {consumed} of {total}",
                match plan.metadata().kind {
                    SnapshotKind::Savepoint => "savepoint",
                    SnapshotKind::Checkpoint => "checkpoint",
                },
                plan.checkpoint_id(),
                plan.metadata_path().display()
            );
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} records ({per_sec}, {eta} left)")
        {
            bar.set_style(style);
        }
        bar.set_position(consumed);
        let mut observe = |event: JobEvent| match event {
            JobEvent::Progress { consumed, .. } => bar.set_position(consumed),
            JobEvent::Checkpoint {
                id,
                consumed,
                bytes,
                files,
            } => bar.suspend(|| {
                println!(
                    "checkpoint {id} completed: {consumed} records consumed, {} in {files} files",
                    size(bytes)
                )
            }),
            JobEvent::CheckpointFailed { error } => {
                bar.suspend(|| println!("checkpoint failed (the job goes on): {error}"))
            }
            JobEvent::Savepoint { path } => {
                bar.suspend(|| println!("savepoint completed: {}", path.display()))
            }
        };
        let outcome = job.run(&self.options, Some(server.commands()), &mut observe);
        bar.finish_and_clear();
        outcome
    }
}

fn demo(dir: Option<PathBuf>, records: u64, rate: u64) -> CmdResult {
    let temp;
    let dir = match dir {
        Some(d) => d,
        None => {
            temp = tempfile_dir()?;
            temp.0.clone()
        }
    };
    let options = statectl::demo::DemoOptions {
        exe: std::env::current_exe()?,
        dir,
        records,
        rate,
        timeout: Duration::from_secs(300),
    };
    statectl::demo::run(&options).map_err(|e| format!("demo failed: {e}"))?;
    println!("OK");
    Ok(ExitCode::SUCCESS)
}

fn backend_kind(arg: BackendArg) -> BackendKind {
    match arg {
        BackendArg::Memory => BackendKind::Memory,
        BackendArg::Fs => BackendKind::Fs,
        BackendArg::Rocksdb => BackendKind::RocksDb,
    }
}

fn cluster(args: ClusterArgs) -> CmdResult {
    if matches!(args.backend, BackendArg::Memory) {
        return Err(Failure(
            "the memory backend keeps no checkpoints a worker on another host could read; use fs or rocksdb".into(),
        ));
    }
    let local_dir = args
        .local_dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("statectl-{}", args.job_id)));
    let source = SourceConfig::new(
        args.source.partitions,
        args.source.records,
        args.source.keys,
    )?;
    let options = statectl::cluster::ClusterOptions {
        exe: std::env::current_exe()?,
        worker: statectl::cluster::WorkerOptions {
            location: args.checkpoints,
            job_id: args.job_id,
            backend: backend_kind(args.backend),
            local_dir,
            index: 0,
            parallelism: args.workers,
            max_parallelism: args.max_parallelism,
            source,
            restore: None,
            rate: args.rate,
            inline_threshold: args.inline_threshold,
        },
        checkpoint_interval: Duration::from_millis(args.checkpoint_interval_ms),
        checkpoint_timeout: Duration::from_millis(args.checkpoint_timeout_ms),
        retained: args.retained,
    };
    let outcome = statectl::cluster::run_coordinator(&options)?;
    println!(
        "finished: {} keys, {} records, {} checkpoints; every count is exact",
        outcome.keys, outcome.total, outcome.checkpoints
    );
    Ok(ExitCode::SUCCESS)
}

fn worker(args: WorkerArgs) -> CmdResult {
    let options = statectl::cluster::WorkerOptions {
        location: args.checkpoints,
        job_id: args.job_id,
        backend: backend_kind(args.backend),
        local_dir: args.local_dir,
        index: args.index,
        parallelism: args.parallelism,
        max_parallelism: args.max_parallelism,
        source: SourceConfig::new(
            args.source.partitions,
            args.source.records,
            args.source.keys,
        )?,
        restore: args.restore,
        rate: args.rate,
        inline_threshold: args.inline_threshold,
    };
    statectl::cluster::run_worker(&options)?;
    Ok(ExitCode::SUCCESS)
}

fn cluster_demo(checkpoints: Option<String>, records: u64, rate: u64) -> CmdResult {
    let temp;
    let location = match checkpoints {
        Some(l) => l,
        None => {
            temp = tempfile_dir()?;
            temp.0.display().to_string()
        }
    };
    let options = statectl::demo::ClusterDemoOptions {
        exe: std::env::current_exe()?,
        location,
        records,
        rate,
        timeout: Duration::from_secs(300),
    };
    statectl::demo::run_cluster(&options).map_err(|e| format!("cluster demo failed: {e}"))?;
    println!("OK");
    Ok(ExitCode::SUCCESS)
}

/// A temporary folder removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<TempDir, Failure> {
    let dir = std::env::temp_dir().join(format!("statectl-demo-{}", random_job_id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(TempDir(dir))
}

fn list(dir: &Path, as_json: bool) -> CmdResult {
    let listing = list_snapshots(&LocalStorage, dir)?;
    if as_json {
        println!("{}", json(&listing));
        return Ok(ExitCode::SUCCESS);
    }
    if listing.is_empty() {
        println!("no checkpoint or savepoint under {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(&[
        "path",
        "id",
        "time (UTC)",
        "kind",
        "format",
        "size",
        "files",
        "owner",
    ]);
    for s in &listing {
        t.add_row(vec![
            s.path.clone(),
            s.checkpoint_id.map(|i| i.to_string()).unwrap_or_default(),
            s.timestamp_millis.map(time).unwrap_or_default(),
            s.kind.clone(),
            match &s.error {
                Some(e) => format!("damaged: {e}"),
                None => s.format.clone(),
            },
            size(s.bytes),
            s.files.to_string(),
            s.owner.clone(),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

fn inspect(path: &Path, key_groups: bool, as_json: bool) -> CmdResult {
    let metadata_path = resolve_metadata_path(&LocalStorage, path)?;
    let mut summary = inspect_snapshot(&LocalStorage, &metadata_path, key_groups)?;
    count_native_records(&metadata_path, &mut summary, key_groups)?;
    if as_json {
        println!("{}", json(&summary));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} {} ({}), {} UTC, {} in {} files ({} shared, {} exclusive)",
        summary.kind,
        summary.checkpoint_id,
        summary.format,
        time(summary.timestamp_millis),
        size(summary.total_bytes),
        summary.files,
        size(summary.shared_bytes),
        size(summary.exclusive_bytes)
    );
    println!("metadata: {}", summary.metadata);
    for op in &summary.operators {
        println!(
            "\noperator {} (parallelism {}, max parallelism {})",
            op.operator_id, op.parallelism, op.max_parallelism
        );
        let mut states = table(&[
            "state",
            "kind",
            "key",
            "namespace",
            "values",
            "entries",
            "bytes",
        ]);
        for s in &op.states {
            states.add_row(vec![
                s.name.clone(),
                s.kind.clone(),
                s.key_codec.clone().unwrap_or_default(),
                s.namespace_codec.clone().unwrap_or_default(),
                s.value_codecs.join(", "),
                s.entries
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.bytes.map(size).unwrap_or_else(|| "-".into()),
            ]);
        }
        println!("{states}");
        let mut handles = table(&["subtask", "handle", "key groups", "files", "size"]);
        for sub in &op.subtasks {
            for h in &sub.keyed {
                handles.add_row(vec![
                    sub.index.to_string(),
                    h.kind.clone(),
                    h.key_groups.clone(),
                    h.files.len().to_string(),
                    size(h.bytes),
                ]);
            }
            if !sub.operator_states.is_empty() {
                handles.add_row(vec![
                    sub.index.to_string(),
                    "operator state".into(),
                    sub.operator_states.join(", "),
                    String::new(),
                    size(sub.bytes),
                ]);
            }
        }
        println!("{handles}");
        if key_groups {
            for s in op.states.iter().filter(|s| !s.key_groups.is_empty()) {
                let mut t = table(&["key group", "entries", "bytes"]);
                for kg in &s.key_groups {
                    t.add_row(vec![
                        kg.key_group.to_string(),
                        kg.entries.to_string(),
                        size(kg.bytes),
                    ]);
                }
                println!("state {} per key group\n{t}", s.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(path: &Path, as_json: bool) -> CmdResult {
    let metadata_path = resolve_metadata_path(&LocalStorage, path)?;
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("verifying {bytes} ({bytes_per_sec})") {
        bar.set_style(style);
    }
    let mut report = verify_snapshot(&LocalStorage, &metadata_path, &mut |bytes| {
        bar.set_position(bytes)
    });
    verify_native_records(&metadata_path, &mut report);
    bar.finish_and_clear();
    if as_json {
        println!("{}", json(&report));
    } else if report.is_whole() {
        println!(
            "{}: whole ({} files, {} checked, {} records, {} native files)",
            report.metadata,
            report.files,
            size(report.bytes),
            report.records,
            report.native_files
        );
    } else {
        println!("{}: {} problem(s)", report.metadata, report.problems.len());
        for p in &report.problems {
            match p.offset {
                Some(offset) => println!("{} at offset {offset}: {}", p.file, p.what),
                None => println!("{}: {}", p.file, p.what),
            }
        }
    }
    Ok(if report.is_whole() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn dispose(path: &Path, force: bool) -> CmdResult {
    let metadata_path = resolve_metadata_path(&LocalStorage, path)?;
    let folder = metadata_path
        .parent()
        .ok_or_else(|| format!("{} has no folder", metadata_path.display()))?
        .to_path_buf();
    if folder != path && std::path::absolute(&folder)? != std::path::absolute(path)? {
        return Err(Failure(format!(
            "{} is not a savepoint folder (it names {}); give the snapshot's own folder",
            path.display(),
            folder.display()
        )));
    }
    let metadata = load_metadata(&LocalStorage, &metadata_path)?;
    match metadata.kind {
        SnapshotKind::Savepoint => {
            checkpoint_store::dispose_savepoint(&LocalStorage, &folder)?;
            println!("disposed savepoint {}", folder.display());
        }
        SnapshotKind::Checkpoint if !force => {
            return Err(Failure(format!(
                "{} is checkpoint {} of a job, which its retention deletes when it is subsumed; pass --force to delete it anyway",
                folder.display(),
                metadata.checkpoint_id
            )));
        }
        SnapshotKind::Checkpoint => {
            if folder.parent().is_some_and(|job| {
                job.join(control::SOCKET_NAME).exists()
                    && control::send(job, &Request::Status, Duration::from_secs(2)).is_ok()
            }) {
                return Err(Failure(format!(
                    "the job owning {} is running; cancel it first",
                    folder.display()
                )));
            }
            std::fs::remove_dir_all(&folder)
                .map_err(|e| format!("removing {}: {e}", folder.display()))?;
            println!(
                "deleted checkpoint {} ({}); files in the job's shared/ folder that it referenced stay until the job's retention collects them",
                metadata.checkpoint_id,
                folder.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A scratch folder in the system's temporary folder, removed on drop.
fn scratch() -> Result<TempDir, Failure> {
    let dir = std::env::temp_dir().join(format!("statectl-scratch-{}", random_job_id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(TempDir(dir))
}

/// Reads every record of the native handles whose files verified (their
/// CRCs only say the bytes are those written): each must decode and sit in
/// its key group.
fn verify_native_records(metadata_path: &Path, report: &mut VerifyReport) {
    let Ok(metadata) = load_metadata(&LocalStorage, metadata_path) else {
        return;
    };
    let Ok(work) = scratch() else {
        return;
    };
    let reader = RocksDbRecords::new(&work.0);
    let mut seen = std::collections::HashSet::new();
    for op in &metadata.operators {
        for sub in &op.subtasks {
            for h in &sub.keyed {
                let KeyedStateHandle::IncrementalNative(n) = h else {
                    continue;
                };
                let files: Vec<String> = n
                    .files()
                    .filter_map(|f| match &f.data {
                        state_api::snapshot::stream::StreamStateHandle::File { path, .. } => {
                            Some(path.display().to_string())
                        }
                        _ => None,
                    })
                    .collect();
                if !seen.insert(files.clone())
                    || report.problems.iter().any(|p| files.contains(&p.file))
                {
                    continue;
                }
                let mut records = 0u64;
                match reader.for_each_record(n, &mut |_, _| {
                    records += 1;
                    Ok(())
                }) {
                    Ok(()) => report.records += records,
                    Err(e) => report.problems.push(Problem {
                        file: h.describe(),
                        offset: None,
                        what: e.to_string(),
                    }),
                }
            }
        }
    }
}

fn rewrite(path: &Path, to: &Path, max_parallelism: Option<u32>) -> CmdResult {
    let existed = to.exists();
    let work = scratch()?;
    let native = RocksDbRecords::new(&work.0);
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} rewriting: {pos} records read ({per_sec})")
    {
        bar.set_style(style);
    }
    let result = rewrite_snapshot(
        Arc::new(LocalStorage),
        path,
        to,
        &RewriteOptions {
            max_parallelism,
            compression: Compression::Zstd { level: 3 },
            scratch_dir: work.0.clone(),
        },
        Some(&native),
        &mut |n| bar.set_position(n),
    );
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            println!(
                "wrote savepoint {} ({} records{})",
                report.path.display(),
                report.records,
                match max_parallelism {
                    Some(m) => format!(", max parallelism {m}"),
                    None => String::new(),
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // Only what this command created goes: a folder it made.
            if !existed {
                let _ = std::fs::remove_dir_all(to);
            }
            Err(Failure(format!("rewrite failed: {e}")))
        }
    }
}

fn dump(path: &Path, state: &str, key_group: Option<u32>, operator: Option<&str>) -> CmdResult {
    use std::io::Write;
    let metadata_path = resolve_metadata_path(&LocalStorage, path)?;
    let metadata = load_metadata(&LocalStorage, &metadata_path)?;
    let work = scratch()?;
    let native = RocksDbRecords::new(&work.0);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut found = false;
    let mut names = std::collections::BTreeSet::new();
    let mut write_error = None;
    for op in metadata
        .operators
        .iter()
        .filter(|o| operator.is_none_or(|id| id == o.operator_id))
    {
        if let Some(g) = key_group {
            if g >= op.max_parallelism {
                return Err(Failure(format!(
                    "key group {g} is out of range for operator {} (max parallelism {})",
                    op.operator_id, op.max_parallelism
                )));
            }
        }
        for sub in &op.subtasks {
            for h in &sub.keyed {
                let range = key_group.map(|g| state_api::KeyGroupRange::new(g, g));
                for_each_keyed_record(h, Some(&native), range, &mut |meta, key_codec, kg, r| {
                    names.insert(meta.name.clone());
                    if meta.name != state || write_error.is_some() {
                        return Ok(());
                    }
                    found = true;
                    let line = record_json(
                        &op.operator_id,
                        state,
                        key_codec,
                        &meta.namespace,
                        &meta.values,
                        kg,
                        &r,
                    );
                    if let Err(e) = writeln!(out, "{line}") {
                        write_error = Some(e);
                    }
                    Ok(())
                })?;
            }
        }
    }
    match write_error {
        // A reader that stops early (`| head`) is not an error.
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        Some(e) => return Err(Failure(format!("writing the records: {e}"))),
        None => {}
    }
    if let Err(e) = out.flush() {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(Failure(format!("writing the records: {e}")));
        }
    }
    if !found && !names.contains(state) {
        return Err(Failure(format!(
            "{} holds no keyed state '{state}'{} (keyed states with records: {})",
            metadata_path.display(),
            key_group
                .map(|g| format!(" in key group {g}"))
                .unwrap_or_default(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.into_iter().collect::<Vec<_>>().join(", ")
            }
        )));
    }
    Ok(ExitCode::SUCCESS)
}

/// Fills the entry and byte counts `inspect_snapshot` leaves empty for
/// operators whose keyed state is all in native RocksDB handles, by reading
/// their records.
fn count_native_records(
    metadata_path: &Path,
    summary: &mut checkpoint_store::SnapshotSummary,
    per_key_group: bool,
) -> Result<(), Failure> {
    use std::collections::{BTreeMap, HashMap};
    let metadata = load_metadata(&LocalStorage, metadata_path)?;
    let work = scratch()?;
    let reader = RocksDbRecords::new(&work.0);
    for op in &metadata.operators {
        let handles: Vec<&KeyedStateHandle> = op.subtasks.iter().flat_map(|s| &s.keyed).collect();
        if handles.is_empty()
            || !handles
                .iter()
                .all(|h| matches!(h, KeyedStateHandle::IncrementalNative(_)))
        {
            continue;
        }
        // state name -> key group -> (entries, bytes)
        let mut counts: HashMap<String, BTreeMap<u32, (u64, u64)>> = HashMap::new();
        for h in handles {
            let KeyedStateHandle::IncrementalNative(n) = h else {
                continue;
            };
            reader.for_each_record(n, &mut |kg, r| {
                if let Some(meta) = n.states.get(r.state as usize) {
                    let slot = counts
                        .entry(meta.name.clone())
                        .or_default()
                        .entry(kg)
                        .or_default();
                    slot.0 += 1;
                    slot.1 += record_bytes(&r);
                }
                Ok(())
            })?;
        }
        let Some(target) = summary
            .operators
            .iter_mut()
            .find(|o| o.operator_id == op.operator_id)
        else {
            continue;
        };
        for state in target.states.iter_mut().filter(|s| s.entries.is_none()) {
            let groups = counts.remove(&state.name).unwrap_or_default();
            state.entries = Some(groups.values().map(|c| c.0).sum());
            state.bytes = Some(groups.values().map(|c| c.1).sum());
            if per_key_group {
                state.key_groups = groups
                    .into_iter()
                    .map(|(key_group, (entries, bytes))| KeyGroupStat {
                        key_group,
                        entries,
                        bytes,
                    })
                    .collect();
            }
        }
    }
    Ok(())
}
