//! The resilient call path of one named service: breaker → pick (discovery, health,
//! balancer) → pooled client with timeouts → outlier marks → budgeted retries elsewhere.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{Breaker, BreakerError, BreakerPolicy, RetryBudget, RetryPolicy, Timeouts, TryFailure};
use crate::balancing::pool::BackendPool;
use crate::balancing::{Algorithm, Backend, HashKey, PickContext};
use crate::discovery::{Discover, Source};
use crate::health::{ActiveCheck, ActiveChecker, OutlierDetector, OutlierPolicy, Outcome};

/// Request and response bodies on this path (the host's `proxy::body::Body`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type CallBody = BoxBody<Bytes, BoxError>;

/// Request bodies up to this size are buffered so that a retry can resend them; larger or
/// unsized (chunked) bodies are sent once and never retried.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// Everything that defines how one service is reached (validated from `[[services]]`).
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: Arc<str>,
    pub source: Source,
    pub algorithm: Algorithm,
    /// Required when `algorithm` is `Hash`.
    pub hash_key: Option<HashKey>,
    pub health: Option<ActiveCheck>,
    pub outlier: Option<OutlierPolicy>,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
    pub timeouts: Timeouts,
    /// Speak HTTP/2 without TLS (h2c) to the endpoints.
    pub http2: bool,
}

/// Why a call to a service failed. Each variant names the service, and the endpoint when
/// one was involved. [`CallError::status`] and [`CallError::kind`] are what the host's error
/// mapping uses; `kind` marks fast failures (`circuit-open`, `overloaded`, `no-endpoints`)
/// so a plugin's failure hook can answer with a fallback.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("service \"{service}\": no endpoints available")]
    NoEndpoints { service: Arc<str> },
    #[error(transparent)]
    Breaker(#[from] BreakerError),
    #[error("service \"{service}\", endpoint {endpoint}: connect failed: {source}")]
    Connect {
        service: Arc<str>,
        endpoint: SocketAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("service \"{service}\", endpoint {endpoint}: connection failed: {source}")]
    Reset {
        service: Arc<str>,
        endpoint: SocketAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("service \"{service}\", endpoint {endpoint}: no response within {after:?} (try timeout)")]
    TryTimeout {
        service: Arc<str>,
        endpoint: SocketAddr,
        after: Duration,
    },
    #[error("service \"{service}\": no response within {after:?} (total timeout)")]
    TotalTimeout { service: Arc<str>, after: Duration },
    #[error("service \"{service}\": reading the request body failed: {source}")]
    RequestBody {
        service: Arc<str>,
        #[source]
        source: BoxError,
    },
    #[error("service \"{service}\": bad request URI: {source}")]
    Uri {
        service: Arc<str>,
        #[source]
        source: http::Error,
    },
}

impl CallError {
    /// The status the client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            CallError::NoEndpoints { .. } | CallError::Breaker(_) => StatusCode::SERVICE_UNAVAILABLE,
            CallError::Connect { .. } | CallError::Reset { .. } => StatusCode::BAD_GATEWAY,
            CallError::TryTimeout { .. } | CallError::TotalTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            CallError::RequestBody { .. } | CallError::Uri { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// A short stable marker for the failure (sent as `x-gatehouse-failure`).
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::NoEndpoints { .. } => "no-endpoints",
            CallError::Breaker(BreakerError::Open { .. }) => "circuit-open",
            CallError::Breaker(BreakerError::Overloaded { .. }) => "overloaded",
            CallError::Connect { .. } => "connect",
            CallError::Reset { .. } => "reset",
            CallError::TryTimeout { .. } | CallError::TotalTimeout { .. } => "timeout",
            CallError::RequestBody { .. } => "request-body",
            CallError::Uri { .. } => "request-uri",
        }
    }
}

/// One named service, ready to call. Owns its background tasks (discovery driver, active
/// checker) and stops them when dropped.
pub struct UpstreamService {
    name: Arc<str>,
    pool: Arc<BackendPool>,
    hash_key: Option<HashKey>,
    outlier: Option<OutlierDetector>,
    retry: RetryPolicy,
    budget: RetryBudget,
    breaker: Breaker,
    timeouts: Timeouts,
    client: Client<HttpConnector, CallBody>,
    tasks: Vec<AbortHandle>,
}

impl std::fmt::Debug for UpstreamService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamService")
            .field("name", &self.name)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Drop for UpstreamService {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl UpstreamService {
    /// Starts discovery (and active checks) for `spec`. Must run inside a tokio runtime.
    pub fn start(spec: ServiceSpec) -> Self {
        let pool = BackendPool::new(Arc::clone(&spec.name), spec.algorithm);
        let endpoints = spec.source.clone().start();
        // Apply the first set now, so the service can serve as soon as it is built.
        let first = endpoints.borrow().clone();
        pool.set_endpoints(&first);
        let mut tasks = vec![tokio::spawn(Arc::clone(&pool).drive(endpoints)).abort_handle()];
        if let Some(check) = spec.health.clone() {
            let checker = ActiveChecker::new(check, Arc::clone(&pool));
            tasks.push(tokio::spawn(checker.run()).abort_handle());
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(spec.timeouts.connect.0));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .http2_only(spec.http2)
            .build(connector);
        Self {
            budget: RetryBudget::new(spec.retry.budget),
            breaker: Breaker::new(Arc::clone(&spec.name), spec.breaker),
            outlier: spec.outlier.map(OutlierDetector::new),
            name: spec.name,
            pool,
            hash_key: spec.hash_key,
            retry: spec.retry,
            timeouts: spec.timeouts,
            client,
            tasks,
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The backend pool (for admin views and tests).
    pub fn pool(&self) -> &Arc<BackendPool> {
        &self.pool
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Sends `req` (its path and query are kept; scheme and authority become the chosen
    /// endpoint's) under the total timeout. A 5xx that is not retried is returned as the
    /// response; transport failures and refusals are errors.
    pub async fn call(
        &self,
        req: Request<CallBody>,
        client: Option<IpAddr>,
    ) -> Result<Response<Incoming>, CallError> {
        let total = self.timeouts.total.0;
        match tokio::time::timeout(total, self.call_inner(req, client)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::TotalTimeout {
                service: Arc::clone(&self.name),
                after: total,
            }),
        }
    }

    async fn call_inner(
        &self,
        req: Request<CallBody>,
        client: Option<IpAddr>,
    ) -> Result<Response<Incoming>, CallError> {
        let permit = self.breaker.acquire().await?;
        self.budget.deposit();
        let (parts, body) = req.into_parts();
        let hash = self
            .hash_key
            .as_ref()
            .and_then(|k| k.hash_of(&parts.headers, client));
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());

        // Keep a copy of small bodies so a retry can resend them.
        let (replay, mut once) = if self.retry.max_retries > 0 && replayable(&body) {
            let bytes = body
                .collect()
                .await
                .map_err(|source| CallError::RequestBody {
                    service: Arc::clone(&self.name),
                    source,
                })?
                .to_bytes();
            (Some(bytes), None)
        } else {
            (None, Some(body))
        };

        let mut tried: Vec<Arc<Backend>> = Vec::new();
        let mut attempt: u32 = 0;
        loop {
            let picked = self
                .pool
                .balancer()
                .pick(&PickContext { hash, attempt }, &tried)
                .ok_or_else(|| CallError::NoEndpoints {
                    service: Arc::clone(&self.name),
                })?;
            let backend = Arc::clone(picked.backend());
            let endpoint = backend.endpoint.addr;
            let body = match (&replay, once.take()) {
                (Some(bytes), _) => Full::new(bytes.clone()).map_err(|e| match e {}).boxed(),
                (None, Some(body)) => body,
                // Unreachable: without a replay copy there is no second try.
                (None, None) => Empty::new().map_err(|e| match e {}).boxed(),
            };
            let uri: Uri = format!("http://{endpoint}{path}")
                .parse()
                .map_err(|e: http::uri::InvalidUri| CallError::Uri {
                    service: Arc::clone(&self.name),
                    source: e.into(),
                })?;
            let mut builder = Request::builder()
                .method(parts.method.clone())
                .uri(uri)
                .version(parts.version);
            if let Some(h) = builder.headers_mut() {
                *h = parts.headers.clone();
            }
            let req = builder.body(body).map_err(|source| CallError::Uri {
                service: Arc::clone(&self.name),
                source,
            })?;

            let per_try = self.timeouts.per_try.0;
            let outcome = tokio::time::timeout(per_try, self.client.request(req)).await;
            drop(picked);
            let (failure, result) = match outcome {
                Ok(Ok(resp)) if !resp.status().is_server_error() => {
                    self.mark(&backend, Outcome::Success);
                    permit.record(true);
                    return Ok(resp);
                }
                Ok(Ok(resp)) => (TryFailure::Status(resp.status()), Ok(resp)),
                Ok(Err(e)) if e.is_connect() => (
                    TryFailure::Connect,
                    Err(CallError::Connect {
                        service: Arc::clone(&self.name),
                        endpoint,
                        source: e,
                    }),
                ),
                Ok(Err(e)) => (
                    TryFailure::Reset,
                    Err(CallError::Reset {
                        service: Arc::clone(&self.name),
                        endpoint,
                        source: e,
                    }),
                ),
                Err(_) => (
                    TryFailure::Timeout,
                    Err(CallError::TryTimeout {
                        service: Arc::clone(&self.name),
                        endpoint,
                        after: per_try,
                    }),
                ),
            };
            self.mark(&backend, Outcome::Failure);
            let may_retry = replay.is_some()
                && attempt < self.retry.max_retries
                && self.retry.allows(&parts.method, failure)
                && self.budget.try_withdraw();
            if !may_retry {
                permit.record(false);
                return result;
            }
            tracing::debug!(service = %self.name, %endpoint, ?failure, attempt, "retrying on another endpoint");
            tried.push(backend);
            attempt += 1;
            tokio::time::sleep(self.retry.backoff_for(attempt)).await;
        }
    }

    fn mark(&self, backend: &Backend, outcome: Outcome) {
        let Some(detector) = &self.outlier else {
            return;
        };
        let all = self.pool.all_backends();
        if detector
            .record(backend, &all, outcome, Instant::now())
            .is_some()
        {
            self.pool.rebuild();
        }
    }
}

/// Small bodies with a known length (including none) can be buffered for replay.
fn replayable(body: &CallBody) -> bool {
    body.is_end_stream() || body.size_hint().exact().is_some_and(|n| n <= MAX_REPLAY_BODY)
}
