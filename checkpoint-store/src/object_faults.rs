//! [`FaultyObjectStore`]: an [`ObjectStore`] wrapper that injects errors and
//! delays, for tests of failure paths.
//!
//! Its errors are made above object_store's HTTP layer, so object_store's
//! [`object_store::RetryConfig`] never retries them: a "transient" error injected
//! here reaches the caller as is. Use it for permanent failures, for checking
//! that errors name the object, that uploads are aborted, and for delays; use
//! `FlakyHttpConnector` to test real retries.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

/// The kind of call a [`Fault`] applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `put_opts` (single-request writes, conditional puts).
    Put,
    /// Starting a multipart upload (`put_multipart_opts`).
    PutMultipart,
    /// Uploading one part of a multipart upload.
    PutPart,
    /// Completing a multipart upload.
    Complete,
    /// Aborting a multipart upload.
    Abort,
    /// `get_opts` without `head` (reads, ranged reads).
    Get,
    /// `get_opts` with `head` (metadata only).
    Head,
    /// `list`, `list_with_offset` and `list_with_delimiter`.
    List,
    /// Deleting one object (each path of `delete_stream`).
    Delete,
    /// `copy_opts` (and so renames).
    Copy,
}

/// The error a failing [`Fault`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedError {
    /// A generic error like an HTTP 503 that outlived its retries.
    Unavailable,
    /// [`object_store::Error::PermissionDenied`].
    PermissionDenied,
    /// [`object_store::Error::NotFound`].
    NotFound,
    /// [`object_store::Error::NotImplemented`] (e.g. a store without conditional puts).
    NotImplemented,
}

#[derive(Clone, Debug)]
enum Action {
    Fail(InjectedError),
    Delay(Duration),
}

/// One injection rule: which calls it applies to, what it does, how many times.
///
/// ```
/// use checkpoint_store::object_faults::{Fault, Op};
/// use std::time::Duration;
/// // The next 2 puts whose key contains `_metadata` fail like a 503.
/// let fault = Fault::fail(Op::Put).path_contains("_metadata").times(2);
/// // Every part upload waits 50 ms first.
/// let slow = Fault::delay(Op::PutPart, Duration::from_millis(50));
/// ```
#[derive(Clone, Debug)]
pub struct Fault {
    op: Op,
    action: Action,
    path_contains: Option<String>,
    /// `None`: forever.
    remaining: Option<usize>,
}

impl Fault {
    /// Fails matching calls with [`InjectedError::Unavailable`].
    pub fn fail(op: Op) -> Self {
        Self::fail_with(op, InjectedError::Unavailable)
    }

    /// Fails matching calls with `error`.
    pub fn fail_with(op: Op, error: InjectedError) -> Self {
        Self {
            op,
            action: Action::Fail(error),
            path_contains: None,
            remaining: None,
        }
    }

    /// Delays matching calls by `delay`, then lets them through.
    pub fn delay(op: Op, delay: Duration) -> Self {
        Self {
            op,
            action: Action::Delay(delay),
            path_contains: None,
            remaining: None,
        }
    }

    /// Applies only to calls whose object key (list: prefix) contains `part`.
    #[must_use]
    pub fn path_contains(mut self, part: impl Into<String>) -> Self {
        self.path_contains = Some(part.into());
        self
    }

    /// Applies to the next `count` matching calls only (default: all of them).
    #[must_use]
    pub fn times(mut self, count: usize) -> Self {
        self.remaining = Some(count);
        self
    }
}

#[derive(Debug, Default)]
struct Faults {
    rules: Mutex<Vec<Fault>>,
    calls: Mutex<HashMap<Op, usize>>,
}

impl Faults {
    /// Counts the call and applies the first live rule that matches it.
    async fn apply(&self, op: Op, path: &str) -> object_store::Result<()> {
        let action = self.take_action(op, path);
        match action {
            None => Ok(()),
            Some(Action::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
            Some(Action::Fail(error)) => Err(injected(error, op, path)),
        }
    }

    fn take_action(&self, op: Op, path: &str) -> Option<Action> {
        *self
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(op)
            .or_default() += 1;
        let mut rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        let rule = rules.iter_mut().find(|rule| {
            rule.op == op
                && rule.remaining != Some(0)
                && rule
                    .path_contains
                    .as_deref()
                    .is_none_or(|part| path.contains(part))
        })?;
        if let Some(remaining) = rule.remaining.as_mut() {
            *remaining -= 1;
        }
        Some(rule.action.clone())
    }
}

fn injected(error: InjectedError, op: Op, path: &str) -> object_store::Error {
    let source = format!("injected fault on {op:?} of {path}").into();
    match error {
        InjectedError::Unavailable => object_store::Error::Generic {
            store: "FaultyObjectStore",
            source: format!("503 Service Unavailable (injected fault on {op:?} of {path})").into(),
        },
        InjectedError::PermissionDenied => object_store::Error::PermissionDenied {
            path: path.to_owned(),
            source,
        },
        InjectedError::NotFound => object_store::Error::NotFound {
            path: path.to_owned(),
            source,
        },
        InjectedError::NotImplemented => object_store::Error::NotImplemented {
            operation: format!("{op:?} of {path} (injected fault)"),
            implementer: "FaultyObjectStore".to_owned(),
        },
    }
}

/// Wraps an [`ObjectStore`] and injects the [`Fault`]s given to
/// [`FaultyObjectStore::inject`]; also counts calls by [`Op`].
///
/// Clones share their rules and counts, so a test can keep one clone and hand
/// another (as `Arc<dyn ObjectStore>`) to the code under test.
#[derive(Clone, Debug)]
pub struct FaultyObjectStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Faults>,
}

impl FaultyObjectStore {
    /// Wraps `inner`, with no faults yet.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            faults: Arc::default(),
        }
    }

    /// Adds a rule. For each call, the first rule (in the order added) that
    /// matches it and is not used up applies.
    pub fn inject(&self, fault: Fault) {
        self.faults
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(fault);
    }

    /// Removes every rule (call counts stay).
    pub fn clear(&self) {
        self.faults
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// How many calls of kind `op` were made (failed and delayed ones included).
    pub fn calls(&self, op: Op) -> usize {
        self.faults
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }
}

impl fmt::Display for FaultyObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyObjectStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.faults.apply(Op::Put, location.as_ref()).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.faults
            .apply(Op::PutMultipart, location.as_ref())
            .await?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload {
            inner,
            faults: Arc::clone(&self.faults),
            path: location.to_string(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let op = if options.head { Op::Head } else { Op::Get };
        self.faults.apply(op, location.as_ref()).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.faults.apply(Op::Get, location.as_ref()).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let faults = Arc::clone(&self.faults);
        let checked = locations
            .then(move |location| {
                let faults = Arc::clone(&faults);
                async move {
                    let location = location?;
                    faults.apply(Op::Delete, location.as_ref()).await?;
                    Ok(location)
                }
            })
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let listing = self.inner.list(prefix);
        self.checked_list(prefix, listing)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let listing = self.inner.list_with_offset(prefix, offset);
        self.checked_list(prefix, listing)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let path = prefix.map(Path::to_string).unwrap_or_default();
        self.faults.apply(Op::List, &path).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.faults.apply(Op::Copy, to.as_ref()).await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        // A rename is checked as a copy to `to` (the inner store may rename natively).
        self.faults.apply(Op::Copy, to.as_ref()).await?;
        self.inner.rename_opts(from, to, options).await
    }
}

impl FaultyObjectStore {
    /// Prefixes `listing` with the [`Op::List`] check.
    fn checked_list(
        &self,
        prefix: Option<&Path>,
        listing: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let faults = Arc::clone(&self.faults);
        let path = prefix.map(Path::to_string).unwrap_or_default();
        stream::once(async move { faults.apply(Op::List, &path).await.map(|()| listing) })
            .try_flatten()
            .boxed()
    }
}

/// A multipart upload whose parts, completion and abort go through the faults.
#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    faults: Arc<Faults>,
    path: String,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        // Decide now, in call order, like the inner upload numbers its parts.
        let action = self.faults.take_action(Op::PutPart, &self.path);
        match action {
            None => self.inner.put_part(data),
            Some(Action::Delay(delay)) => {
                let sending = self.inner.put_part(data);
                async move {
                    tokio::time::sleep(delay).await;
                    sending.await
                }
                .boxed()
            }
            Some(Action::Fail(error)) => {
                let error = injected(error, Op::PutPart, &self.path);
                async move { Err(error) }.boxed()
            }
        }
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.faults.apply(Op::Complete, &self.path).await?;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.faults.apply(Op::Abort, &self.path).await?;
        self.inner.abort().await
    }
}
