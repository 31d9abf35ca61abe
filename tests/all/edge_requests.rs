//! Requests the gateway must refuse (issue 12 §2), sent as raw bytes: body limits (declared,
//! `Expect: 100-continue`, mid-stream, HTTP/2), malformed chunked bodies, Host and
//! Transfer-Encoding framing, long, CONNECT and TRACE methods, connections closed after
//! 413/414/431, and header names with `_`. Each test asserts what the origin received.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gatehouse::body::{self, Body, BoxError};
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{self, eventually, origin};

/// What the origin saw of one request: the head, then how its body ended.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    headers: http::HeaderMap,
    /// None while the body is still arriving; then its length or the error that ended it.
    body: Option<Result<usize, String>>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// An origin that records every request and how its body ended, and answers 200 with the
/// body's length.
async fn recording_origin() -> (origin::Origin, Log) {
    let log: Log = Arc::default();
    let origin = origin::start({
        let log = Arc::clone(&log);
        move |req: Request<Incoming>| {
            let log = Arc::clone(&log);
            async move {
                let (parts, incoming) = req.into_parts();
                let index = {
                    let mut log = log.lock().expect("log");
                    log.push(Seen {
                        method: parts.method.to_string(),
                        headers: parts.headers.clone(),
                        body: None,
                    });
                    log.len() - 1
                };
                let result = incoming
                    .collect()
                    .await
                    .map(|c| c.to_bytes().len())
                    .map_err(|e| e.to_string());
                log.lock().expect("log")[index].body = Some(result.clone());
                origin::text(200, &result.unwrap_or(0).to_string())
            }
        }
    })
    .await;
    (origin, log)
}

fn seen(log: &Log) -> Vec<Seen> {
    log.lock().expect("log").clone()
}

/// A gateway with one service on `origin` and the given `[limits]` and route lines.
async fn gateway(
    origin: SocketAddr,
    limits: &str,
    routes: &str,
) -> gatehouse::gateway::RunningGateway {
    support::gateway(&format!(
        "[limits]\n{limits}\n[[services]]\nname = \"s\"\nendpoints = [\"{origin}\"]\n{routes}"
    ))
    .await
}

const ONE_ROUTE: &str = "[[routes]]\nname = \"r\"\nservice = \"s\"\n";

/// One response read off a raw connection.
#[derive(Debug)]
struct Raw {
    /// Everything before the final response, e.g. a `100 Continue`.
    interim: String,
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Reads one final response (skipping and keeping 1xx ones); the body must have a
/// Content-Length, which every gateway error and the recording origin's answer have.
async fn read_response(s: &mut TcpStream) -> Raw {
    let mut buf = Vec::new();
    let mut interim = String::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
                .await
                .expect("a response within 10 s")
                .expect("read");
            assert!(
                n > 0,
                "connection closed before a full response head: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {head}"));
        buf.drain(..head_end);
        if (100..200).contains(&status) {
            interim.push_str(&head);
            continue;
        }
        let raw = Raw {
            interim,
            status,
            head,
            body: String::new(),
        };
        let len: usize = raw
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("response without Content-Length: {}", raw.head));
        while buf.len() < len {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
                .await
                .expect("the body within 10 s")
                .expect("read");
            assert!(n > 0, "connection closed inside the body");
            buf.extend_from_slice(&chunk[..n]);
        }
        return Raw {
            body: String::from_utf8_lossy(&buf[..len]).into_owned(),
            ..raw
        };
    }
}

/// Whether the gateway closed the connection (EOF or reset) within 5 s; anything else it
/// sends is a failure.
async fn closed(s: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 1024];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!(
            "unexpected bytes after the response: {:?}",
            String::from_utf8_lossy(&chunk[..n])
        ),
        Err(_) => false,
    }
}

/// Sends `bytes` on a new connection and reads one response.
async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> (TcpStream, Raw) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let raw = read_response(&mut s).await;
    (s, raw)
}

/// Asserts a refusal: status, error code, `Connection: close` and a closed connection.
async fn assert_refused_and_closed(addr: SocketAddr, request: &[u8], status: u16, code: &str) {
    let (mut s, raw) = send_raw(addr, request).await;
    assert_eq!(raw.status, status, "{}{}", raw.head, raw.body);
    assert_eq!(raw.json()["error"], code);
    assert_eq!(raw.header("connection").as_deref(), Some("close"));
    assert!(
        closed(&mut s).await,
        "the connection closes after a {status}"
    );
}

/// Once the origin is receiving the request on `s`, sends `rest` of its body and asserts the
/// gateway refuses it mid-body: status, error code, `Connection: close`, a closed connection,
/// and an upstream request that is aborted rather than completed.
async fn assert_refused_mid_body(
    s: &mut TcpStream,
    log: &Log,
    rest: &[u8],
    status: u16,
    code: &str,
) {
    eventually(
        "the origin receives the request",
        Duration::from_secs(10),
        async || !seen(log).is_empty(),
    )
    .await;
    s.write_all(rest).await.expect("rest of the body");
    let raw = read_response(s).await;
    assert_eq!(raw.status, status, "{}", raw.body);
    assert_eq!(raw.json()["error"], code);
    assert_eq!(raw.header("connection").as_deref(), Some("close"));
    assert!(closed(s).await);
    eventually(
        "the origin's request ends",
        Duration::from_secs(10),
        async || seen(log)[0].body.is_some(),
    )
    .await;
    let body = seen(log)[0].body.clone();
    assert!(
        matches!(body, Some(Err(_))),
        "the upstream request is aborted, got {body:?}"
    );
}

// --- body limits ---

#[tokio::test]
async fn declared_body_over_the_limit_gets_413_at_once_and_the_origin_nothing() {
    let (o, log) = recording_origin().await;
    let gw = gateway(o.addr, "max_body_bytes = 1000", ONE_ROUTE).await;
    // Only the head is sent: a 413 that waited for the body would never come.
    assert_refused_and_closed(
        gw.public_addr,
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n",
        413,
        "body_too_large",
    )
    .await;
    // A client that sends its body along at once still reads the 413 before the close.
    let (mut s, raw) = send_raw(
        gw.public_addr,
        format!(
            "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n{}",
            "y".repeat(5000)
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(raw.status, 413);
    assert!(closed(&mut s).await);
    // Exactly at the limit passes, and the origin gets every byte.
    let body = "x".repeat(1000);
    let (_s, raw) = send_raw(
        gw.public_addr,
        format!("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n{body}").as_bytes(),
    )
    .await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.body, "1000");
    let seen = seen(&log);
    assert_eq!(
        seen.len(),
        1,
        "only the request within the limit reached the origin"
    );
    assert_eq!(seen[0].body, Some(Ok(1000)));
    gw.shutdown().await;
}

#[tokio::test]
async fn expect_100_continue_over_the_limit_gets_413_without_100_continue() {
    let (o, log) = recording_origin().await;
    let gw = gateway(o.addr, "max_body_bytes = 1000", ONE_ROUTE).await;
    let expect = |len: usize| {
        format!(
            "POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {len}\r\n\r\n"
        )
    };

    // Control: within the limit, the gateway does ask for the body (so the check below could fail).
    let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
    s.write_all(expect(10).as_bytes()).await.expect("head");
    let mut first = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut first))
        .await
        .expect("an answer to the Expect")
        .expect("read");
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"0123456789").await.expect("body");
    let raw = read_response(&mut s).await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.body, "10");

    // Over the limit: the first bytes back are the 413, and the connection then closes.
    let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
    s.write_all(expect(5000).as_bytes()).await.expect("head");
    let raw = read_response(&mut s).await;
    assert_eq!(raw.interim, "", "no 100 Continue before the 413");
    assert_eq!(raw.status, 413);
    assert_eq!(raw.json()["error"], "body_too_large");
    assert!(closed(&mut s).await);
    assert_eq!(
        seen(&log).len(),
        1,
        "the refused request never reached the origin"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn chunked_body_crossing_the_limit_gets_413_and_the_upstream_request_is_aborted() {
    let (o, log) = recording_origin().await;
    let gw = gateway(o.addr, "max_body_bytes = 1000", ONE_ROUTE).await;
    let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
    let chunk = format!("258\r\n{}\r\n", "a".repeat(600)); // 0x258 = 600 bytes
    s.write_all(
        format!("POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}")
            .as_bytes(),
    )
    .await
    .expect("head and first chunk");
    // The first 600 bytes stream through; the second chunk crosses the limit.
    assert_refused_mid_body(&mut s, &log, chunk.as_bytes(), 413, "body_too_large").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_route_overrides_the_global_body_limit() {
    let (o, log) = recording_origin().await;
    let routes = "[[routes]]\nname = \"small\"\nservice = \"s\"\nmatch.prefix = \"/small\"\nmax_body_bytes = 100\n\
                  [[routes]]\nname = \"big\"\nservice = \"s\"\nmatch.prefix = \"/big\"\nmax_body_bytes = 100000\n\
                  [[routes]]\nname = \"default\"\nservice = \"s\"\n";
    let gw = gateway(o.addr, "max_body_bytes = 1000", routes).await;
    let post = |path: &str, len: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n{}",
            "b".repeat(len)
        )
    };
    for (path, len, status) in [
        ("/small", 101, 413),
        ("/small", 100, 200),
        ("/default", 1001, 413),
        ("/default", 1000, 200),
        ("/big", 50_000, 200),
        ("/big", 100_001, 413),
    ] {
        let (_s, raw) = send_raw(gw.public_addr, post(path, len).as_bytes()).await;
        assert_eq!(raw.status, status, "{path} with {len} bytes");
    }
    let lengths: Vec<_> = seen(&log).into_iter().map(|s| s.body).collect();
    assert_eq!(lengths, [Some(Ok(100)), Some(Ok(1000)), Some(Ok(50_000))]);
    gw.shutdown().await;
}

#[tokio::test]
async fn h2c_body_over_the_limit_gets_413_declared_or_streamed() {
    let (o, log) = recording_origin().await;
    let gw = gateway(o.addr, "max_body_bytes = 1000", ONE_ROUTE).await;
    let url = format!("http://{}/up", gw.public_addr);

    // Declared: hyper's client sends content-length for a full body.
    let got = support::send(
        &support::h2c(),
        "POST",
        &url,
        &[],
        Bytes::from(vec![1u8; 1001]),
    )
    .await;
    assert_eq!(got.status, 413);
    assert_eq!(got.json()["error"], "body_too_large");
    assert!(
        got.headers.get("connection").is_none(),
        "HTTP/2 has no Connection header"
    );
    assert!(
        seen(&log).is_empty(),
        "the origin saw nothing of the declared-too-large body"
    );

    // Streamed without a length: crosses the limit on the third chunk.
    let chunks = (0..3).map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![2u8; 400]))));
    let client: Client<_, Body> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = Request::post(&url)
        .body(body::streaming(StreamBody::new(futures::stream::iter(
            chunks,
        ))))
        .expect("request");
    let got = support::collect(client.request(req).await.expect("a response")).await;
    assert_eq!(got.status, 413);
    assert_eq!(got.json()["error"], "body_too_large");
    eventually(
        "the origin's request ends",
        Duration::from_secs(10),
        async || seen(&log).iter().all(|s| s.body.is_some()),
    )
    .await;
    for s in seen(&log) {
        assert!(
            matches!(s.body, Some(Err(_))),
            "no complete body upstream: {:?}",
            s.body
        );
    }

    // The connection still serves other streams.
    let ok = support::send(
        &support::h2c(),
        "POST",
        &url,
        &[],
        Bytes::from(vec![1u8; 1000]),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.text(), "1000");
    gw.shutdown().await;
}

// --- malformed bodies ---

#[tokio::test]
async fn malformed_chunked_body_is_the_clients_fault() {
    let (o, log) = recording_origin().await;
    let gw = gateway(o.addr, "", ONE_ROUTE).await;
    let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .expect("head and a good chunk");
    assert_refused_mid_body(
        &mut s,
        &log,
        b"zz\r\nnot a chunk size\r\n",
        400,
        "bad_request_body",
    )
    .await;
    gw.shutdown().await;
}

// --- framing and methods ---

#[tokio::test]
async fn http11_needs_exactly_one_host() {
    let (o, log) = recording_origin().await;
    let gw = gateway(o.addr, "", ONE_ROUTE).await;
    assert_refused_and_closed(
        gw.public_addr,
        b"GET / HTTP/1.1\r\n\r\n",
        400,
        "missing_host",
    )
    .await;
    assert_refused_and_closed(
        gw.public_addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        400,
        "repeated_host",
    )
    .await;
    assert!(seen(&log).is_empty());
    // HTTP/1.0 may omit Host; one Host on HTTP/1.1 is fine.
    for request in [
        &b"GET / HTTP/1.0\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let (_s, raw) = send_raw(gw.public_addr, request).await;
        assert_eq!(raw.status, 200);
    }
    assert_eq!(seen(&log).len(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn repeated_chunked_transfer_encoding_is_refused() {
    let (o, log) = recording_origin().await;
    let gw = gateway(o.addr, "", ONE_ROUTE).await;
    for request in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ] {
        assert_refused_and_closed(gw.public_addr, request, 400, "repeated_transfer_encoding").await;
    }
    assert!(seen(&log).is_empty(), "the origin saw nothing");
    gw.shutdown().await;
}

#[tokio::test]
async fn long_methods_and_connect_are_refused_and_close() {
    let (o, log) = recording_origin().await;
    let gw = gateway(o.addr, "", ONE_ROUTE).await;
    let long = format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "M".repeat(33));
    assert_refused_and_closed(gw.public_addr, long.as_bytes(), 501, "method_too_long").await;
    let (mut s, raw) = send_raw(
        gw.public_addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert_eq!(raw.status, 405);
    assert_eq!(raw.json()["error"], "method_not_allowed");
    assert!(raw
        .header("allow")
        .is_some_and(|a| a.contains("GET") && !a.contains("CONNECT")));
    assert!(
        closed(&mut s).await,
        "a refused CONNECT closes: what follows may be tunnel bytes"
    );
    // A 32-byte extension method is fine.
    let ok = format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "M".repeat(32));
    let (_s, raw) = send_raw(gw.public_addr, ok.as_bytes()).await;
    assert_eq!(raw.status, 200);
    let methods: Vec<_> = seen(&log).into_iter().map(|s| s.method).collect();
    assert_eq!(methods, ["M".repeat(32)]);
    gw.shutdown().await;
}

#[tokio::test]
async fn trace_is_refused_unless_the_route_lists_it() {
    let (o, log) = recording_origin().await;
    let routes = "[[routes]]\nname = \"traced\"\nservice = \"s\"\nmatch.prefix = \"/debug\"\nmatch.methods = [\"GET\", \"TRACE\"]\n\
                  [[routes]]\nname = \"any\"\nservice = \"s\"\n";
    let gw = gateway(o.addr, "", routes).await;
    let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
    s.write_all(b"TRACE /x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let raw = read_response(&mut s).await;
    assert_eq!(raw.status, 405);
    assert_eq!(raw.json()["error"], "method_not_allowed");
    assert!(raw.header("allow").is_some_and(|a| !a.contains("TRACE")));
    // A well-formed refused TRACE keeps the connection.
    assert_eq!(raw.header("connection"), None);
    s.write_all(b"TRACE /debug HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let raw = read_response(&mut s).await;
    assert_eq!(raw.status, 200, "the route listing TRACE allows it");
    let methods: Vec<_> = seen(&log).into_iter().map(|s| s.method).collect();
    assert_eq!(
        methods,
        ["TRACE"],
        "only the allowed TRACE reached the origin"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn connection_closes_after_414_and_431() {
    let (o, log) = recording_origin().await;
    let gw = gateway(
        o.addr,
        "max_uri_length = 64\nmax_header_bytes = 1024",
        ONE_ROUTE,
    )
    .await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(100));
    assert_refused_and_closed(gw.public_addr, long_uri.as_bytes(), 414, "uri_too_long").await;
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "h".repeat(2000)
    );
    assert_refused_and_closed(
        gw.public_addr,
        big_header.as_bytes(),
        431,
        "headers_too_large",
    )
    .await;
    assert!(seen(&log).is_empty());
    gw.shutdown().await;
}

// --- header names with `_` ---

async fn underscore_metric(gw: &gatehouse::gateway::RunningGateway, action: &str) -> String {
    let metrics = support::get(&format!("http://{}/metrics", gw.admin_addr), &[]).await;
    let prefix = format!("gatehouse_underscore_headers_total{{action=\"{action}\"}} ");
    metrics
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test]
async fn underscore_headers_are_dropped_and_counted_by_default() {
    let (o, log) = recording_origin().await;
    let gw = gateway(o.addr, "", ONE_ROUTE).await;
    let (_s, raw) = send_raw(
        gw.public_addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX_User: admin\r\nX-User: bob\r\nAnother_One: 1\r\n\r\n",
    )
    .await;
    assert_eq!(raw.status, 200);
    let seen = seen(&log);
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    assert_eq!(h.get("x-user").map(|v| v.as_bytes()), Some(&b"bob"[..]));
    assert!(
        !h.contains_key("x_user") && !h.contains_key("another_one"),
        "{h:?}"
    );
    assert_eq!(underscore_metric(&gw, "dropped").await, "2");
    gw.shutdown().await;
}

#[tokio::test]
async fn underscore_headers_can_be_rejected() {
    let (o, log) = recording_origin().await;
    let gw = gateway(o.addr, "underscore_headers = \"reject\"", ONE_ROUTE).await;
    let (_s, raw) = send_raw(
        gw.public_addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX_User: admin\r\n\r\n",
    )
    .await;
    assert_eq!(raw.status, 400);
    assert_eq!(raw.json()["error"], "underscore_header");
    assert!(seen(&log).is_empty());
    assert_eq!(underscore_metric(&gw, "rejected").await, "1");
    let (_s, raw) = send_raw(
        gw.public_addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-User: bob\r\n\r\n",
    )
    .await;
    assert_eq!(raw.status, 200);
    assert_eq!(seen(&log).len(), 1);
    gw.shutdown().await;
}
