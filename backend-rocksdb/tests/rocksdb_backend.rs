//! Behaviour specific to the RocksDB backend.

use backend_rocksdb::{RocksDbStateBackend, RocksOptions};
use conformance_tests::harness::{keyed, snapshot, TempDirBackend, MAX_PARALLELISM};
use state_api::state::access::KeyedStateBackendExt;
use state_api::state::descriptor::{ListStateDescriptor, ValueStateDescriptor};
use state_api::{Error, ErrorKind, KeyedStateBackend, Result};

fn small_values() -> TempDirBackend<RocksDbStateBackend> {
    TempDirBackend::new(|dir| {
        Ok(
            RocksDbStateBackend::new(&dir.join("work"), &dir.join("checkpoints"), "job")?
                .with_options(RocksOptions {
                    max_value_bytes: 1_000,
                    ..Default::default()
                }),
        )
    })
}

/// Flink's RocksDB ListState lets a list grow past 2^31 bytes and fails at
/// the next read; here the append that would pass the limit is refused.
#[test]
fn oversized_values_and_lists_are_refused_when_written() -> Result<()> {
    let backend = small_values();
    let mut b = keyed::<_, u64>(&backend, MAX_PARALLELISM, 1, 0, &[])?;
    let v = b.value_state(&ValueStateDescriptor::<String>::new("v"))?;
    let l = b.list_state(&ListStateDescriptor::<String>::new("l"))?;
    b.set_current_key(1)?;
    let err = v
        .on(&mut b)
        .update(Some("x".repeat(2_000)))
        .expect_err("too large");
    assert_eq!(err.kind(), ErrorKind::StateSizeExceeded);
    assert!(
        matches!(err, Error::SizeLimitExceeded { limit: 1_000, .. }),
        "{err:?}"
    );
    for i in 0..9 {
        l.on(&mut b)
            .add("y".repeat(100))
            .unwrap_or_else(|e| panic!("append {i} fits: {e}"));
    }
    let err = l
        .on(&mut b)
        .add("y".repeat(100))
        .expect_err("the merged list would pass the limit");
    assert_eq!(err.kind(), ErrorKind::StateSizeExceeded, "{err}");
    assert_eq!(
        l.on(&mut b).get()?.map(|l| l.len()),
        Some(9),
        "the refused append changed nothing"
    );
    // The backend keeps working and snapshots.
    v.on(&mut b).update(Some("small".into()))?;
    let h = snapshot(&backend, &mut b, 1)?.expect("state");
    let mut r = keyed::<_, u64>(&backend, MAX_PARALLELISM, 1, 0, &[h])?;
    let l = r.list_state(&ListStateDescriptor::<String>::new("l"))?;
    r.set_current_key(1)?;
    assert_eq!(l.on(&mut r).get()?.map(|l| l.len()), Some(9));
    Ok(())
}
