//! The shared conformance suite and model test on the file backend, with full
//! and with incremental checkpoints.

use backend_fs::FsStateBackend;
use conformance_tests::harness::TempDirBackend;

fn full() -> TempDirBackend<FsStateBackend> {
    // A zero inline threshold puts every snapshot into a file.
    TempDirBackend::new(|dir| FsStateBackend::new(dir, "job")?.with_inline_threshold(0))
}

fn incremental() -> TempDirBackend<FsStateBackend> {
    TempDirBackend::new(|dir| {
        Ok(FsStateBackend::new(dir, "job")?
            .with_inline_threshold(0)?
            .with_incremental(true))
    })
}

mod full_snapshots {
    conformance_tests::conformance_suite!(super::full());
    conformance_tests::model_test!(super::full(), 24);
}

mod incremental_snapshots {
    conformance_tests::conformance_suite!(super::incremental());
    conformance_tests::model_test!(super::incremental(), 24);
}
