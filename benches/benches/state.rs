//! The throughput workloads under criterion: one group per workload, one
//! function per backend and baseline, so criterion's statistics, its
//! comparison with the previous `cargo bench` and its HTML reports apply.
//! One iteration is one operation (set the current key + one state call)
//! of the pre-generated access stream, continuing where the last sample
//! stopped; `list.add` starts a fresh round (one-element lists) whenever the
//! stream wraps around, outside the timing.
//!
//! `cargo bench -p benches` runs everything; `cargo bench -p benches --
//! value.get` one workload; `FLOWBENCH_KEYS=10000` shrinks the state.
//! The long scenarios (large state, checkpoints, memory) and the side-by-side
//! report are `flowbench`'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::driver::{Driver, Setup};
use benches::subject::{driver, Subject};
use benches::workload::{population_order, AccessStream, Workload, KEYS, SEED, STREAM_LEN};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

struct Cursor {
    driver: Box<dyn Driver>,
    round: u32,
    next: usize,
    len: usize,
}

impl Cursor {
    /// Runs `n` operations from where the last call stopped; the time of the
    /// operations only.
    fn run(&mut self, n: u64) -> Duration {
        let mut left = n as usize;
        let mut spent = Duration::ZERO;
        while left > 0 {
            if self.next == self.len {
                self.round += 1;
                self.next = 0;
                self.driver
                    .prepare_round(self.round)
                    .unwrap_or_else(|e| panic!("preparing a round: {e}"));
            }
            let end = (self.next + left).min(self.len);
            let t = Instant::now();
            let sum = self
                .driver
                .run(self.round, self.next..end)
                .unwrap_or_else(|e| panic!("running: {e}"));
            spent += t.elapsed();
            std::hint::black_box(sum);
            left -= end - self.next;
            self.next = end;
        }
        spent
    }
}

fn throughput(c: &mut Criterion) {
    let keys = std::env::var("FLOWBENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KEYS);
    let stream = Arc::new(AccessStream::uniform(keys, STREAM_LEN, SEED));
    let population: Arc<[u32]> = population_order(keys, false, SEED).into();
    let base = Setup::<i64>::new(Workload::ValueGet, stream.clone(), population);
    let work = std::env::temp_dir().join(format!("flowbench-criterion-{}", std::process::id()));
    for workload in Workload::ALL {
        let mut group = c.benchmark_group(workload.name());
        group.throughput(Throughput::Elements(1));
        group.sample_size(20);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(3));
        for subject in Subject::ALL.into_iter().filter(|s| s.in_throughput()) {
            let mut cursor = Cursor {
                driver: driver(subject, base.for_workload(workload), &work)
                    .unwrap_or_else(|e| panic!("setting up {subject} {workload}: {e}")),
                round: 0,
                next: 0,
                len: stream.len(),
            };
            cursor
                .driver
                .prepare_round(0)
                .unwrap_or_else(|e| panic!("preparing {subject}: {e}"));
            group.bench_function(subject.name(), |b| b.iter_custom(|n| cursor.run(n)));
        }
        group.finish();
    }
    let _ = std::fs::remove_dir_all(&work);
}

criterion_group!(benches, throughput);
criterion_main!(benches);
