//! The request and response as a plugin sees them: host-owned, read and edited in place,
//! the body buffered only when a plugin asks for it.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};

use super::bindings::types::{BodyError, FullResponse, HeaderError};
use super::error::InvokeError;
use crate::plugins::{Body, BoxError};

/// The body of a message handed to plugins: untouched until a plugin reads it.
enum BodyState {
    /// Not read yet; forwarded as-is unless a plugin asks for it.
    Stream(Body),
    /// Read (or replaced) by a plugin.
    Buffered(Bytes),
    /// Reading failed; what was read is kept so the message can still be forwarded.
    Failed { body: Body, error: BodyError },
    /// Transient state while reading.
    Taken,
}

/// A body with a cap, read on demand.
struct LazyBody {
    state: BodyState,
    cap: usize,
    changed: bool,
}

impl LazyBody {
    fn new(body: Body, cap: usize) -> Self {
        LazyBody {
            state: BodyState::Stream(body),
            cap,
            changed: false,
        }
    }

    /// Read the whole body, up to the cap. Past the cap the chunks read so far are put back in
    /// front of the rest of the stream, so the message can still be forwarded unchanged.
    async fn read(&mut self) -> Result<Bytes, BodyError> {
        match std::mem::replace(&mut self.state, BodyState::Taken) {
            BodyState::Buffered(bytes) => {
                self.state = BodyState::Buffered(bytes.clone());
                // Buffered for an earlier plugin with a larger cap.
                if bytes.len() > self.cap {
                    return Err(BodyError::TooLarge(self.cap as u64));
                }
                Ok(bytes)
            }
            // Over an earlier plugin's smaller cap: this one may take more.
            BodyState::Failed {
                body,
                error: BodyError::TooLarge(smaller),
            } if smaller < self.cap as u64 => {
                self.state = BodyState::Stream(body);
                Box::pin(self.read()).await
            }
            BodyState::Failed { body, error } => {
                self.state = BodyState::Failed {
                    body,
                    error: error.clone(),
                };
                Err(error)
            }
            BodyState::Taken => Err(BodyError::ReadFailed("body is unavailable".into())),
            BodyState::Stream(mut body) => {
                let mut chunks: Vec<Bytes> = Vec::new();
                let mut total = 0usize;
                loop {
                    match body.frame().await {
                        None => break,
                        Some(Ok(frame)) => {
                            // Trailers are dropped once a plugin buffers the body.
                            if let Ok(data) = frame.into_data() {
                                total += data.len();
                                chunks.push(data);
                                if total > self.cap {
                                    let error = BodyError::TooLarge(self.cap as u64);
                                    self.state = BodyState::Failed {
                                        body: prepend(chunks, body),
                                        error: error.clone(),
                                    };
                                    return Err(error);
                                }
                            }
                        }
                        Some(Err(e)) => {
                            let error = BodyError::ReadFailed(e.to_string());
                            self.state = BodyState::Failed {
                                body: prepend(chunks, body),
                                error: error.clone(),
                            };
                            return Err(error);
                        }
                    }
                }
                let bytes = concat(chunks, total);
                self.state = BodyState::Buffered(bytes.clone());
                Ok(bytes)
            }
        }
    }

    fn set(&mut self, bytes: Bytes) {
        self.state = BodyState::Buffered(bytes);
        self.changed = true;
    }

    /// The body to send on, and its length if a plugin buffered or replaced it.
    fn into_body(self) -> (Body, Option<usize>) {
        match self.state {
            BodyState::Stream(body) | BodyState::Failed { body, .. } => (body, None),
            BodyState::Buffered(bytes) => {
                let len = bytes.len();
                (full(bytes), Some(len))
            }
            BodyState::Taken => (full(Bytes::new()), Some(0)),
        }
    }
}

fn concat(chunks: Vec<Bytes>, total: usize) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => {
            let mut buf = Vec::with_capacity(total);
            for c in &chunks {
                buf.extend_from_slice(c);
            }
            Bytes::from(buf)
        }
    }
}

fn prepend(chunks: Vec<Bytes>, rest: Body) -> Body {
    use futures::StreamExt;
    let head = futures::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, BoxError>(http_body::Frame::data(c))),
    );
    let stream = head.chain(http_body_util::BodyStream::new(rest));
    BodyExt::boxed_unsync(http_body_util::StreamBody::new(stream))
}

/// A whole body read by [`collect_capped`], with its trailers (empty if none were sent).
pub struct Collected {
    pub body: Bytes,
    pub trailers: HeaderMap,
}

/// Read a whole body and its trailers, failing with `Ok(None)` past `cap` bytes.
pub async fn collect_capped(mut body: Body, cap: usize) -> Result<Option<Collected>, BoxError> {
    let mut chunks = Vec::new();
    let mut total = 0usize;
    let mut trailers = HeaderMap::new();
    while let Some(frame) = body.frame().await {
        match frame?.into_data() {
            Ok(data) => {
                total += data.len();
                if total > cap {
                    return Ok(None);
                }
                chunks.push(data);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.extend(t);
                }
            }
        }
    }
    Ok(Some(Collected {
        body: concat(chunks, total),
        trailers,
    }))
}

/// A body from bytes.
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Headers the host manages itself; plugins may not set them (but see [`header_pair`]).
fn is_forbidden(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
    )
}

fn header_pair(name: &str, value: &[u8]) -> Result<(HeaderName, HeaderValue), HeaderError> {
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| HeaderError::InvalidName)?;
    // `te: trailers` is the one hop-by-hop value that is end to end: gRPC requires it, and the
    // proxy keeps it too (`proxy::headers::remove_hop_by_hop`).
    let te_trailers = name == http::header::TE && value.eq_ignore_ascii_case(b"trailers");
    if is_forbidden(&name) && !te_trailers {
        return Err(HeaderError::Forbidden);
    }
    let value = HeaderValue::from_bytes(value).map_err(|_| HeaderError::InvalidValue)?;
    Ok((name, value))
}

/// Header access shared by requests and responses.
pub(crate) mod headers {
    use super::*;

    pub fn get(map: &HeaderMap, name: &str) -> Option<Vec<u8>> {
        map.get(name).map(|v| v.as_bytes().to_vec())
    }
    pub fn get_all(map: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
        map.get_all(name)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect()
    }
    pub fn names(map: &HeaderMap) -> Vec<String> {
        map.keys().map(|k| k.as_str().to_string()).collect()
    }
    pub fn set(map: &mut HeaderMap, name: &str, value: &[u8]) -> Result<(), HeaderError> {
        let (n, v) = header_pair(name, value)?;
        map.insert(n, v);
        Ok(())
    }
    pub fn append(map: &mut HeaderMap, name: &str, value: &[u8]) -> Result<(), HeaderError> {
        let (n, v) = header_pair(name, value)?;
        map.append(n, v);
        Ok(())
    }
    pub fn remove(map: &mut HeaderMap, name: &str) {
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
            if !is_forbidden(&n) {
                map.remove(n);
            }
        }
    }
}

fn fix_content_length(headers: &mut HeaderMap, len: Option<usize>) {
    if let Some(len) = len {
        headers.remove(http::header::TRANSFER_ENCODING);
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
}

// --- impl PluginRequest ---

/// A request handed to plugins as the WIT `request` resource.
pub struct PluginRequest {
    /// Method, URI, headers, extensions.
    pub parts: http::request::Parts,
    body: LazyBody,
}

impl PluginRequest {
    /// The cap of the plugin about to see the request (plugins of a chain may differ).
    pub fn set_body_cap(&mut self, body_cap: usize) {
        self.body.cap = body_cap;
    }

    /// Wrap a request; a plugin may buffer at most `body_cap` bytes of its body.
    pub fn new(req: http::Request<Body>, body_cap: usize) -> Self {
        let (parts, body) = req.into_parts();
        PluginRequest {
            parts,
            body: LazyBody::new(body, body_cap),
        }
    }

    /// The body, buffered on first use.
    pub async fn body(&mut self) -> Result<Bytes, BodyError> {
        self.body.read().await
    }

    /// Replace the body.
    pub fn set_body(&mut self, bytes: Bytes) {
        self.body.set(bytes);
    }

    /// Set the path and query. Keeps scheme and authority if the URI had them.
    pub fn set_path_with_query(&mut self, pq: &str) -> Result<(), String> {
        if !pq.starts_with('/') {
            return Err(format!("`{pq}` does not start with `/`"));
        }
        // The gateway forwards only paths it checked: a plugin's path is canonicalised like a
        // client's (dot segments, escapes, slashes), and what has no canonical form is refused.
        let (path, query) = match pq.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (pq, None),
        };
        let path = crate::path::canonicalize(path, &crate::path::PathPolicy::default())
            .map_err(|e| format!("path `{path}` refused: {e}"))?;
        let canonical = match query {
            Some(query) => format!("{path}?{query}"),
            None => path.into_owned(),
        };
        let pq: http::uri::PathAndQuery = canonical
            .parse()
            .map_err(|e| format!("invalid path and query `{pq}`: {e}"))?;
        let mut uri = std::mem::take(&mut self.parts.uri).into_parts();
        uri.path_and_query = Some(pq);
        self.parts.uri = http::Uri::from_parts(uri).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Back into an HTTP request, with `content-length` fixed if the body was buffered.
    pub fn into_request(self) -> http::Request<Body> {
        let PluginRequest { mut parts, body } = self;
        let (body, len) = body.into_body();
        fix_content_length(&mut parts.headers, len);
        http::Request::from_parts(parts, body)
    }
}

// --- impl PluginResponse ---

/// An upstream response handed to plugins as the WIT `response` resource.
pub struct PluginResponse {
    /// Status, headers, extensions.
    pub parts: http::response::Parts,
    body: LazyBody,
}

impl PluginResponse {
    /// The cap of the plugin about to see the response (plugins of a chain may differ).
    pub fn set_body_cap(&mut self, body_cap: usize) {
        self.body.cap = body_cap;
    }

    /// Wrap a response; a plugin may buffer at most `body_cap` bytes of its body.
    pub fn new(resp: http::Response<Body>, body_cap: usize) -> Self {
        let (parts, body) = resp.into_parts();
        PluginResponse {
            parts,
            body: LazyBody::new(body, body_cap),
        }
    }

    /// The body, buffered on first use.
    pub async fn body(&mut self) -> Result<Bytes, BodyError> {
        self.body.read().await
    }

    /// Replace the body.
    pub fn set_body(&mut self, bytes: Bytes) {
        self.body.set(bytes);
    }

    /// Back into an HTTP response, with `content-length` fixed if the body was buffered.
    pub fn into_response(self) -> http::Response<Body> {
        let PluginResponse { mut parts, body } = self;
        let (body, len) = body.into_body();
        fix_content_length(&mut parts.headers, len);
        http::Response::from_parts(parts, body)
    }
}

/// Puts the host's request id into a plugin's JSON error (`{"error": …}` with an error
/// status and a JSON content type) that lacks one, so that every error a client gets has the
/// same shape (README, "Errors") without each plugin asking for the id.
pub fn stamp_request_id(resp: &mut FullResponse, request_id: &str) {
    let json = resp.headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("content-type") && value.starts_with(b"application/json")
    });
    if resp.status < 400 || !json {
        return;
    }
    let Ok(serde_json::Value::Object(mut body)) = serde_json::from_slice(&resp.body) else {
        return;
    };
    let unset = body
        .get("request_id")
        .is_none_or(|id| id.is_null() || id.as_str() == Some(""));
    if body.contains_key("error") && unset {
        body.insert("request_id".to_owned(), request_id.into());
        resp.body = serde_json::Value::Object(body).to_string().into_bytes();
    }
}

/// Turn a plugin-built response into an HTTP response, checking every field.
pub fn from_full_response(
    resp: FullResponse,
    body_cap: usize,
) -> Result<http::Response<Body>, InvokeError> {
    let status = http::StatusCode::from_u16(resp.status)
        .map_err(|_| InvokeError::BadOutput(format!("invalid status {}", resp.status)))?;
    if resp.body.len() > body_cap {
        return Err(InvokeError::BadOutput(format!(
            "body of {} bytes exceeds the {} byte cap",
            resp.body.len(),
            body_cap
        )));
    }
    let mut headers = HeaderMap::with_capacity(resp.headers.len() + 1);
    for (name, value) in &resp.headers {
        let (n, v) = header_pair(name, value).map_err(|e| {
            InvokeError::BadOutput(format!(
                "header `{}`: {}",
                name.escape_debug(),
                match e {
                    HeaderError::InvalidName => "invalid name",
                    HeaderError::InvalidValue => "invalid value bytes",
                    HeaderError::Forbidden => "managed by the host",
                }
            ))
        })?;
        headers.append(n, v);
    }
    let len = resp.body.len();
    let mut out = http::Response::new(full(Bytes::from(resp.body)));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    fix_content_length(out.headers_mut(), Some(len));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_error(status: u16, body: &str) -> FullResponse {
        FullResponse {
            status,
            headers: vec![("Content-Type".into(), b"application/json".to_vec())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn plugin_json_errors_get_the_request_id() {
        let mut resp = json_error(401, r#"{"error":"unauthorized","message":"no key"}"#);
        stamp_request_id(&mut resp, "rid-1");
        let body: serde_json::Value = serde_json::from_slice(&resp.body).expect("json");
        assert_eq!(body["request_id"], "rid-1");
        assert_eq!(body["message"], "no key");
        // Not an error, not JSON, or an id already there: left as is.
        for (status, body) in [
            (200, r#"{"error":"x"}"#),
            (404, r#"{"error":"x","request_id":"own"}"#),
            (404, r#"{"items":[]}"#),
            (404, "not json"),
        ] {
            let mut resp = json_error(status, body);
            stamp_request_id(&mut resp, "rid-1");
            assert_eq!(resp.body, body.as_bytes());
        }
    }

    fn req(body: &'static str) -> http::Request<Body> {
        http::Request::builder()
            .uri("/a?b=c")
            .body(full(Bytes::from_static(body.as_bytes())))
            .expect("valid request")
    }

    #[tokio::test]
    async fn body_past_the_cap_is_refused_but_still_forwarded_whole() {
        let mut r = PluginRequest::new(req("0123456789"), 4);
        assert_eq!(r.body().await, Err(BodyError::TooLarge(4)));
        let out = r.into_request();
        let bytes = out.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&bytes[..], b"0123456789");
    }

    #[tokio::test]
    async fn replaced_body_fixes_content_length() {
        let mut r = PluginRequest::new(req("abc"), 64);
        assert_eq!(&r.body().await.expect("body")[..], b"abc");
        r.set_body(Bytes::from_static(b"hello"));
        let out = r.into_request();
        assert_eq!(out.headers()["content-length"], "5");
    }

    #[test]
    fn a_plugin_path_is_canonicalised_or_refused() {
        let mut r = PluginRequest::new(req(""), 4);
        r.set_path_with_query("/public/%2e%2E//admin/./x?q=%2e%2e")
            .expect("a path with a canonical form");
        assert_eq!(r.into_request().uri(), "/admin/x?q=%2e%2e");
        let mut r = PluginRequest::new(req(""), 4);
        for refused in ["/a%2Fb", "/..", "/public/..;/admin", "/a%00"] {
            assert!(
                r.set_path_with_query(refused).is_err(),
                "{refused} has no canonical form"
            );
        }
        assert_eq!(
            r.into_request().uri(),
            "/a?b=c",
            "a refused path changes nothing"
        );
    }

    #[test]
    fn headers_are_checked() {
        let mut map = HeaderMap::new();
        assert_eq!(
            headers::set(&mut map, "x-a", b"a\r\nb"),
            Err(HeaderError::InvalidValue)
        );
        assert_eq!(
            headers::set(&mut map, "bad name", b"v"),
            Err(HeaderError::InvalidName)
        );
        assert_eq!(
            headers::set(&mut map, "Connection", b"close"),
            Err(HeaderError::Forbidden)
        );
        assert_eq!(
            headers::set(&mut map, "te", b"gzip"),
            Err(HeaderError::Forbidden)
        );
        assert_eq!(headers::set(&mut map, "TE", b"trailers"), Ok(()));
        assert_eq!(headers::set(&mut map, "X-A", b"1"), Ok(()));
        assert_eq!(headers::get(&map, "x-a"), Some(b"1".to_vec()));
    }

    #[test]
    fn full_response_with_bad_header_bytes_is_rejected() {
        let resp = FullResponse {
            status: 200,
            headers: vec![("x".into(), b"a\nb".to_vec())],
            body: vec![],
        };
        assert!(matches!(
            from_full_response(resp, 10),
            Err(InvokeError::BadOutput(_))
        ));
    }
}
