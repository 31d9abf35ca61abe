//! Response compression (docs/compression.md): gzip, brotli or zstd, chosen by the client's
//! `Accept-Encoding` and the route's policy, applied as the response streams out.
//!
//! It runs last on the way out, on whatever the route produced (upstream, plugin, fallback,
//! gateway error), as nginx's gzip filter does; the request's `Accept-Encoding` is captured
//! before the request plugins run ([`AcceptEncoding`]).
//!
//! Never compressed: a response to HEAD; a 1xx, 204, 206 or 304; one that already has a
//! `Content-Encoding` or a `Content-Range`; `Cache-Control: no-transform`;
//! `text/event-stream`; a type outside the policy's list (or no `Content-Type`); a declared
//! `Content-Length` under `min_bytes`. A body of unknown length (chunked) is compressed:
//! a response streamed without a length is usually generated text, and is the one kind
//! a size check cannot rule out anyway.

mod accept;
mod stream;

use http::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING,
    CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
};
use http::{Response, StatusCode};
use serde::Serialize;

pub use accept::AcceptEncoding;

use crate::body::Body;
use crate::telemetry::Metrics;

/// A content coding the gateway produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Encoding {
    #[serde(rename = "gzip")]
    Gzip,
    #[serde(rename = "br")]
    Brotli,
    #[serde(rename = "zstd")]
    Zstd,
}

impl Encoding {
    /// The names config accepts, for error messages.
    pub const NAMES: &'static str = "\"br\", \"zstd\" or \"gzip\"";

    /// The `Content-Encoding` token (and the config name).
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "gzip" => Some(Encoding::Gzip),
            "br" => Some(Encoding::Brotli),
            "zstd" => Some(Encoding::Zstd),
            _ => None,
        }
    }

    /// The levels each coding accepts.
    pub fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Encoding::Gzip => 1..=9,
            Encoding::Brotli => 0..=11,
            Encoding::Zstd => 1..=22,
        }
    }

    /// The level used when the policy sets none: cheap enough to run on every response at
    /// the edge (docs/compression.md, "Levels").
    pub fn default_level(self) -> u32 {
        match self {
            Encoding::Gzip => 5,
            Encoding::Brotli => 4,
            Encoding::Zstd => 3,
        }
    }
}

/// One media-type pattern of a policy's `content_types`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum TypePattern {
    /// `application/json`.
    Exact(String),
    /// `text/*`: the type, with its slash (`text/`).
    AnySubtype(String),
    /// `*/*+json`: the structured-syntax suffix, with its plus (`+json`).
    Suffix(String),
}

impl TypePattern {
    /// Parses `type/subtype`, `type/*` or `*/*+suffix` (lowercased); None otherwise.
    pub fn parse(pattern: &str) -> Option<Self> {
        let pattern = pattern.trim().to_ascii_lowercase();
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        let (kind, subtype) = pattern.split_once('/')?;
        if kind == "*" {
            let suffix = subtype.strip_prefix("*+")?;
            return token(suffix).then(|| TypePattern::Suffix(format!("+{suffix}")));
        }
        if !token(kind) {
            return None;
        }
        if subtype == "*" {
            return Some(TypePattern::AnySubtype(format!("{kind}/")));
        }
        token(subtype).then_some(TypePattern::Exact(pattern))
    }

    /// `essence` is a lowercased `type/subtype`.
    fn matches(&self, essence: &str) -> bool {
        match self {
            TypePattern::Exact(t) => essence == t,
            TypePattern::AnySubtype(prefix) => essence.starts_with(prefix.as_str()),
            TypePattern::Suffix(suffix) => essence.ends_with(suffix.as_str()),
        }
    }
}

impl From<TypePattern> for String {
    fn from(p: TypePattern) -> String {
        match p {
            TypePattern::Exact(t) => t,
            TypePattern::AnySubtype(prefix) => format!("{prefix}*"),
            TypePattern::Suffix(suffix) => format!("*/*{suffix}"),
        }
    }
}

/// The types compressed when a policy names none: text and the text-based formats of APIs
/// and web pages. Images, video, archives and fonts other than SVG are already compressed.
pub const DEFAULT_CONTENT_TYPES: [&str; 9] = [
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/wasm",
    "application/x-ndjson",
    "image/svg+xml",
    "*/*+json",
    "*/*+xml",
];

/// Smallest declared body compressed: below about 1 KiB the framing overhead eats the gain.
pub const DEFAULT_MIN_BYTES: u64 = 1024;

/// How one route compresses its responses.
#[derive(Debug, Clone, Serialize)]
pub struct CompressionPolicy {
    /// The codings offered, in the server's order of preference.
    pub algorithms: Vec<Encoding>,
    pub gzip_level: u32,
    pub brotli_level: u32,
    pub zstd_level: u32,
    /// Responses declaring a smaller `Content-Length` are sent as they are.
    pub min_bytes: u64,
    pub content_types: Vec<TypePattern>,
}

impl Default for CompressionPolicy {
    fn default() -> Self {
        CompressionPolicy {
            algorithms: vec![Encoding::Brotli, Encoding::Zstd, Encoding::Gzip],
            gzip_level: Encoding::Gzip.default_level(),
            brotli_level: Encoding::Brotli.default_level(),
            zstd_level: Encoding::Zstd.default_level(),
            min_bytes: DEFAULT_MIN_BYTES,
            content_types: DEFAULT_CONTENT_TYPES
                .iter()
                .filter_map(|p| TypePattern::parse(p))
                .collect(),
        }
    }
}

/// What of the request the compression step needs, captured when it arrives.
#[derive(Debug, Clone, Copy)]
pub struct ClientAccepts {
    pub encodings: AcceptEncoding,
    /// A HEAD request: its response has no body to compress.
    pub head: bool,
}

impl ClientAccepts {
    pub fn capture(method: &http::Method, headers: &HeaderMap) -> Self {
        ClientAccepts {
            encodings: AcceptEncoding::from_headers(headers),
            head: method == http::Method::HEAD,
        }
    }
}

impl CompressionPolicy {
    fn level(&self, encoding: Encoding) -> u32 {
        match encoding {
            Encoding::Gzip => self.gzip_level,
            Encoding::Brotli => self.brotli_level,
            Encoding::Zstd => self.zstd_level,
        }
    }

    /// Compresses the response for this client if the policy and the response allow it. A
    /// response this policy would compress gets `Vary: Accept-Encoding` even when this
    /// client accepts no coding, so that a cache keeps the variants apart.
    pub fn apply(
        &self,
        client: &ClientAccepts,
        mut response: Response<Body>,
        route: &std::sync::Arc<String>,
        metrics: &Metrics,
    ) -> Response<Body> {
        if client.head || !self.eligible(response.status(), response.headers()) {
            return response;
        }
        let headers = response.headers_mut();
        crate::headers::add_vary(headers, &ACCEPT_ENCODING);
        let Some(encoding) = client.encodings.choose(&self.algorithms) else {
            return response;
        };
        headers.remove(CONTENT_LENGTH);
        // The bytes differ from the origin's, so a range of them means something else.
        headers.remove(ACCEPT_RANGES);
        headers.insert(
            CONTENT_ENCODING,
            HeaderValue::from_static(encoding.as_str()),
        );
        weaken_etag(headers);
        let counters = metrics.compressed(route, encoding.as_str());
        let level = self.level(encoding);
        response.map(|body| stream::encode(body, encoding, level, counters))
    }

    /// Whether a response with this status and these headers may be compressed.
    fn eligible(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        if status.is_informational()
            || matches!(
                status,
                StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
            )
            || headers.contains_key(CONTENT_ENCODING)
            || headers.contains_key(CONTENT_RANGE)
            || no_transform(headers)
        {
            return false;
        }
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len < self.min_bytes) {
            return false;
        }
        let Some(essence) = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
        else {
            return false;
        };
        // A stream of events must reach the client event by event.
        essence != "text/event-stream" && self.content_types.iter().any(|p| p.matches(&essence))
    }
}

fn no_transform(headers: &HeaderMap) -> bool {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
}

/// A strong validator names exact bytes; the compressed bytes are other bytes, so the ETag
/// becomes weak (as nginx does): conditional GETs still work, byte ranges on it do not.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(ETAG) else {
        return;
    };
    if etag.as_bytes().starts_with(b"\"") {
        let mut weak = Vec::with_capacity(etag.len() + 2);
        weak.extend_from_slice(b"W/");
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(weak) = HeaderValue::from_bytes(&weak) {
            headers.insert(ETAG, weak);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn type_patterns() {
        assert_eq!(
            TypePattern::parse("Text/*"),
            Some(TypePattern::AnySubtype("text/".into()))
        );
        assert_eq!(
            TypePattern::parse("*/*+json"),
            Some(TypePattern::Suffix("+json".into()))
        );
        for bad in ["text", "*/*", "*/json", "text/ html", "/json", "*/*+"] {
            assert_eq!(TypePattern::parse(bad), None, "{bad}");
        }
        let policy = CompressionPolicy::default();
        let ok =
            |t: &'static str| policy.eligible(StatusCode::OK, &headers(&[("content-type", t)]));
        assert!(ok("text/html; charset=utf-8"));
        assert!(ok("application/problem+json"));
        assert!(ok("APPLICATION/JSON"));
        assert!(!ok("image/png"));
        assert!(!ok("text/event-stream"));
        assert!(!ok("application/octet-stream"));
    }

    #[test]
    fn what_is_never_compressed() {
        let policy = CompressionPolicy::default();
        let json = ("content-type", "application/json");
        assert!(policy.eligible(StatusCode::NOT_FOUND, &headers(&[json])));
        for status in [101, 204, 206, 304] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(!policy.eligible(status, &headers(&[json])), "{status}");
        }
        assert!(!policy.eligible(
            StatusCode::OK,
            &headers(&[json, ("content-encoding", "gzip")])
        ));
        assert!(!policy.eligible(
            StatusCode::OK,
            &headers(&[json, ("cache-control", "public, No-Transform")])
        ));
        assert!(!policy.eligible(
            StatusCode::OK,
            &headers(&[json, ("content-length", "1023")])
        ));
        assert!(policy.eligible(
            StatusCode::OK,
            &headers(&[json, ("content-length", "1024")])
        ));
        assert!(!policy.eligible(StatusCode::OK, &headers(&[])));
    }

    #[test]
    fn etags_become_weak() {
        let mut h = headers(&[("etag", "\"abc\"")]);
        weaken_etag(&mut h);
        assert_eq!(h[ETAG], "W/\"abc\"");
        weaken_etag(&mut h);
        assert_eq!(h[ETAG], "W/\"abc\"");
    }
}
