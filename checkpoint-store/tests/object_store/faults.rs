//! Failure paths with `FaultyObjectStore` around an in-memory store.

use super::common;

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use checkpoint_store::object_faults::{Fault, FaultyObjectStore, InjectedError, Op};
use checkpoint_store::{ObjectStoreOptions, ObjectStoreStorage, Storage};
use common::{data, MIB};
use object_store::memory::InMemory;

const URL: &str = "memory://faulty/root";

fn faulty(options: ObjectStoreOptions) -> (FaultyObjectStore, ObjectStoreStorage) {
    let faulty = FaultyObjectStore::new(Arc::new(InMemory::new()));
    let storage =
        ObjectStoreStorage::new(Arc::new(faulty.clone()), "root", URL, options).expect("storage");
    (faulty, storage)
}

#[test]
fn permanent_failure_names_the_object() {
    let (faults, s) = faulty(ObjectStoreOptions::default());
    faults.inject(
        Fault::fail_with(Op::Put, InjectedError::PermissionDenied).path_contains("_metadata"),
    );
    let err = s
        .publish(Path::new("/job/chk-1/_metadata"), b"m")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let message = err.to_string();
    assert!(message.contains("publish"), "{message}");
    assert!(
        message.contains("memory://faulty/root/job/chk-1/_metadata"),
        "{message}"
    );
    // Other paths are not affected.
    s.publish(Path::new("/job/chk-1/data"), b"d").unwrap();
    assert!(!s.exists(Path::new("/job/chk-1/_metadata")));

    faults.clear();
    faults.inject(Fault::fail(Op::Get).times(1));
    let err = s.read(Path::new("/job/chk-1/data")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other, "{err}");
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(s.read(Path::new("/job/chk-1/data")).unwrap(), b"d");

    faults.inject(Fault::fail_with(Op::Head, InjectedError::NotFound));
    let err = s.len(Path::new("/job/chk-1/data")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string()
            .contains("stat memory://faulty/root/job/chk-1/data"),
        "{err}"
    );
}

/// Errors injected above the HTTP layer are not retried by object_store: each
/// call fails once per injected fault. (Real retries: see tests/s3.rs.)
#[test]
fn injected_transient_errors_are_not_retried() {
    let (faults, s) = faulty(ObjectStoreOptions::default());
    faults.inject(Fault::fail(Op::Put).path_contains("_metadata").times(2));
    let path = Path::new("/job/_metadata");
    assert!(s.publish(path, b"x").is_err());
    assert!(s.publish(path, b"x").is_err());
    s.publish(path, b"x").unwrap();
    assert_eq!(faults.calls(Op::Put), 3);
}

#[test]
fn failed_part_aborts_the_upload() {
    let (faults, s) = faulty(ObjectStoreOptions::default());
    faults.inject(Fault::fail(Op::PutPart).times(1));
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("big");
    std::fs::write(&local, data(30 * MIB, 1)).unwrap();
    let err = s.upload_file(&local, Path::new("/job/big")).unwrap_err();
    assert!(
        err.to_string()
            .contains("upload part of memory://faulty/root/job/big"),
        "{err}"
    );
    assert_eq!(faults.calls(Op::Abort), 1);
    assert_eq!(faults.calls(Op::Complete), 0);
    assert!(!s.exists(Path::new("/job/big")));

    // Same through create(): the failing write abandons the file.
    faults.inject(Fault::fail(Op::PutPart).times(1));
    let mut file = s.create(Path::new("/job/written")).unwrap();
    let bytes = data(30 * MIB, 2);
    let mut failed = false;
    for chunk in bytes.chunks(MIB) {
        if file.write_all(chunk).is_err() {
            failed = true;
            break;
        }
    }
    // Parts run in the background: the failure may only show at sync.
    let synced = if failed {
        Err(())
    } else {
        file.sync().map_err(|_| ())
    };
    assert!(synced.is_err());
    assert!(file.sync().is_err(), "a failed file stays failed");
    drop(file);
    assert_eq!(faults.calls(Op::Abort), 2);
    assert!(!s.exists(Path::new("/job/written")));
}

#[test]
fn failed_complete_aborts_the_upload() {
    let (faults, s) = faulty(ObjectStoreOptions::default());
    faults.inject(Fault::fail(Op::Complete));
    let mut file = s.create(Path::new("/job/c")).unwrap();
    file.write_all(&data(20 * MIB, 3)).unwrap();
    let err = file.sync().unwrap_err();
    assert!(
        err.to_string()
            .contains("complete multipart upload of memory://faulty/root/job/c"),
        "{err}"
    );
    assert_eq!(faults.calls(Op::Abort), 1);
    assert!(!s.exists(Path::new("/job/c")));
}

#[test]
fn drop_without_sync_aborts() {
    let (faults, s) = faulty(ObjectStoreOptions::default());
    let mut file = s.create(Path::new("/job/d")).unwrap();
    file.write_all(&data(20 * MIB, 4)).unwrap();
    assert_eq!(faults.calls(Op::PutMultipart), 1);
    drop(file);
    assert_eq!(faults.calls(Op::Abort), 1);
    assert_eq!(faults.calls(Op::Complete), 0);
    assert!(!s.exists(Path::new("/job/d")));

    // A small file never sent anything.
    let mut file = s.create(Path::new("/job/e")).unwrap();
    file.write_all(b"small").unwrap();
    drop(file);
    assert_eq!(faults.calls(Op::Put), 0);
}

#[test]
fn delays_and_bounded_part_parallelism() {
    let options = |parallel| ObjectStoreOptions {
        part_size: MIB,
        max_parallel_parts: parallel,
        ..ObjectStoreOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("f");
    std::fs::write(&local, data(8 * MIB, 5)).unwrap(); // 8 parts
    let mut times = Vec::new();
    for parallel in [1, 2, 8] {
        let (faults, s) = faulty(options(parallel));
        faults.inject(Fault::delay(Op::PutPart, Duration::from_millis(200)));
        let start = Instant::now();
        s.upload_file(&local, Path::new("/job/f")).unwrap();
        times.push(start.elapsed());
        assert_eq!(faults.calls(Op::PutPart), 8);
        assert_eq!(s.len(Path::new("/job/f")).unwrap(), 8 * MIB as u64);
    }
    eprintln!("8 parts of 200 ms with 1, 2, 8 in parallel: {times:?}");
    assert!(times[0] >= Duration::from_millis(1600), "{times:?}");
    assert!(times[1] >= Duration::from_millis(800), "{times:?}");
    assert!(times[1] < Duration::from_millis(1500), "{times:?}");
    assert!(times[2] < Duration::from_millis(700), "{times:?}");

    let (faults, s) = faulty(ObjectStoreOptions::default());
    s.publish(Path::new("/slow"), b"s").unwrap();
    faults.inject(Fault::delay(Op::Get, Duration::from_millis(300)).times(1));
    let start = Instant::now();
    assert_eq!(s.read(Path::new("/slow")).unwrap(), b"s");
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[test]
fn publish_falls_back_without_conditional_put() {
    let (faults, s) = faulty(ObjectStoreOptions::default());
    let path = Path::new("/job/_metadata");
    faults.inject(Fault::fail_with(Op::Put, InjectedError::NotImplemented).times(1));
    s.publish(path, b"one").unwrap();
    faults.inject(Fault::fail_with(Op::Put, InjectedError::NotImplemented).times(1));
    let err = s.publish(path, b"two").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(s.read(path).unwrap(), b"one");
    assert_eq!(faults.calls(Op::Head), 2);
}

#[test]
fn list_and_delete_faults() {
    let (faults, s) = faulty(ObjectStoreOptions::default());
    for name in ["a", "b", "c"] {
        s.publish(&Path::new("/dir").join(name), name.as_bytes())
            .unwrap();
    }
    faults.inject(Fault::fail(Op::List).times(1));
    assert!(s.list_dir(Path::new("/dir")).is_err());
    assert_eq!(s.list_dir(Path::new("/dir")).unwrap(), ["a", "b", "c"]);

    faults
        .inject(Fault::fail_with(Op::Delete, InjectedError::PermissionDenied).path_contains("/b"));
    let err = s.remove_dir_all(Path::new("/dir")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(
        err.to_string()
            .contains("remove directory memory://faulty/root/dir"),
        "{err}"
    );
    faults.clear();
    s.remove_dir_all(Path::new("/dir")).unwrap();
    assert!(!s.exists(Path::new("/dir")));
}
