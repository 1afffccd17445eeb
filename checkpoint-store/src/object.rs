//! [`ObjectStoreStorage`]: the blocking [`Storage`] over an [`ObjectStore`].

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Write};
use std::path::{Component, Path};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{HttpClient, HttpConnector, HttpError, HttpErrorKind};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientConfigKey, ClientOptions, GetOptions, MultipartUpload, ObjectStore,
    ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use tokio::runtime::{Handle, Runtime, RuntimeFlavor};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::storage::{Storage, StorageFile};

/// How many chunks of a GET body are read ahead of the reader.
const READ_AHEAD_CHUNKS: usize = 16;

/// Settings of an [`ObjectStoreStorage`].
///
/// The network settings (`endpoint`, `allow_http`, `region`, `virtual_hosted_style`,
/// timeouts, retries) only apply to S3 stores made by
/// [`ObjectStoreStorage::from_url`]; they override what the `AWS_*` environment
/// variables say. `part_size`, `max_parallel_parts` and `worker_threads` apply to
/// every store.
#[derive(Clone, Debug)]
pub struct ObjectStoreOptions {
    /// Size of one multipart part; a written file or uploaded local file larger
    /// than this goes up as a multipart upload. S3 wants at least 5 MiB per part
    /// (but the last). Default 8 MiB.
    pub part_size: usize,
    /// How many parts of one upload are sent at the same time. Default 4.
    pub max_parallel_parts: usize,
    /// How many times object_store retries one HTTP request after a transient
    /// failure (5xx, 429, timeouts of idempotent requests, connection errors).
    /// 0 disables retries. Default 10.
    pub max_retries: usize,
    /// First backoff between retries (doubled each retry). Default 100 ms.
    pub initial_backoff: Duration,
    /// Longest backoff between two retries. Default 15 s.
    pub max_backoff: Duration,
    /// No retry is started later than this after the first attempt. Default 3 min.
    pub retry_timeout: Duration,
    /// Timeout of one HTTP request, body included. Default 30 s.
    pub request_timeout: Duration,
    /// Timeout of connecting to the server. Default 5 s.
    pub connect_timeout: Duration,
    /// S3 endpoint, e.g. `http://127.0.0.1:9000` (else `AWS_ENDPOINT_URL_S3`,
    /// `AWS_ENDPOINT_URL` or `AWS_ENDPOINT`, else AWS).
    pub endpoint: Option<String>,
    /// Permits plain-HTTP endpoints. `false` leaves `AWS_ALLOW_HTTP` in force.
    pub allow_http: bool,
    /// Region (else `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// Virtual-hosted-style requests (`bucket.host/key`) instead of path-style
    /// (`host/bucket/key`, object_store's default). With a custom endpoint and
    /// `Some(true)`, the endpoint must already contain the bucket.
    pub virtual_hosted_style: Option<bool>,
    /// Worker threads of the storage's own tokio runtime. Default 2.
    pub worker_threads: usize,
    /// HTTP layer to use instead of the default reqwest client (for tests, e.g.
    /// `FlakyHttpConnector`, with the `test-support` feature).
    pub http_connector: Option<Arc<dyn HttpConnector>>,
}

impl Default for ObjectStoreOptions {
    fn default() -> Self {
        Self {
            part_size: 8 * 1024 * 1024,
            max_parallel_parts: 4,
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            retry_timeout: Duration::from_secs(180),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            endpoint: None,
            allow_http: false,
            region: None,
            virtual_hosted_style: None,
            worker_threads: 2,
            http_connector: None,
        }
    }
}

impl ObjectStoreOptions {
    /// object_store's retry settings for these options.
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.initial_backoff,
                max_backoff: self.max_backoff,
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }

    /// Builds an S3 store for `bucket`: the `AWS_*` environment first
    /// ([`AmazonS3Builder::from_env`]), then these options on top.
    fn build_s3(&self, bucket: &str) -> io::Result<Arc<dyn ObjectStore>> {
        // Client settings go through `with_config` one by one: `with_client_options`
        // would replace the client options read from the environment (AWS_ALLOW_HTTP).
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(self.retry_config())
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                format!("{}ms", self.request_timeout.as_millis()),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                format!("{}ms", self.connect_timeout.as_millis()),
            );
        if let Some(endpoint) = &self.endpoint {
            // Also as the S3 endpoint, which (from AWS_ENDPOINT_URL_S3) would
            // otherwise take precedence over it.
            builder = builder
                .with_endpoint(endpoint)
                .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint);
        }
        if self.allow_http {
            builder = builder.with_allow_http(true);
        }
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        if let Some(virtual_hosted) = self.virtual_hosted_style {
            builder = builder.with_virtual_hosted_style_request(virtual_hosted);
        }
        if let Some(connector) = &self.http_connector {
            builder = builder.with_http_connector(SharedConnector(Arc::clone(connector)));
        }
        let store = builder.build().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("configuring S3 store for bucket {bucket}: {e}"),
            )
        })?;
        Ok(Arc::new(store))
    }
}

/// An [`HttpConnector`] shared through an `Arc` (the builder wants a sized type).
#[derive(Debug)]
struct SharedConnector(Arc<dyn HttpConnector>);

impl HttpConnector for SharedConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        self.0.connect(options)
    }
}

/// A [`Storage`] over an [`ObjectStore`] (S3, in-memory, local files), with a
/// blocking API.
///
/// It owns a tokio runtime that runs every request; callers block on a std-style
/// wait, so they may be plain threads or threads inside another tokio runtime
/// (on a multi-threaded runtime the wait is wrapped in
/// [`tokio::task::block_in_place`]). Clones share the store and the runtime.
#[derive(Clone)]
pub struct ObjectStoreStorage {
    inner: Arc<Inner>,
}

impl fmt::Debug for ObjectStoreStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreStorage")
            .field("url", &self.inner.url)
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// `Some` until dropped; taken in `Drop` to shut it down without blocking.
    runtime: Option<Runtime>,
    handle: Handle,
    store: Arc<dyn ObjectStore>,
    /// Key prefix, without leading or trailing `/`; may be empty.
    prefix: String,
    /// URL of the prefix, for messages, without trailing `/` (unless it ends in `://`).
    url: String,
    options: ObjectStoreOptions,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// An object's key and its URL for messages.
struct ObjectLocation {
    key: ObjectPath,
    url: String,
}

impl ObjectStoreStorage {
    /// Opens the store named by `url`:
    /// - `s3://bucket` or `s3://bucket/prefix`: S3 through [`AmazonS3Builder::from_env`]
    ///   (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
    ///   `AWS_ENDPOINT_URL`/`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, ...) with `options` on top;
    /// - `memory://` or `memory:///prefix`: a fresh, empty in-memory store;
    /// - `file:///abs/path`: local files under that folder (created if missing),
    ///   with fsync of files and folders on writes. The path is taken as is (no
    ///   percent-decoding).
    pub fn from_url(url: &str, options: ObjectStoreOptions) -> io::Result<Self> {
        let invalid = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad storage URL {url:?}: {why}"),
            )
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected scheme://..."))?;
        match scheme {
            "s3" | "s3a" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(invalid("no bucket"));
                }
                let store = options.build_s3(bucket)?;
                Self::new(store, prefix, url, options)
            }
            "memory" => Self::new(Arc::new(InMemory::new()), rest, url, options),
            "file" => {
                if !rest.starts_with('/') {
                    return Err(invalid("file URLs need an absolute path: file:///abs/path"));
                }
                std::fs::create_dir_all(rest)?;
                let store = LocalFileSystem::new_with_prefix(rest)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?
                    .with_automatic_cleanup(true)
                    .with_fsync(true);
                Self::new(Arc::new(store), "", url, options)
            }
            other => Err(invalid(&format!("unsupported scheme {other:?}"))),
        }
    }

    /// Wraps `store`: virtual path `/a/b` maps to key `prefix/a/b`, and messages
    /// name it `url_for_messages/a/b` (so `url_for_messages` should be the URL of
    /// `prefix`, e.g. `s3://bucket/prefix`).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        url_for_messages: &str,
        options: ObjectStoreOptions,
    ) -> io::Result<Self> {
        let prefix = prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() {
            ObjectPath::parse(&prefix).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad key prefix {prefix:?}: {e}"),
                )
            })?;
        }
        let url = if url_for_messages.ends_with("://") {
            url_for_messages.to_owned()
        } else {
            url_for_messages.trim_end_matches('/').to_owned()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.worker_threads.max(1))
            .thread_name("objstore-io")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Self {
            inner: Arc::new(Inner {
                runtime: Some(runtime),
                handle,
                store,
                prefix,
                url,
                options,
            }),
        })
    }

    /// The wrapped store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// The options it was made with.
    pub fn options(&self) -> &ObjectStoreOptions {
        &self.inner.options
    }

    /// The object key that `path` maps to.
    pub fn key(&self, path: &Path) -> io::Result<ObjectPath> {
        Ok(self.inner.locate(path)?.key)
    }
}

impl Inner {
    /// Maps a virtual path to its key and URL; rejects `..` and non-UTF-8 names.
    fn locate(&self, path: &Path) -> io::Result<ObjectLocation> {
        let invalid = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad storage path {}: {why}", path.display()),
            )
        };
        // Paths under the store's URL (`s3://bucket/prefix/job/…`, as
        // checkpoint storage writes them) or absolute paths taken as relative
        // to that URL (`/job/…`).
        let path = path.strip_prefix(Path::new(&self.url)).unwrap_or(path);
        let mut relative = String::new();
        for component in path.components() {
            match component {
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir => return Err(invalid("`..` is not allowed")),
                Component::Prefix(_) => return Err(invalid("path prefixes are not allowed")),
                Component::Normal(name) => {
                    let name = name.to_str().ok_or_else(|| invalid("not UTF-8"))?;
                    if !relative.is_empty() {
                        relative.push('/');
                    }
                    relative.push_str(name);
                }
            }
        }
        let key = match (self.prefix.is_empty(), relative.is_empty()) {
            (true, _) => relative.clone(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{relative}", self.prefix),
        };
        let key = ObjectPath::parse(&key).map_err(|e| invalid(&e.to_string()))?;
        // `memory://` + `/a` gives `memory:///a`; `s3://b/p` + `/a` gives `s3://b/p/a`.
        let url = if relative.is_empty() {
            self.url.clone()
        } else {
            format!("{}/{relative}", self.url)
        };
        Ok(ObjectLocation { key, url })
    }

    /// Runs `future` on the storage's runtime and waits for it on this thread.
    fn block_on<F, T>(&self, future: F) -> io::Result<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        join_result(wait(self.handle.spawn(future)))
    }
}

/// Waits for `future` on the calling thread, whatever runtime (if any) it is in.
///
/// The future must not need the caller's runtime: everything that does I/O runs
/// on the storage's own runtime, and this only waits for its result.
fn wait<F: Future>(future: F) -> F::Output {
    // Inside a task of another runtime, polling tokio primitives (join handles,
    // channels) draws on that task's coop budget; once it is spent they return
    // Pending until the task yields, which a blocking wait never does: it would
    // spin forever. `unconstrained` exempts the wait from the budget.
    let future = tokio::task::unconstrained(future);
    match Handle::try_current() {
        // Lets the caller's runtime move its other tasks off this thread meanwhile.
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| futures::executor::block_on(future))
        }
        _ => futures::executor::block_on(future),
    }
}

/// The value of a joined task; a panic in the task is resumed in the caller.
fn join_result<T>(joined: Result<T, tokio::task::JoinError>) -> io::Result<T> {
    match joined {
        Ok(value) => Ok(value),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(io::Error::other(format!(
            "storage runtime task cancelled: {e}"
        ))),
    }
}

/// An object_store error, with the operation and the object's URL.
#[derive(Debug)]
struct StoreError {
    operation: &'static str,
    url: String,
    source: object_store::Error,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} failed: {}", self.operation, self.url, self.source)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Maps an object_store error to an [`io::Error`] of the matching kind, naming
/// the operation and the object's URL.
fn store_error(operation: &'static str, url: &str, source: object_store::Error) -> io::Error {
    use object_store::Error as E;
    let kind = match &source {
        E::NotFound { .. } => io::ErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => io::ErrorKind::AlreadyExists,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
        E::NotImplemented { .. } | E::NotSupported { .. } => io::ErrorKind::Unsupported,
        E::InvalidPath { .. } => io::ErrorKind::InvalidInput,
        other if is_timeout(other) => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(
        kind,
        StoreError {
            operation,
            url: url.to_owned(),
            source,
        },
    )
}

/// Whether an HTTP timeout is among the causes of `error`.
fn is_timeout(error: &object_store::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<HttpError>()
            .is_some_and(|http| http.kind() == HttpErrorKind::Timeout)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

impl Storage for ObjectStoreStorage {
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let location = self.inner.locate(path)?;
        Ok(Box::new(ObjectFile {
            inner: Arc::clone(&self.inner),
            location,
            buffer: BytesMut::new(),
            uploader: None,
            state: FileState::Open,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(ObjectReader::open(&self.inner, path)?))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let ObjectLocation { key, url } = self.inner.locate(path)?;
        let store = Arc::clone(&self.inner.store);
        let bytes = self
            .inner
            .block_on(async move { store.get(&key).await?.bytes().await })?
            .map_err(|e| store_error("read", &url, e))?;
        Ok(bytes.to_vec())
    }

    fn publish(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let ObjectLocation { key, url } = self.inner.locate(path)?;
        let store = Arc::clone(&self.inner.store);
        let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
        let result = self.inner.block_on(async move {
            let create = PutOptions::from(PutMode::Create);
            match store.put_opts(&key, payload.clone(), create).await {
                Err(object_store::Error::NotImplemented { .. }) => {
                    // Fallback for stores without conditional puts: head, then
                    // put. Two writers racing between the two calls can both
                    // "win"; the last put is what stays.
                    match store.head(&key).await {
                        Ok(_) => Err(object_store::Error::AlreadyExists {
                            path: key.to_string(),
                            source: "exists (checked with head; no conditional put)".into(),
                        }),
                        Err(object_store::Error::NotFound { .. }) => {
                            store.put(&key, payload).await.map(|_| ())
                        }
                        Err(e) => Err(e),
                    }
                }
                other => other.map(|_| ()),
            }
        })?;
        result.map_err(|e| store_error("publish", &url, e))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let ObjectLocation { key, url } = self.inner.locate(path)?;
        let store = Arc::clone(&self.inner.store);
        match self
            .inner
            .block_on(async move { store.delete(&key).await })?
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error("remove", &url, e)),
        }
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let ObjectLocation { key, url } = self.inner.locate(path)?;
        let store = Arc::clone(&self.inner.store);
        let result = self.inner.block_on(async move {
            let locations = store.list(Some(&key)).map_ok(|meta| meta.location).boxed();
            let mut deleted = store.delete_stream(locations);
            while let Some(result) = deleted.next().await {
                match result {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
        result.map_err(|e| store_error("remove directory", &url, e))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.locate(path).map(|_| ())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let ObjectLocation { key, url } = self.inner.locate(path)?;
        let store = Arc::clone(&self.inner.store);
        let listed = self
            .inner
            .block_on(async move { store.list_with_delimiter(Some(&key)).await })?;
        let listed = match listed {
            Ok(listed) => listed,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(store_error("list", &url, e)),
        };
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .chain(listed.objects.iter().map(|meta| &meta.location))
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.locate(path).map(|_| ())
    }

    /// Errors (other than "not found") also answer `false`.
    fn exists(&self, path: &Path) -> bool {
        let Ok(ObjectLocation { key, .. }) = self.inner.locate(path) else {
            return false;
        };
        let store = Arc::clone(&self.inner.store);
        self.inner
            .block_on(async move {
                if store.head(&key).await.is_ok() {
                    return true;
                }
                matches!(store.list(Some(&key)).next().await, Some(Ok(_)))
            })
            .unwrap_or(false)
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        let ObjectLocation { key, url } = self.inner.locate(path)?;
        let store = Arc::clone(&self.inner.store);
        let meta = self.inner.block_on(async move { store.head(&key).await })?;
        meta.map(|m| m.size)
            .map_err(|e| store_error("stat", &url, e))
    }

    fn upload_file(&self, local: &Path, path: &Path) -> io::Result<()> {
        let location = self.inner.locate(path)?;
        let local_error = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("upload of {} to {}: {e}", local.display(), location.url),
            )
        };
        let mut file = File::open(local).map_err(local_error)?;
        let size = file.metadata().map_err(local_error)?.len();
        let part_size = self.inner.options.part_size.max(1);
        if size <= part_size as u64 {
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            file.read_to_end(&mut bytes).map_err(local_error)?;
            return put_whole(&self.inner, &location, Bytes::from(bytes), "upload");
        }
        let mut uploader = PartUploader::start(&self.inner, &location)?;
        loop {
            let part = read_part(&mut file, part_size).map_err(local_error)?;
            if part.is_empty() {
                break;
            }
            // On any error `uploader` is dropped here, which aborts the upload.
            uploader.put_part(part)?;
        }
        uploader.complete()
    }

    fn download_file(&self, path: &Path, local: &Path) -> io::Result<()> {
        let mut reader = ObjectReader::open(&self.inner, path)?;
        let file_name = local.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("download target {} has no file name", local.display()),
            )
        })?;
        let mut partial_name = file_name.to_owned();
        partial_name.push(".partial");
        let partial = local.with_file_name(partial_name);
        let result = (|| {
            let mut file = File::create(&partial)?;
            while let Some(chunk) = reader.next_chunk()? {
                file.write_all(&chunk)?;
            }
            file.sync_all()?;
            std::fs::rename(&partial, local)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("download of {} to {}: {e}", reader.url, local.display()),
            )
        })
    }

    fn holds(&self, path: &Path) -> bool {
        path.starts_with(Path::new(&self.inner.url))
    }

    fn describe(&self, path: &Path) -> String {
        match self.inner.locate(path) {
            Ok(location) => location.url,
            Err(_) => format!("{}/{}", self.inner.url, path.display()),
        }
    }
}

/// Reads up to `part_size` bytes (fewer only at the end of the file).
fn read_part(file: &mut File, part_size: usize) -> io::Result<Bytes> {
    let mut part = Vec::with_capacity(part_size);
    file.take(part_size as u64).read_to_end(&mut part)?;
    Ok(Bytes::from(part))
}

/// Puts `bytes` as one object, overwriting.
fn put_whole(
    inner: &Arc<Inner>,
    location: &ObjectLocation,
    bytes: Bytes,
    operation: &'static str,
) -> io::Result<()> {
    let store = Arc::clone(&inner.store);
    let key = location.key.clone();
    inner
        .block_on(async move { store.put(&key, PutPayload::from(bytes)).await })?
        .map(|_| ())
        .map_err(|e| store_error(operation, &location.url, e))
}

/// Drives a multipart upload from a blocking caller: at most
/// `max_parallel_parts` parts in flight; aborted when dropped before `complete`.
struct PartUploader {
    inner: Arc<Inner>,
    url: String,
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: VecDeque<JoinHandle<object_store::Result<()>>>,
}

impl PartUploader {
    fn start(inner: &Arc<Inner>, location: &ObjectLocation) -> io::Result<Self> {
        let store = Arc::clone(&inner.store);
        let key = location.key.clone();
        let upload = inner
            .block_on(async move { store.put_multipart(&key).await })?
            .map_err(|e| store_error("start multipart upload", &location.url, e))?;
        Ok(Self {
            inner: Arc::clone(inner),
            url: location.url.clone(),
            upload: Some(upload),
            in_flight: VecDeque::new(),
        })
    }

    /// Sends one part (waits first while too many are in flight).
    fn put_part(&mut self, part: Bytes) -> io::Result<()> {
        while self.in_flight.len() >= self.inner.options.max_parallel_parts.max(1) {
            self.wait_oldest()?;
        }
        let upload = self.upload.as_mut().ok_or_else(|| finished(&self.url))?;
        let sending = upload.put_part(PutPayload::from(part));
        self.in_flight.push_back(self.inner.handle.spawn(sending));
        Ok(())
    }

    /// Waits for the oldest part in flight; on its failure aborts the upload.
    fn wait_oldest(&mut self) -> io::Result<()> {
        let Some(task) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match join_result(wait(task)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.abort();
                Err(store_error("upload part of", &self.url, e))
            }
            Err(e) => {
                self.abort();
                Err(e)
            }
        }
    }

    /// Waits for every part and completes the upload (aborting it on failure).
    fn complete(mut self) -> io::Result<()> {
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        let mut upload = self.upload.take().ok_or_else(|| finished(&self.url))?;
        let (upload, result) = self.inner.block_on(async move {
            let result = upload.complete().await;
            (upload, result)
        })?;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                self.upload = Some(upload);
                self.abort();
                Err(store_error("complete multipart upload of", &self.url, e))
            }
        }
    }

    /// Waits for the parts in flight to end, then aborts the upload. An abort
    /// that fails is not reported: the store may keep its parts until a
    /// lifecycle rule (S3: AbortIncompleteMultipartUpload) removes them.
    fn abort(&mut self) {
        // The parts are not cancelled: a request the server already received
        // would still be processed, and could store its part after the abort
        // (S3 documents this race). Waiting is bounded by the request timeout
        // and the retry settings.
        for task in self.in_flight.drain(..) {
            let _ = wait(task);
        }
        if let Some(mut upload) = self.upload.take() {
            let _ = self.inner.block_on(async move { upload.abort().await });
        }
    }
}

impl Drop for PartUploader {
    fn drop(&mut self) {
        self.abort();
    }
}

fn finished(url: &str) -> io::Error {
    io::Error::other(format!("multipart upload of {url} is already finished"))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FileState {
    Open,
    Synced,
    Failed,
}

/// A file being written: buffered up to `part_size`, then a multipart upload.
struct ObjectFile {
    inner: Arc<Inner>,
    location: ObjectLocation,
    buffer: BytesMut,
    /// Started once more than `part_size` bytes were written.
    uploader: Option<PartUploader>,
    state: FileState,
}

impl ObjectFile {
    fn check_open(&self) -> io::Result<()> {
        match self.state {
            FileState::Open => Ok(()),
            FileState::Synced => Err(io::Error::other(format!(
                "{} was already synced; nothing can be written after sync",
                self.location.url
            ))),
            FileState::Failed => Err(io::Error::other(format!(
                "an earlier write to {} failed; the file is abandoned",
                self.location.url
            ))),
        }
    }

    fn send_full_parts(&mut self) -> io::Result<()> {
        let part_size = self.inner.options.part_size.max(1);
        while self.buffer.len() > part_size {
            if self.uploader.is_none() {
                self.uploader = Some(PartUploader::start(&self.inner, &self.location)?);
            }
            let part = self.buffer.split_to(part_size).freeze();
            if let Some(uploader) = self.uploader.as_mut() {
                uploader.put_part(part)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        let rest = std::mem::take(&mut self.buffer).freeze();
        match self.uploader.take() {
            None => put_whole(&self.inner, &self.location, rest, "write"),
            Some(mut uploader) => {
                // After `send_full_parts` the rest is 1..=part_size bytes.
                if !rest.is_empty() {
                    uploader.put_part(rest)?;
                }
                uploader.complete()
            }
        }
    }

    /// Runs `step`; a failure abandons the file (and aborts its upload).
    fn guarded(&mut self, step: fn(&mut Self) -> io::Result<()>) -> io::Result<()> {
        let result = step(self);
        if result.is_err() {
            self.state = FileState::Failed;
            self.buffer = BytesMut::new();
            self.uploader = None;
        }
        result
    }
}

impl StorageFile for ObjectFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.check_open()?;
        self.buffer.extend_from_slice(bytes);
        self.guarded(Self::send_full_parts)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.check_open()?;
        self.guarded(Self::finish)?;
        self.state = FileState::Synced;
        Ok(())
    }
}

/// Streams an object: a task on the storage's runtime pulls the GET body and
/// hands chunks over a bounded channel; `read` waits for one chunk at a time.
struct ObjectReader {
    url: String,
    chunks: mpsc::Receiver<object_store::Result<Bytes>>,
    current: Bytes,
    done: bool,
    pump: JoinHandle<()>,
    /// Keeps the runtime alive while reading.
    _inner: Arc<Inner>,
}

impl ObjectReader {
    fn open(inner: &Arc<Inner>, path: &Path) -> io::Result<Self> {
        let ObjectLocation { key, url } = inner.locate(path)?;
        let store = Arc::clone(&inner.store);
        let response = inner
            .block_on(async move { store.get_opts(&key, GetOptions::default()).await })?
            .map_err(|e| store_error("open", &url, e))?;
        let (sender, chunks) = mpsc::channel(READ_AHEAD_CHUNKS);
        let pump = inner.handle.spawn(async move {
            let mut body = response.into_stream();
            while let Some(chunk) = body.next().await {
                let failed = chunk.is_err();
                if sender.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Self {
            url,
            chunks,
            current: Bytes::new(),
            done: false,
            pump,
            _inner: Arc::clone(inner),
        })
    }

    /// The next chunk of the body, `None` at its end.
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if !self.current.is_empty() {
            return Ok(Some(std::mem::take(&mut self.current)));
        }
        while !self.done {
            match wait(self.chunks.recv()) {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => return Ok(Some(chunk)),
                Some(Err(e)) => {
                    self.done = true;
                    return Err(store_error("read", &self.url, e));
                }
                None => self.done = true,
            }
        }
        Ok(None)
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.current.is_empty() {
            match self.next_chunk()? {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        self.pump.abort();
    }
}
