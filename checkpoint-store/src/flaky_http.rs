//! [`FlakyHttpConnector`]: answers chosen HTTP requests of an S3 store with an
//! error status, below object_store's retry layer, to test real retries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpResponseBody, HttpService,
    ReqwestConnector,
};
use object_store::ClientOptions;

#[derive(Debug)]
struct Rule {
    method: Option<http::Method>,
    path_contains: String,
    remaining: usize,
    status: http::StatusCode,
}

#[derive(Debug, Default)]
struct State {
    rules: Mutex<Vec<Rule>>,
    requests: AtomicUsize,
    injected: AtomicUsize,
}

impl State {
    /// The status to answer `request` with instead of sending it, if any.
    fn take(&self, request: &HttpRequest) -> Option<http::StatusCode> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let path = request.uri().path();
        let mut rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        let rule = rules.iter_mut().find(|rule| {
            rule.remaining > 0
                && rule.method.as_ref().is_none_or(|m| m == request.method())
                && path.contains(&rule.path_contains)
        })?;
        rule.remaining -= 1;
        self.injected.fetch_add(1, Ordering::Relaxed);
        Some(rule.status)
    }
}

/// An [`HttpConnector`] for S3 stores (see
/// [`crate::object::ObjectStoreOptions::http_connector`]) that sends requests through
/// object_store's usual reqwest client, except the ones it is told to fail: those
/// get an S3-style error answer without reaching the server.
///
/// Since it sits below object_store's retry layer, a 5xx answer here is retried
/// according to [`object_store::RetryConfig`] exactly as one from a real server.
/// Clones share their rules and counters.
#[derive(Clone, Debug, Default)]
pub struct FlakyHttpConnector {
    state: Arc<State>,
}

impl FlakyHttpConnector {
    /// A connector that fails nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers the next `count` requests whose method is `method` (any if `None`)
    /// and whose URL path (`/bucket/key` in path style) contains `path_contains`
    /// with `status` (e.g. 503), without sending them. An invalid status code
    /// means 503.
    pub fn fail_next(&self, method: Option<&str>, path_contains: &str, count: usize, status: u16) {
        let method = method.and_then(|m| http::Method::from_bytes(m.as_bytes()).ok());
        let status =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE);
        self.state
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Rule {
                method,
                path_contains: path_contains.to_owned(),
                remaining: count,
                status,
            });
    }

    /// How many requests were answered with an injected error so far.
    pub fn injected(&self) -> usize {
        self.state.injected.load(Ordering::Relaxed)
    }

    /// How many requests were made so far (injected ones included).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::Relaxed)
    }
}

impl HttpConnector for FlakyHttpConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(FlakyService {
            inner,
            state: Arc::clone(&self.state),
        }))
    }
}

#[derive(Debug)]
struct FlakyService {
    inner: HttpClient,
    state: Arc<State>,
}

#[async_trait]
impl HttpService for FlakyService {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let Some(status) = self.state.take(&request) else {
            return self.inner.execute(request).await;
        };
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>Injected{}</Code>\
             <Message>injected by FlakyHttpConnector</Message></Error>",
            status.as_u16()
        );
        let mut response = HttpResponse::new(HttpResponseBody::from(body));
        *response.status_mut() = status;
        Ok(response)
    }
}
