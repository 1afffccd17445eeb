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

/// Checkpoints on object storage (S3 on the local server `scripts/test`
/// starts, else the in-memory object store): SSTs are uploaded once to the
/// job's `shared/` and downloaded on restore.
fn on_object_store(incremental: bool) -> TempDirBackend<RocksDbStateBackend> {
    TempDirBackend::new(move |dir| {
        let location = conformance_tests::harness::object_store_location(dir);
        let storage = checkpoint_store::CheckpointStorage::open(&location, "job")?;
        RocksDbStateBackend::with_checkpoint_storage(&dir.join("work"), storage)
            .with_options(RocksOptions {
                incremental,
                ..RocksOptions::default()
            })
            .with_inline_threshold(0)
    })
}

mod object_store_incremental {
    conformance_tests::conformance_suite!(super::on_object_store(true));
}

mod object_store_full {
    conformance_tests::conformance_suite!(super::on_object_store(false));
}
