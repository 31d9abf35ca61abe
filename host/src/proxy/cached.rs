//! The response cache on the request path (docs/cache.md): in place of the upstream call on
//! a route with `[routes.cache]`, after the request plugins, the header-keyed rate limits and
//! the split pick. It answers from the store, coalesces misses into one upstream request,
//! revalidates stale entries, serves stale ones (stale-while-revalidate, stale-if-error), and
//! stores what comes back while it streams to the client. Every answer says what the cache
//! did in a `cache-status` header (RFC 9211).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::body::{self, Body};
use crate::cache::{
    admit, condition_met, not_modified_response, CacheKey, CachedResponse, Fill, FillGuard, Lookup,
    NotStored, Purge, ResponseCache, RouteCachePolicy, TeeBody,
};
use crate::telemetry::Metrics;
use crate::upstream::{UpstreamError, Upstreams};

/// RFC 9211's field.
static CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("cache-status");

/// The upstream a cached route fetches from: the service the split picked.
#[derive(Clone)]
pub(super) struct Origin {
    pub upstreams: Arc<Upstreams>,
    pub service: String,
    pub timeout: Duration,
}

impl Origin {
    /// The upstream's response, framing settled and hop-by-hop headers gone: as stored.
    async fn fetch(
        &self,
        req: Request<Body>,
    ) -> Result<(Response<Body>, SocketAddr), UpstreamError> {
        // Boxed, like `forward` below: only misses pay for the upstream call's future, and the
        // cache's own future stays small, so a hit does not copy it around (benches/README.md).
        let upstream = Box::pin(self.upstreams.call(&self.service, req, self.timeout)).await?;
        let mut response = upstream.response;
        if response.headers().contains_key(header::TRANSFER_ENCODING) {
            // As on the uncached path: Transfer-Encoding won, Content-Length is false.
            response.headers_mut().remove(header::CONTENT_LENGTH);
        }
        crate::headers::remove_hop_by_hop(response.headers_mut());
        Ok((response, upstream.endpoint))
    }
}

/// One request on a cached route.
pub(super) struct CacheCall<'a> {
    pub cache: &'a Arc<ResponseCache>,
    pub policy: &'a RouteCachePolicy,
    pub route: &'a Arc<String>,
    pub target: ClientTarget,
    pub metrics: &'a Metrics,
    pub origin: Origin,
}

/// What the client asked for, read before the rewrite, the header policy and the plugins.
pub(super) struct ClientTarget {
    /// The canonical client path and query: the key, and what purge names.
    pub path: String,
    pub query: Option<String>,
    /// The client sent `Authorization` (an auth plugin may have stripped it since).
    pub authorization: bool,
}

/// The answer, and the endpoint that gave it (none when the cache did).
pub(super) struct Cached {
    pub response: Response<Body>,
    pub endpoint: Option<SocketAddr>,
}

/// How a response came to be, for the cache-status header and the metric.
struct Outcome {
    /// The cache-status parameters after `gatehouse; `.
    status: String,
    /// `gatehouse_cache_responses_total`'s status label.
    metric: &'static str,
}

impl Outcome {
    fn new(status: impl Into<String>, metric: &'static str) -> Self {
        Outcome {
            status: status.into(),
            metric,
        }
    }
}

impl CacheCall<'_> {
    fn answer(
        &self,
        mut response: Response<Body>,
        endpoint: Option<SocketAddr>,
        outcome: Outcome,
    ) -> Cached {
        if let Ok(value) = HeaderValue::from_str(&format!("gatehouse; {}", outcome.status)) {
            response.headers_mut().append(CACHE_STATUS.clone(), value);
        }
        self.metrics.cache_response(self.route, outcome.metric);
        Cached { response, endpoint }
    }

    /// Forwards without the cache (`fwd` names why).
    async fn bypass(&self, req: Request<Body>, fwd: &str) -> Result<Cached, UpstreamError> {
        let (response, endpoint) = self.origin.fetch(req).await?;
        let status = format!("fwd={fwd}; fwd-status={}", response.status().as_u16());
        Ok(self.answer(response, Some(endpoint), Outcome::new(status, "bypass")))
    }
}

/// Serves `req` through the route's cache.
pub(super) async fn call(c: CacheCall<'_>, req: Request<Body>) -> Result<Cached, UpstreamError> {
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD {
        let unsafe_method = !method.is_safe();
        let cached = c.bypass(req, "method").await?;
        let status = cached.response.status();
        if unsafe_method && (status.is_success() || status.is_redirection()) {
            // RFC 9111 §4.4: a successful unsafe request invalidates what is stored for it.
            let purge = Purge::Path {
                route: c.route.as_str().to_owned(),
                path: c.target.path.clone(),
            };
            c.cache.store.purge(&purge).await;
        }
        return Ok(cached);
    }
    let headers = req.headers();
    if headers.contains_key(header::RANGE) {
        // Partial responses are not stored; a range is served by the origin.
        return c.bypass(req, "bypass").await;
    }
    let authorization = c.target.authorization || headers.contains_key(header::AUTHORIZATION);
    if authorization && !c.policy.authorized {
        // The response may be the caller's own: never stored, never answered from the cache.
        return c.bypass(req, "bypass").await;
    }
    let key = CacheKey::new(
        c.route,
        c.policy,
        &c.target.path,
        c.target.query.as_deref(),
        headers,
    );
    let head = method == Method::HEAD;
    let (parts, body) = req.into_parts();
    let mut collapsed = false;
    loop {
        let now = c.cache.clock.now();
        match c.cache.lookup(&key, c.policy, &parts).await {
            Lookup::Fresh(hit) => {
                let params = if collapsed {
                    format!("fwd=miss; collapsed; ttl={}", hit.ttl_seconds(now))
                } else {
                    format!("hit; ttl={}", hit.ttl_seconds(now))
                };
                let metric = if collapsed { "collapsed" } else { "hit" };
                let response = serve(&hit, &parts.headers, now, head);
                return Ok(c.answer(response, None, Outcome::new(params, metric)));
            }
            Lookup::Stale {
                response,
                conditions,
                serve_while_revalidating: true,
                ..
            } => {
                refresh(&c, &key, &parts, conditions);
                let params = format!(
                    "hit; ttl={}; detail=stale-while-revalidate",
                    response.ttl_seconds(now)
                );
                let served = serve(&response, &parts.headers, now, head);
                return Ok(c.answer(served, None, Outcome::new(params, "stale")));
            }
            _ if head => {
                // A HEAD is answered from a stored GET, never stored itself.
                let req = Request::from_parts(parts, body);
                let (response, endpoint) = c.origin.fetch(req).await?;
                let params = format!("fwd=miss; fwd-status={}", response.status().as_u16());
                return Ok(c.answer(response, Some(endpoint), Outcome::new(params, "miss")));
            }
            lookup if collapsed => {
                return Box::pin(forward(&c, key, parts, body, lookup, None)).await;
            }
            lookup => match c.cache.fills.join(&key) {
                Fill::Leader(guard) => {
                    return Box::pin(forward(&c, key, parts, body, lookup, Some(guard))).await;
                }
                Fill::Follower(wait) => {
                    // Whether the fill ended or the wait timed out, look again; a second
                    // miss goes upstream itself.
                    wait.wait(c.policy.lock_timeout).await;
                    collapsed = true;
                }
            },
        }
    }
}

/// A stored response as the answer: a 304 when the client's conditions hold.
fn serve(
    entry: &CachedResponse,
    request: &HeaderMap,
    now: std::time::SystemTime,
    head: bool,
) -> Response<Body> {
    if entry.satisfies_condition(request) {
        entry.not_modified(now)
    } else {
        entry.to_response(now, head)
    }
}

/// The request's own conditional headers, taken out: the cache asks the origin for a full
/// response (or its own revalidation) and answers the client's conditions itself.
fn take_conditions(headers: &mut HeaderMap) -> HeaderMap {
    let mut taken = HeaderMap::new();
    for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
        for value in headers.get_all(&name) {
            taken.append(name.clone(), value.clone());
        }
        headers.remove(&name);
    }
    taken
}

/// The method, URI and headers of a request, without its extensions.
fn head_of(parts: &http::request::Parts) -> http::request::Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.headers = parts.headers.clone();
    head
}

/// A miss or a stale entry: goes upstream (conditionally, for a stale entry with a
/// validator), then stores, refreshes or falls back to the stale entry.
async fn forward(
    c: &CacheCall<'_>,
    key: CacheKey,
    mut parts: http::request::Parts,
    request_body: Body,
    lookup: Lookup,
    guard: Option<FillGuard>,
) -> Result<Cached, UpstreamError> {
    let client_conditions = take_conditions(&mut parts.headers);
    let (stale, fwd) = match lookup {
        Lookup::Stale {
            response,
            conditions,
            requested,
            ..
        } => {
            parts.headers.extend(conditions);
            (Some(response), if requested { "request" } else { "stale" })
        }
        Lookup::Miss { vary_miss: true } => (None, "vary-miss"),
        _ => (None, "miss"),
    };
    let revalidating = stale.is_some()
        && (parts.headers.contains_key(header::IF_NONE_MATCH)
            || parts.headers.contains_key(header::IF_MODIFIED_SINCE));
    let sent = head_of(&parts);
    let result = c
        .origin
        .fetch(Request::from_parts(parts, request_body))
        .await;
    let now = c.cache.clock.now();
    let usable_stale = stale.as_ref().filter(|s| s.usable_on_error(now));
    let (response, endpoint) = match result {
        Ok(answer) => answer,
        Err(error) => {
            if let Some(stale) = usable_stale {
                tracing::debug!(route = %c.route, %error, "upstream failed; serving stale");
                let params = format!(
                    "fwd={fwd}; ttl={}; detail=stale-if-error",
                    stale.ttl_seconds(now)
                );
                let served = serve(stale, &client_conditions, now, false);
                return Ok(c.answer(served, None, Outcome::new(params, "stale")));
            }
            return Err(error);
        }
    };
    let status = response.status();
    if status.is_server_error() {
        if let Some(stale) = usable_stale {
            let params = format!(
                "fwd={fwd}; fwd-status={}; ttl={}; detail=stale-if-error",
                status.as_u16(),
                stale.ttl_seconds(now)
            );
            let served = serve(stale, &client_conditions, now, false);
            return Ok(c.answer(served, Some(endpoint), Outcome::new(params, "stale")));
        }
    }
    if status == StatusCode::NOT_MODIFIED && revalidating {
        if let Some(refreshed) = stale
            .as_ref()
            .and_then(|s| s.revalidated(c.policy, &sent, response.headers(), now))
        {
            let refreshed = Arc::new(refreshed);
            c.cache.put(key, Arc::clone(&refreshed)).await;
            drop(guard);
            let params = format!(
                "fwd={fwd}; fwd-status=304; ttl={}",
                refreshed.ttl_seconds(now)
            );
            let served = serve(&refreshed, &client_conditions, now, false);
            return Ok(c.answer(served, Some(endpoint), Outcome::new(params, "revalidated")));
        }
        // The 304 validated another response than the one stored: fetch it whole.
        let mut again = sent.clone();
        take_conditions(&mut again.headers);
        let (response, endpoint) = c
            .origin
            .fetch(Request::from_parts(again, body::empty()))
            .await?;
        return Ok(store(
            c,
            key,
            &sent,
            response,
            endpoint,
            fwd,
            guard,
            &client_conditions,
        ));
    }
    Ok(store(
        c,
        key,
        &sent,
        response,
        endpoint,
        fwd,
        guard,
        &client_conditions,
    ))
}

/// A full upstream response: streamed to the client, and stored when the rules allow it
/// and the body ends within `max_body_bytes`.
#[allow(clippy::too_many_arguments)]
fn store(
    c: &CacheCall<'_>,
    key: CacheKey,
    sent: &http::request::Parts,
    response: Response<Body>,
    endpoint: SocketAddr,
    fwd: &str,
    guard: Option<FillGuard>,
    client_conditions: &HeaderMap,
) -> Cached {
    let now = c.cache.clock.now();
    let status = response.status();
    let fwd_status = status.as_u16();
    match admit(c.policy, sent, status, response.headers(), now) {
        Ok(admission) => {
            let stored_status = format!("fwd={fwd}; fwd-status={fwd_status}; stored");
            let (head, response_body) = response.into_parts();
            let tee = stored_on_end(c.cache, key, admission, response_body, guard);
            if status == StatusCode::OK && condition_met(client_conditions, &head.headers) {
                // The client holds this version: 304 now, the copy completes in the background.
                tokio::spawn(drain(tee));
                let answer = not_modified_response(&head.headers);
                return c.answer(answer, Some(endpoint), Outcome::new(stored_status, "miss"));
            }
            let response = Response::from_parts(head, tee);
            c.answer(
                response,
                Some(endpoint),
                Outcome::new(stored_status, "miss"),
            )
        }
        Err(reason) => {
            drop(guard);
            if reason == NotStored::TooLarge {
                tracing::debug!(route = %c.route, "response over max_body_bytes: not stored");
            }
            let params = format!(
                "fwd={fwd}; fwd-status={fwd_status}; detail={}",
                reason.as_str()
            );
            if status == StatusCode::OK && condition_met(client_conditions, response.headers()) {
                let answer = not_modified_response(response.headers());
                return c.answer(answer, Some(endpoint), Outcome::new(params, "miss"));
            }
            c.answer(response, Some(endpoint), Outcome::new(params, "miss"))
        }
    }
}

/// `body`, teed into the store: at its end (within the limit) the entry is stored, then the
/// fill ends, then the client gets the body's end; a body cut short or too large ends the fill
/// with nothing stored.
fn stored_on_end(
    cache: &Arc<ResponseCache>,
    key: CacheKey,
    admission: crate::cache::Admission,
    response_body: Body,
    guard: Option<FillGuard>,
) -> Body {
    let limit = usize::try_from(admission.max_body_bytes()).unwrap_or(usize::MAX);
    let cache = Arc::clone(cache);
    body::streaming(TeeBody::new(response_body, limit, move |bytes: Bytes| {
        let entry = Arc::new(admission.into_response(bytes));
        Box::pin(async move {
            cache.put(key, entry).await;
            drop(guard);
        }) as futures::future::BoxFuture<'static, ()>
    }))
}

/// Reads a body to its end, dropping the bytes (the tee inside keeps its copy).
async fn drain(mut body: Body) {
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
}

/// stale-while-revalidate: one background refresh per key (none if a fill is under way).
fn refresh(c: &CacheCall<'_>, key: &CacheKey, parts: &http::request::Parts, conditions: HeaderMap) {
    let Some(guard) = c.cache.fills.try_lead(key) else {
        return;
    };
    let mut sent = head_of(parts);
    sent.method = Method::GET;
    take_conditions(&mut sent.headers);
    sent.headers.extend(conditions);
    let (cache, policy, origin, key) = (
        Arc::clone(c.cache),
        c.policy.clone(),
        c.origin.clone(),
        key.clone(),
    );
    let route = Arc::clone(c.route);
    tokio::spawn(async move {
        let request = Request::from_parts(sent.clone(), body::empty());
        let (response, _) = match origin.fetch(request).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(%route, %error, "background refresh failed");
                return;
            }
        };
        let now = cache.clock.now();
        if response.status() == StatusCode::NOT_MODIFIED {
            if let Lookup::Stale {
                response: stale, ..
            } = cache.lookup(&key, &policy, &sent).await
            {
                if let Some(refreshed) = stale.revalidated(&policy, &sent, response.headers(), now)
                {
                    cache.put(key, Arc::new(refreshed)).await;
                }
            }
            return;
        }
        if let Ok(admission) = admit(&policy, &sent, response.status(), response.headers(), now) {
            drain(stored_on_end(
                &cache,
                key,
                admission,
                response.into_body(),
                Some(guard),
            ))
            .await;
        }
    });
}
