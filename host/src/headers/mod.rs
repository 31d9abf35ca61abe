//! Header rules for proxying: hop-by-hop removal, the request id; X-Forwarded-* and
//! `Forwarded` ([`forwarding`]), a route's header policy ([`policy`]), and the request heads
//! refused before routing ([`refuse`]).

pub mod forwarding;
pub mod policy;
pub mod refuse;
mod vary;

pub use vary::add_vary;

use std::net::IpAddr;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};

/// The request id header, kept from the client when valid, generated otherwise.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the proxy
/// credentials meant for this hop only.
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHORIZATION,
    PROXY_AUTHENTICATE,
];

/// Removes hop-by-hop headers, including any the `Connection` header names, but keeps
/// `te: trailers`: gRPC needs it end to end, and HTTP/2 allows exactly that value (RFC 9113
/// §8.2.2), so dropping it would break gRPC passthrough to h2c upstreams.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Runs twice per request, so it avoids allocating: one pass over the names (standard
    // names compare as enums) marks which hop-by-hop headers are present, and only those are
    // looked up again. A typical upstream response carries just `Connection: keep-alive`.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // The common case, an upstream's `Connection: keep-alive` (or a client's `close`) and no
    // other hop-by-hop header: nothing to parse, no header it could name.
    if present == 1 && connection_is_only_keep_alive_or_close(headers) {
        headers.remove(CONNECTION);
        return;
    }
    let wants_trailers = accepts_trailers(headers);
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| !token.eq_ignore_ascii_case("close") && !is_hop_by_hop_token(token))
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    for name in named {
        headers.remove(name);
    }
    if wants_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// One `Connection` line saying just `keep-alive` or `close`.
fn connection_is_only_keep_alive_or_close(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(CONNECTION).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => {
            let value = value.as_bytes();
            value.eq_ignore_ascii_case(b"keep-alive") || value.eq_ignore_ascii_case(b"close")
        }
        _ => false,
    }
}

/// Whether a `Connection` token names a header that is removed anyway.
fn is_hop_by_hop_token(token: &str) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| h.as_str().eq_ignore_ascii_case(token))
}

/// Whether a `TE` header lists `trailers` (other codings are per connection and dropped).
fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("trailers")
        })
}

/// An IP address as a header value. IPv4 is written by hand: `Display` through `fmt` cost
/// more than the rest of the forwarding headers together (callgrind, benches/README.md).
pub(super) fn ip_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    };
    let mut buf = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            buf[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            buf[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        buf[len] = b'0' + octet % 10;
        len += 1;
    }
    // Digits and dots are always a valid value.
    HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The client's request id if it is sane (1–128 visible ASCII characters), or a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&REQUEST_ID) {
        let bytes = v.as_bytes();
        if !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic()) {
            return v.clone();
        }
    }
    // 32 lowercase hex digits of a random u128, formatted on the stack.
    let mut id = rand::random::<u128>();
    let mut hex = [0u8; 32];
    for digit in hex.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(id & 0xf) as usize];
        id >>= 4;
    }
    HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The request's cookies as `(name, value)` pairs, in order, from every `Cookie` header
/// (RFC 6265 §5.4: `a=1; b=2`). Borrows from the headers: nothing is copied. Routing's cookie
/// predicates, sticky splits, hash balancing, gray subsets and rate limits all read cookies
/// through this one parser, so they agree on what a cookie is.
pub fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

/// Total bytes of header names and values, as a client would have sent them.
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    /// The fast path takes only a lone `keep-alive` or `close`; anything the header names,
    /// or a second `Connection` line, goes through the full removal.
    #[test]
    fn a_lone_keep_alive_or_close_goes_and_named_headers_still_do() {
        for value in ["keep-alive", "Close"] {
            let mut h = HeaderMap::new();
            h.insert("connection", HeaderValue::from_static(value));
            h.insert("x-kept", HeaderValue::from_static("1"));
            remove_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{value}");
            assert!(h.contains_key("x-kept"));
        }
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("keep-alive"));
        h.append("connection", HeaderValue::from_static("x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn te_trailers_survives_other_codings_do_not() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("te"));
        h.insert("te", HeaderValue::from_static("gzip, trailers"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h["te"], "trailers");
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("gzip"));
        remove_hop_by_hop(&mut h);
        assert!(!h.contains_key("te"));
    }

    #[test]
    fn ip_values_match_display() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "127.0.0.1",
            "192.168.100.255",
            "255.255.255.9",
            "::1",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(ip_value(ip), ip.to_string().as_str());
        }
    }

    #[test]
    fn request_id_kept_or_generated() {
        let mut h = HeaderMap::new();
        let generated = request_id(&h);
        assert_eq!(generated.len(), 32);
        assert!(generated.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(generated, request_id(&h), "each request gets its own id");
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
    }
}
