//! The resilient call path of one named service: breaker → pick (discovery, health,
//! balancer) → the endpoint's pooled connections, with timeouts → outlier marks → budgeted
//! retries elsewhere.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{
    Breaker, BreakerError, BreakerPolicy, BreakerState, RetryBudget, RetryPolicy, Timeouts,
    TryFailure,
};
use crate::balancing::pool::{Availability, BackendPool};
use crate::balancing::{Algorithm, Backend, ClientAddr, HashKey, NoPick, PickContext};
use crate::body::{self, Body};
use crate::conn::{self, ConnError, ConnSettings, PooledBody};
use crate::discovery::{Discover, Source};
use crate::health::{ActiveCheck, ActiveChecker, Outcome, OutlierDetector, OutlierPolicy};
use crate::telemetry::trace::TraceScope;

/// Request bodies on this path (the host's `body::Body`).
pub type CallBody = Body;
pub use crate::body::BoxError;

/// Request bodies up to this size are buffered so that a retry can resend them; larger or
/// unsized (chunked) bodies are sent once and never retried.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// Everything that defines how one service is reached (validated from `[[services]]`).
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: Arc<str>,
    pub source: Source,
    /// Protocol, connect timeout and idle limits of every endpoint's connections.
    pub connections: ConnSettings,
    pub algorithm: Algorithm,
    /// Required when `algorithm` is `Hash`.
    pub hash_key: Option<HashKey>,
    pub health: Option<ActiveCheck>,
    pub outlier: Option<OutlierPolicy>,
    pub retry: RetryPolicy,
    /// Where its tries, retries and ejections are counted (`None` in unit tests).
    pub metrics: Option<crate::telemetry::ServiceMetrics>,
    pub breaker: Option<BreakerPolicy>,
    pub timeouts: Timeouts,
    /// Drained endpoints and panic mode.
    pub availability: Availability,
}

/// Why a call to a service failed. Each variant names the service, and the endpoint when
/// one was involved. [`CallError::status`] and [`CallError::kind`] are what the host's error
/// mapping uses; `kind` marks fast failures (`circuit-open`, `overloaded`, `no-endpoints`)
/// so a plugin's failure hook can answer with a fallback.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("service \"{service}\": no endpoints available")]
    NoEndpoints { service: Arc<str> },
    /// Every endpoint already had `cap` requests in flight
    /// (`services.max_requests_per_endpoint`): refused at once, nothing sent.
    #[error("service \"{service}\": every endpoint has {cap} requests in flight (max_requests_per_endpoint)")]
    Saturated {
        service: Arc<str>,
        cap: NonZeroUsize,
    },
    #[error(transparent)]
    Breaker(#[from] BreakerError),
    #[error("service \"{service}\", endpoint {endpoint}: connect failed: {source}")]
    Connect {
        service: Arc<str>,
        endpoint: SocketAddr,
        #[source]
        source: ConnError,
    },
    #[error("service \"{service}\", endpoint {endpoint}: connection failed: {source}")]
    Reset {
        service: Arc<str>,
        endpoint: SocketAddr,
        #[source]
        source: ConnError,
    },
    #[error(
        "service \"{service}\", endpoint {endpoint}: no response within {after:?} (try timeout)"
    )]
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
            CallError::NoEndpoints { .. } | CallError::Saturated { .. } | CallError::Breaker(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // Never completed: a timeout to the client, as for the upstream path in error.rs.
            CallError::Connect {
                source: ConnError::ConnectTimeout(_),
                ..
            } => StatusCode::GATEWAY_TIMEOUT,
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
            CallError::Breaker(BreakerError::Overloaded { .. }) | CallError::Saturated { .. } => {
                "overloaded"
            }
            CallError::Connect { .. } => "connect",
            CallError::Reset { .. } => "reset",
            CallError::TryTimeout { .. } | CallError::TotalTimeout { .. } => "timeout",
            CallError::RequestBody { .. } => "request-body",
            CallError::Uri { .. } => "request-uri",
        }
    }
}

/// One named service, ready to call. Owns its background tasks (discovery driver, active
/// checker, idle-connection sweep) and stops them when dropped.
pub struct UpstreamService {
    name: Arc<str>,
    pool: Arc<BackendPool>,
    hash_key: Option<HashKey>,
    outlier: Option<OutlierDetector>,
    retry: RetryPolicy,
    budget: RetryBudget,
    breaker: Option<Breaker>,
    timeouts: Timeouts,
    metrics: Option<crate::telemetry::ServiceMetrics>,
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
    /// Starts discovery (and active checks) for `spec`; requests go out on each endpoint's
    /// own connections ([`crate::conn`]). Must run inside a tokio runtime.
    pub fn start(spec: ServiceSpec) -> Self {
        let pool = BackendPool::with_availability(
            Arc::clone(&spec.name),
            spec.algorithm,
            spec.connections,
            spec.availability.clone(),
        );
        let endpoints = spec.source.clone().start();
        // Apply the first set now, so the service can serve as soon as it is built.
        let first = endpoints.borrow().clone();
        pool.set_endpoints(&first);
        let mut tasks = vec![
            tokio::spawn(Arc::clone(&pool).drive(endpoints)).abort_handle(),
            tokio::spawn(sweep_idle_connections(Arc::clone(&pool))).abort_handle(),
        ];
        if let Some(check) = spec.health.clone() {
            let checker =
                ActiveChecker::new(check, Arc::clone(&pool)).counted_in(spec.metrics.clone());
            tasks.push(tokio::spawn(checker.run()).abort_handle());
        }
        Self {
            budget: RetryBudget::new(spec.retry.budget),
            breaker: spec
                .breaker
                .map(|p| Breaker::new(Arc::clone(&spec.name), p).counted_in(spec.metrics.clone())),
            outlier: spec.outlier.map(OutlierDetector::new),
            name: spec.name,
            pool,
            hash_key: spec.hash_key,
            retry: spec.retry,
            timeouts: spec.timeouts,
            metrics: spec.metrics,
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

    pub fn breaker(&self) -> Option<&Breaker> {
        self.breaker.as_ref()
    }

    /// Sends `req` (its path and query are kept; scheme and authority become the chosen
    /// endpoint's) within `deadline` (capped by the service's `timeout`), and returns the
    /// endpoint that answered with its response. A 5xx that is not retried is returned as
    /// the response; transport failures and refusals are errors. A [`ClientAddr`] extension
    /// on `req` feeds `hash_key = "client-address"`.
    pub async fn call(
        &self,
        req: Request<CallBody>,
        deadline: Duration,
    ) -> Result<(SocketAddr, Response<PooledBody>), CallError> {
        let (total, per_try) = self.timeouts.for_call(deadline);
        let total = total.0;
        if self.retry.max_retries == 0 && self.breaker.is_none() && per_try.0 >= total {
            // No retries and no breaker queue to wait in: the one try's timeout already bounds
            // the whole call, so skip the second timer (the default configuration's hot path).
            return self.call_inner(req, per_try.0).await;
        }
        match tokio::time::timeout(total, self.call_inner(req, per_try.0)).await {
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
        per_try: Duration,
    ) -> Result<(SocketAddr, Response<PooledBody>), CallError> {
        let permit = match &self.breaker {
            // The rare paths of a call are boxed so that the default path's future, which
            // every request carries, stays small (see `proxy::pipeline`).
            Some(b) => Some(Box::pin(b.acquire()).await?),
            None => None,
        };
        let record = |permit: Option<super::BreakerPermit<'_>>, ok: bool| {
            if let Some(p) = permit {
                p.record(ok);
            }
        };
        if self.retry.max_retries > 0 {
            self.budget.deposit();
        }
        let (parts, body) = req.into_parts();
        let client = parts.extensions.get::<ClientAddr>().map(|c| c.0);
        let hash = self
            .hash_key
            .as_ref()
            .and_then(|k| k.hash_of(&parts.headers, client));
        // Gray release: the subset this request goes to, chosen once for all its tries.
        let subset = self
            .pool
            .gray()
            .and_then(|g| g.select(&parts.headers, parts.uri.query(), hash));
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let method = parts.method.clone();

        // Keep a copy of small bodies so a retry can resend them.
        let (replay, mut once) = if self.retry.max_retries > 0 && replayable(&body) {
            let bytes = Box::pin(body.collect())
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

        // The request head: moved into the only try when there is no replay copy (no retry
        // possible), otherwise copied per try.
        let mut head = Some(parts);
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        let mut attempt: u32 = 0;
        // The previous try's failure, answered if a retry finds every endpoint at its cap.
        let mut last = None;
        loop {
            let picked = match self
                .pool
                .balancer()
                .subset(subset)
                .pick(&PickContext { hash, attempt }, &tried)
            {
                Ok(picked) => picked,
                // A retry that finds no room does not wait for any: the try it would have
                // replaced is the answer (no spinning on saturated endpoints).
                Err(no_pick) => match (last.take(), no_pick) {
                    (Some(last), _) => {
                        record(permit, false);
                        return last;
                    }
                    (None, NoPick::Empty) => {
                        return Err(CallError::NoEndpoints {
                            service: Arc::clone(&self.name),
                        })
                    }
                    (None, NoPick::Saturated { cap }) => {
                        return Err(CallError::Saturated {
                            service: Arc::clone(&self.name),
                            cap,
                        })
                    }
                },
            };
            let backend = Arc::clone(picked.backend());
            let endpoint = backend.endpoint.addr;
            let body = match (&replay, once.take()) {
                (Some(bytes), _) => body::full(bytes.clone()),
                (None, Some(body)) => body,
                // Unreachable: without a replay copy there is no second try.
                (None, None) => body::empty(),
            };
            let connections = backend.connections();
            let uri = connections
                .request_uri(path.clone())
                .map_err(|source| CallError::Uri {
                    service: Arc::clone(&self.name),
                    source,
                })?;
            let mut try_head = match (&replay, head.as_ref()) {
                (Some(_), Some(h)) => copy_head(h),
                _ => head.take().ok_or_else(|| CallError::NoEndpoints {
                    // Unreachable: without a replay copy there is no second try.
                    service: Arc::clone(&self.name),
                })?,
            };
            try_head.uri = uri;
            // Traced requests: a client span per try, sent on as the try's `traceparent`.
            let span = match try_head.extensions.get::<TraceScope>() {
                None => None,
                Some(scope) => {
                    let span = scope.upstream_try(
                        &self.name,
                        endpoint,
                        attempt,
                        self.breaker_state(),
                        method.as_str(),
                    );
                    span.scope().inject(&mut try_head.headers);
                    Some(span)
                }
            };
            let req = Request::from_parts(try_head, body);

            let sent_at = Instant::now();
            let outcome = tokio::time::timeout(per_try, connections.send(req)).await;
            drop(picked);
            if let Some(metrics) = &self.metrics {
                let status = match &outcome {
                    Ok(Ok(resp)) => Some(resp.status().as_u16()),
                    _ => None,
                };
                metrics.try_done_at(&backend.meters, endpoint, status, sent_at.elapsed());
            }
            if let Some(span) = span {
                match &outcome {
                    Ok(Ok(resp)) => span.end_status(resp.status()),
                    Ok(Err(e)) if e.is_connect() => span.end_error("connect", e.to_string()),
                    Ok(Err(e)) => span.end_error("reset", e.to_string()),
                    Err(_) => span.end_error("timeout", "the try timed out".to_owned()),
                }
            }
            let (failure, result) = match outcome {
                Ok(Ok(resp)) if !resp.status().is_server_error() => {
                    self.mark(&backend, Outcome::Success);
                    record(permit, true);
                    return Ok((endpoint, resp));
                }
                Ok(Ok(resp)) => (TryFailure::Status(resp.status()), Ok((endpoint, resp))),
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
            let wanted = replay.is_some()
                && attempt < self.retry.max_retries
                && self.retry.allows(&method, failure);
            let may_retry = wanted && self.budget.try_withdraw();
            if let (true, false, Some(metrics)) = (wanted, may_retry, &self.metrics) {
                metrics.budget_refused();
            }
            if !may_retry {
                record(permit, false);
                return result;
            }
            if let Some(metrics) = &self.metrics {
                metrics.retried();
            }
            tracing::debug!(service = %self.name, %endpoint, ?failure, attempt, "retrying on another endpoint");
            tried.push(backend);
            last = Some(result);
            attempt += 1;
            tokio::time::sleep(self.retry.backoff_for(attempt)).await;
        }
    }

    /// The breaker's state as a span attribute: `closed`, `open`, `half_open`, or `none`.
    fn breaker_state(&self) -> &'static str {
        match self.breaker.as_ref().map(Breaker::state) {
            None => "none",
            Some(BreakerState::Closed) => "closed",
            Some(BreakerState::Open) => "open",
            Some(BreakerState::HalfOpen) => "half_open",
        }
    }

    fn mark(&self, backend: &Backend, outcome: Outcome) {
        let Some(detector) = &self.outlier else {
            return;
        };
        // Successes never look at the other backends; skip loading them.
        let all = match outcome {
            Outcome::Success => None,
            Outcome::Failure => Some(self.pool.all_backends()),
        };
        let all = all.as_deref().map_or(&[][..], |v| &v[..]);
        if detector
            .record(backend, all, outcome, Instant::now())
            .is_some()
        {
            if let Some(metrics) = &self.metrics {
                metrics.ejected(backend.endpoint.addr);
            }
            self.pool.rebuild();
        }
    }
}

/// Closes idle connections past their timeout on every backend, every
/// [`conn::SWEEP_INTERVAL`], until aborted: an endpoint without traffic has no checkout or
/// return to do it.
async fn sweep_idle_connections(pool: Arc<BackendPool>) {
    let mut tick = tokio::time::interval(conn::SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = std::time::Instant::now();
        for backend in pool.all_backends().iter() {
            backend.connections().sweep(now);
        }
    }
}

/// A copy of a request head for one more try.
fn copy_head(h: &http::request::Parts) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = h.method.clone();
    *req.version_mut() = h.version;
    *req.headers_mut() = h.headers.clone();
    *req.extensions_mut() = h.extensions.clone();
    req.into_parts().0
}

/// Small bodies with a known length (including none) can be buffered for replay.
fn replayable(body: &CallBody) -> bool {
    body.is_end_stream()
        || body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= MAX_REPLAY_BODY)
}
