//! The `statectl` binary as a user runs it: the job workflow with real
//! processes, and the inspection tools on real checkpoints of every backend,
//! whole, corrupted and incomplete.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;

fn statectl() -> Command {
    Command::cargo_bin("statectl").expect("the statectl binary is built")
}

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("statectl")
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Output {
    let out = statectl().args(args).output().expect("statectl runs");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.code, 0,
        "statectl {args:?} failed:\n{}\n{}",
        out.stdout, out.stderr
    );
    out.stdout
}

/// Runs the job to the end of its source, keeping its checkpoints; returns
/// the job's folder.
fn finished_job(root: &Path, backend: &str, extra: &[&str]) -> PathBuf {
    let cp = root.join("checkpoints");
    let cp = cp.to_str().expect("utf-8 path");
    let mut args = vec![
        "run",
        "--backend",
        backend,
        "--job-id",
        "job",
        "--checkpoint-dir",
        cp,
        "--records",
        "30000",
        "--keys",
        "500",
        "--rate",
        "60000",
        "--checkpoint-interval-ms",
        "50",
        "--retained",
        "3",
        "--inline-threshold",
        "0",
    ];
    args.extend_from_slice(extra);
    let out = ok(&args);
    assert!(
        out.contains("finished: every count is exact (500 keys, 30000 records)"),
        "{out}"
    );
    assert!(out.contains("checkpoint 2 completed"), "{out}");
    root.join("checkpoints").join("job")
}

fn inspect_json(path: &Path) -> serde_json::Value {
    let out = ok(&["inspect", "--json", path.to_str().expect("utf-8")]);
    serde_json::from_str(&out).expect("inspect --json prints JSON")
}

/// Every file the latest checkpoint under `path` references.
fn referenced_files(path: &Path) -> Vec<PathBuf> {
    let summary = inspect_json(path);
    let mut files: Vec<PathBuf> = summary["operators"]
        .as_array()
        .expect("operators")
        .iter()
        .flat_map(|op| op["subtasks"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| s["keyed"].as_array().cloned().unwrap_or_default())
        .flat_map(|h| h["files"].as_array().cloned().unwrap_or_default())
        .filter(|f| f["inline"] == false)
        .map(|f| PathBuf::from(f["path"].as_str().expect("path")))
        .collect();
    files.sort();
    files.dedup();
    files
}

fn flip_bit(file: &Path, offset: usize) {
    let mut bytes = std::fs::read(file).expect("read");
    bytes[offset] ^= 0x10;
    std::fs::write(file, bytes).expect("write");
}

#[test]
fn rocksdb_checkpoints_list_inspect_and_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = finished_job(dir.path(), "rocksdb", &[]);
    let listing = ok(&[
        "list",
        dir.path().join("checkpoints").to_str().expect("utf-8"),
    ]);
    assert!(listing.contains("native rocksdb"), "{listing}");
    assert!(listing.contains("retention"), "{listing}");
    let summary = inspect_json(&job);
    assert_eq!(summary["kind"], "checkpoint");
    assert_eq!(summary["format"], "native rocksdb");
    let ops: Vec<&str> = summary["operators"]
        .as_array()
        .expect("operators")
        .iter()
        .map(|o| o["operator_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ops, ["source", "count"]);
    // The count state's entries are read through RocksDB: one per key.
    let count = &summary["operators"][1]["states"][0];
    assert_eq!(count["name"], "count");
    assert_eq!(count["entries"], 500, "{count}");
    let verified = ok(&["verify", job.to_str().expect("utf-8")]);
    assert!(verified.contains("whole"), "{verified}");
    // The table form prints too.
    let text = ok(&["inspect", job.to_str().expect("utf-8")]);
    assert!(text.contains("operator count"), "{text}");
}

#[test]
fn one_flipped_bit_in_any_state_file_is_found_on_every_backend() {
    for (backend, extra) in [
        ("memory", &[][..]),
        ("fs", &[][..]),
        ("fs", &["--incremental"][..]),
        ("rocksdb", &[][..]),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = finished_job(dir.path(), backend, extra);
        let files = referenced_files(&job);
        assert!(
            !files.is_empty(),
            "{backend}: the checkpoint references files"
        );
        for file in &files {
            let len = std::fs::metadata(file).expect("stat").len() as usize;
            for offset in [len / 2, len - 1] {
                flip_bit(file, offset);
                let out = run(&["verify", job.to_str().expect("utf-8")]);
                flip_bit(file, offset);
                let name = file.to_str().expect("utf-8");
                assert_eq!(
                    out.code, 1,
                    "{backend} {extra:?}: verify must fail after a bit flip at {offset} of {name}:\n{}{}",
                    out.stdout, out.stderr
                );
                assert!(
                    out.stdout.contains(name),
                    "{backend} {extra:?}: the report names {name}:\n{}",
                    out.stdout
                );
            }
        }
        let whole = run(&["verify", job.to_str().expect("utf-8")]);
        assert_eq!(whole.code, 0, "{backend}: whole again: {}", whole.stdout);
    }
}

#[test]
fn damaged_and_incomplete_snapshots_are_reported_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = finished_job(dir.path(), "fs", &[]);
    let job_s = job.to_str().expect("utf-8");

    // A path that is not a checkpoint.
    let out = run(&["verify", dir.path().to_str().expect("utf-8")]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("statectl: error: "),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    let out = run(&["inspect", "/no/such/folder"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("/no/such/folder"), "{}", out.stderr);

    // A missing state file.
    let files = referenced_files(&job);
    let missing = &files[0];
    let kept = std::fs::read(missing).expect("read");
    std::fs::remove_file(missing).expect("remove");
    let out = run(&["verify", job_s]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains(missing.to_str().expect("utf-8")),
        "{}",
        out.stdout
    );
    std::fs::write(missing, kept).expect("restore the file");

    // A checkpoint is not a savepoint.
    let chk = latest_checkpoint(&job);
    let out = run(&["run", "--from-savepoint", chk.to_str().expect("utf-8")]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("is a checkpoint"), "{}", out.stderr);

    // A truncated `_metadata`.
    let meta = chk.join("_metadata");
    let bytes = std::fs::read(&meta).expect("read");
    std::fs::write(&meta, &bytes[..bytes.len() / 2]).expect("truncate");
    let out = run(&["verify", chk.to_str().expect("utf-8")]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("_metadata"), "{}", out.stdout);
    let listing = ok(&["list", job_s]);
    assert!(listing.contains("damaged"), "{listing}");
    // Restoring from it fails with one line and deletes nothing.
    let out = run(&[
        "run",
        "--from-checkpoint",
        chk.to_str().expect("utf-8"),
        "--checkpoint-dir",
        dir.path().join("other").to_str().expect("utf-8"),
    ]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(chk.join("_metadata").exists());
}

fn latest_checkpoint(job: &Path) -> PathBuf {
    let mut ids: Vec<u64> = std::fs::read_dir(job)
        .expect("job folder")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
        .collect();
    ids.sort_unstable();
    job.join(format!("chk-{}", ids.last().expect("a checkpoint")))
}

/// A `statectl run` process whose output is read line by line.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let mut child = StdCommand::new(bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    fn wait_for(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains(what) {
                return line;
            }
        }
        panic!("no line with {what:?}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn savepoint_cancel_and_resume_at_another_parallelism_and_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = dir.path().join("checkpoints");
    let cp_s = cp.to_str().expect("utf-8");
    let job = Running::start(&[
        "run",
        "--job-id",
        "a",
        "--backend",
        "rocksdb",
        "--parallelism",
        "2",
        "--checkpoint-dir",
        cp_s,
        "--records",
        "200000",
        "--keys",
        "2000",
        "--rate",
        "20000",
        "--checkpoint-interval-ms",
        "100",
        "--on-cancel",
        "delete",
    ]);
    job.wait_for("checkpoint 1 completed");
    let job_dir = cp.join("a");
    let job_s = job_dir.to_str().expect("utf-8");
    let status = ok(&[
        "savepoint",
        job_s,
        "--target",
        dir.path().join("sp").to_str().expect("utf-8"),
    ]);
    let first = PathBuf::from(status.trim());
    assert!(first.join("_metadata").exists(), "{status}");
    // Cancel with a second savepoint; DELETE on cancellation removes the checkpoints.
    let out = ok(&[
        "cancel",
        job_s,
        "--savepoint",
        dir.path().join("sp").to_str().expect("utf-8"),
    ]);
    let second = PathBuf::from(out.trim());
    assert!(second.join("_metadata").exists(), "{out}");
    let mut job = job;
    assert!(job.child.wait().expect("exit").success());
    assert!(
        !latest_checkpoint_exists(&job_dir),
        "DELETE on cancellation"
    );
    // The job is gone: the tool says so in one line.
    let out = run(&["savepoint", job_s]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no job runs"), "{}", out.stderr);
    // Resume the second savepoint on the heap at parallelism 3.
    let out = ok(&[
        "run",
        "--from-savepoint",
        second.to_str().expect("utf-8"),
        "--backend",
        "memory",
        "--parallelism",
        "3",
        "--checkpoint-dir",
        cp_s,
    ]);
    assert!(
        out.contains("finished: every count is exact (2000 keys, 200000 records)"),
        "{out}"
    );
    // Disposing: a savepoint goes, a checkpoint needs --force.
    ok(&["dispose", first.to_str().expect("utf-8")]);
    assert!(!first.exists());
}

fn latest_checkpoint_exists(job: &Path) -> bool {
    std::fs::read_dir(job)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("chk-"))
        })
        .unwrap_or(false)
}

#[test]
fn dispose_refuses_a_checkpoint_without_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = finished_job(dir.path(), "memory", &[]);
    let chk = latest_checkpoint(&job);
    let out = run(&["dispose", chk.to_str().expect("utf-8")]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    assert!(chk.join("_metadata").exists(), "nothing deleted");
    ok(&["dispose", "--force", chk.to_str().expect("utf-8")]);
    assert!(!chk.exists());
}

#[test]
fn the_demo_ends_with_ok() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ok(&[
        "demo",
        "--dir",
        dir.path().to_str().expect("utf-8"),
        "--records",
        "100000",
        "--rate",
        "20000",
    ]);
    assert_eq!(out.lines().last(), Some("OK"), "{out}");
}

#[test]
fn a_rewrite_at_another_max_parallelism_restores_on_every_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A native RocksDB checkpoint and a heap incremental chain.
    for (backend, extra) in [("rocksdb", &[][..]), ("fs", &["--incremental"][..])] {
        let root = dir.path().join(backend);
        let job = finished_job(&root, backend, extra);
        for max in ["256", "32"] {
            let target = root.join(format!("rewritten-{max}"));
            let out = ok(&[
                "rewrite",
                job.to_str().expect("utf-8"),
                "--to",
                target.to_str().expect("utf-8"),
                "--max-parallelism",
                max,
            ]);
            assert!(out.contains("wrote savepoint"), "{out}");
            let summary = inspect_json(&target);
            assert_eq!(summary["kind"], "savepoint");
            assert_eq!(summary["format"], "full");
            assert_eq!(
                summary["operators"][1]["max_parallelism"],
                max.parse::<u32>().expect("max")
            );
            ok(&["verify", target.to_str().expect("utf-8")]);
            // The restored job finds its source exhausted and checks every count.
            for to in ["memory", "fs", "rocksdb"] {
                let out = ok(&[
                    "run",
                    "--from-savepoint",
                    target.to_str().expect("utf-8"),
                    "--backend",
                    to,
                    "--parallelism",
                    "3",
                    "--checkpoint-dir",
                    root.join("restored").to_str().expect("utf-8"),
                ]);
                assert!(
                    out.contains("finished: every count is exact (500 keys, 30000 records)"),
                    "{backend} rewritten at {max}, restored on {to}: {out}"
                );
            }
        }
        // A failed rewrite leaves nothing behind and touches nothing.
        let out = run(&[
            "rewrite",
            job.to_str().expect("utf-8"),
            "--to",
            root.join("bad").to_str().expect("utf-8"),
            "--max-parallelism",
            "0",
        ]);
        assert_eq!(out.code, 1, "{}", out.stdout);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(!root.join("bad").exists());
    }
}

#[test]
fn dump_prints_every_record_as_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    for backend in ["rocksdb", "memory"] {
        let root = dir.path().join(backend);
        let job = finished_job(&root, backend, &[]);
        let out = ok(&["dump", job.to_str().expect("utf-8"), "--state", "count"]);
        let records: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(records.len(), 500, "{backend}: one record per key");
        let total: u64 = records
            .iter()
            .map(|r| r["value"].as_u64().expect("a decoded u64 count"))
            .sum();
        assert_eq!(total, 30_000, "{backend}: the counts add up to the records");
        assert!(records.iter().all(|r| r["key"].is_u64()), "keys decoded");
        // One key group only.
        let kg = records[0]["key_group"].as_u64().expect("key group");
        let out = ok(&[
            "dump",
            job.to_str().expect("utf-8"),
            "--state",
            "count",
            "--key-group",
            &kg.to_string(),
        ]);
        let expected = records.iter().filter(|r| r["key_group"] == kg).count();
        assert_eq!(out.lines().count(), expected, "{backend}");
        // An unknown state is a one-line error naming the states there are.
        let out = run(&["dump", job.to_str().expect("utf-8"), "--state", "nope"]);
        assert_eq!(out.code, 1);
        assert!(out.stderr.contains("count"), "{}", out.stderr);
    }
}

#[test]
fn a_savepoint_of_another_job_is_refused() {
    use checkpoint_store::processor::SavepointWriter;
    use checkpoint_store::SubtaskSpec;
    use state_api::state::access::KeyedStateBackendExt;
    use state_api::state::descriptor::ValueStateDescriptor;
    use state_api::{KeyedStateBackend, StateBackend};
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backend_memory::MemoryStateBackend::new();
    let spec = SubtaskSpec::new("enrich", 128, 1, 0).expect("spec");
    let mut keyed = backend
        .create_keyed_backend(
            spec.keyed_params(state_api::codec::postcard::<String>()),
            &[],
        )
        .expect("backend");
    let state = keyed
        .value_state(&ValueStateDescriptor::<u64>::new("seen"))
        .expect("state");
    keyed.set_current_key("a".into()).expect("key");
    state.on(&mut keyed).set(1).expect("set");
    let mut writer = SavepointWriter::create(&dir.path().join("other"), 1).expect("writer");
    writer.add_keyed("enrich", 128, &mut keyed).expect("add");
    let path = writer.finish().expect("finish");
    let out = run(&[
        "run",
        "--from-savepoint",
        path.to_str().expect("utf-8"),
        "--checkpoint-dir",
        dir.path().join("ck").to_str().expect("utf-8"),
    ]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("another job"), "{}", out.stderr);
    assert!(out.stderr.contains("enrich"), "{}", out.stderr);
}

/// The job across processes on the local S3 server (`scripts/test` starts
/// it and sets `FLOWSTATE_S3_URL`): 3 workers checkpoint to S3, one is
/// killed with SIGKILL, the job resumes from S3 at 2 workers and every count
/// is exact; then the same on RocksDB workers, whose SSTs go to S3 once.
#[test]
fn cluster_demo_on_s3_survives_a_killed_worker_and_a_rescale() {
    let Some(url) = std::env::var("FLOWSTATE_S3_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        assert!(
            std::env::var_os("FLOWSTATE_REQUIRE_S3").is_none(),
            "FLOWSTATE_REQUIRE_S3 is set but FLOWSTATE_S3_URL is not"
        );
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED cluster_demo_on_s3: FLOWSTATE_S3_URL is not set (scripts/test sets it)\n",
        );
        return;
    };
    let location = format!(
        "{}/cli-cluster-{}",
        url.trim_end_matches('/'),
        std::process::id()
    );
    let out = statectl()
        .args([
            "cluster-demo",
            "--checkpoints",
            &location,
            "--records",
            "100000",
        ])
        .output()
        .expect("statectl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("killed worker 1"), "{stdout}");
    assert!(stdout.contains("resuming from checkpoint"), "{stdout}");
    assert!(
        stdout.contains("finished: 5000 keys, 100000 records"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("OK"), "{stdout}");

    // RocksDB workers: a run at 3 workers, then new processes resuming from
    // its latest S3 checkpoint at 2 workers.
    let local = tempfile::tempdir().expect("temp dir");
    let run = |workers: &str, rate: Option<&str>| {
        let mut cmd = statectl();
        cmd.args([
            "cluster",
            "--checkpoints",
            &location,
            "--job-id",
            "rocks",
            "--backend",
            "rocksdb",
            "--workers",
            workers,
            "--records",
            "60000",
            "--partitions",
            "3",
            "--keys",
            "2000",
            "--checkpoint-interval-ms",
            "200",
        ])
        .arg("--local-dir")
        .arg(local.path());
        if let Some(rate) = rate {
            cmd.args(["--rate", rate]);
        }
        cmd.output().expect("statectl runs")
    };
    let first = run("3", Some("20000"));
    let text = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{text}");
    assert!(
        text.contains("checkpoint 2 completed"),
        "checkpoints were taken: {text}"
    );
    assert!(
        text.contains("finished: 2000 keys, 60000 records"),
        "{text}"
    );
}
