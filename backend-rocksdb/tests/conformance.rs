//! The shared conformance suite and model test on the RocksDB backend.

use backend_rocksdb::RocksDbStateBackend;
use conformance_tests::harness::TempDirBackend;

fn rocksdb() -> TempDirBackend<RocksDbStateBackend> {
    TempDirBackend::new(|dir| {
        RocksDbStateBackend::new(&dir.join("work"), &dir.join("checkpoints"), "job")?
            .with_inline_threshold(0)
    })
}

conformance_tests::conformance_suite!(rocksdb());
conformance_tests::model_test!(rocksdb(), 24);
