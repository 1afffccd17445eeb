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

/// Checkpoints on object storage: S3 (the local server `scripts/test`
/// starts), else the in-memory object store.
fn on_object_store(incremental: bool) -> TempDirBackend<FsStateBackend> {
    TempDirBackend::new(move |dir| {
        let location = conformance_tests::harness::object_store_location(dir);
        let storage = checkpoint_store::CheckpointStorage::open(&location, "job")?;
        Ok(FsStateBackend::with_checkpoint_storage(storage)
            .with_inline_threshold(0)?
            .with_incremental(incremental))
    })
}

mod object_store_full {
    conformance_tests::conformance_suite!(super::on_object_store(false));
}

mod object_store_incremental {
    conformance_tests::conformance_suite!(super::on_object_store(true));
}

/// A backend whose checkpoints go to an object store restores a snapshot
/// taken to a local folder: files its storage does not hold are read from
/// the local file system.
#[test]
fn a_backend_on_object_storage_restores_a_local_snapshot() -> state_api::Result<()> {
    use conformance_tests::harness::{keyed, snapshot};
    use state_api::state::access::KeyedStateBackendExt;
    use state_api::state::descriptor::ValueStateDescriptor;
    use state_api::KeyedStateBackend;

    let local = full();
    let mut k = keyed::<_, u64>(local.inner(), 128, 1, 0, &[])?;
    let v = k.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    for key in 0..1000u64 {
        k.set_current_key(key)?;
        v.on(&mut k).update(Some(key as i64 * 3))?;
    }
    let h = snapshot(local.inner(), &mut k, 1)?.expect("state");
    let remote = on_object_store(false);
    let mut r = keyed::<_, u64>(remote.inner(), 128, 1, 0, &[h])?;
    let v = r.value_state(&ValueStateDescriptor::<i64>::new("v"))?;
    for key in 0..1000u64 {
        r.set_current_key(key)?;
        assert_eq!(v.on(&mut r).get()?, Some(key as i64 * 3));
    }
    Ok(())
}
