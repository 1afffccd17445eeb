//! S3-only behaviour, against the server named by FLOWSTATE_S3_URL (moto via
//! `scripts/s3-server start`); skipped with a message when it is not set.

use super::common;

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use checkpoint_store::object_faults::{Fault, FaultyObjectStore, Op};
use checkpoint_store::{FlakyHttpConnector, ObjectStoreOptions, ObjectStoreStorage, Storage};
use common::{connector, data, fast_options, multipart_uploads, s3_backend, MIB};

/// Transient 5xx answers are retried by object_store's HTTP layer
/// (`RetryConfig`), for single puts, conditional puts, parts and reads.
#[test]
fn transient_http_errors_are_retried() {
    let flaky = FlakyHttpConnector::new();
    let options = ObjectStoreOptions {
        http_connector: connector(&flaky),
        max_retries: 3,
        ..fast_options()
    };
    let Some(b) = s3_backend("transient_http_errors_are_retried", options) else {
        return;
    };
    let s = &b.storage;

    // Conditional put (publish): the first 2 PUTs get 503, the third lands.
    flaky.fail_next(Some("PUT"), "_metadata", 2, 503);
    s.publish(Path::new("/job/chk-1/_metadata"), b"meta")
        .unwrap();
    assert_eq!(flaky.injected(), 2);
    assert_eq!(s.read(Path::new("/job/chk-1/_metadata")).unwrap(), b"meta");
    // The retried conditional put still refuses to overwrite.
    flaky.fail_next(Some("PUT"), "_metadata", 1, 500);
    let err = s
        .publish(Path::new("/job/chk-1/_metadata"), b"other")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(flaky.injected(), 3);

    // Multipart: 503 twice on starting it (POST ?uploads), then 503, 503 and
    // 429 on parts (PUT ?partNumber=..&uploadId=..).
    let bytes = data(20 * MIB, 1);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("big");
    std::fs::write(&local, &bytes).unwrap();
    flaky.fail_next(Some("POST"), "big", 2, 503);
    flaky.fail_next(Some("PUT"), "big", 2, 503);
    flaky.fail_next(Some("PUT"), "big", 1, 429);
    s.upload_file(&local, Path::new("/job/big")).unwrap();
    assert_eq!(flaky.injected(), 3 + 5);
    // Reads: 503 on the GET.
    flaky.fail_next(Some("GET"), "big", 2, 503);
    assert!(s.read(Path::new("/job/big")).unwrap() == bytes);
    assert_eq!(flaky.injected(), 3 + 5 + 2);
}

/// When the retries run out, the error names the operation and the object.
#[test]
fn exhausted_retries_fail_with_the_object_url() {
    let flaky = FlakyHttpConnector::new();
    let options = ObjectStoreOptions {
        http_connector: connector(&flaky),
        max_retries: 2,
        ..fast_options()
    };
    let Some(b) = s3_backend("exhausted_retries_fail_with_the_object_url", options) else {
        return;
    };
    let s = &b.storage;
    flaky.fail_next(Some("PUT"), "_metadata", 3, 503);
    let path = Path::new("/job/_metadata");
    let err = s.publish(path, b"x").unwrap_err();
    eprintln!("error after exhausted retries: {err}");
    assert_eq!(flaky.injected(), 3, "1 try + 2 retries");
    let message = err.to_string();
    assert!(
        message.contains(&format!("publish {} failed", s.describe(path))),
        "{message}"
    );
    assert!(message.contains("503"), "{message}");
    assert!(!s.exists(path));

    // 4xx answers (but 408/429) are not retried.
    flaky.fail_next(Some("GET"), "_metadata", 1, 403);
    s.publish(path, b"x").unwrap();
    let err = s.read(path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_eq!(flaky.injected(), 4);
}

/// A multipart upload that fails is aborted: no upload is left on the server.
#[test]
fn aborted_multipart_uploads_leave_nothing() {
    let Some(b) = s3_backend("aborted_multipart_uploads_leave_nothing", fast_options()) else {
        return;
    };
    let root = b.s3_root.clone().unwrap_or_default();
    let prefix = b.storage.key(Path::new("/")).unwrap().to_string();
    let faults = FaultyObjectStore::new(Arc::clone(b.storage.store()));
    let s =
        ObjectStoreStorage::new(Arc::new(faults.clone()), &prefix, &root, fast_options()).unwrap();

    // Parts all land, then complete fails.
    faults.inject(Fault::fail(Op::Complete).times(1));
    let mut file = s.create(Path::new("/job/a")).unwrap();
    file.write_all(&data(20 * MIB, 2)).unwrap();
    assert!(file.sync().is_err());
    drop(file);
    // A part fails while others are in flight.
    faults.inject(Fault::fail(Op::PutPart).times(1));
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("b");
    std::fs::write(&local, data(30 * MIB, 3)).unwrap();
    assert!(s.upload_file(&local, Path::new("/job/b")).is_err());
    // Dropped without sync after parts were sent.
    let mut file = s.create(Path::new("/job/c")).unwrap();
    file.write_all(&data(20 * MIB, 4)).unwrap();
    drop(file);

    assert_eq!(faults.calls(Op::PutMultipart), 3);
    assert_eq!(faults.calls(Op::Abort), 3);
    let left = multipart_uploads(&prefix);
    assert!(left.is_empty(), "multipart uploads left: {left:?}");
    assert!(s.list_dir(Path::new("/job")).unwrap().is_empty());

    // The listing does see uploads in progress (the check above can fail).
    let mut file = s.create(Path::new("/job/open")).unwrap();
    file.write_all(&data(9 * MIB, 5)).unwrap();
    let open = multipart_uploads(&prefix);
    assert_eq!(open, [format!("{prefix}/job/open")]);
    drop(file);
    assert!(multipart_uploads(&prefix).is_empty());
}

/// The environment variables alone configure the store (what `from_url` reads).
#[test]
fn configured_from_environment() {
    let Some(b) = s3_backend("configured_from_environment", ObjectStoreOptions::default()) else {
        return;
    };
    for var in [
        "AWS_ENDPOINT_URL",
        "AWS_ALLOW_HTTP",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
    ] {
        assert!(
            std::env::var(var).is_ok(),
            "{var} should be set by scripts/s3-server"
        );
    }
    b.storage.publish(Path::new("/x"), b"x").unwrap();
    assert_eq!(b.storage.read(Path::new("/x")).unwrap(), b"x");

    // Explicit options override the environment: a wrong endpoint fails fast.
    let root = b.s3_root.clone().unwrap_or_default();
    let options = ObjectStoreOptions {
        endpoint: Some("http://127.0.0.1:9".to_owned()),
        max_retries: 0,
        ..fast_options()
    };
    let s = ObjectStoreStorage::from_url(&root, options).unwrap();
    let err = s.read(Path::new("/x")).unwrap_err();
    eprintln!("wrong endpoint: {err}");
    assert!(err.to_string().contains(&format!("{root}/x")), "{err}");
}

/// Resolves every name to 127.0.0.1, so that `bucket.localhost` reaches moto.
#[derive(Debug)]
struct LoopbackDns;

impl object_store::client::DnsResolver for LoopbackDns {
    fn resolve(&self, _host: &str) -> object_store::client::DnsFuture {
        Box::pin(async { Ok(vec![std::net::IpAddr::from([127, 0, 0, 1])]) })
    }
}

/// The usual reqwest connector with [`LoopbackDns`].
#[derive(Debug)]
struct LoopbackConnector;

impl object_store::client::HttpConnector for LoopbackConnector {
    fn connect(
        &self,
        options: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        let options = options.clone().with_dns_resolver(Arc::new(LoopbackDns));
        object_store::client::ReqwestConnector::default().connect(&options)
    }
}

/// Virtual-hosted-style requests (`http://bucket.localhost:PORT/key`) work with
/// moto too, given an endpoint that names the bucket (and a resolver for it).
#[test]
fn virtual_hosted_style() {
    let Some(b) = s3_backend("virtual_hosted_style", fast_options()) else {
        return;
    };
    let root = b.s3_root.clone().unwrap_or_default();
    let bucket = root.trim_start_matches("s3://").split('/').next().unwrap();
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let port = endpoint.rsplit(':').next().unwrap();
    let options = ObjectStoreOptions {
        endpoint: Some(format!("http://{bucket}.localhost:{port}")),
        virtual_hosted_style: Some(true),
        http_connector: Some(Arc::new(LoopbackConnector)),
        ..fast_options()
    };
    let s = ObjectStoreStorage::from_url(&root, options).unwrap();
    s.publish(Path::new("/vh/_metadata"), b"vh").unwrap();
    assert_eq!(
        s.publish(Path::new("/vh/_metadata"), b"again")
            .unwrap_err()
            .kind(),
        ErrorKind::AlreadyExists
    );
    let bytes = data(12 * MIB, 6);
    let mut file = s.create(Path::new("/vh/big")).unwrap();
    file.write_all(&bytes).unwrap();
    file.sync().unwrap();
    assert_eq!(s.list_dir(Path::new("/vh")).unwrap(), ["_metadata", "big"]);
    // Same objects as seen through the path-style store.
    assert!(b.storage.read(Path::new("/vh/big")).unwrap() == bytes);
    assert_eq!(b.storage.read(Path::new("/vh/_metadata")).unwrap(), b"vh");
}
