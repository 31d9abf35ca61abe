//! The dashboard (docs/dashboard.md): a page on the admin listener that reads
//! `GET /admin/dashboard/state` every 2 s and draws routes, services, instances, plugins and
//! each route's live figures as SVG sparklines.
//!
//! The page and its script and style are embedded in the binary and served without a token:
//! they hold no data, and a browser cannot add an `Authorization` header to a page it
//! navigates to. The data comes only from `/admin/dashboard/state`, under the same token rule
//! as every `/admin/*` endpoint; the page sends the token it was given (form or `#token=`).
//! A strict Content-Security-Policy keeps the page to its own origin: no inline script, no
//! request anywhere else.

mod state;

use http::{header, HeaderValue, Method, Response, StatusCode};

use crate::body::{self, Body};
use crate::discovery::registry::Registry;
use crate::state::plugins::GatewayPlugins;
use crate::state::Snapshot;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");
/// Served, so that the browser's icon request does not end in a 404.
const FAVICON_SVG: &str = include_str!("favicon.svg");

/// Own origin only: the script and style files, `fetch` to the admin API, nothing inline.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page or one of its files, when `path` names one (`None`: not a dashboard asset).
pub(super) fn asset(
    method: &Method,
    path: &str,
    request_id: &HeaderValue,
) -> Option<Response<Body>> {
    let (content, content_type) = match path {
        "/admin/dashboard" | "/admin/dashboard/" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/admin/dashboard/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/admin/dashboard/app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "/admin/dashboard/favicon.svg" => (FAVICON_SVG, "image/svg+xml"),
        _ => return None,
    };
    if method != Method::GET && method != Method::HEAD {
        return Some(super::method_not_allowed(method, path, "GET", request_id));
    }
    // For HEAD too: hyper sends the head (its length included) and drops the body.
    let mut response = Response::new(body::full(content));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(headers);
    Some(response)
}

/// The state as JSON, never cached.
pub(super) fn state_response(
    snapshot: &Snapshot,
    registry: &Registry,
    plugins: Option<&GatewayPlugins>,
) -> Response<Body> {
    let mut response = super::json(StatusCode::OK, &state::state(snapshot, registry, plugins));
    secure(response.headers_mut());
    response
}

fn secure(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
