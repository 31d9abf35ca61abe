//! Who the client is, as the upstream learns it: `X-Forwarded-For/-Proto/-Host` and RFC 7239
//! `Forwarded`, trusted only when the peer is a configured proxy (`[forwarding]`).
//!
//! From any other peer these headers are forged as far as the gateway knows, so they are
//! replaced, never appended to: the upstream sees exactly one hop, the peer itself. From a
//! trusted proxy the peer is appended to the chain it sent, and its `-Proto`/`-Host` kept.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue, FORWARDED};
use ipnet::IpNet;
use serde::{Serialize, Serializer};

use super::ip_value;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// `[forwarding]`: the peers whose forwarding headers are believed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForwardingPolicy {
    /// `trusted_proxies`: CIDRs (`10.0.0.0/8`, `::1/128`). Default: none, so every peer's
    /// forwarding headers are replaced.
    #[serde(serialize_with = "nets_as_strings")]
    pub trusted_proxies: Vec<IpNet>,
}

fn nets_as_strings<S: Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(nets.iter().map(ToString::to_string))
}

impl ForwardingPolicy {
    /// Whether `peer` is a trusted proxy. An IPv4 peer seen on a dual-stack listener
    /// (`::ffff:10.0.0.1`) matches IPv4 CIDRs.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        if self.trusted_proxies.is_empty() {
            return false;
        }
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }

    /// Sets the forwarding headers for a request from `peer`. `host` is the host the client
    /// asked for (its `Host` or `:authority`).
    pub fn apply(&self, headers: &mut HeaderMap, peer: IpAddr, host: Option<&HeaderValue>) {
        if self.trusts(peer) {
            append_hop(headers, peer, host);
        } else {
            replace(headers, peer, host);
        }
    }
}

/// An untrusted peer: whatever it sent about earlier hops is dropped.
fn replace(headers: &mut HeaderMap, peer: IpAddr, host: Option<&HeaderValue>) {
    headers.insert(X_FORWARDED_FOR.clone(), ip_value(peer.to_canonical()));
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    match host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
    match forwarded_element(peer, host, "http") {
        Some(element) => {
            headers.insert(FORWARDED, element);
        }
        None => {
            headers.remove(FORWARDED);
        }
    }
}

/// A trusted proxy: the peer joins the chain; the proxy's word on scheme and host stands.
fn append_hop(headers: &mut HeaderMap, peer: IpAddr, host: Option<&HeaderValue>) {
    let xff = match joined(headers, &X_FORWARDED_FOR) {
        Some(prior) => HeaderValue::from_str(&format!("{prior}, {}", peer.to_canonical())).ok(),
        None => Some(ip_value(peer.to_canonical())),
    };
    if let Some(xff) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), xff);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if let (false, Some(host)) = (headers.contains_key(&X_FORWARDED_HOST), host) {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
    let element = forwarded_element(peer, host, "http");
    let forwarded = match (joined(headers, &FORWARDED), element) {
        (Some(prior), Some(element)) => element
            .to_str()
            .ok()
            .and_then(|e| HeaderValue::from_str(&format!("{prior}, {e}")).ok()),
        (None, element) => element,
        (Some(_), None) => None,
    };
    if let Some(forwarded) = forwarded {
        headers.insert(FORWARDED, forwarded);
    }
}

/// All values of `name`, comma-joined (a list header may arrive as several lines), or None
/// when absent, empty or not text.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out = String::new();
    for value in headers.get_all(name) {
        let value = value.to_str().ok()?.trim();
        if value.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(value);
    }
    (!out.is_empty()).then_some(out)
}

/// One RFC 7239 element: `for=192.0.2.1;host="shop.test";proto=http`. IPv6 addresses are
/// bracketed and quoted (§6); the host is always quoted (a port's `:` is not a token
/// character).
fn forwarded_element(peer: IpAddr, host: Option<&HeaderValue>, proto: &str) -> Option<HeaderValue> {
    // Built as bytes, on every request: `format!` with the addresses' `Display` cost several
    // thousand instructions per request (callgrind, benches/README.md).
    let mut element = Vec::with_capacity(64);
    match peer.to_canonical() {
        IpAddr::V4(v4) => {
            element.extend_from_slice(b"for=");
            element.extend_from_slice(ip_value(IpAddr::V4(v4)).as_bytes());
        }
        IpAddr::V6(v6) => {
            element.extend_from_slice(b"for=\"[");
            element.extend_from_slice(v6.to_string().as_bytes());
            element.extend_from_slice(b"]\"");
        }
    }
    if let Some(host) = host {
        element.extend_from_slice(b";host=\"");
        for &byte in host.as_bytes() {
            if matches!(byte, b'"' | b'\\') {
                element.push(b'\\');
            }
            element.push(byte);
        }
        element.push(b'"');
    }
    element.extend_from_slice(b";proto=");
    element.extend_from_slice(proto.as_bytes());
    HeaderValue::from_maybe_shared(bytes::Bytes::from(element)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(nets: &[&str]) -> ForwardingPolicy {
        ForwardingPolicy {
            trusted_proxies: nets.iter().map(|n| n.parse().expect("cidr")).collect(),
        }
    }

    fn forged() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.append("x-forwarded-for", HeaderValue::from_static("5.6.7.8"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.test"));
        h.insert(
            "forwarded",
            HeaderValue::from_static("for=1.2.3.4;proto=https"),
        );
        h
    }

    #[test]
    fn untrusted_peer_replaces_everything() {
        let mut h = forged();
        let host = HeaderValue::from_static("shop.test:8080");
        policy(&["10.0.0.0/8"]).apply(&mut h, "127.0.0.1".parse().expect("ip"), Some(&host));
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.test:8080");
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.1;host=\"shop.test:8080\";proto=http"
        );
    }

    #[test]
    fn untrusted_peer_without_host_loses_the_forged_host() {
        let mut h = forged();
        ForwardingPolicy::default().apply(&mut h, "::1".parse().expect("ip"), None);
        assert!(!h.contains_key("x-forwarded-host"));
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=http");
    }

    #[test]
    fn trusted_proxy_appends_and_keeps_its_scheme_and_host() {
        let mut h = forged();
        let host = HeaderValue::from_static("shop.test");
        policy(&["10.0.0.0/8"]).apply(&mut h, "10.1.2.3".parse().expect("ip"), Some(&host));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "evil.test");
        assert_eq!(
            h["forwarded"],
            "for=1.2.3.4;proto=https, for=10.1.2.3;host=\"shop.test\";proto=http"
        );
    }

    #[test]
    fn trusted_proxy_without_headers_starts_the_chain() {
        let mut h = HeaderMap::new();
        policy(&["127.0.0.1/32"]).apply(&mut h, "127.0.0.1".parse().expect("ip"), None);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["forwarded"], "for=127.0.0.1;proto=http");
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_cidrs() {
        let p = policy(&["10.0.0.0/8"]);
        assert!(p.trusts("::ffff:10.0.0.1".parse().expect("ip")));
        assert!(!p.trusts("::ffff:11.0.0.1".parse().expect("ip")));
        assert!(!ForwardingPolicy::default().trusts("10.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn quotes_in_the_host_are_escaped() {
        let host = HeaderValue::from_static("a\"b");
        let e = forwarded_element("1.2.3.4".parse().expect("ip"), Some(&host), "http");
        assert_eq!(e.expect("value"), "for=1.2.3.4;host=\"a\\\"b\";proto=http");
    }
}
