//! Behaviour specific to the heap backend with in-memory snapshots.

use backend_memory::MemoryStateBackend;
use conformance_tests::harness::{keyed, MAX_PARALLELISM};
use state_api::snapshot::SnapshotOptions;
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::ValueStateDescriptor;
use state_api::{Error, ErrorKind, KeyedStateBackend, Result, StateBackend};

#[test]
fn snapshot_over_the_size_limit_fails_and_the_backend_keeps_working() -> Result<()> {
    let backend = MemoryStateBackend::new().with_max_state_size(4 * 1024);
    assert_eq!(
        MemoryStateBackend::new().max_state_size(),
        5 * 1024 * 1024,
        "Flink's default"
    );
    let mut b = keyed::<_, u64>(&backend, MAX_PARALLELISM, 1, 0, &[])?;
    let v = b.value_state(&ValueStateDescriptor::<String>::new("v"))?;
    for k in 0..10u64 {
        b.set_current_key(k)?;
        v.on(&mut b).update(Some("x".repeat(100)))?;
    }
    let small = b
        .snapshot(1, backend.stream_factory(1)?, SnapshotOptions::default())?
        .run()?;
    assert!(small.is_some(), "1 KiB of state fits in 4 KiB");

    for k in 10..200u64 {
        b.set_current_key(k)?;
        v.on(&mut b).update(Some("x".repeat(100)))?;
    }
    let err = b
        .snapshot(2, backend.stream_factory(2)?, SnapshotOptions::default())?
        .run()
        .expect_err("20 KiB of state does not fit in 4 KiB");
    assert_eq!(err.kind(), ErrorKind::StateSizeExceeded);
    assert!(
        matches!(err, Error::SizeLimitExceeded { limit: 4096, size, .. } if size > 4096),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("4096"),
        "the message names the limit: {err}"
    );

    // The backend is unharmed: reads, writes and a snapshot that fits all work.
    b.set_current_key(3)?;
    assert_eq!(v.on(&mut b).get()?, Some("x".repeat(100)));
    for k in 10..200u64 {
        b.set_current_key(k)?;
        v.on(&mut b).clear()?;
    }
    let h = b
        .snapshot(3, backend.stream_factory(3)?, SnapshotOptions::default())?
        .run()?;
    let restored = keyed::<_, u64>(
        &backend,
        MAX_PARALLELISM,
        1,
        0,
        &h.into_iter().collect::<Vec<_>>(),
    )?;
    assert_eq!(restored.num_entries()?, 10);
    Ok(())
}
