//! Requests the gateway refuses before routing: ambiguous framing (Host, Transfer-Encoding),
//! methods it does not proxy (CONNECT, TRACE, absurdly long ones) and header names with `_`.
//!
//! Each rule closes a way for the gateway and the origin to read one request differently.

use http::header::{HeaderMap, HOST, TRANSFER_ENCODING};
use http::{Method, Version};

/// Longest method accepted. The longest registered methods (`UPDATEREDIRECTREF`,
/// `VERSION-CONTROL`) have 17 characters; a longer one is garbage or a probe.
pub const MAX_METHOD_LENGTH: usize = 32;

/// What to do with request headers whose name holds `_` (`limits.underscore_headers`).
/// CGI-style origins map `X_User` and `X-User` to the same variable (`HTTP_X_USER`), so a
/// client could smuggle one past a policy about the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnderscoreHeaders {
    /// Remove them before routing (and count them). The default, as nginx does.
    #[default]
    Drop,
    /// Answer 400.
    Reject,
}

/// Why a request was refused before it reached a route's upstream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("an HTTP/1.1 request needs a Host header")]
    MissingHost,
    #[error("the request has {count} Host headers; exactly one is allowed")]
    RepeatedHost { count: usize },
    #[error("Transfer-Encoding names chunked more than once")]
    RepeatedChunked,
    #[error("the method is {len} bytes long; at most {MAX_METHOD_LENGTH} are accepted")]
    MethodTooLong { len: usize },
    /// CONNECT (the gateway tunnels nothing) or TRACE on a route that does not list it.
    #[error("{method} is not allowed here")]
    MethodNotAllowed {
        method: Method,
        /// The `Allow` header value.
        allow: String,
    },
    #[error("header name {name:?} contains '_' (limits.underscore_headers = \"reject\")")]
    UnderscoreHeader { name: String },
}

impl Refusal {
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Refusal::MethodTooLong { .. } => S::NOT_IMPLEMENTED,
            Refusal::MethodNotAllowed { .. } => S::METHOD_NOT_ALLOWED,
            _ => S::BAD_REQUEST,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Refusal::MissingHost => "missing_host",
            Refusal::RepeatedHost { .. } => "repeated_host",
            Refusal::RepeatedChunked => "repeated_transfer_encoding",
            Refusal::MethodTooLong { .. } => "method_too_long",
            Refusal::MethodNotAllowed { .. } => "method_not_allowed",
            Refusal::UnderscoreHeader { .. } => "underscore_header",
        }
    }

    /// Whether the rest of the connection is suspect: after a framing refusal the gateway
    /// cannot be sure where the next request starts, and a refused CONNECT may be followed
    /// by tunnel bytes.
    pub fn closes_connection(&self) -> bool {
        !matches!(
            self,
            Refusal::UnderscoreHeader { .. }
                | Refusal::MethodNotAllowed {
                    method: Method::TRACE,
                    ..
                }
        )
    }
}

/// Methods any route without its own `match.methods` allows (TRACE and CONNECT are refused).
const ALLOW_ANY: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// The method and framing checks that run before routing.
pub fn check_request(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let len = method.as_str().len();
    if len > MAX_METHOD_LENGTH {
        return Err(Refusal::MethodTooLong { len });
    }
    if method == Method::CONNECT {
        return Err(Refusal::MethodNotAllowed {
            method: Method::CONNECT,
            allow: ALLOW_ANY.to_owned(),
        });
    }
    // HTTP/2 carries the host in `:authority`; HTTP/1.0 may omit it.
    let hosts = headers.get_all(HOST).iter().count();
    if hosts > 1 {
        return Err(Refusal::RepeatedHost { count: hosts });
    }
    if hosts == 0 && version == Version::HTTP_11 {
        return Err(Refusal::MissingHost);
    }
    // hyper accepts `chunked` twice (it only checks that the last coding is chunked); an
    // origin or proxy in front of it may not, and that disagreement is how requests smuggle.
    let chunked = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        .count();
    if chunked > 1 {
        return Err(Refusal::RepeatedChunked);
    }
    Ok(())
}

/// Applies the underscore policy; returns how many headers were dropped.
pub fn underscore_headers(
    headers: &mut HeaderMap,
    policy: UnderscoreHeaders,
) -> Result<usize, Refusal> {
    if !headers.keys().any(|name| name.as_str().contains('_')) {
        return Ok(0);
    }
    let names: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .cloned()
        .collect();
    if policy == UnderscoreHeaders::Reject {
        let name = names.first().map(|n| n.as_str().to_owned());
        return Err(Refusal::UnderscoreHeader {
            name: name.unwrap_or_default(),
        });
    }
    for name in &names {
        headers.remove(name);
    }
    Ok(names.len())
}

/// TRACE reflects the request (cookies and credentials added on the way included) back to
/// the client, so it reaches an upstream only on a route whose `match.methods` lists it.
pub fn check_trace(method: &Method, route_methods: &[Method]) -> Result<(), Refusal> {
    if method != Method::TRACE || route_methods.contains(&Method::TRACE) {
        return Ok(());
    }
    let allow = if route_methods.is_empty() {
        ALLOW_ANY.to_owned()
    } else {
        route_methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(Refusal::MethodNotAllowed {
        method: Method::TRACE,
        allow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn host_must_appear_once_on_http11() {
        let one = headers(&[("host", "a")]);
        assert!(check_request(&Method::GET, Version::HTTP_11, &one).is_ok());
        let none = headers(&[]);
        assert!(matches!(
            check_request(&Method::GET, Version::HTTP_11, &none),
            Err(Refusal::MissingHost)
        ));
        assert!(check_request(&Method::GET, Version::HTTP_10, &none).is_ok());
        assert!(check_request(&Method::GET, Version::HTTP_2, &none).is_ok());
        let two = headers(&[("host", "a"), ("host", "b")]);
        assert!(matches!(
            check_request(&Method::GET, Version::HTTP_11, &two),
            Err(Refusal::RepeatedHost { count: 2 })
        ));
    }

    #[test]
    fn chunked_twice_is_refused_in_one_line_or_two() {
        for h in [
            headers(&[
                ("host", "a"),
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ]),
            headers(&[("host", "a"), ("transfer-encoding", "chunked, Chunked")]),
        ] {
            assert!(matches!(
                check_request(&Method::POST, Version::HTTP_11, &h),
                Err(Refusal::RepeatedChunked)
            ));
        }
        let once = headers(&[("host", "a"), ("transfer-encoding", "gzip, chunked")]);
        assert!(check_request(&Method::POST, Version::HTTP_11, &once).is_ok());
    }

    #[test]
    fn methods() {
        let h = headers(&[("host", "a")]);
        let long = Method::from_bytes(&[b'A'; 33]).expect("method");
        assert_eq!(
            check_request(&long, Version::HTTP_11, &h).map_err(|r| r.status()),
            Err(http::StatusCode::NOT_IMPLEMENTED)
        );
        let ok = Method::from_bytes(&[b'A'; 32]).expect("method");
        assert!(check_request(&ok, Version::HTTP_11, &h).is_ok());
        assert!(check_request(&Method::CONNECT, Version::HTTP_11, &h).is_err());
        assert!(check_trace(&Method::TRACE, &[]).is_err());
        assert!(check_trace(&Method::TRACE, &[Method::GET]).is_err());
        assert!(check_trace(&Method::TRACE, &[Method::GET, Method::TRACE]).is_ok());
        assert!(check_trace(&Method::GET, &[]).is_ok());
    }

    #[test]
    fn underscore_policy() {
        let mut h = headers(&[("x_user", "admin"), ("x-user", "bob"), ("a_b", "1")]);
        assert_eq!(
            underscore_headers(&mut h, UnderscoreHeaders::Drop).ok(),
            Some(2)
        );
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-user"], "bob");
        let mut h = headers(&[("x_user", "admin")]);
        assert!(underscore_headers(&mut h, UnderscoreHeaders::Reject).is_err());
        let mut h = headers(&[("x-user", "bob")]);
        assert_eq!(
            underscore_headers(&mut h, UnderscoreHeaders::Reject).ok(),
            Some(0)
        );
    }
}
