//! Helpers shared by the integration tests.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use checkpoint_store::{ObjectStoreOptions, ObjectStoreStorage, Storage};
use object_store::client::{HttpConnector, ReqwestConnector};
use object_store::ClientOptions;

pub const MIB: usize = 1024 * 1024;

/// `len` deterministic pseudo-random bytes (xorshift), different per `seed`.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A name no other test run uses.
pub fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}-{}-{nanos}", std::process::id())
}

/// The S3 URL to test against (`FLOWSTATE_S3_URL`), or `None` after printing why
/// the S3 part of `test` is skipped.
pub fn s3_url(test: &str) -> Option<String> {
    match std::env::var("FLOWSTATE_S3_URL") {
        Ok(url) if !url.is_empty() => Some(url.trim_end_matches('/').to_owned()),
        _ => {
            assert!(
                std::env::var_os("FLOWSTATE_REQUIRE_S3").is_none(),
                "{test}: FLOWSTATE_REQUIRE_S3 is set but FLOWSTATE_S3_URL is not; \
                 scripts/test starts the local S3 server and sets both"
            );
            // Written to stderr directly: the test harness captures `eprintln!`.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (S3 part of {test}): FLOWSTATE_S3_URL is not set; \
                 run `eval \"$(scripts/s3-server start)\"` to test against a local S3 (moto)"
            );
            None
        }
    }
}

/// Options with fast retries, for tests.
pub fn fast_options() -> ObjectStoreOptions {
    ObjectStoreOptions {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        retry_timeout: Duration::from_secs(30),
        ..ObjectStoreOptions::default()
    }
}

/// A storage under test, removed (S3) or deleted (files) when dropped.
pub struct Backend {
    pub name: &'static str,
    pub storage: ObjectStoreStorage,
    /// The S3 URL of the storage's root, for S3 backends.
    pub s3_root: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        if self.s3_root.is_some() {
            let _ = self.storage.remove_dir_all(Path::new("/"));
        }
    }
}

/// An S3 backend under a fresh prefix of `FLOWSTATE_S3_URL`, if it is set.
pub fn s3_backend(test: &str, options: ObjectStoreOptions) -> Option<Backend> {
    let base = s3_url(test)?;
    let root = format!("{base}/{}", unique(test));
    let storage = ObjectStoreStorage::from_url(&root, options).expect("S3 storage");
    Some(Backend {
        name: "s3",
        storage,
        s3_root: Some(root),
        _dir: None,
    })
}

/// Every backend to run `test` on: memory, local files, and S3 if configured.
pub fn backends(test: &str, options: ObjectStoreOptions) -> Vec<Backend> {
    let mut all = vec![Backend {
        name: "memory",
        storage: ObjectStoreStorage::from_url("memory://", options.clone()).expect("memory"),
        s3_root: None,
        _dir: None,
    }];
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}", dir.path().display());
    all.push(Backend {
        name: "file",
        storage: ObjectStoreStorage::from_url(&url, options.clone()).expect("file storage"),
        s3_root: None,
        _dir: Some(dir),
    });
    all.extend(s3_backend(test, options));
    all
}

/// Keys of the multipart uploads in progress whose key starts with `key_prefix`
/// (`GET /bucket?uploads`, which moto and S3 answer; unsigned, as moto allows).
pub fn multipart_uploads(key_prefix: &str) -> Vec<String> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .expect("AWS_ENDPOINT_URL for listing multipart uploads");
    let s3 = std::env::var("FLOWSTATE_S3_URL").expect("FLOWSTATE_S3_URL");
    let bucket = s3
        .trim_start_matches("s3://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let uri = format!(
        "{}/{bucket}?uploads&prefix={key_prefix}",
        endpoint.trim_end_matches('/')
    );
    let client = ReqwestConnector::default()
        .connect(&ClientOptions::new().with_allow_http(true))
        .expect("http client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let body = runtime.block_on(async move {
        let request = http::Request::get(uri)
            .body(object_store::client::HttpRequestBody::empty())
            .expect("request");
        let response = client.execute(request).await.expect("list uploads");
        assert!(
            response.status().is_success(),
            "list uploads: {}",
            response.status()
        );
        response.into_body().bytes().await.expect("body")
    });
    let body = String::from_utf8_lossy(&body).into_owned();
    body.split("<Upload>")
        .skip(1)
        .filter_map(|upload| {
            let start = upload.find("<Key>")? + "<Key>".len();
            let end = upload.find("</Key>")?;
            Some(upload[start..end].to_owned())
        })
        .collect()
}

/// Shared handle type for injected connectors.
pub fn connector(c: &checkpoint_store::FlakyHttpConnector) -> Option<Arc<dyn HttpConnector>> {
    Some(Arc::new(c.clone()))
}
