//! The request path, in the one direction a request flows:
//! limits → route → upstream request → `Upstreams::call` → response → access log.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;

use super::body::{self, Body};
use super::headers;
use crate::error::ProxyError;
use crate::plugins::{RequestMeta, RequestOutcome, UpstreamFailure};
use crate::routing::Matched;
use crate::state::Snapshot;
use crate::telemetry::{AccessLog, Metrics};

/// Handles requests on the public listener against the current snapshot.
#[derive(Clone)]
pub struct Pipeline {
    state: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    pub fn new(state: Arc<ArcSwap<Snapshot>>, metrics: Arc<Metrics>) -> Self {
        Pipeline { state, metrics }
    }

    /// Never fails: every error becomes a response here, and is logged once.
    pub async fn handle(
        self,
        req: Request<Incoming>,
        client: SocketAddr,
    ) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        // One snapshot for the whole request: a reload mid-request does not change its route.
        let snapshot = self.state.load_full();
        let request_id = headers::request_id(req.headers());
        let client_version = req.version();
        let mut log = AccessLog::begin(&req, client, &request_id);

        let response = match proxy(&snapshot, req, client, &request_id, &mut log).await {
            Ok(response) => response,
            Err(error) => {
                let route = log.route_name();
                // Client mistakes are routine; gateway and upstream failures need attention.
                if error.status().is_server_error() {
                    tracing::warn!(?request_id, route, %error, "request failed");
                } else {
                    tracing::debug!(?request_id, route, %error, "request rejected");
                }
                error.to_response(&request_id)
            }
        };
        // The client hears its own HTTP version, whatever the origin spoke (an HTTP/1.0 origin's
        // version would otherwise be written on the client's status line).
        let mut response = response;
        *response.version_mut() = client_version;
        log.finish(response.status(), started.elapsed(), &self.metrics);
        Ok(response)
    }
}

async fn proxy(
    snapshot: &Snapshot,
    req: Request<Incoming>,
    client: SocketAddr,
    request_id: &HeaderValue,
    log: &mut AccessLog,
) -> Result<Response<Body>, ProxyError> {
    check_limits(snapshot, &req)?;
    let (mut parts, incoming) = req.into_parts();
    let Matched { route, params } =
        snapshot
            .routes
            .find(&parts)
            .ok_or_else(|| ProxyError::NoRoute {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
            })?;
    log.route = Some(Arc::clone(&route.name));

    // The host as the client sent it, port included: the Host header, or HTTP/2's `:authority`.
    let original_host = match parts.headers.get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    parts.uri = upstream_uri(&route, &parts.uri, &params).ok_or_else(|| ProxyError::NoRoute {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
    })?;
    // The upstream may speak HTTP/1.1 even when the client spoke HTTP/2.
    parts.version = http::Version::HTTP_11;
    headers::remove_hop_by_hop(&mut parts.headers);
    headers::set_forwarded(&mut parts.headers, client.ip(), original_host.as_ref());
    if let Some(host) = original_host {
        // HTTP/2 clients send `:authority` instead of Host; the upstream gets a Host either way.
        parts.headers.entry(header::HOST).or_insert(host);
    }
    parts
        .headers
        .insert(headers::REQUEST_ID.clone(), request_id.clone());
    // For `hash_key = "client-address"` on the upstream path.
    parts
        .extensions
        .insert(crate::balancing::ClientAddr(client.ip()));

    let upstream_req = Request::from_parts(parts, body::streaming(incoming));
    // Plugins: the request phase sees the request as it will go upstream and may answer it.
    let mut chain = snapshot.chains.get(&route.config.name.0).map(|chain| {
        chain.start(RequestMeta {
            client_addr: Some(client),
            request_id: request_id.to_str().unwrap_or_default().to_owned(),
        })
    });
    let upstream_req = match &mut chain {
        None => upstream_req,
        // The plugin hooks' futures are boxed: inlined, they would enlarge the future of every
        // request, plugins or not, and it is moved several times per request.
        Some(run) => match Box::pin(run.on_request(upstream_req)).await? {
            RequestOutcome::Continue(req) => req,
            RequestOutcome::Respond(mut response) => {
                response
                    .headers_mut()
                    .insert(headers::REQUEST_ID.clone(), request_id.clone());
                return Ok(response);
            }
        },
    };
    let upstream = match snapshot
        .upstreams
        .call(&route.config.service.0, upstream_req, route.config.timeout)
        .await
    {
        Ok(upstream) => upstream,
        Err(error) => {
            // The failure phase may turn the upstream error into a fallback response.
            if let Some(run) = &mut chain {
                let failure = UpstreamFailure {
                    kind: failure_kind(&error).to_owned(),
                    message: error.to_string(),
                };
                if let Some(mut response) = Box::pin(run.on_failure(failure)).await? {
                    response
                        .headers_mut()
                        .insert(headers::REQUEST_ID.clone(), request_id.clone());
                    return Ok(response);
                }
            }
            return Err(error.into());
        }
    };
    log.upstream = Some(upstream.endpoint);

    let mut response = upstream.response;
    headers::remove_hop_by_hop(response.headers_mut());
    if let Some(run) = &mut chain {
        response = Box::pin(run.on_response(response)).await?;
    }
    response
        .headers_mut()
        .insert(headers::REQUEST_ID.clone(), request_id.clone());
    Ok(response)
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
