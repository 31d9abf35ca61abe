//! Issue 12 §3 and §4, black-box: upstream responses the gateway must not relay as received
//! (raw TCP origins writing exact bytes, raw TCP clients reading exact bytes), and header
//! trust and policy (what the origin received: forged X-Forwarded-* replaced, trusted
//! proxies appended, route header policy, deny, drained endpoints, panic mode off).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::support::origin::{self, Origin};
use crate::support::{self, eventually, get, http1, send};

const DEADLINE: Duration = Duration::from_secs(10);

fn service_route(addr: SocketAddr, extra_service: &str, extra_route: &str) -> String {
    format!(
        r#"
[[services]]
name = "svc"
endpoints = ["{addr}"]
{extra_service}

[[routes]]
name = "all"
service = "svc"
{extra_route}
"#
    )
}

// --- raw origins and clients ---

/// An origin that reads each request head and answers with exact bytes: `responses[i]` on
/// its i-th connection (the last one for later connections). With `close`, it closes the
/// connection after writing; otherwise it keeps it open until the gateway closes it.
struct RawOrigin {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn raw_origin(responses: Vec<Vec<u8>>, close: bool) -> RawOrigin {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    let task = tokio::spawn(async move {
        let mut conn = 0usize;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let response = responses[conn.min(responses.len() - 1)].clone();
            conn += 1;
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                // Serve requests on this connection until it closes: each gets `response`.
                loop {
                    if read_head(&mut stream).await.is_none() {
                        return;
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    if stream.write_all(&response).await.is_err() {
                        return;
                    }
                    if close {
                        let _ = stream.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    RawOrigin {
        addr,
        requests,
        task,
    }
}

/// Reads up to and including the blank line ending a request head (requests here carry no
/// body). None when the connection ends first.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

/// What a raw client read: every byte, and whether the connection ended (EOF or reset)
/// rather than going quiet.
struct RawReply {
    bytes: Vec<u8>,
    closed: bool,
}

/// Sends `GET /x` to the gateway on a new connection and reads until the connection ends
/// or is quiet for 2 s.
async fn raw_get(gateway: SocketAddr, keep_alive: bool) -> RawReply {
    let mut stream = TcpStream::connect(gateway).await.expect("connect gateway");
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let request = format!("GET /x HTTP/1.1\r\nHost: edge.test\r\nConnection: {connection}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return RawReply {
                    bytes,
                    closed: true,
                }
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => {
                return RawReply {
                    bytes,
                    closed: false,
                }
            }
        }
    }
}

/// One parsed response: status, lowercased headers, and the body bytes as framed (complete
/// when `complete`).
#[derive(Debug)]
struct Parsed {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    complete: bool,
}

impl Parsed {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the final response in `bytes`, skipping interim 1xx ones, and checks its framing:
/// never both Content-Length and Transfer-Encoding; a chunked body must decode; a
/// Content-Length body is complete when exactly that many bytes arrived, and more bytes than
/// it declares is a failure. Returns the response and the bytes after it.
fn parse_final(mut bytes: &[u8]) -> (Parsed, Vec<u8>) {
    loop {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete response head in {:?}", show(bytes)));
        let head = std::str::from_utf8(&bytes[..end]).expect("head is text");
        let rest = &bytes[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line from the gateway: {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header line");
                (n.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        if (100..200).contains(&status) {
            bytes = rest;
            continue;
        }
        let has = |name: &str| headers.iter().any(|(n, _)| n == name);
        assert!(
            !(has("content-length") && has("transfer-encoding")),
            "the gateway sent both Content-Length and Transfer-Encoding: {head}"
        );
        let mut parsed = Parsed {
            status,
            headers,
            body: Vec::new(),
            complete: false,
        };
        if parsed.header("transfer-encoding").is_some() {
            let (body, complete, after) = dechunk(rest);
            parsed.body = body;
            parsed.complete = complete;
            return (parsed, after);
        }
        let len: usize = parsed
            .header("content-length")
            .map(|v| v.parse().expect("numeric content-length"))
            .unwrap_or(rest.len());
        let take = len.min(rest.len());
        parsed.body = rest[..take].to_vec();
        parsed.complete = take == len;
        return (parsed, rest[take..].to_vec());
    }
}

/// Decodes a chunked body: (body, whether the last chunk arrived, bytes after it).
fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool, Vec<u8>) {
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (body, false, Vec::new());
        };
        let size_text = std::str::from_utf8(&rest[..eol]).expect("chunk size is text");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size is hex");
        rest = &rest[eol + 2..];
        if size == 0 {
            // No trailers here: the final CRLF.
            let after = rest.strip_prefix(b"\r\n").unwrap_or(rest);
            return (body, true, after.to_vec());
        }
        if rest.len() < size + 2 {
            body.extend_from_slice(&rest[..size.min(rest.len())]);
            return (body, false, Vec::new());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The gateway answered with its own 502 JSON error, and nothing of `marker` (a string only
/// the origin's bad response holds) reached the client.
fn assert_gateway_502(reply: &RawReply, marker: &str) {
    assert!(
        !show(&reply.bytes).contains(marker),
        "upstream bytes reached the client: {}",
        show(&reply.bytes)
    );
    let (parsed, _) = parse_final(&reply.bytes);
    assert_eq!(parsed.status, 502, "{}", show(&reply.bytes));
    assert!(parsed.complete);
    let json: serde_json::Value = serde_json::from_slice(&parsed.body).expect("JSON error body");
    assert_eq!(json["error"], "upstream_failed", "{json}");
    assert!(json["request_id"].is_string());
}

async fn gateway_for(origin: SocketAddr, extra: &str) -> gatehouse::gateway::RunningGateway {
    support::gateway(&format!(
        "[limits]\n{extra}\n{}",
        service_route(origin, "", "")
    ))
    .await
}

// --- §3: upstream responses ---

#[tokio::test]
async fn bad_status_line_is_a_502_json_error() {
    let origin = raw_origin(
        vec![b"HTTP/1.1 2OO SNEAKY\r\nContent-Length: 6\r\n\r\nSNEAKY".to_vec()],
        true,
    )
    .await;
    let gw = gateway_for(origin.addr, "").await;
    let reply = raw_get(gw.public_addr, false).await;
    assert_gateway_502(&reply, "SNEAKY");
    assert_eq!(origin.requests.load(Ordering::SeqCst), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_response_header_is_a_502_json_error() {
    for bad in [
        "Bad Header: SNEAKY\r\n",
        "X-Ok: a\r\n: SNEAKY\r\n",
        "X-Nul: SNEAKY\0x\r\n",
        "X-Folded: a\r\n SNEAKY\r\n",
    ] {
        let response = format!("HTTP/1.1 200 OK\r\n{bad}Content-Length: 2\r\n\r\nok");
        let origin = raw_origin(vec![response.into_bytes()], true).await;
        let gw = gateway_for(origin.addr, "").await;
        let reply = raw_get(gw.public_addr, false).await;
        assert_gateway_502(&reply, "SNEAKY");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn response_head_over_the_limit_is_a_502() {
    let big = |n: usize| {
        format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
            "SNEAKY".repeat(n / 6)
        )
        .into_bytes()
    };
    // The default limit (64 KiB): a 100 KB head is refused.
    let origin = raw_origin(vec![big(100_000)], true).await;
    let gw = gateway_for(origin.addr, "").await;
    assert_gateway_502(&raw_get(gw.public_addr, false).await, "SNEAKY");
    gw.shutdown().await;

    // A configured 16 KiB limit: 20 KB is refused, 10 KB passes.
    let origin = raw_origin(vec![big(20_000)], true).await;
    let gw = gateway_for(origin.addr, "max_response_header_bytes = 16384").await;
    assert_gateway_502(&raw_get(gw.public_addr, false).await, "SNEAKY");
    gw.shutdown().await;
    let origin = raw_origin(vec![big(10_000)], true).await;
    let gw = gateway_for(origin.addr, "max_response_header_bytes = 16384").await;
    let (parsed, _) = parse_final(&raw_get(gw.public_addr, false).await.bytes);
    assert_eq!(parsed.status, 200);
    assert_eq!(parsed.body, b"ok");
    gw.shutdown().await;
}

#[tokio::test]
async fn content_length_and_chunked_together_are_framed_once() {
    // Transfer-Encoding wins (RFC 9112 §6.3): the client gets one framing, matching the bytes.
    let origin = raw_origin(
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello!\r\n0\r\n\r\n".to_vec()],
        true,
    )
    .await;
    let gw = gateway_for(origin.addr, "").await;
    let reply = raw_get(gw.public_addr, false).await;
    let (parsed, after) = parse_final(&reply.bytes);
    if parsed.status != 502 {
        assert_eq!(parsed.status, 200);
        assert!(parsed.complete, "{}", show(&reply.bytes));
        assert_eq!(parsed.body, b"hello!", "{}", show(&reply.bytes));
        assert!(
            after.is_empty(),
            "bytes after the response: {}",
            show(&after)
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn short_body_is_aborted_not_relayed_as_complete() {
    // The origin promises 100 bytes, sends 5 and closes.
    let origin = raw_origin(
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello".to_vec()],
        true,
    )
    .await;
    let gw = gateway_for(origin.addr, "").await;
    // Keep-alive: a gateway that thought the message complete would keep the connection.
    let reply = raw_get(gw.public_addr, true).await;
    let (parsed, _) = parse_final(&reply.bytes);
    if parsed.status != 502 {
        assert_eq!(parsed.status, 200);
        assert!(!parsed.complete, "a short body cannot be complete");
        assert!(
            reply.closed,
            "the connection must end before the message does: {}",
            show(&reply.bytes)
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn bytes_past_the_content_length_never_reach_a_later_request() {
    // The first connection answers with 5 body bytes plus a smuggled second response; the
    // next connection answers honestly.
    let origin = raw_origin(
        vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nSMUGGLE"
                .to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond".to_vec(),
        ],
        false,
    )
    .await;
    let gw = gateway_for(origin.addr, "").await;
    let first = raw_get(gw.public_addr, false).await;
    let (parsed, after) = parse_final(&first.bytes);
    assert_eq!(parsed.status, 200);
    assert_eq!(parsed.body, b"hello");
    assert!(
        after.is_empty(),
        "extra bytes relayed: {}",
        show(&first.bytes)
    );
    for _ in 0..3 {
        let next = raw_get(gw.public_addr, false).await;
        assert!(
            !show(&next.bytes).contains("SMUGGLE"),
            "a smuggled response reached a later request: {}",
            show(&next.bytes)
        );
        let (parsed, _) = parse_final(&next.bytes);
        assert_eq!(parsed.status, 200, "{}", show(&next.bytes));
        assert_eq!(parsed.body, b"second");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn interim_responses_are_never_the_final_one() {
    let origin = raw_origin(
        vec![b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone".to_vec()],
        true,
    )
    .await;
    let gw = gateway_for(origin.addr, "").await;
    let reply = raw_get(gw.public_addr, false).await;
    let (parsed, after) = parse_final(&reply.bytes);
    assert_eq!(parsed.status, 201, "{}", show(&reply.bytes));
    assert_eq!(parsed.body, b"done");
    assert!(after.is_empty());
    // And through hyper's client, the final response is the 201.
    let got = get(&format!("http://{}/x", gw.public_addr), &[]).await;
    assert_eq!(got.status, 201);
    gw.shutdown().await;
}

#[tokio::test]
async fn refused_connect_is_502_and_a_connect_that_never_completes_is_504() {
    // Refused: nothing listens.
    let closed = origin::closed_port().await;
    let gw = gateway_for(closed, "").await;
    let got = get(&format!("http://{}/x", gw.public_addr), &[]).await;
    assert_eq!(got.status, 502, "{}", got.text());
    assert_eq!(got.json()["error"], "upstream_connect_failed");
    gw.shutdown().await;

    // Never completes: a loopback listener with a backlog of 1 that never accepts, its
    // queue filled until a connect hangs (Linux drops SYNs to a full accept queue).
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut fillers = Vec::new();
    loop {
        assert!(fillers.len() < 64, "the accept queue never filled");
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(e)) => panic!("connect to the full listener failed instead of hanging: {e}"),
            Err(_) => break,
        }
    }
    let gw = support::gateway(&service_route(addr, "connect_timeout = \"300ms\"", "")).await;
    let got = get(&format!("http://{}/x", gw.public_addr), &[]).await;
    assert_eq!(got.status, 504, "{}", got.text());
    assert_eq!(got.json()["error"], "upstream_connect_timeout");
    assert_eq!(got.headers["x-gatehouse-failure"], "connect");
    gw.shutdown().await;
    drop((fillers, listener));
}

// --- §4: forwarding headers ---

async fn echo_headers(
    gw: &gatehouse::gateway::RunningGateway,
    headers: &[(&str, &str)],
) -> serde_json::Value {
    let got = get(&format!("http://{}/x", gw.public_addr), headers).await;
    assert_eq!(got.status, 200, "{}", got.text());
    got.json()["headers"].clone()
}

const FORGED: [(&str, &str); 4] = [
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "bank.test"),
    ("forwarded", "for=6.6.6.6;proto=https"),
];

#[tokio::test]
async fn forged_forwarding_headers_from_an_untrusted_client_are_replaced() {
    let echo = origin::echo("echo").await;
    // Trusts a network the test client is not in.
    let gw = support::gateway(&format!(
        "[forwarding]\ntrusted_proxies = [\"10.0.0.0/8\"]\n{}",
        service_route(echo.addr, "", "")
    ))
    .await;
    let host = gw.public_addr.to_string();
    let seen = echo_headers(&gw, &FORGED).await;
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], host.as_str());
    assert_eq!(
        seen["forwarded"],
        format!("for=127.0.0.1;host=\"{host}\";proto=http").as_str()
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_trusted_proxy_is_appended_to_and_its_scheme_and_host_kept() {
    let echo = origin::echo("echo").await;
    let gw = support::gateway(&format!(
        "[forwarding]\ntrusted_proxies = [\"127.0.0.0/8\", \"::1\"]\n{}",
        service_route(echo.addr, "", "")
    ))
    .await;
    let host = gw.public_addr.to_string();
    let seen = echo_headers(&gw, &FORGED).await;
    assert_eq!(seen["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-forwarded-host"], "bank.test");
    assert_eq!(
        seen["forwarded"],
        format!("for=6.6.6.6;proto=https, for=127.0.0.1;host=\"{host}\";proto=http").as_str()
    );
    // Without headers from the proxy, the chain starts at the proxy.
    let seen = echo_headers(&gw, &[]).await;
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    gw.shutdown().await;
}

// --- §4: route header policy and deny ---

#[tokio::test]
async fn route_header_policy_edits_both_directions() {
    let origin = origin::start(|req: http::Request<hyper::body::Incoming>| async move {
        let seen: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .keys()
            .map(|k| {
                let values: Vec<String> = req
                    .headers()
                    .get_all(k)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                (k.to_string(), values.into())
            })
            .collect();
        let mut r = origin::text(200, &serde_json::Value::Object(seen).to_string());
        r.headers_mut()
            .insert("x-internal", "secret".parse().expect("value"));
        r.headers_mut()
            .insert("cache-control", "no-store".parse().expect("value"));
        r
    })
    .await;
    let gw = support::gateway(&service_route(
        origin.addr,
        "",
        r#"
[routes.request_headers]
remove = ["x-user", "X-Forwarded-Host"]
set = { x-env = "prod" }
append = { x-tag = "gateway" }

[routes.response_headers]
remove = ["x-internal"]
set = { cache-control = "private" }
append = { x-served-by = "gatehouse" }
"#,
    ))
    .await;
    let got = get(
        &format!("http://{}/x", gw.public_addr),
        &[("x-user", "admin"), ("x-env", "dev"), ("x-tag", "client")],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = got.json();
    assert!(seen.get("x-user").is_none(), "removed: {seen}");
    assert!(seen.get("x-forwarded-host").is_none(), "removed: {seen}");
    assert_eq!(seen["x-env"], serde_json::json!(["prod"]));
    assert_eq!(seen["x-tag"], serde_json::json!(["client", "gateway"]));
    assert!(!got.headers.contains_key("x-internal"));
    assert_eq!(got.headers["cache-control"], "private");
    assert_eq!(got.headers["x-served-by"], "gatehouse");
    assert!(got.headers.contains_key("x-request-id"));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_denied_route_never_reaches_the_origin() {
    let echo = origin::echo("echo").await;
    let gw = support::gateway(&format!(
        r#"
[[services]]
name = "svc"
endpoints = ["{addr}"]

[[routes]]
name = "open"
service = "svc"
match = {{ prefix = "/" }}

[[routes]]
name = "internal"
service = "svc"
match = {{ prefix = "/internal" }}
deny = 403

[[routes]]
name = "gone"
service = "svc"
match = {{ path = "/old" }}
deny = 410
"#,
        addr = echo.addr
    ))
    .await;
    let base = format!("http://{}", gw.public_addr);
    let denied = get(&format!("{base}/internal/users"), &[]).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.json()["error"], "route_denied");
    assert!(denied.json()["request_id"].is_string());
    let gone = send(
        &http1(),
        "POST",
        &format!("{base}/old"),
        &[],
        Bytes::from("x"),
    )
    .await;
    assert_eq!(gone.status, 410);
    assert_eq!(
        echo.accepted(),
        0,
        "a denied route never contacts the origin"
    );
    assert_eq!(get(&format!("{base}/open"), &[]).await.status, 200);
    assert_eq!(echo.accepted(), 1);
    gw.shutdown().await;
}

// --- §4: drained endpoints and panic mode ---

/// An origin answering its name, counting requests.
async fn named(name: &'static str) -> (Origin, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let origin = origin::start(move |_req| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { origin::text(200, name) }
    })
    .await;
    (origin, hits)
}

#[tokio::test]
async fn drained_endpoints_get_no_requests_by_config_or_admin_api() {
    let (a, a_hits) = named("a").await;
    let (b, b_hits) = named("b").await;
    let gw = support::gateway(&format!(
        r#"
[admin]
token = "t0k"

[[services]]
name = "svc"
endpoints = ["{a}", "{b}"]
drained = ["{a}"]

[[routes]]
name = "all"
service = "svc"
"#,
        a = a.addr,
        b = b.addr
    ))
    .await;
    let url = format!("http://{}/x", gw.public_addr);
    for _ in 0..10 {
        assert_eq!(get(&url, &[]).await.text(), "b");
    }
    assert_eq!(a_hits.load(Ordering::SeqCst), 0, "drained by config");

    let admin = format!("http://{}/admin/services/svc/endpoints", gw.admin_addr);
    let auth = [("authorization", "Bearer t0k")];
    let post = |path: String, headers: &'static [(&'static str, &'static str)]| async move {
        send(&http1(), "POST", &path, headers, Bytes::new()).await
    };
    let unauthorized = post(format!("{admin}/{}/undrain", a.addr), &[]).await;
    assert_eq!(unauthorized.status, 401);
    static AUTH: [(&str, &str); 1] = [("authorization", "Bearer t0k")];
    let undrained = post(format!("{admin}/{}/undrain", a.addr), &AUTH).await;
    assert_eq!(undrained.status, 200, "{}", undrained.text());
    assert_eq!(undrained.json()["drained"], false);
    let drained = post(format!("{admin}/{}/drain", b.addr), &AUTH).await;
    assert_eq!(drained.status, 200, "{}", drained.text());
    let b_before = b_hits.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(get(&url, &[]).await.text(), "a");
    }
    assert_eq!(
        b_hits.load(Ordering::SeqCst),
        b_before,
        "drained by the admin API"
    );

    let unknown = post(format!("{admin}/127.0.0.1:1/drain"), &AUTH).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"], "unknown_endpoint");
    let bad = get(&format!("{admin}/{}/drain", a.addr), &auth).await;
    assert_eq!(bad.status, 405);

    // Everything drained: no endpoint to send to, 503 at once (panic mode never uses
    // drained endpoints).
    post(format!("{admin}/{}/drain", a.addr), &AUTH).await;
    let none = get(&url, &[]).await;
    assert_eq!(none.status, 503, "{}", none.text());
    assert_eq!(none.json()["error"], "no_healthy_upstream");
    gw.shutdown().await;
}

#[tokio::test]
async fn panic_mode_off_answers_503_when_nothing_is_healthy() {
    // The origin fails its health check but would answer requests.
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let origin = origin::start(move |req: http::Request<hyper::body::Incoming>| {
        let health = req.uri().path() == "/health";
        if !health {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        async move {
            if health {
                origin::text(500, "sick")
            } else {
                origin::text(200, "served")
            }
        }
    })
    .await;
    let health =
        "[services.health]\npath = \"/health\"\ninterval = \"50ms\"\nunhealthy_threshold = 1";
    for (panic_mode, expect) in [("true", 200), ("false", 503)] {
        let gw = support::gateway(&format!(
            r#"
[[services]]
name = "svc"
endpoints = ["{addr}"]
panic_mode = {panic_mode}
{health}

[[routes]]
name = "all"
service = "svc"
"#,
            addr = origin.addr
        ))
        .await;
        let pool = gw
            .state
            .load()
            .upstreams
            .service("svc")
            .expect("svc")
            .upstream
            .pool()
            .clone();
        eventually("the endpoint is unhealthy", DEADLINE, async || {
            pool.all_backends()
                .iter()
                .all(|b| !b.health.is_healthy(tokio::time::Instant::now()))
        })
        .await;
        let before = hits.load(Ordering::SeqCst);
        let got = get(&format!("http://{}/x", gw.public_addr), &[]).await;
        assert_eq!(
            got.status,
            expect,
            "panic_mode = {panic_mode}: {}",
            got.text()
        );
        if expect == 503 {
            assert_eq!(got.json()["error"], "no_healthy_upstream");
            assert_eq!(
                hits.load(Ordering::SeqCst),
                before,
                "no request reached the origin"
            );
        } else {
            assert_eq!(got.text(), "served");
        }
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn an_unasked_switching_protocols_is_not_relayed_as_final() {
    // The gateway never forwards Upgrade, so a 101 from the origin answers nothing it asked.
    let origin = raw_origin(
        vec![b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nSNEAKY-FRAMES".to_vec()],
        true,
    )
    .await;
    let gw = gateway_for(origin.addr, "").await;
    let reply = raw_get(gw.public_addr, false).await;
    assert_gateway_502(&reply, "SNEAKY");
    // And again: each request reached the origin and got the gateway's own answer.
    assert_gateway_502(&raw_get(gw.public_addr, false).await, "SNEAKY");
    assert_eq!(origin.requests.load(Ordering::SeqCst), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn h2c_response_head_over_the_limit_is_a_502() {
    let origin = origin::start(|req: http::Request<hyper::body::Incoming>| async move {
        let size: usize = req
            .uri()
            .path()
            .trim_start_matches('/')
            .parse()
            .unwrap_or(0);
        let mut r = origin::text(200, "ok");
        r.headers_mut()
            .insert("x-big", "b".repeat(size).parse().expect("value"));
        r
    })
    .await;
    let gw = support::gateway(&format!(
        "[limits]\nmax_response_header_bytes = 16384\n{}",
        service_route(origin.addr, "protocol = \"h2c\"", "")
    ))
    .await;
    let base = format!("http://{}", gw.public_addr);
    let small = get(&format!("{base}/10000"), &[]).await;
    assert_eq!(small.status, 200, "{}", small.text());
    assert_eq!(small.headers["x-big"].len(), 10000);
    let big = get(&format!("{base}/20000"), &[]).await;
    assert_eq!(big.status, 502, "{}", big.text());
    assert!(!big.headers.contains_key("x-big"));
    assert_eq!(big.json()["error"], "upstream_failed");
    gw.shutdown().await;
}
