//! The shared conformance suite and model test on the RocksDB backend, with
//! incremental (native, SST-sharing) and with full canonical checkpoints.

use backend_rocksdb::{RocksDbStateBackend, RocksOptions};
use conformance_tests::harness::TempDirBackend;

fn rocksdb(incremental: bool) -> TempDirBackend<RocksDbStateBackend> {
    TempDirBackend::new(move |dir| {
        RocksDbStateBackend::new(&dir.join("work"), &dir.join("checkpoints"), "job")?
            .with_options(RocksOptions {
                incremental,
                ..RocksOptions::default()
            })
            .with_inline_threshold(0)
    })
}

mod incremental_checkpoints {
    conformance_tests::conformance_suite!(super::rocksdb(true));
    conformance_tests::model_test!(super::rocksdb(true), 24);
}

mod full_checkpoints {
    conformance_tests::conformance_suite!(super::rocksdb(false));
    conformance_tests::model_test!(super::rocksdb(false), 24);
}
