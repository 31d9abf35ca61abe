//! HTTP/2 abuse and resource bounds against a running gateway: the known floods (rapid reset,
//! CONTINUATION, SETTINGS, PING) and streams that send headers but never a body, over raw
//! frames or the `h2` client; the caps on streams, requests in flight and connections; the
//! client-body idle timeout. Each flood is bounded in count and time, on loopback only; each
//! test checks that the gateway stays up, that descriptors stay bounded, and that another
//! connection is served within a small latency bound.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse::gateway::RunningGateway;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{self, eventually, origin};

/// How long an ordinary request on a fresh connection may take while a flood runs.
const SERVED_WITHIN: Duration = Duration::from_secs(2);

/// An origin that reads each request's whole body before answering, counting requests that
/// reached it and bodies it received in full.
struct Counting {
    origin: origin::Origin,
    arrived: Arc<AtomicUsize>,
    completed: Arc<AtomicUsize>,
}

async fn counting_origin() -> Counting {
    let arrived = Arc::new(AtomicUsize::new(0));
    let completed = Arc::new(AtomicUsize::new(0));
    let (a, c) = (arrived.clone(), completed.clone());
    let origin = origin::start(move |req: http::Request<Incoming>| {
        a.fetch_add(1, Ordering::SeqCst);
        let c = c.clone();
        async move {
            match req.into_body().collect().await {
                Ok(_) => {
                    c.fetch_add(1, Ordering::SeqCst);
                    origin::text(200, "origin")
                }
                Err(_) => origin::text(400, "body failed"),
            }
        }
    })
    .await;
    Counting {
        origin,
        arrived,
        completed,
    }
}

async fn gateway(origin: SocketAddr, limits: &str) -> RunningGateway {
    support::gateway(&format!(
        r#"
[limits]
{limits}

[[services]]
name = "o"
endpoints = ["{origin}"]

[[routes]]
name = "all"
service = "o"
match = {{ prefix = "/" }}
"#
    ))
    .await
}

/// Open TCP connections of this test's gateway: those it accepted on its public port and
/// those it opened to the origin. Counted from the kernel's socket tables rather than the
/// process's descriptors, which every other test running in this process moves too (a
/// leaked connection sits in ESTABLISHED or CLOSE_WAIT; TIME_WAIT holds no descriptor).
fn gateway_sockets(gw: &RunningGateway, origin: SocketAddr) -> usize {
    let (public, upstream) = (gw.public_addr.port(), origin.port());
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |addr: &str| {
                addr.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            let open = matches!(fields.get(3), Some(&"01") | Some(&"08"));
            open && (fields.get(1).and_then(|a| port(a)) == Some(public)
                || fields.get(2).and_then(|a| port(a)) == Some(upstream))
        })
        .count()
}

/// Resident memory of this test process, in KiB (other tests share the process: bounds on it
/// are generous).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Memory a flood may add to the process: the unbounded case this guards against reached
/// 611 MB; a bounded gateway adds a few MB.
const RSS_GROWTH_KIB: u64 = 200 << 10;

/// An ordinary request on a fresh HTTP/1.1 connection gets 200 within [`SERVED_WITHIN`].
async fn assert_served(gw: &RunningGateway, during: &str) {
    let started = Instant::now();
    let url = format!("http://{}/ok", gw.public_addr);
    let got = tokio::time::timeout(SERVED_WITHIN, support::get(&url, &[]))
        .await
        .unwrap_or_else(|_| panic!("{during}: an ordinary request took over {SERVED_WITHIN:?}"));
    assert_eq!(got.status, 200, "{during}: {}", got.text());
    eprintln!(
        "{during}: ordinary request served in {:?}",
        started.elapsed()
    );
}

/// `gatehouse_listener_events_total` for `event` on the public listener, from `/metrics`.
async fn listener_events(gw: &RunningGateway, event: &str) -> u64 {
    let got = support::get(&format!("http://{}/metrics", gw.admin_addr), &[]).await;
    let needle =
        format!("gatehouse_listener_events_total{{listener=\"public\",event=\"{event}\"}} ");
    got.text()
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

// --- raw HTTP/2 frames ---

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// HPACK for `GET http://localhost/flood`: static-table method and scheme, literal path and
/// authority (never indexed, so every block decodes alone).
fn request_block() -> Vec<u8> {
    request_block_with(0x82)
}

/// [`request_block`] with another static-table method (`0x83`: POST).
fn request_block_with(method: u8) -> Vec<u8> {
    let mut b = vec![method, 0x86];
    for (index, value) in [(4u8, "/flood"), (1u8, "localhost")] {
        b.push(index); // literal without indexing, indexed name
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// A raw h2c connection that has sent the preface and an empty SETTINGS frame.
async fn raw_h2(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(PREFACE).await.expect("preface");
    tcp.write_all(&frame(SETTINGS, 0, 0, &[]))
        .await
        .expect("settings");
    tcp
}

/// Writes `frames` one batch at a time until all are written, the peer closes, or writes stall
/// for a second (the gateway stopped reading: backpressure). Returns how many were written.
async fn flood(tcp: &mut TcpStream, frames: impl Iterator<Item = Vec<u8>>) -> usize {
    let (mut written, mut in_batch) = (0, 0);
    let mut batch = Vec::new();
    let mut frames = frames.peekable();
    while let Some(f) = frames.next() {
        batch.extend_from_slice(&f);
        in_batch += 1;
        if in_batch == 64 || frames.peek().is_none() {
            match tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&batch)).await {
                Ok(Ok(())) => written += in_batch,
                _ => return written,
            }
            batch.clear();
            in_batch = 0;
        }
    }
    written
}

/// Reads until the peer closes (true) or `within` passes (false); returns the GOAWAY error
/// code seen, if any.
async fn read_to_close(tcp: &mut TcpStream, within: Duration) -> (bool, Option<u32>) {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let deadline = tokio::time::Instant::now() + within;
    let closed = loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (closed, goaway_code(&seen))
}

/// The error code of the first GOAWAY frame in `bytes` (server frames, no preface).
fn goaway_code(mut bytes: &[u8]) -> Option<u32> {
    while bytes.len() >= 9 {
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        if bytes.len() < 9 + len {
            return None;
        }
        let payload = &bytes[9..9 + len];
        if bytes[3] == 7 && len >= 8 {
            return Some(u32::from_be_bytes([
                payload[4], payload[5], payload[6], payload[7],
            ]));
        }
        bytes = &bytes[9 + len..];
    }
    None
}

const ENHANCE_YOUR_CALM: u32 = 0xb;
const REFUSED_STREAM: u32 = 0x7;

/// Reads server frames until `want` RST_STREAM frames with error `code` were seen, the peer
/// closes, or `within` passes; returns how many were seen.
async fn read_resets(tcp: &mut TcpStream, code: u32, want: usize, within: Duration) -> usize {
    let mut pending = Vec::new();
    let mut seen = 0;
    let mut buf = vec![0u8; 64 << 10];
    let deadline = tokio::time::Instant::now() + within;
    while seen < want {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => pending.extend_from_slice(&buf[..n]),
            _ => break,
        }
        let mut at = 0;
        while pending.len() >= at + 9 {
            let len = (usize::from(pending[at]) << 16)
                | (usize::from(pending[at + 1]) << 8)
                | usize::from(pending[at + 2]);
            if pending.len() < at + 9 + len {
                break;
            }
            let payload = &pending[at + 9..at + 9 + len];
            if pending[at + 3] == RST_STREAM
                && len == 4
                && u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) == code
            {
                seen += 1;
            }
            at += 9 + len;
        }
        pending.drain(..at);
    }
    seen
}

// --- the floods ---

#[tokio::test]
async fn rapid_reset_is_cut_off_and_others_are_served() {
    let o = counting_origin().await;
    let gw = gateway(o.origin.addr, "").await;
    assert_served(&gw, "before").await;
    let before = gateway_sockets(&gw, o.origin.addr);
    let rss_before = rss_kib();

    let mut tcp = raw_h2(gw.public_addr).await;
    const STREAMS: u32 = 5_000;
    let block = request_block();
    let frames = (0..STREAMS).flat_map(|i| {
        let id = 2 * i + 1;
        [
            frame(HEADERS, END_HEADERS, id, &block),
            frame(RST_STREAM, 0, id, &8u32.to_be_bytes()),
        ]
    });
    let written = flood(&mut tcp, frames).await;
    assert_served(&gw, "rapid reset").await;
    let (closed, code) = read_to_close(&mut tcp, Duration::from_secs(5)).await;
    eprintln!("rapid reset: {written} frames written; closed {closed}, GOAWAY {code:?}");
    assert!(closed, "the gateway must end a rapid-reset connection");
    let rss = rss_kib();
    assert!(
        rss < rss_before + RSS_GROWTH_KIB,
        "RSS {rss_before} -> {rss} KiB"
    );
    assert!(
        o.arrived.load(Ordering::SeqCst) < STREAMS as usize / 2,
        "most reset streams must never reach the origin: {} did",
        o.arrived.load(Ordering::SeqCst)
    );
    drop(tcp);
    assert!(
        gateway_sockets(&gw, o.origin.addr) < before + 100,
        "descriptors: {before} -> {}",
        gateway_sockets(&gw, o.origin.addr)
    );
    assert_served(&gw, "after rapid reset").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn continuation_flood_gets_goaway_counted_not_logged_per_connection() {
    let o = counting_origin().await;
    let gw = gateway(o.origin.addr, "").await;
    let before = gateway_sockets(&gw, o.origin.addr);
    const CONNECTIONS: usize = 5;
    for _ in 0..CONNECTIONS {
        let mut tcp = raw_h2(gw.public_addr).await;
        // A header block that never ends: tiny CONTINUATION frames, each a literal header.
        let mut literal = vec![0x00, 0x01, b'a', 0x0c];
        literal.extend_from_slice(b"xxxxxxxxxxxx");
        let frames = std::iter::once(frame(HEADERS, END_STREAM, 1, &request_block())).chain(
            std::iter::repeat_n(frame(CONTINUATION, 0, 1, &literal), 20_000),
        );
        flood(&mut tcp, frames).await;
        let (closed, code) = read_to_close(&mut tcp, Duration::from_secs(5)).await;
        assert!(closed, "the gateway must end a CONTINUATION flood");
        assert_eq!(code, Some(ENHANCE_YOUR_CALM), "GOAWAY reason");
    }
    assert_served(&gw, "after CONTINUATION floods").await;
    assert_eq!(
        o.arrived.load(Ordering::SeqCst),
        1,
        "only the ordinary request arrived"
    );
    // Counted per connection in the metric (the log line is rate-limited).
    eventually(
        "the floods are counted",
        Duration::from_secs(5),
        async || listener_events(&gw, "h2_enhance_your_calm").await >= CONNECTIONS as u64,
    )
    .await;
    assert!(
        gateway_sockets(&gw, o.origin.addr) < before + 50,
        "descriptors: {before} -> {}",
        gateway_sockets(&gw, o.origin.addr)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn settings_and_ping_floods_stay_bounded() {
    let o = counting_origin().await;
    let gw = gateway(o.origin.addr, "").await;
    let before = gateway_sockets(&gw, o.origin.addr);
    let rss_before = rss_kib();
    // SETTINGS frames to acknowledge and PINGs to answer, never reading the answers: the
    // gateway must stop reading (backpressure) or close, not queue answers without bound.
    let settings = frame(SETTINGS, 0, 0, &[0x00, 0x04, 0x00, 0x00, 0xff, 0xff]);
    let ping = frame(PING, 0, 0, &[7; 8]);
    for (name, f) in [("SETTINGS", settings), ("PING", ping)] {
        let mut tcp = raw_h2(gw.public_addr).await;
        let written = flood(&mut tcp, std::iter::repeat_n(f, 200_000)).await;
        assert_served(&gw, name).await;
        eprintln!("{name} flood: {written} frames accepted before backpressure or close");
        let rss = rss_kib();
        assert!(
            rss < rss_before + RSS_GROWTH_KIB,
            "{name}: RSS {rss_before} -> {rss} KiB"
        );
        drop(tcp);
    }
    assert!(
        gateway_sockets(&gw, o.origin.addr) < before + 50,
        "descriptors: {before} -> {}",
        gateway_sockets(&gw, o.origin.addr)
    );
    assert_served(&gw, "after SETTINGS and PING floods").await;
    assert_eq!(o.arrived.load(Ordering::SeqCst), 3);
    gw.shutdown().await;
}

// --- streams that send headers but never a body ---

/// An h2 client connection (driven in the background).
async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Opens `n` POST streams on `client` that send their headers and never their body. Returns
/// the response futures and the body senders (kept, so the streams stay open).
async fn stalled_streams(
    client: &mut h2::client::SendRequest<Bytes>,
    n: usize,
) -> Vec<(h2::client::ResponseFuture, h2::SendStream<Bytes>)> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        *client = client.clone().ready().await.expect("stream capacity");
        let req = http::Request::post("http://localhost/stall")
            .body(())
            .expect("request");
        streams.push(client.send_request(req, false).expect("send headers"));
    }
    streams
}

#[tokio::test]
async fn stalled_bodies_are_bounded_per_connection_and_end_in_408() {
    let o = counting_origin().await;
    let gw = gateway(o.origin.addr, "body_idle_timeout = \"3s\"").await;
    let before = gateway_sockets(&gw, o.origin.addr);
    let rss_before = rss_kib();
    const CONNECTIONS: usize = 2;
    // A client that ignores the advertised limit: streams past 128 are refused. (POSTs: the
    // gateway forwards a GET without a declared length with no body, ending it at once.)
    let mut raw = raw_h2(gw.public_addr).await;
    let block = request_block_with(0x83);
    let frames = (0..200u32).map(|i| frame(HEADERS, END_HEADERS, 2 * i + 1, &block));
    assert_eq!(flood(&mut raw, frames).await, 200);
    let refused = read_resets(&mut raw, REFUSED_STREAM, 72, Duration::from_secs(10)).await;
    assert_eq!(
        refused, 72,
        "streams past limits.max_concurrent_streams are refused"
    );
    // A client that keeps to it.
    let mut client = h2_client(gw.public_addr).await;
    eventually(
        "the gateway's SETTINGS arrive",
        Duration::from_secs(5),
        async || client.current_max_send_streams() == 128,
    )
    .await;
    let mut stalled = stalled_streams(&mut client, 128).await;
    // Every stream reached the origin, which now waits for bodies that never come.
    eventually(
        "the stalled requests reach the origin",
        Duration::from_secs(10),
        async || o.arrived.load(Ordering::SeqCst) >= CONNECTIONS * 128,
    )
    .await;
    let during = gateway_sockets(&gw, o.origin.addr);
    let rss_during = rss_kib();
    eprintln!("stalled streams: fds {before} -> {during}, RSS {rss_before} -> {rss_during} KiB");
    assert!(
        rss_during < rss_before + RSS_GROWTH_KIB,
        "RSS {rss_before} -> {rss_during} KiB"
    );
    assert_served(&gw, "stalled streams held").await;
    // One upstream connection per stalled request, one descriptor per client connection:
    // bounded by streams per connection, not growing past it.
    assert!(
        during < before + CONNECTIONS * 128 * 3 + 50,
        "descriptors: {before} -> {during}"
    );
    // No byte for body_idle_timeout: each stalled stream gets 408 with the JSON error.
    let started = Instant::now();

    for (response, _body) in stalled.drain(..) {
        let response = tokio::time::timeout(Duration::from_secs(20), response)
            .await
            .expect("answered after the idle timeout")
            .expect("response");
        assert_eq!(response.status(), 408);
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            bytes.extend_from_slice(&chunk.expect("chunk"));
        }
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(json["error"], "body_idle_timeout");
    }
    eprintln!("stalled streams answered 408 after {:?}", started.elapsed());
    assert_eq!(
        o.completed.load(Ordering::SeqCst),
        1,
        "no stalled body ever completed"
    );
    drop((client, raw));
    eventually(
        "upstream descriptors are released",
        Duration::from_secs(10),
        async || gateway_sockets(&gw, o.origin.addr) < before + 50,
    )
    .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn past_the_in_flight_cap_requests_get_a_fast_503() {
    let o = counting_origin().await;
    let gw = gateway(
        o.origin.addr,
        "max_requests_in_flight = 20\nbody_idle_timeout = \"30s\"",
    )
    .await;
    let mut client = h2_client(gw.public_addr).await;
    let mut stalled = stalled_streams(&mut client, 60).await;
    eventually(
        "the cap's worth reach the origin",
        Duration::from_secs(10),
        async || o.arrived.load(Ordering::SeqCst) >= 20,
    )
    .await;
    // The rest were answered at once, long before the 30 s idle timeout.
    let mut shed = 0;
    for (response, _body) in stalled.drain(20..) {
        let response = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .expect("a fast answer")
            .expect("response");
        assert_eq!(response.status(), 503);
        shed += 1;
    }
    assert_eq!(shed, 40);
    assert_eq!(
        o.arrived.load(Ordering::SeqCst),
        20,
        "shed requests never reach the origin"
    );
    assert!(listener_events(&gw, "request_shed").await >= 40);
    // Once the held streams end, the listener serves again.
    drop(stalled);
    drop(client);
    eventually("slots free up", Duration::from_secs(10), async || {
        let url = format!("http://{}/ok", gw.public_addr);
        support::get(&url, &[]).await.status == 200
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_are_closed_and_the_listener_lives() {
    let o = counting_origin().await;
    let gw = gateway(o.origin.addr, "max_connections = 4").await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(h2_client(gw.public_addr).await);
    }
    // The fifth is accepted and closed at once.
    let mut extra = TcpStream::connect(gw.public_addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(listener_events(&gw, "connection_shed").await >= 1);
    // Closing one makes room again.
    drop(held.pop());
    eventually("a slot frees up", Duration::from_secs(10), async || {
        let url = format!("http://{}/ok", gw.public_addr);
        let client = support::http1();
        let req = http::Request::get(url)
            .body(http_body_util::Full::new(Bytes::new()))
            .expect("request");
        matches!(client.request(req).await, Ok(r) if r.status() == 200)
    })
    .await;
    assert_eq!(o.arrived.load(Ordering::SeqCst), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_http1_body_that_goes_silent_gets_408_and_a_closed_connection() {
    let o = counting_origin().await;
    let gw = gateway(o.origin.addr, "body_idle_timeout = \"1s\"").await;
    let mut tcp = TcpStream::connect(gw.public_addr).await.expect("connect");
    tcp.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the gateway must answer and close");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(text.contains("body_idle_timeout"), "{text}");
    assert_eq!(
        o.completed.load(Ordering::SeqCst),
        0,
        "the origin never got a whole body"
    );
    gw.shutdown().await;
}

/// DATA frames that keep trickling in keep a slow body alive: the timeout is idle time, not
/// total time.
#[tokio::test]
async fn a_slow_but_steady_body_is_not_cut() {
    let o = counting_origin().await;
    let gw = gateway(o.origin.addr, "body_idle_timeout = \"1s\"").await;
    let mut client = h2_client(gw.public_addr).await;
    let (response, mut body) = stalled_streams(&mut client, 1).await.remove(0);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        body.send_data(Bytes::from_static(b"chunk"), false)
            .expect("data");
    }
    body.send_data(Bytes::new(), true).expect("end");
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("answered")
        .expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(o.completed.load(Ordering::SeqCst), 1);
    gw.shutdown().await;
}
