//! The request path, in the one direction a request flows:
//! limits and refusals → canonical path → route (`deny` answers here) → the route's rate
//! limits keyed by route or client address, and its in-flight cap → body limit →
//! upstream request (hop-by-hop, forwarding headers, the route's request header policy) →
//! request plugins → rate limits keyed by header or cookie → split pick → mirror (a background
//! copy) → `Upstreams::call`, or on a route with a cache `cached::call` (a hit, or the upstream
//! call with coalescing, revalidation and storing) → response plugins → the route's response
//! header policy → the route's CORS headers and compression (on every response after routing,
//! errors included, cache hits too) → access log. A CORS preflight is answered right after
//! routing.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::request::Parts;
use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::body::idle::{BodyIdle, IdleTimeout};
use crate::body::limit::{self as body_limit, BodyWatch};
use crate::body::{self, Body};
use crate::compression::ClientAccepts;
use crate::cors;
use crate::error::ProxyError;
use crate::headers::{self, refuse};
use crate::plugins::{RequestMeta, RequestOutcome, UpstreamFailure};
use crate::ratelimit::{InFlightPermit, PermitBody};
use crate::routing::{Matched, Pick, Route};
use crate::state::Snapshot;
use crate::telemetry::trace::Tracer;
use crate::telemetry::{AccessLog, Metrics};
use crate::tls::ClientCertificate;

use super::upgrade::{ClientUpgrade, PendingTunnel};

/// Handles requests on the public listener against the current snapshot.
#[derive(Clone)]
pub struct Pipeline {
    state: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    /// `None` unless `[tracing]` is configured: then no request pays for tracing.
    tracer: Option<Arc<Tracer>>,
}

impl Pipeline {
    pub fn new(state: Arc<ArcSwap<Snapshot>>, metrics: Arc<Metrics>) -> Self {
        Pipeline {
            state,
            metrics,
            tracer: None,
        }
    }

    /// Traces every request with `tracer` (`[tracing]`).
    pub fn with_tracer(mut self, tracer: Option<Arc<Tracer>>) -> Self {
        self.tracer = tracer;
        self
    }

    /// Never fails: every error becomes a response here, and is logged once.
    pub async fn handle(
        self,
        req: Request<Incoming>,
        client: SocketAddr,
    ) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        // Down when answered, or when the client gave up and the future was dropped.
        let _in_flight = self.metrics.request_in_flight();
        // One snapshot for the whole request: a reload mid-request does not change its route.
        let snapshot = self.state.load_full();
        let request_id = headers::request_id(req.headers());
        let mut log = AccessLog::begin(&req, client, &request_id);
        if let Some(tracer) = &self.tracer {
            log.trace = Some(tracer.request_span(&req, client));
        }
        let version = req.version();
        let mut exchange = Exchange::default();

        let response = match proxy(
            &snapshot,
            &self.metrics,
            req,
            client,
            &request_id,
            &mut log,
            &mut exchange,
        )
        .await
        {
            Ok(response) => response,
            Err(error) => {
                let route = log.route_name();
                // Client mistakes are routine; gateway and upstream failures need attention.
                // A refusal at the endpoints' in-flight cap is load shedding that can come
                // in floods: counted in a metric, logged at debug only.
                let saturated = match &error {
                    ProxyError::Upstream(e) => e.saturated_service(),
                    _ => None,
                };
                if let Some(service) = saturated {
                    self.metrics
                        .upstream_refusal(service, "endpoints_saturated");
                    tracing::debug!(?request_id, route, %error, "request shed");
                } else if let ProxyError::Limited(refusal) = &error {
                    // Floods of these are what limits are for: counted, logged at debug.
                    self.metrics
                        .rate_limited(log.route.as_ref(), refusal.limit());
                    tracing::debug!(?request_id, route, %error, "request rate limited");
                } else if error.status().is_server_error() {
                    tracing::warn!(?request_id, route, %error, "request failed");
                } else {
                    tracing::debug!(?request_id, route, %error, "request rejected");
                }
                let mut response = error.to_response(&request_id);
                if error.closes_connection() && version <= http::Version::HTTP_11 {
                    // hyper closes an HTTP/1.x connection after a response saying so.
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        };
        // The client hears its own HTTP version, whatever the origin spoke (an HTTP/1.0 origin's
        // version would otherwise be written on the client's status line).
        let mut response = match (&exchange.route, &exchange.tunnel) {
            (Some(route), None) => last_steps(route, &exchange.arrival, response, &self.metrics),
            _ => response,
        };
        *response.version_mut() = version;
        let finished = Instant::now();
        let elapsed = finished.saturating_duration_since(started);
        let meters = match &exchange.route {
            Some(route) => {
                let status = response.status().as_u16();
                snapshot.live.record(route.id.0, status, elapsed, finished);
                snapshot.live.meters(route.id.0)
            }
            None => None,
        };
        match exchange.tunnel {
            Some(tunnel) => {
                let log = log.upgraded(response.status(), elapsed, &self.metrics, meters);
                tokio::spawn(tunnel.run(log, Arc::clone(&self.metrics)));
            }
            None => log.finish(response.status(), elapsed, &self.metrics, meters),
        }
        Ok(response)
    }
}

/// The request headers the last steps answer to, read once the route is known, before the
/// request plugins may change them (the answer follows what the client sent); only what the
/// route's policies need is read.
#[derive(Default)]
struct Arrival {
    origin: Option<HeaderValue>,
    /// A CORS preflight: its answer (or refusal) already is the CORS answer.
    preflight: bool,
    accepts: Option<ClientAccepts>,
}

impl Arrival {
    fn capture(route: &Route, parts: &Parts) -> Self {
        let mut arrival = Arrival::default();
        if route.config.cors.is_some() {
            arrival.origin = parts.headers.get(header::ORIGIN).cloned();
            arrival.preflight = cors::preflight_method(&parts.method, &parts.headers).is_some();
        }
        if route.config.compression.is_some() {
            arrival.accepts = Some(ClientAccepts::capture(&parts.method, &parts.headers));
        }
        arrival
    }
}

/// What `proxy` leaves beside the response.
#[derive(Default)]
struct Exchange {
    /// The matched route, once known: its last steps apply to every response after routing.
    route: Option<Arc<Route>>,
    /// Set when the answer is a 101: the relay starts once hyper has written it.
    tunnel: Option<Box<PendingTunnel>>,
    arrival: Arrival,
}

/// The route's last say on any response after routing, its own error answers included (a
/// page must be able to read a 401 or a 429): the CORS headers, then compression.
fn last_steps(
    route: &Route,
    arrival: &Arrival,
    mut response: Response<Body>,
    metrics: &Metrics,
) -> Response<Body> {
    if let (Some(policy), false) = (&route.config.cors, arrival.preflight) {
        policy.apply(arrival.origin.as_ref(), response.headers_mut());
    }
    match (&route.config.compression, &arrival.accepts) {
        (Some(policy), Some(accepts)) => policy.apply(accepts, response, &route.name, metrics),
        _ => response,
    }
}

async fn proxy(
    snapshot: &Snapshot,
    metrics: &Metrics,
    mut req: Request<Incoming>,
    client: SocketAddr,
    request_id: &HeaderValue,
    log: &mut AccessLog,
    exchange: &mut Exchange,
) -> Result<Response<Body>, ProxyError> {
    check_limits(snapshot, &req)?;
    refuse::check_request(req.method(), req.version(), req.headers())?;
    // Before routing, so that routing, plugins and the upstream see the same headers.
    let policy = snapshot.config.limits.underscore_headers;
    match refuse::underscore_headers(req.headers_mut(), policy) {
        Ok(0) => {}
        Ok(dropped) => metrics.underscore_headers("dropped", dropped),
        Err(refusal) => {
            metrics.underscore_headers("rejected", 1);
            return Err(refusal.into());
        }
    }
    let (mut parts, incoming) = req.into_parts();
    let Matched { route, params } = canonical_route(snapshot, &mut parts)?;
    log.route = Some(Arc::clone(&route.name));
    exchange.route = Some(Arc::clone(&route));
    exchange.arrival = Arrival::capture(&route, &parts);
    if let Some(status) = route.config.deny {
        // Refused by config: no plugin runs and the upstream is never contacted.
        return Err(ProxyError::Denied {
            route: route.config.name.0.clone(),
            status,
        });
    }
    if let Some(policy) = &route.config.cors {
        if cors::preflight_method(&parts.method, &parts.headers).is_some() {
            // The gateway's to answer: no limits, plugins or upstream (a browser sends no
            // credentials with a preflight, so an auth plugin would refuse it).
            let response = policy.preflight(&route.name, &parts.headers)?;
            return Ok(finish(response, &route, request_id, None));
        }
    }
    refuse::check_trace(&parts.method, &route.config.matcher.methods)?;
    // Limits keyed by the route or the client address are known now: a refusal costs no
    // body, header work, plugin or upstream. Header and cookie keys wait for the plugins.
    // A place in flight (`max_in_flight`) is held until the response body ends.
    let limits = snapshot.limits.route(route.id.0);
    let in_flight = match limits {
        Some(limits) => limits.admit(client.ip(), Instant::now()).await?,
        None => None,
    };
    // A declared length over the limit is refused here, before the body is polled: hyper
    // sends `100 Continue` only when it is, so an `Expect: 100-continue` client sends nothing.
    let (request_body, watch) = body_limit::limit(incoming, route.config.max_body_bytes)?;
    // Before the hop-by-hop headers go: an upgrade the route allows (docs/websocket.md).
    let upgrade = match route.config.upgrade {
        Some(_) => ClientUpgrade::take(&route, &mut parts),
        None => None,
    };

    // The host as the client sent it, port included: the Host header, or HTTP/2's `:authority`.
    let original_host = match parts.headers.get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    // The cache keys on the client's canonical path, before any rewrite: purge names it.
    // Whether the client sent credentials is read here too: a plugin may strip them.
    let cache_target = route
        .config
        .cache
        .as_ref()
        .map(|_| super::cached::ClientTarget {
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            authorization: parts.headers.contains_key(header::AUTHORIZATION),
        });
    parts.uri = upstream_uri(&route, &parts.uri, &params).ok_or_else(|| ProxyError::NoRoute {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
    })?;
    let client_version = parts.version;
    // The upstream may speak HTTP/1.1 even when the client spoke HTTP/2.
    parts.version = http::Version::HTTP_11;
    headers::remove_hop_by_hop(&mut parts.headers);
    // hyper sizes the map for the headers the client sent; the forwarding headers, Host and
    // the request id added below would otherwise grow (rehash) it more than once.
    parts.headers.reserve(6);
    snapshot
        .config
        .forwarding
        .apply(&mut parts.headers, client.ip(), original_host.as_ref());
    if let Some(host) = original_host {
        // HTTP/2 clients send `:authority` instead of Host; the upstream gets a Host either way.
        parts.headers.entry(header::HOST).or_insert(host);
    }
    parts
        .headers
        .insert(headers::REQUEST_ID.clone(), request_id.clone());
    // The client identity header carries only what this listener verified: a client-sent
    // one is always dropped. Plaintext gateways (no `[listen.tls]`) skip this whole block.
    if let Some(tls) = &snapshot.config.listen.tls {
        if let Some(name) = &tls.client_cert_header {
            parts.headers.remove(name);
            if let Some(cert) = parts.extensions.get::<ClientCertificate>() {
                parts
                    .headers
                    .insert(name.clone(), cert.0.header_value.clone());
            }
        }
    }
    // The route's header policy runs before the plugins: a header it removes (say an identity
    // header only an auth plugin may set) cannot be smuggled past them by the client.
    route.config.request_headers.apply(&mut parts.headers);
    // For `hash_key = "client-address"` on the upstream path.
    parts
        .extensions
        .insert(crate::balancing::ClientAddr(client.ip()));

    // A body that is being read may also go silent (`limits.body_idle_timeout`); an empty one
    // (no watch) cannot, and skips the timer.
    let request_body = match watch {
        Some(_) => body::streaming(IdleTimeout::new(
            request_body,
            snapshot.config.limits.body_idle_timeout,
        )),
        None => request_body,
    };
    // The request's span reaches every upstream try (and each try's `traceparent`).
    let trace = log.trace.as_ref().map(|span| span.scope().clone());
    if let Some(scope) = &trace {
        parts.extensions.insert(scope.clone());
    }
    let upstream_req = Request::from_parts(parts, request_body);
    // Plugins: the request phase sees the request as it will go upstream and may answer it.
    let mut chain = snapshot.chains.get(&route.config.name.0).map(|chain| {
        chain.start(RequestMeta {
            client_addr: Some(client),
            client_certificate: upstream_req
                .extensions()
                .get::<ClientCertificate>()
                .map(|cert| Arc::clone(&cert.0)),
            request_id: request_id.to_str().unwrap_or_default().to_owned(),
            trace,
        })
    });
    let mut upstream_req = match &mut chain {
        None => upstream_req,
        // The plugin hooks' futures are boxed: inlined, they would enlarge the future of every
        // request, plugins or not, and it is moved several times per request.
        Some(run) => match Box::pin(run.on_request(upstream_req))
            .await
            .map_err(|failure| client_fault(watch.as_ref()).unwrap_or(failure.into()))?
        {
            RequestOutcome::Continue(req) => {
                meter_consumer(snapshot, metrics, &route, req.headers());
                req
            }
            RequestOutcome::Respond(response) => {
                return Ok(finish(response, &route, request_id, in_flight));
            }
        },
    };
    // The key as it goes upstream: after the route's header policy and the request plugins,
    // so a header an auth plugin set (`x-consumer`) is the key, not what the client claimed.
    if let Some(limits) = limits.filter(|l| l.checks_upstream()) {
        limits
            .check_upstream(upstream_req.headers(), Instant::now())
            .await?;
    }
    if let Some(upgrade) = &upgrade {
        upgrade.prepare(&mut upstream_req);
    }
    // A split picks here, after the plugins: a sticky key may be a header a plugin set.
    let (service, picked) = match route
        .config
        .target
        .service_for(upstream_req.headers(), client.ip())
    {
        Pick::Service(service, picked) => (service, picked),
        // A route that answers by itself: its answer stands where the upstream's would.
        Pick::Static(answer) => {
            let response = answer.respond(&params, upstream_req.uri().query())?;
            return respond_after_plugins(response, chain, &route, request_id, in_flight).await;
        }
    };
    log.service = picked.cloned();
    let upstream_req = match &route.config.mirror {
        // A connection that switches protocols cannot be copied.
        _ if upgrade.is_some() => upstream_req,
        None => upstream_req,
        // Boxed like the plugin hooks: only mirrored routes carry its future.
        Some(mirror) => {
            Box::pin(mirror.tee(&route.name, &snapshot.upstreams, metrics, upstream_req)).await
        }
    };
    let fetched = match (&route.config.cache, cache_target) {
        // An upgrade request is never cached: it is a connection, not a response.
        (Some(policy), Some(target)) if upgrade.is_none() => {
            let call = super::cached::CacheCall {
                cache: &snapshot.cache,
                policy,
                route: &route.name,
                target,
                metrics,
                origin: super::cached::Origin {
                    upstreams: Arc::clone(&snapshot.upstreams),
                    service: service.0.clone(),
                    timeout: route.config.timeout,
                },
            };
            // Boxed like the plugin hooks: only cached routes carry its future.
            Box::pin(super::cached::call(call, upstream_req))
                .await
                .map(|cached| (cached.response, cached.endpoint))
        }
        _ => snapshot
            .upstreams
            .call(&service.0, upstream_req, route.config.timeout)
            .await
            .map(|upstream| (upstream.response, Some(upstream.endpoint))),
    };
    let (mut response, endpoint) = match fetched {
        Ok(fetched) => fetched,
        Err(error) => {
            // The client's body failed mid-stream (over the limit, malformed, cut short) or went
            // silent: its fault, whatever the upstream connection made of it, and no case for
            // the failure hook.
            if let Some(fault) = client_fault(watch.as_ref()) {
                return Err(fault);
            }
            if let Some(idle) = BodyIdle::find(&error) {
                return Err(ProxyError::BodyIdle {
                    after: idle.0,
                    close: client_version < http::Version::HTTP_2,
                });
            }
            // The failure phase may turn the upstream error into a fallback response.
            if let Some(run) = &mut chain {
                let failure = UpstreamFailure {
                    kind: failure_kind(&error).to_owned(),
                    message: error.to_string(),
                };
                if let Some(response) = Box::pin(run.on_failure(failure)).await? {
                    return Ok(finish(response, &route, request_id, in_flight));
                }
            }
            return Err(error.into());
        }
    };
    log.upstream = endpoint;

    if let Some(upgrade) = upgrade {
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            // The response phase does not run: there is no response body, only the stream.
            let (switched, pending) = upgrade.switch(&mut response, in_flight, &route.name);
            exchange.tunnel = Some(pending);
            return Ok(finish(switched, &route, request_id, None));
        }
        // Any other answer is relayed as a normal response (the upstream refused the switch).
    }
    if response.headers().contains_key(header::TRANSFER_ENCODING) {
        // Both framings: Transfer-Encoding won when the body was read (RFC 9112 §6.3), so the
        // received Content-Length is false and must not reach the client (the same section
        // says an intermediary removes it), or the client would be told a wrong length.
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
    headers::remove_hop_by_hop(response.headers_mut());
    if let Some(run) = &mut chain {
        response = Box::pin(run.on_response(response)).await?;
    }
    Ok(finish(response, &route, request_id, in_flight))
}

/// API metering: the consumer an auth plugin established (`metrics.consumer_header` on the
/// request after the request plugins), counted per route. Only routes with plugins meter:
/// elsewhere the header is whatever the client claimed.
fn meter_consumer(
    snapshot: &Snapshot,
    metrics: &Metrics,
    route: &Route,
    headers: &http::HeaderMap,
) {
    let policy = &snapshot.config.metering;
    if let Some(consumer) = headers.get(&policy.consumer_header) {
        metrics.consumer_request(&route.name, consumer.as_bytes(), policy.top_consumers);
    }
}

/// A response the gateway made for the route (`respond`, `redirect`), through the response
/// plugins. The request body is never read (hyper drains or closes on what is left of it).
async fn respond_after_plugins(
    mut response: Response<Body>,
    mut chain: Option<crate::plugins::ChainRun>,
    route: &crate::routing::Route,
    request_id: &HeaderValue,
    in_flight: Option<InFlightPermit>,
) -> Result<Response<Body>, ProxyError> {
    if let Some(run) = &mut chain {
        response = Box::pin(run.on_response(response)).await?;
    }
    Ok(finish(response, route, request_id, in_flight))
}

/// The last touches on a response the route produced (upstream, plugin or fallback): the
/// route's response header policy, after the plugins so it has the final word, then the
/// request id; the body carries the request's place in flight, if it holds one, to its end.
fn finish(
    mut response: Response<Body>,
    route: &crate::routing::Route,
    request_id: &HeaderValue,
    in_flight: Option<InFlightPermit>,
) -> Response<Body> {
    route.config.response_headers.apply(response.headers_mut());
    response
        .headers_mut()
        .insert(headers::REQUEST_ID.clone(), request_id.clone());
    match in_flight {
        None => response,
        Some(permit) => response.map(|body| body::streaming(PermitBody::new(body, permit))),
    }
}

/// The client body's fault, if reading it failed (over the limit, malformed, cut short).
fn client_fault(watch: Option<&BodyWatch>) -> Option<ProxyError> {
    watch
        .and_then(BodyWatch::fault)
        .map(|fault| ProxyError::RequestBody(fault.clone()))
}

/// Canonicalises the request path once (`crate::path`), puts it in `parts.uri` (query kept as
/// sent) and finds the route for it. From here on routing, plugins and the upstream all see
/// this one path.
///
/// Encoded separators: the path is first canonicalised under the strict global policy. If
/// the one thing wrong with it is an encoded `/` or `\`, it is canonicalised again with them
/// allowed (kept encoded, so `a%2Fb` stays one segment) and routed; the request goes on only
/// if the route it reaches opts in with `allow_encoded_slash`, else it gets the strict
/// policy's 400. Such a path has no strict canonical form, so it could reach no route at all
/// without the opt-in: the lenient form can only ever open the opted-in routes.
fn canonical_route(snapshot: &Snapshot, parts: &mut Parts) -> Result<Matched, ProxyError> {
    let policy = snapshot.config.paths;
    match crate::path::canonicalize(parts.uri.path(), &policy) {
        Ok(Cow::Borrowed(_)) => {}
        Ok(Cow::Owned(canonical)) => set_path(parts, &canonical)?,
        Err(strict) if strict.is_encoded_separator() => {
            let lenient = crate::path::PathPolicy {
                allow_encoded_slash: true,
                ..policy
            };
            let canonical = crate::path::canonicalize(parts.uri.path(), &lenient)
                .map_err(ProxyError::BadPath)?
                .into_owned();
            set_path(parts, &canonical)?;
            return match find_route(snapshot, parts) {
                Ok(m) if m.route.config.allow_encoded_slash => Ok(m),
                _ => Err(ProxyError::BadPath(strict)),
            };
        }
        Err(error) => return Err(ProxyError::BadPath(error)),
    }
    find_route(snapshot, parts)
}

fn find_route(snapshot: &Snapshot, parts: &Parts) -> Result<Matched, ProxyError> {
    // A CORS preflight goes to the route of the method it asks about, if that route answers
    // preflights; otherwise it is an OPTIONS request like any other.
    if let Some(asked) = cors::preflight_method(&parts.method, &parts.headers) {
        let answering = snapshot
            .routes
            .find_for_method(parts, &asked)
            .filter(|m| m.route.config.cors.is_some());
        if let Some(matched) = answering {
            return Ok(matched);
        }
    }
    snapshot
        .routes
        .find(parts)
        .ok_or_else(|| ProxyError::NoRoute {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
        })
}

/// Replaces the URI's path with `path`, keeping its query as sent and, for an absolute-form
/// target, its scheme and authority.
fn set_path(parts: &mut Parts, path: &str) -> Result<(), ProxyError> {
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    // The canonical form only holds characters the URI already held, or escapes of them.
    uri.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| ProxyError::BadPath(crate::path::PathError::BadEscape))?,
    );
    parts.uri = http::Uri::from_parts(uri)
        .map_err(|_| ProxyError::BadPath(crate::path::PathError::BadEscape))?;
    Ok(())
}

/// The origin-form URI sent upstream (path and query only; the endpoint is chosen later).
/// None when a rewrite produced something that is not a valid path.
fn upstream_uri(
    route: &crate::routing::Route,
    uri: &http::Uri,
    params: &[(String, String)],
) -> Option<http::Uri> {
    if route.keeps_path() {
        // Pass-through: reuse the parsed path and query (a cheap shared-bytes clone).
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        return http::Uri::from_parts(parts).ok();
    }
    route
        .upstream_path_and_query(uri.path(), uri.query(), params)
        .parse()
        .ok()
}

/// The `kind` plugins see in `upstream-failure`.
fn failure_kind(error: &crate::upstream::UpstreamError) -> &'static str {
    use crate::upstream::UpstreamError as E;
    match error {
        E::Timeout { .. } => "timeout",
        E::Connect { .. } => "connect",
        E::NoEndpoints { .. } | E::UnknownService(_) => "unavailable",
        E::Request { .. } => "protocol",
        E::BadUri { .. } => "other",
        E::Call(call) => match call.kind() {
            "timeout" => "timeout",
            "connect" => "connect",
            "circuit-open" => "circuit-open",
            "overloaded" | "no-endpoints" => "unavailable",
            "reset" => "protocol",
            _ => "other",
        },
    }
}

fn check_limits(snapshot: &Snapshot, req: &Request<Incoming>) -> Result<(), ProxyError> {
    let limits = &snapshot.config.limits;
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > limits.max_uri_length {
        return Err(ProxyError::UriTooLong {
            len: uri_len,
            max: limits.max_uri_length,
        });
    }
    let count = req.headers().len();
    if count > limits.max_header_count {
        return Err(ProxyError::HeadersTooLarge {
            what: format!("{count} headers, at most {}", limits.max_header_count),
        });
    }
    let bytes = headers::header_bytes(req.headers());
    if bytes > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge {
            what: format!(
                "{bytes} bytes of headers, at most {}",
                limits.max_header_bytes
            ),
        });
    }
    Ok(())
}
