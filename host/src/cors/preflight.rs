//! CORS preflights: `OPTIONS` with `Origin` and `Access-Control-Request-Method`, answered by
//! the gateway without the plugins or the upstream. A browser sends a preflight without
//! credentials, so an auth plugin would refuse it; and the service need not know CORS.

use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD,
    CONTENT_LENGTH, ORIGIN,
};
use http::{Method, Response, StatusCode};

use super::{AllowHeaders, CorsPolicy};
use crate::body::{self, Body};

/// `Access-Control-Allow-Private-Network` (Private Network Access, which Chrome sends).
static ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");
static REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");

/// The method a CORS preflight asks about, if this request is one: `OPTIONS` with an
/// `Origin` and an `Access-Control-Request-Method` naming a valid method.
pub fn preflight_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !headers.contains_key(ORIGIN) {
        return None;
    }
    let requested = headers.get(ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(requested.as_bytes()).ok()
}

/// Why a preflight was refused (403, without CORS headers, so the browser fails the
/// request).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PreflightRefusal {
    #[error("CORS preflight from origin {0:?}, which route \"{1}\" does not allow")]
    Origin(String, String),
    #[error("CORS preflight for method {0}, which route \"{1}\" does not allow")]
    Method(String, String),
    #[error("CORS preflight for request header {0:?}, which route \"{1}\" does not allow")]
    Header(String, String),
}

impl CorsPolicy {
    /// The answer to a preflight on `route`: 204 with the policy's `Access-Control-Allow-*`
    /// headers, or the refusal.
    pub fn preflight(
        &self,
        route: &str,
        headers: &HeaderMap,
    ) -> Result<Response<Body>, PreflightRefusal> {
        let text = |v: Option<&HeaderValue>| {
            v.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        };
        let origin = headers.get(ORIGIN);
        let Some(allow_origin) = origin.and_then(|o| self.allow_origin(o)) else {
            return Err(PreflightRefusal::Origin(text(origin), route.to_owned()));
        };
        let method = headers.get(ACCESS_CONTROL_REQUEST_METHOD);
        let allowed_method = method
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .is_some_and(|m| self.allows_method(&m));
        if !allowed_method {
            return Err(PreflightRefusal::Method(text(method), route.to_owned()));
        }
        let requested_headers = headers.get(ACCESS_CONTROL_REQUEST_HEADERS);
        if let Some(requested) = requested_headers {
            let list = requested.to_str().unwrap_or("\u{fffd}");
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let valid = HeaderName::from_bytes(name.as_bytes()).is_ok();
                if !valid || !self.allows_header(name) {
                    return Err(PreflightRefusal::Header(name.to_owned(), route.to_owned()));
                }
            }
        }

        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let out = response.headers_mut();
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.varies_by_origin() {
            out.insert(http::header::VARY, HeaderValue::from_static("origin"));
        }
        if self.allow_credentials {
            out.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(methods) = &self.rendered.methods {
            out.insert(ACCESS_CONTROL_ALLOW_METHODS, methods.clone());
        }
        let allow_headers = match &self.allow_headers {
            AllowHeaders::List(_) => self.rendered.allow_headers.clone(),
            AllowHeaders::Mirror => {
                crate::headers::add_vary(out, &ACCESS_CONTROL_REQUEST_HEADERS);
                requested_headers.filter(|v| !v.is_empty()).cloned()
            }
        };
        if let Some(allow_headers) = allow_headers {
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
        }
        if let Some(max_age) = &self.rendered.max_age {
            out.insert(ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        let private_network = headers
            .get(&REQUEST_PRIVATE_NETWORK)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        if self.allow_private_network && private_network {
            out.insert(
                ALLOW_PRIVATE_NETWORK.clone(),
                HeaderValue::from_static("true"),
            );
        }
        out.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        Ok(response)
    }
}
