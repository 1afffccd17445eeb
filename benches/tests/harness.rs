//! The harness itself: every family runs end to end on every subject at
//! small sizes, the state each workload leaves is the one its operations
//! must produce, and a driver that skips work is caught.

use std::path::Path;
use std::sync::Arc;

use benches::driver::{Driver, Setup};
use benches::progress::Progress;
use benches::results::Results;
use benches::runner::{self, RunConfig, Selection};
use benches::subject::{driver, Subject};
use benches::workload::{population_order, AccessStream, Model, Observed, Workload};
use benches::{memory, Result};

fn small(work: &Path) -> RunConfig {
    let mut c = RunConfig::quick(work.to_path_buf());
    c.keys = 300;
    c.operations = 3_000;
    c.rounds = 2;
    c.large_keys = 2_000;
    c.checkpoint_keys = 1_500;
    c.memory_entries = 1_000;
    c
}

#[test]
fn every_family_runs_on_every_subject_and_writes_its_report() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = small(&dir.path().join("work"));
    let results = runner::run(&config, &Progress::hidden()).expect("the run succeeds");

    let count = |family: &str| {
        results
            .measurements
            .iter()
            .filter(|m| m.family == family)
            .count()
    };
    // 8 subjects run the throughput workloads (rocksdb-full only checkpoints).
    assert_eq!(count("throughput"), 6 * 8);
    assert_eq!(count("throughput-string"), 2 * 8);
    assert_eq!(count("large-state"), 2 * 3);
    assert_eq!(count("checkpoint"), 11 * 4);
    // The memory family needs the runner binary as its child process.
    assert_eq!(count("memory"), 0);
    for m in &results.measurements {
        assert_eq!(m.rounds.len(), 2, "{m:?}");
        assert!(m.median.is_finite() && m.median >= 0.0, "{m:?}");
        if m.unit == "ops/s" {
            assert!(m.median > 0.0, "{m:?}");
        }
    }
    for subject in ["fs", "fs-incremental", "rocksdb", "rocksdb-full"] {
        let bytes = results
            .find("checkpoint", "first.bytes", subject)
            .expect("measured")
            .median;
        let second = results
            .find("checkpoint", "second.bytes", subject)
            .expect("measured")
            .median;
        assert!(
            bytes > 1_500.0,
            "{subject}: a first checkpoint of 1,500 keys wrote {bytes} bytes"
        );
        assert!(second > 0.0, "{subject}");
    }

    let out = dir.path().join("out");
    let report = runner::write(&results, Some(&results), &out).expect("written");
    let text = std::fs::read_to_string(report).expect("report.md");
    assert!(
        text.contains("value.update") && text.contains("raw-hashmap"),
        "{text}"
    );
    assert!(text.contains("throughput.svg"), "{text}");
    assert!(out.join("throughput.svg").exists());
    let back: Results = runner::read(&out.join("results.json")).expect("reads back");
    assert_eq!(back, results);
    assert!(
        !dir.path().join("work").exists()
            || std::fs::read_dir(dir.path().join("work"))
                .expect("a folder")
                .next()
                .is_none(),
        "the backends' folders are removed"
    );
}

#[test]
fn incremental_checkpoints_write_less_the_second_time() {
    // Large enough that the state is not inlined in `_metadata`.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = small(dir.path());
    config.rounds = 1;
    config.checkpoint_keys = 30_000;
    config.selection = Selection::parse(&["checkpoint".to_string()]).expect("parses");
    config.subjects = vec![Subject::Fs, Subject::FsIncremental];
    let results = runner::run(&config, &Progress::hidden()).expect("runs");
    let bytes = |w, s| results.find("checkpoint", w, s).expect("measured").median;
    assert!(bytes("first.bytes", "fs") > 30_000.0 * 4.0);
    assert!(bytes("second.bytes", "fs") > 0.9 * bytes("first.bytes", "fs"));
    assert!(
        bytes("second.bytes", "fs-incremental") < 0.1 * bytes("first.bytes", "fs-incremental"),
        "1% of the keys changed"
    );
}

/// With an object-store location every checkpointing subject runs twice in
/// the same run, once on local disk and once on the store, and the store's
/// rounds add upload and download throughputs; both write and restore the
/// same state (RocksDB's own files name their folder, so a few bytes differ).
#[test]
fn the_checkpoint_family_also_runs_on_an_object_store() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = small(dir.path());
    config.rounds = 1;
    config.checkpoint_keys = 30_000;
    config.selection = Selection::parse(&["checkpoint".to_string()]).expect("parses");
    config.subjects = vec![Subject::Fs, Subject::RocksDb];
    config.checkpoint_location = Some(format!("memory://bench-{}", std::process::id()));
    let results = runner::run(&config, &Progress::hidden()).expect("runs");
    for (local, remote) in [("fs", "fs@memory"), ("rocksdb", "rocksdb@memory")] {
        let get = |w, s| results.find("checkpoint", w, s).expect("measured").median;
        for w in ["first.bytes", "restore.bytes"] {
            let (a, b) = (get(w, local), get(w, remote));
            assert!((a - b).abs() <= a * 0.01, "{remote} {w}: {a} against {b}");
        }
        assert!(get("upload", remote) > 0.0 && get("download", remote) > 0.0);
        assert!(results.find("checkpoint", "upload", local).is_none());
    }
}

#[test]
fn a_selection_runs_only_what_it_names() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = small(dir.path());
    config.rounds = 1;
    config.selection = Selection::parse(&["throughput/map.get".to_string()]).expect("parses");
    config.subjects = vec![Subject::Fs, Subject::RawHashMap];
    let results = runner::run(&config, &Progress::hidden()).expect("runs");
    let got: Vec<(String, String, String)> = results
        .measurements
        .iter()
        .map(|m| (m.family.clone(), m.workload.clone(), m.subject.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("throughput".into(), "map.get".into(), "fs".into()),
            ("throughput".into(), "map.get".into(), "raw-hashmap".into()),
        ]
    );
}

#[test]
fn memory_is_measured_and_checked_in_process() {
    for subject in [Subject::Memory, Subject::RawHashMap] {
        let bytes = memory::measure_here(subject, 20_000).expect("measures");
        assert!(bytes.is_finite() && bytes >= 0.0, "{subject}: {bytes}");
    }
    assert!(memory::measure_here(Subject::Sled, 10).is_err());
}

/// Runs `inner` but drops every tenth operation.
struct Skipping(Box<dyn Driver>);

impl Driver for Skipping {
    fn prepare_round(&mut self, round: u32) -> Result<()> {
        self.0.prepare_round(round)
    }
    fn run(&mut self, round: u32, range: std::ops::Range<usize>) -> Result<i64> {
        let mut sum = 0i64;
        for j in range.filter(|j| j % 10 != 3) {
            sum = sum.wrapping_add(self.0.run(round, j..j + 1)?);
        }
        Ok(sum)
    }
    fn observe(&mut self, k: u32) -> Result<Observed> {
        self.0.observe(k)
    }
    fn switch_to(&mut self, workload: Workload) -> bool {
        self.0.switch_to(workload)
    }
}

#[test]
fn every_workload_leaves_exactly_its_state_and_skipped_work_is_caught() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let stream = Arc::new(AccessStream::uniform(200, 2_000, 11));
    let population: Arc<[u32]> = population_order(200, true, 11).into();
    let base = Setup::<String>::new(Workload::ValueGet, stream.clone(), population);
    for subject in Subject::ALL.into_iter().filter(|s| s.in_throughput()) {
        for workload in Workload::ALL {
            let model = Model::new(workload, &stream, 2);
            let mut honest =
                driver(subject, base.for_workload(workload), dir.path()).expect("set up");
            let mut cheat =
                Skipping(driver(subject, base.for_workload(workload), dir.path()).expect("set up"));
            let mut sums = (Vec::new(), Vec::new());
            for round in 0..2 {
                honest.prepare_round(round).expect("prepared");
                sums.0
                    .push(honest.run(round, 0..stream.len()).expect("runs"));
                cheat.prepare_round(round).expect("prepared");
                sums.1
                    .push(cheat.run(round, 0..stream.len()).expect("runs"));
            }
            if workload.is_read() {
                assert_eq!(sums.0, vec![model.checksum(); 2], "{subject} {workload}");
                assert_ne!(sums.1[0], model.checksum(), "{subject} {workload}");
            } else {
                model
                    .verify(subject.name(), None, |k| honest.observe(k))
                    .unwrap_or_else(|e| panic!("{subject} {workload}: {e}"));
                let caught = model.verify(subject.name(), None, |k| cheat.observe(k));
                assert!(
                    caught.is_err(),
                    "{subject} {workload}: skipped writes went unnoticed"
                );
            }
        }
    }
}
