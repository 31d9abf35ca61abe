//! Gateway errors, and the one place they become HTTP responses (a status and a JSON body).

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::limit::RequestBodyError;
use crate::body::{self, Body};
use crate::conn::ConnError;
use crate::headers::refuse::Refusal;
use crate::headers::REQUEST_ID;
use crate::plugins::PluginFailure;
use crate::ratelimit::LimitRefusal;
use crate::upstream::UpstreamError;

/// Why the gateway answered a request itself instead of relaying the upstream's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("request URI is {len} bytes; the limit is {max}")]
    UriTooLong { len: usize, max: usize },
    #[error("request headers exceed the limit ({what})")]
    HeadersTooLarge { what: String },
    /// The route is configured to refuse every request (`deny = 403`).
    #[error("route \"{route}\" refuses requests")]
    Denied { route: String, status: u16 },
    /// The client stopped sending its request body (`limits.body_idle_timeout`). `close`:
    /// an HTTP/1.1 connection, whose unread rest of the body cannot be skipped, is closed.
    #[error("the client sent no request-body byte for {}", humantime::format_duration(*after))]
    BodyIdle {
        after: std::time::Duration,
        close: bool,
    },
    /// The client's body is over the limit, malformed or cut short: the client's fault, even
    /// when it surfaced while streaming to the upstream.
    #[error(transparent)]
    RequestBody(#[from] RequestBodyError),
    /// Refused before routing or before the upstream: framing, method, header names.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The request path has no canonical form (`crate::path`): 400 naming the reason.
    #[error(transparent)]
    BadPath(#[from] crate::path::PathError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A plugin trapped, ran out of time or memory, returned something invalid, or is not loaded.
    #[error(transparent)]
    Plugin(#[from] PluginFailure),
    /// Over one of the route's rate limits or its in-flight cap: 429 (boxed: it is rare, and
    /// this error sits in every request's `Result`).
    #[error(transparent)]
    Limited(Box<LimitRefusal>),
    /// A route's static answer could not be made (a redirect whose filled-in location is not
    /// a valid header value).
    #[error(transparent)]
    Static(#[from] crate::routing::RespondError),
    /// A CORS preflight the route's policy does not allow (origin, method or header): 403,
    /// without CORS headers, so the browser fails the request.
    #[error(transparent)]
    Preflight(#[from] crate::cors::PreflightRefusal),
}

impl From<LimitRefusal> for ProxyError {
    fn from(refusal: LimitRefusal) -> Self {
        ProxyError::Limited(Box::new(refusal))
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            // Validation keeps it in 400..=599.
            ProxyError::Denied { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::FORBIDDEN)
            }
            ProxyError::BodyIdle { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::RequestBody(RequestBodyError::Malformed { .. }) => StatusCode::BAD_REQUEST,
            ProxyError::RequestBody(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Refused(refusal) => refusal.status(),
            ProxyError::BadPath(_) => StatusCode::BAD_REQUEST,
            ProxyError::Upstream(UpstreamError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            // A connect that never completed is a timeout to the client (504); a refused or
            // reset one is a bad gateway (502, below).
            ProxyError::Upstream(UpstreamError::Connect {
                source: ConnError::ConnectTimeout(_),
                ..
            }) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(UpstreamError::NoEndpoints { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Upstream(e @ UpstreamError::Call(_)) => {
                e.call_status().unwrap_or(StatusCode::BAD_GATEWAY)
            }
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Plugin(failure) => failure.status(),
            ProxyError::Limited(refusal) => refusal.status(),
            ProxyError::Static(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Preflight(_) => StatusCode::FORBIDDEN,
        }
    }

    /// A stable, machine-readable name for the error.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. } => "no_route",
            ProxyError::UriTooLong { .. } => "uri_too_long",
            ProxyError::HeadersTooLarge { .. } => "headers_too_large",
            ProxyError::Denied { .. } => "route_denied",
            ProxyError::BodyIdle { .. } => "body_idle_timeout",
            ProxyError::RequestBody(RequestBodyError::Malformed { .. }) => "bad_request_body",
            ProxyError::RequestBody(_) => "body_too_large",
            ProxyError::Refused(refusal) => refusal.code(),
            ProxyError::BadPath(_) => "bad_path",
            ProxyError::Upstream(UpstreamError::Timeout { .. }) => "upstream_timeout",
            ProxyError::Upstream(UpstreamError::Connect {
                source: ConnError::ConnectTimeout(_),
                ..
            }) => "upstream_connect_timeout",
            ProxyError::Upstream(UpstreamError::Connect {
                source: ConnError::Tls { .. } | ConnError::NoH2 { .. },
                ..
            }) => "upstream_tls_failed",
            ProxyError::Upstream(UpstreamError::Connect { .. }) => "upstream_connect_failed",
            ProxyError::Upstream(UpstreamError::NoEndpoints { .. }) => "no_healthy_upstream",
            ProxyError::Upstream(e) if e.is_saturated() => "endpoints_saturated",
            ProxyError::Upstream(e @ UpstreamError::Call(_)) => match e.failure_kind() {
                "circuit-open" => "circuit_open",
                "overloaded" => "upstream_overloaded",
                "timeout" => "upstream_timeout",
                "request-body" => "bad_request_body",
                _ => "upstream_failed",
            },
            ProxyError::Upstream(_) => "upstream_failed",
            ProxyError::Plugin(_) => "plugin_failed",
            ProxyError::Limited(refusal) => refusal.code(),
            ProxyError::Static(_) => "bad_redirect",
            ProxyError::Preflight(_) => "cors_preflight_refused",
        }
    }

    /// Whether the client's connection must close after this answer: the rest of what the
    /// client sent (an oversized head or body, a body of unknown framing) cannot be trusted
    /// to start the next request. HTTP/1.x only; on HTTP/2 the stream alone ends.
    pub fn closes_connection(&self) -> bool {
        match self {
            ProxyError::UriTooLong { .. }
            | ProxyError::HeadersTooLarge { .. }
            | ProxyError::RequestBody(_) => true,
            ProxyError::Refused(refusal) => refusal.closes_connection(),
            _ => false,
        }
    }

    /// The response the client sees.
    pub fn to_response(&self, request_id: &HeaderValue) -> Response<Body> {
        let mut response = json_error(self.status(), self.code(), &self.to_string(), request_id);
        if let ProxyError::Refused(Refusal::MethodNotAllowed { allow, .. }) = self {
            // RFC 9110 §15.5.6: a 405 says which methods would do.
            if let Ok(allow) = HeaderValue::from_str(allow) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
        }
        if let ProxyError::Upstream(e) = self {
            // Marks gateway-made upstream failures (`circuit-open`, `no-endpoints`, ...) so a
            // plugin's failure hook, or a client, can tell them from an upstream's own answer.
            response
                .headers_mut()
                .insert(FAILURE_HEADER, HeaderValue::from_static(e.failure_kind()));
        }
        if let ProxyError::BodyIdle { close: true, .. } = self {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ProxyError::Plugin(failure) = self {
            // Plugin failures also say which plugin, in which phase, and what kind of failure.
            let mut body = failure.to_json();
            body["request_id"] = request_id.to_str().unwrap_or("").into();
            *response.body_mut() = body::full(body.to_string());
        }
        if let ProxyError::Limited(refusal) = self {
            // Retry-After and the RateLimit fields; the body names the limit.
            refusal.headers(response.headers_mut());
            let body = serde_json::json!({
                "error": self.code(),
                "message": self.to_string(),
                "limit": refusal.limit().as_str(),
                "request_id": request_id.to_str().unwrap_or(""),
            });
            *response.body_mut() = body::full(body.to_string());
        }
        response
    }
}

/// Names the kind of an upstream failure the gateway answered for (see
/// [`UpstreamError::failure_kind`]).
pub const FAILURE_HEADER: http::HeaderName = http::HeaderName::from_static("x-gatehouse-failure");

/// A small JSON error body: `{"error": code, "message": …, "request_id": …}`.
pub fn json_error(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &HeaderValue,
) -> Response<Body> {
    let body = serde_json::json!({
        "error": code,
        "message": message,
        "request_id": request_id.to_str().unwrap_or(""),
    });
    json_error_body(status, body, request_id)
}

/// [`json_error`] for a request body at fault, plus the `field` it is about, as a path into
/// the body (`split[1].weight`).
pub fn json_field_error(
    status: StatusCode,
    code: &str,
    field: &str,
    message: &str,
    request_id: &HeaderValue,
) -> Response<Body> {
    let body = serde_json::json!({
        "error": code,
        "field": field,
        "message": message,
        "request_id": request_id.to_str().unwrap_or(""),
    });
    json_error_body(status, body, request_id)
}

fn json_error_body(
    status: StatusCode,
    body: serde_json::Value,
    request_id: &HeaderValue,
) -> Response<Body> {
    let mut response = Response::new(body::full(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REQUEST_ID.clone(), request_id.clone());
    response
}
