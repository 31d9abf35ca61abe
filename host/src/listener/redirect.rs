//! The plaintext listener beside a TLS public listener (`listen.http`): it either redirects
//! every request to HTTPS or serves routes as the public listener does.

use std::net::SocketAddr;

use http::{header, HeaderValue, Request, Response, StatusCode};
use serde::Serialize;

use crate::body::Body;
use crate::error::json_error;
use crate::headers;

/// `listen.http` and what it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlaintextListener {
    pub addr: SocketAddr,
    pub mode: PlaintextMode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum PlaintextMode {
    /// Answer every request with a redirect to `https://` on `port` (default: the public
    /// listener's).
    Redirect {
        status: RedirectStatus,
        port: Option<u16>,
    },
    /// Serve routes, as the public listener does.
    Serve,
}

/// 301 or 308.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RedirectStatus(pub u16);

/// The redirect for `req`: `https://{host}{:port unless 443}{path?query}`, the host from the
/// Host header (or HTTP/2's `:authority`), or a 400 when there is no usable host.
pub fn redirect<B>(req: &Request<B>, status: RedirectStatus, port: u16) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let Some(host) = host.and_then(host_only) else {
        let request_id = headers::request_id(req.headers());
        tracing::debug!(?request_id, "redirect refused: no valid Host");
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_host",
            "this listener redirects to https and needs a valid Host header",
            &request_id,
        );
    };
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let status = StatusCode::from_u16(status.0).unwrap_or(StatusCode::PERMANENT_REDIRECT);
    let mut response = Response::new(crate::body::empty());
    *response.status_mut() = status;
    match HeaderValue::from_str(&location) {
        Ok(location) => {
            response.headers_mut().insert(header::LOCATION, location);
        }
        // The host and path were already valid header and URI text.
        Err(_) => *response.status_mut() = StatusCode::BAD_REQUEST,
    }
    response
}

/// The host of a `Host` value without its port, if it is a valid authority with no user info
/// (an IPv6 literal keeps its brackets).
fn host_only(value: &str) -> Option<&str> {
    let authority: http::uri::Authority = value.parse().ok()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let host = authority.host();
    // Return a slice of `value`, not of the parsed authority.
    let start = value.find(host)?;
    let host = &value[start..start + host.len()];
    let valid = host.starts_with('[')
        || host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(host: Option<&str>, uri: &str, port: u16) -> (u16, Option<String>) {
        let mut req = Request::builder().uri(uri);
        if let Some(host) = host {
            req = req.header("host", host);
        }
        let response = redirect(&req.body(()).expect("request"), RedirectStatus(308), port);
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().expect("ascii").to_owned());
        (response.status().as_u16(), location)
    }

    #[test]
    fn keeps_host_path_and_query_and_names_the_port_unless_443() {
        assert_eq!(
            location(Some("example.org:8080"), "/a/b?x=1", 8443),
            (308, Some("https://example.org:8443/a/b?x=1".into()))
        );
        assert_eq!(
            location(Some("example.org"), "/", 443),
            (308, Some("https://example.org/".into()))
        );
        assert_eq!(
            location(Some("[::1]:80"), "/x", 443),
            (308, Some("https://[::1]/x".into()))
        );
    }

    #[test]
    fn refuses_missing_or_bad_hosts() {
        assert_eq!(location(None, "/", 443).0, 400);
        assert_eq!(location(Some("user@evil.example"), "/", 443).0, 400);
        assert_eq!(location(Some("a b"), "/", 443).0, 400);
        assert_eq!(location(Some("a/b"), "/", 443).0, 400);
    }
}
