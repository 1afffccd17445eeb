//! The blocking API works from plain threads and from inside other tokio
//! runtimes (current-thread and multi-thread), and the storage can be dropped
//! there too.

use super::common;

use std::io::Read;
use std::path::Path;

use checkpoint_store::{ObjectStoreOptions, ObjectStoreStorage, Storage};
use common::{data, s3_backend, MIB};

fn exercise(s: &ObjectStoreStorage, tag: &str) {
    let small = format!("/rt/{tag}/small");
    let large = format!("/rt/{tag}/large");
    s.publish(Path::new(&small), tag.as_bytes()).unwrap();
    assert_eq!(s.read(Path::new(&small)).unwrap(), tag.as_bytes());
    let bytes = data(9 * MIB, 7);
    let mut file = s.create(Path::new(&large)).unwrap();
    file.write_all(&bytes).unwrap(); // multipart
    file.sync().unwrap();
    let mut got = Vec::new();
    s.open(Path::new(&large))
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert!(got == bytes);
    // Dropped without sync inside the runtime: abort runs there too.
    let mut file = s.create(Path::new(&format!("/rt/{tag}/dropped"))).unwrap();
    file.write_all(&bytes).unwrap();
    drop(file);
    assert_eq!(
        s.list_dir(Path::new(&format!("/rt/{tag}"))).unwrap(),
        ["large", "small"]
    );
}

fn storages(test: &str) -> Vec<ObjectStoreStorage> {
    let mut all =
        vec![ObjectStoreStorage::from_url("memory://", ObjectStoreOptions::default()).unwrap()];
    if let Some(b) = s3_backend(test, ObjectStoreOptions::default()) {
        all.push(b.storage.clone());
        // Keep the prefix: the test removes it itself.
        std::mem::forget(b);
    }
    all
}

fn cleanup(s: &ObjectStoreStorage) {
    s.remove_dir_all(Path::new("/")).unwrap();
}

#[test]
fn from_plain_threads() {
    for s in storages("from_plain_threads") {
        std::thread::scope(|scope| {
            for i in 0..4 {
                let s = &s;
                scope.spawn(move || exercise(s, &format!("plain-{i}")));
            }
        });
        cleanup(&s);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn inside_current_thread_runtime() {
    for s in storages("inside_current_thread_runtime") {
        exercise(&s, "current");
        cleanup(&s);
        drop(s); // Dropping the storage (and its runtime) in async context.
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_multi_thread_runtime() {
    for s in storages("inside_multi_thread_runtime") {
        exercise(&s, "multi");
        // From tasks of the caller's runtime, several at once.
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { exercise(&s, &format!("task-{i}")) })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        // From its blocking pool.
        let s2 = s.clone();
        tokio::task::spawn_blocking(move || exercise(&s2, "blocking"))
            .await
            .unwrap();
        cleanup(&s);
        drop(s);
    }
}

#[test]
fn created_and_dropped_inside_a_runtime() {
    let outer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    outer.block_on(async {
        let s = ObjectStoreStorage::from_url("memory://", ObjectStoreOptions::default()).unwrap();
        exercise(&s, "inner");
        // A reader and a file outliving the storage value keep its runtime.
        let mut reader = s.open(Path::new("/rt/inner/small")).unwrap();
        let mut file = s.create(Path::new("/rt/inner/late")).unwrap();
        let s2 = s.clone();
        drop(s);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"inner");
        file.write_all(b"late").unwrap();
        file.sync().unwrap();
        assert_eq!(s2.read(Path::new("/rt/inner/late")).unwrap(), b"late");
    });
}

/// Many blocking calls within one poll of a task of another runtime: waiting
/// must not use up (and then spin on) that task's coop budget.
fn many_calls() {
    let s = ObjectStoreStorage::from_url("memory://", ObjectStoreOptions::default()).unwrap();
    for i in 0..300 {
        let path = format!("/many/{i}");
        s.publish(Path::new(&path), b"x").unwrap();
        assert!(s.exists(Path::new(&path)));
    }
    assert_eq!(s.list_dir(Path::new("/many")).unwrap().len(), 300);
    // A read of many chunks: local files stream in 8 KiB chunks.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let s = ObjectStoreStorage::from_url(&url, ObjectStoreOptions::default()).unwrap();
    let bytes = data(2 * MIB, 8);
    let mut file = s.create(Path::new("/chunky")).unwrap();
    file.write_all(&bytes).unwrap();
    file.sync().unwrap();
    let mut got = Vec::new();
    s.open(Path::new("/chunky"))
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert!(got == bytes);
}

#[tokio::test(flavor = "current_thread")]
async fn many_calls_in_one_poll_current_thread() {
    many_calls();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_in_one_poll_multi_thread() {
    many_calls();
}
