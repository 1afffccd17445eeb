//! The `Storage` contract, on memory://, file:// and (if FLOWSTATE_S3_URL is set) S3.

use super::common;

use std::io::{ErrorKind, Read};
use std::path::Path;
use std::sync::Barrier;

use checkpoint_store::{ObjectStoreOptions, Storage};
use common::{backends, data, multipart_uploads, Backend, MIB};

fn write_file(storage: &dyn Storage, path: &str, bytes: &[u8], chunk: usize) {
    let mut file = storage.create(Path::new(path)).expect("create");
    for piece in bytes.chunks(chunk.max(1)) {
        file.write_all(piece).expect("write_all");
    }
    file.sync().expect("sync");
}

fn each_backend(test: &str, run: impl Fn(&Backend)) {
    for backend in backends(test, ObjectStoreOptions::default()) {
        eprintln!("{test}: backend {}", backend.name);
        run(&backend);
    }
}

#[test]
fn round_trip_small() {
    each_backend("round_trip_small", |b| {
        let s = &b.storage;
        let path = Path::new("/job/chk-1/small");
        let mut file = s.create(path).unwrap();
        file.write_all(b"hello ").unwrap();
        file.write_all(b"world").unwrap();
        assert!(!s.exists(path), "{}: visible before sync", b.name);
        file.sync().unwrap();
        assert_eq!(s.read(path).unwrap(), b"hello world");
        assert_eq!(s.len(path).unwrap(), 11);
        assert!(s.exists(path));
        let err = file.write_all(b"more").unwrap_err();
        assert!(err.to_string().contains("already synced"), "{err}");

        // Empty file.
        write_file(s, "/job/chk-1/empty", b"", 1);
        assert_eq!(s.read(Path::new("/job/chk-1/empty")).unwrap(), b"");
        assert_eq!(s.len(Path::new("/job/chk-1/empty")).unwrap(), 0);
    });
}

#[test]
fn round_trip_large_multipart() {
    each_backend("round_trip_large_multipart", |b| {
        let s = &b.storage;
        let bytes = data(20 * MIB + 12345, 1);
        // Odd write sizes so that parts are cut across writes.
        write_file(s, "/job/chk-2/large", &bytes, 777_777);
        assert_eq!(
            s.len(Path::new("/job/chk-2/large")).unwrap(),
            bytes.len() as u64
        );
        assert!(s.read(Path::new("/job/chk-2/large")).unwrap() == bytes);

        // One write far bigger than a part.
        let bytes = data(17 * MIB, 2);
        write_file(s, "/job/chk-2/one-write", &bytes, bytes.len());
        assert!(s.read(Path::new("/job/chk-2/one-write")).unwrap() == bytes);

        // Exactly one part: a single put.
        let bytes = data(8 * MIB, 3);
        write_file(s, "/job/chk-2/exact", &bytes, MIB);
        assert!(s.read(Path::new("/job/chk-2/exact")).unwrap() == bytes);
    });
}

#[test]
fn streaming_read() {
    each_backend("streaming_read", |b| {
        let s = &b.storage;
        let bytes = data(20 * MIB + 1, 4);
        write_file(s, "/job/stream", &bytes, 4 * MIB);
        for buffer_size in [1000, 64 * 1024, 3 * MIB] {
            let mut reader = s.open(Path::new("/job/stream")).unwrap();
            let mut buffer = vec![0u8; buffer_size];
            let mut got = Vec::with_capacity(bytes.len());
            loop {
                let n = reader.read(&mut buffer).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buffer[..n]);
            }
            assert!(got == bytes, "{}: buffer {buffer_size}", b.name);
        }
        // Dropping a reader early is fine.
        let mut reader = s.open(Path::new("/job/stream")).unwrap();
        let mut first = [0u8; 10];
        reader.read_exact(&mut first).unwrap();
        assert_eq!(&first, &bytes[..10]);
        drop(reader);

        let err = s.open(Path::new("/job/missing")).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    });
}

#[test]
fn publish_twice_and_race() {
    each_backend("publish_twice_and_race", |b| {
        let s = &b.storage;
        let path = Path::new("/job/chk-3/_metadata");
        s.publish(path, b"first").unwrap();
        let err = s.publish(path, b"second").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{}: {err}", b.name);
        assert!(err.to_string().contains(&s.describe(path)), "{err}");
        assert_eq!(s.read(path).unwrap(), b"first");

        // Racing writers: exactly one wins, and its bytes stay.
        for round in 0..5 {
            let path = format!("/job/race-{round}/_metadata");
            let path = Path::new(&path);
            let threads = 6;
            let barrier = Barrier::new(threads);
            let results: Vec<_> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|i| {
                        let barrier = &barrier;
                        scope.spawn(move || {
                            let content = format!("writer {i}");
                            barrier.wait();
                            (content.clone(), s.publish(path, content.as_bytes()))
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let winners: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
            assert_eq!(winners.len(), 1, "{}: {results:?}", b.name);
            for (_, result) in &results {
                if let Err(e) = result {
                    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
                }
            }
            assert_eq!(s.read(path).unwrap(), winners[0].0.as_bytes());
        }
    });
}

#[test]
fn directories() {
    each_backend("directories", |b| {
        let s = &b.storage;
        for path in [
            "/job/chk-1/a",
            "/job/chk-1/b",
            "/job/chk-1/sub/c",
            "/job/chk-2/d",
            "/job/chk-10/x",
            "/job/chkpoint",
        ] {
            s.create_dir_all(Path::new(path).parent().unwrap()).unwrap();
            write_file(s, path, path.as_bytes(), 100);
        }
        s.sync_dir(Path::new("/job")).unwrap();
        let list = |p: &str| s.list_dir(Path::new(p)).unwrap();
        assert_eq!(list("/job"), ["chk-1", "chk-10", "chk-2", "chkpoint"]);
        assert_eq!(list("/job/chk-1"), ["a", "b", "sub"]);
        assert_eq!(list("/job/chk-1/sub/"), ["c"]);
        assert!(list("/missing").is_empty());
        assert!(list("/job/chk").is_empty(), "prefixes match whole names");
        assert_eq!(list("/"), ["job"]);

        assert!(s.exists(Path::new("/job/chk-1")));
        assert!(s.exists(Path::new("/job/chk-1/a")));
        assert!(!s.exists(Path::new("/job/chk")));
        assert!(!s.exists(Path::new("/nothing")));
        assert_eq!(s.len(Path::new("/job/chk-1/a")).unwrap(), 12);
        let err = s.len(Path::new("/job/nope")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(
            err.to_string()
                .contains(&s.describe(Path::new("/job/nope"))),
            "{err}"
        );
        let err = s.read(Path::new("/job/nope")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

        s.remove_dir_all(Path::new("/job/chk-1")).unwrap();
        assert!(!s.exists(Path::new("/job/chk-1")));
        assert!(!s.exists(Path::new("/job/chk-1/sub/c")));
        assert_eq!(list("/job"), ["chk-10", "chk-2", "chkpoint"]);
        s.remove_dir_all(Path::new("/job/chk-1")).unwrap();
        s.remove_dir_all(Path::new("/never")).unwrap();

        s.remove_file(Path::new("/job/chk-2/d")).unwrap();
        s.remove_file(Path::new("/job/chk-2/d")).unwrap();
        assert!(!s.exists(Path::new("/job/chk-2")));
        assert_eq!(list("/job"), ["chk-10", "chkpoint"]);
    });
}

#[test]
fn upload_and_download_files() {
    each_backend("upload_and_download_files", |b| {
        let s = &b.storage;
        let dir = tempfile::tempdir().unwrap();
        for (name, size) in [("small", 1000), ("part", 8 * MIB), ("big", 30 * MIB + 7)] {
            let bytes = data(size, size as u64);
            let local = dir.path().join(format!("{name}.in"));
            std::fs::write(&local, &bytes).unwrap();
            let remote = format!("/job/files/{name}");
            s.upload_file(&local, Path::new(&remote)).unwrap();
            assert_eq!(s.len(Path::new(&remote)).unwrap(), size as u64);
            let back = dir.path().join(format!("{name}.out"));
            s.download_file(Path::new(&remote), &back).unwrap();
            assert!(std::fs::read(&back).unwrap() == bytes, "{}: {name}", b.name);
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            6,
            "no partial files left"
        );
        let err = s
            .download_file(Path::new("/job/files/none"), &dir.path().join("none"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(!dir.path().join("none").exists());
        let err = s
            .upload_file(&dir.path().join("absent"), Path::new("/job/files/absent"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(!s.exists(Path::new("/job/files/absent")));
    });
}

#[test]
fn drop_without_sync_leaves_nothing() {
    each_backend("drop_without_sync_leaves_nothing", |b| {
        let s = &b.storage;
        let mut small = s.create(Path::new("/job/tmp/small")).unwrap();
        small.write_all(b"abc").unwrap();
        drop(small);

        let mut large = s.create(Path::new("/job/tmp/large")).unwrap();
        large.write_all(&data(20 * MIB, 9)).unwrap(); // two parts sent
        drop(large);

        assert!(!s.exists(Path::new("/job/tmp/small")));
        assert!(!s.exists(Path::new("/job/tmp/large")));
        assert!(s.list_dir(Path::new("/job/tmp")).unwrap().is_empty());
        if b.s3_root.is_some() {
            let key = s.key(Path::new("/job/tmp")).unwrap();
            let left = multipart_uploads(key.as_ref());
            assert!(left.is_empty(), "multipart uploads left: {left:?}");
        }
    });
}

#[test]
fn paths_and_names() {
    each_backend("paths_and_names", |b| {
        let s = &b.storage;
        for bad in ["/job/../x", "../x", "/a/b/.."] {
            let err = s.read(Path::new(bad)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}: {err}");
            let err = s.publish(Path::new(bad), b"x").err().unwrap();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}: {err}");
            assert!(!s.exists(Path::new(bad)));
        }
        let described = s.describe(Path::new("/job/chk-3/abc"));
        assert!(described.ends_with("/job/chk-3/abc"), "{described}");
        if let Some(root) = &b.s3_root {
            assert_eq!(described, format!("{root}/job/chk-3/abc"));
            let key = s.key(Path::new("/job/chk-3/abc")).unwrap();
            let prefix = root.trim_start_matches("s3://").split_once('/').unwrap().1;
            assert_eq!(key.as_ref(), format!("{prefix}/job/chk-3/abc"));
        }
        if b.name == "memory" {
            assert_eq!(described, "memory:///job/chk-3/abc");
        }
        // `.` and doubled slashes are normalised away.
        write_file(s, "/job//./n", b"n", 1);
        assert_eq!(s.read(Path::new("/job/n")).unwrap(), b"n");
    });
}

#[test]
fn prefix_mapping() {
    use checkpoint_store::ObjectStoreStorage;
    let s = ObjectStoreStorage::from_url("memory:///some/prefix", ObjectStoreOptions::default())
        .unwrap();
    assert_eq!(
        s.key(Path::new("/job/chk-3/abc")).unwrap().as_ref(),
        "some/prefix/job/chk-3/abc"
    );
    assert_eq!(
        s.describe(Path::new("/job/a")),
        "memory:///some/prefix/job/a"
    );
    s.publish(Path::new("/job/a"), b"x").unwrap();
    assert_eq!(s.list_dir(Path::new("/")).unwrap(), ["job"]);

    // Bad URLs.
    for url in ["nope", "ftp://x", "s3://", "file://relative"] {
        let err = ObjectStoreStorage::from_url(url, ObjectStoreOptions::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{url}: {err}");
    }
}
