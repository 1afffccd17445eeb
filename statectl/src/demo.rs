//! `statectl demo`: the job workflow with real processes. A job runs on the
//! fs backend and is killed with SIGKILL mid-stream; it resumes from its
//! latest checkpoint at another parallelism; a savepoint is taken from the
//! outside and the job cancelled; the savepoint is verified and the job
//! resumes from it on RocksDB, runs to the end of its source and checks that
//! every count is exact.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The demo's settings.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The `statectl` binary the steps run.
    pub exe: PathBuf,
    /// Where checkpoints and savepoints go.
    pub dir: PathBuf,
    /// Records in the source.
    pub records: u64,
    /// Records per second while a step has to catch the job mid-stream.
    pub rate: u64,
    /// How long to wait for any one step.
    pub timeout: Duration,
}

/// A job process with its output lines.
struct JobProcess {
    child: Child,
    lines: Receiver<String>,
    what: String,
}

impl JobProcess {
    fn spawn(exe: &Path, args: &[String], what: &str) -> Result<Self, String> {
        let mut child = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {what}: {e}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| format!("{what}: no output pipe"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(JobProcess {
            child,
            lines,
            what: what.to_string(),
        })
    }

    /// Waits for a line for which `want` returns a value; every line is
    /// echoed, indented.
    fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    println!("    | {line}");
                    if let Some(v) = want(&line) {
                        return Ok(v);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    return Err(format!("{} made no progress within {timeout:?}", self.what));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map_err(|e| e.to_string())?;
                    return Err(format!(
                        "{} ended ({status}) before the expected step",
                        self.what
                    ));
                }
            }
        }
    }

    /// Waits for the process to exit and returns whether it succeeded,
    /// echoing the rest of its output.
    fn finish(mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => println!("    | {line}"),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    return Err(format!("{} did not end within {timeout:?}", self.what));
                }
            }
        }
        let status = self.child.wait().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{} failed ({status})", self.what))
        }
    }
}

impl Drop for JobProcess {
    fn drop(&mut self) {
        // A step that failed half-way leaves no process behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The id of a "checkpoint N completed" line.
fn completed_checkpoint(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("checkpoint ")?;
    let (id, tail) = rest.split_once(' ')?;
    tail.starts_with("completed").then(|| id.parse().ok())?
}

fn tool(exe: &Path, args: &[String], what: &str) -> Result<String, String> {
    let out = Command::new(exe)
        .args(args)
        .output()
        .map_err(|e| format!("starting {what}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    for line in stdout.lines() {
        println!("    | {line}");
    }
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Runs the demo; prints each step and returns an error naming the step
/// that failed.
pub fn run(options: &DemoOptions) -> Result<(), String> {
    let exe = &options.exe;
    let checkpoints = options.dir.join("checkpoints");
    let savepoints = options.dir.join("savepoints");
    let cp = checkpoints.display().to_string();
    let records = options.records.to_string();
    let rate = options.rate.to_string();
    let common = |job: &str, backend: &str, parallelism: &str| {
        args(&[
            "run",
            "--job-id",
            job,
            "--backend",
            backend,
            "--parallelism",
            parallelism,
            "--checkpoint-dir",
            &cp,
            "--checkpoint-interval-ms",
            "200",
        ])
    };
    let t = options.timeout;

    println!(
        "step 1: run the job on the fs backend at parallelism 2 and kill it (SIGKILL) mid-stream"
    );
    let mut a = common("demo-1", "fs", "2");
    a.extend(args(&["--records", &records, "--rate", &rate]));
    let mut job = JobProcess::spawn(exe, &a, "the first job")?;
    let mut seen = 0;
    let last = job.wait_for(t, |l| {
        let id = completed_checkpoint(l)?;
        seen += 1;
        (seen >= 2).then_some(id)
    })?;
    job.child
        .kill()
        .map_err(|e| format!("killing the first job: {e}"))?;
    let status = job.child.wait().map_err(|e| e.to_string())?;
    println!("  killed after checkpoint {last} ({status})");
    drop(job);

    println!("step 2: resume from its latest checkpoint at parallelism 3, take a savepoint from the outside, cancel");
    let job_dir_1 = checkpoints.join("demo-1").display().to_string();
    let mut a = common("demo-2", "fs", "3");
    a.extend(args(&["--from-checkpoint", &job_dir_1, "--rate", &rate]));
    let mut job = JobProcess::spawn(exe, &a, "the resumed job")?;
    job.wait_for(t, completed_checkpoint)?;
    let job_dir_2 = checkpoints.join("demo-2").display().to_string();
    let sp_target = savepoints.display().to_string();
    let savepoint = tool(
        exe,
        &args(&["savepoint", &job_dir_2, "--target", &sp_target]),
        "statectl savepoint",
    )?;
    println!("  savepoint: {savepoint}");
    tool(exe, &args(&["cancel", &job_dir_2]), "statectl cancel")?;
    job.finish(t)?;

    println!("step 3: verify the savepoint");
    tool(exe, &args(&["verify", &savepoint]), "statectl verify")?;

    println!("step 4: resume from the savepoint on RocksDB at parallelism 1 and run to the end");
    let mut a = common("demo-3", "rocksdb", "1");
    a.extend(args(&["--from-savepoint", &savepoint]));
    let mut job = JobProcess::spawn(exe, &a, "the job on RocksDB")?;
    job.wait_for(t, |l| l.starts_with("finished:").then_some(()))?;
    job.finish(t)?;
    println!("every count is exact after a kill, a rescale 2 -> 3 -> 1, a savepoint and a change of backend");
    Ok(())
}

/// The settings of the demo across processes.
#[derive(Clone, Debug)]
pub struct ClusterDemoOptions {
    /// The `statectl` binary the steps run.
    pub exe: PathBuf,
    /// Where checkpoints go (a folder or an object-store URL).
    pub location: String,
    /// Records in the source.
    pub records: u64,
    /// Records each worker reads per second before the kill.
    pub rate: u64,
    /// How long to wait for any one step.
    pub timeout: Duration,
}

/// The pid of a "worker I pid P ..." line.
fn worker_pid(line: &str) -> Option<(u32, u32)> {
    let mut words = line.split_whitespace();
    (words.next()? == "worker").then_some(())?;
    let index = words.next()?.parse().ok()?;
    (words.next()? == "pid").then_some(())?;
    Some((index, words.next()?.parse().ok()?))
}

/// The job across processes: 3 workers checkpointing to the location, one
/// killed with SIGKILL after two checkpoints (the coordinator fails the
/// job), then the job resumed from its latest checkpoint at 2 workers and
/// run to the end of its source, every count checked.
pub fn run_cluster(options: &ClusterDemoOptions) -> Result<(), String> {
    let exe = &options.exe;
    let t = options.timeout;
    let job = format!("cluster-demo-{}", std::process::id());
    let common = |workers: &str| {
        args(&[
            "cluster",
            "--checkpoints",
            &options.location,
            "--job-id",
            &job,
            "--workers",
            workers,
            "--checkpoint-interval-ms",
            "300",
            "--records",
            &options.records.to_string(),
            "--partitions",
            "4",
            "--keys",
            "5000",
        ])
    };
    println!(
        "step 1: run the job as a coordinator and 3 worker processes checkpointing to {}; SIGKILL worker 1 after two checkpoints",
        options.location
    );
    let mut a = common("3");
    a.extend(args(&["--rate", &options.rate.to_string()]));
    let mut coordinator = JobProcess::spawn(exe, &a, "the coordinator")?;
    let mut pids = std::collections::BTreeMap::new();
    let mut seen = 0;
    let last = coordinator.wait_for(t, |l| {
        if let Some((i, pid)) = worker_pid(l) {
            pids.insert(i, pid);
        }
        let id = completed_checkpoint(l)?;
        seen += 1;
        (seen >= 2).then_some(id)
    })?;
    let victim = *pids.get(&1).ok_or("the coordinator named no worker 1")?;
    let status = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .map_err(|e| format!("killing worker 1: {e}"))?;
    if !status.success() {
        return Err(format!("kill -KILL {victim} failed ({status})"));
    }
    println!("  killed worker 1 (pid {victim}) after checkpoint {last}");
    match coordinator.finish(t) {
        Ok(()) => return Err("the coordinator succeeded although a worker was killed".into()),
        Err(e) => println!("  the job failed, as it must: {e}"),
    }

    println!("step 2: resume from the latest checkpoint with 2 workers and run to the end");
    let mut coordinator = JobProcess::spawn(exe, &common("2"), "the resumed coordinator")?;
    let resumed = coordinator.wait_for(t, |l| {
        let rest = l.strip_prefix("resuming from checkpoint ")?;
        rest.split_whitespace().next()?.parse::<u64>().ok()
    })?;
    if resumed < last {
        return Err(format!(
            "resumed from checkpoint {resumed}, older than checkpoint {last}"
        ));
    }
    coordinator.wait_for(t, |l| l.starts_with("finished:").then_some(()))?;
    coordinator.finish(t)?;
    println!("every count is exact after a killed worker and a rescale from 3 to 2 processes");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_lines_are_recognised() {
        assert_eq!(
            completed_checkpoint("checkpoint 12 completed: 3 files"),
            Some(12)
        );
        assert_eq!(completed_checkpoint("checkpoint 12 failed"), None);
        assert_eq!(completed_checkpoint("savepoint 3 completed"), None);
        assert_eq!(
            worker_pid("worker 2 pid 4242 key groups 86..=127 restored 0 records"),
            Some((2, 4242))
        );
        assert_eq!(worker_pid("worker 2 done: 5 keys"), None);
    }
}
