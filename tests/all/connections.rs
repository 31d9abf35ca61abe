//! Upstream connections through the real gateway: keep-alive reuse, concurrency, upstreams
//! that close connections, bodies dropped midway, h2c multiplexing and restarts, connect
//! failures, and endpoints that leave.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse::discovery::registry::{InstanceSpec, RegistryClient};
use gatehouse::discovery::EndpointMeta;
use gatehouse::gateway::RunningGateway;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Barrier;
use tracing::info;

use crate::support::origin::{self, Origin};
use crate::support::{self, eventually, get, http1, send};

const DEADLINE: Duration = Duration::from_secs(10);

/// Each worker has its own connections; with one, the counts below are exact.
const ONE_WORKER: &str =
    "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nworkers = 1\n";

/// One service `s` with these extra service lines, and a catch-all route to it.
async fn gateway_for(endpoint: SocketAddr, service_extra: &str) -> RunningGateway {
    gateway_with(ONE_WORKER, endpoint, service_extra).await
}

async fn gateway_with(listen: &str, endpoint: SocketAddr, service_extra: &str) -> RunningGateway {
    support::gateway(&format!(
        "{listen}[[services]]\nname = \"s\"\nendpoints = [\"{endpoint}\"]\n{service_extra}\n\
         [[routes]]\nname = \"all\"\nservice = \"s\"\ntimeout = \"5s\"\n"
    ))
    .await
}

/// No retries in the resilience layer: whatever the client sees is what the pool did.
const NO_RETRIES: &str = "[services.retry]\nmax_retries = 0";

fn url(gw: &RunningGateway, path: &str) -> String {
    format!("http://{}{}", gw.public_addr, path)
}

/// An origin that holds `/together` requests until `n` of them have arrived.
async fn gathering_origin(n: usize) -> Origin {
    let barrier = Arc::new(Barrier::new(n));
    origin::start(move |req| {
        let barrier = Arc::clone(&barrier);
        async move {
            if req.uri().path() == "/together" {
                barrier.wait().await;
            }
            origin::text(200, &format!("{:?}", req.version()))
        }
    })
    .await
}

/// `n` requests at once, each from its own client connection; their statuses.
async fn concurrently(gw: &RunningGateway, path: &str, n: usize) -> Vec<u16> {
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let target = url(gw, path);
            tokio::spawn(async move { get(&target, &[]).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.expect("request task"));
    }
    statuses
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let origin = origin::echo("o").await;
    let gw = gateway_for(origin.addr, "").await;
    for _ in 0..20 {
        // A new client connection each time: only the upstream side is pooled here.
        assert_eq!(get(&url(&gw, "/"), &[]).await.status, 200);
    }
    assert_eq!(origin.accepted(), 1, "one keep-alive upstream connection");
    gw.shutdown().await;
}

#[tokio::test]
async fn each_worker_keeps_its_own_upstream_connections() {
    const WORKERS: usize = 3;
    let origin = origin::echo("o").await;
    let listen = ONE_WORKER.replace("workers = 1", &format!("workers = {WORKERS}"));
    let gw = gateway_with(&listen, origin.addr, "").await;
    for _ in 0..30 {
        // Each client connection lands on whichever worker accepts it first.
        assert_eq!(get(&url(&gw, "/"), &[]).await.status, 200);
    }
    let accepted = origin.accepted();
    assert!(
        (1..=WORKERS).contains(&accepted),
        "at most one keep-alive upstream connection per worker, got {accepted}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_open_one_connection_each_and_reuse_them() {
    const M: usize = 6;
    let origin = gathering_origin(M).await;
    let gw = gateway_for(origin.addr, "").await;
    for round in 0..3 {
        info!(round, "{M} requests held at the origin until all arrived");
        assert_eq!(concurrently(&gw, "/together", M).await, [200; M]);
        assert_eq!(
            origin.accepted(),
            M,
            "round {round}: M connections, reused by the next round"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn connection_close_responses_cost_no_error() {
    let origin = origin::start(|_req| async {
        let mut r = origin::text(200, "bye");
        r.headers_mut()
            .insert("connection", "close".parse().expect("header"));
        r
    })
    .await;
    let gw = gateway_for(origin.addr, NO_RETRIES).await;
    let client = http1();
    for _ in 0..10 {
        let got = send(&client, "POST", &url(&gw, "/"), &[], Bytes::from("x")).await;
        assert_eq!((got.status, got.text().as_str()), (200, "bye"));
    }
    assert_eq!(
        origin.accepted(),
        10,
        "a new upstream connection per request"
    );
    gw.shutdown().await;
}

/// A raw HTTP/1.1 origin with a keep-alive timeout: it answers `ok` to each request and
/// closes a connection that stays idle for `idle` (`Duration::ZERO`: right after the
/// response), without ever sending `Connection: close`. Returns its address and how many
/// connections it accepted and closed.
async fn keepalive_origin(idle: Duration) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (a, c) = (Arc::clone(&accepted), Arc::clone(&closed));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            a.fetch_add(1, Ordering::SeqCst);
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                let mut stream = tokio::io::BufStream::new(stream);
                let mut first = true;
                loop {
                    let wait = if first { DEADLINE } else { idle };
                    first = false;
                    if !matches!(
                        tokio::time::timeout(wait, read_head(&mut stream)).await,
                        Ok(true)
                    ) {
                        break;
                    }
                    // A write error only means the gateway went away first.
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    let _ = stream.flush().await;
                    if idle.is_zero() {
                        break;
                    }
                }
                drop(stream);
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, accepted, closed)
}

/// Reads a request head and its `content-length` body; false at end of stream.
async fn read_head(stream: &mut tokio::io::BufStream<tokio::net::TcpStream>) -> bool {
    use tokio::io::AsyncReadExt;
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        match stream.read_line(&mut line).await {
            Ok(0) | Err(_) => return false,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.is_ok()
}

#[tokio::test]
async fn an_upstream_closing_idle_connections_costs_no_error() {
    info!("an upstream that closes every connection right after its response");
    let (addr, accepted, _) = keepalive_origin(Duration::ZERO).await;
    let gw = gateway_for(addr, NO_RETRIES).await;
    let client = http1();
    for _ in 0..10 {
        let got = send(&client, "POST", &url(&gw, "/"), &[], Bytes::from("x")).await;
        assert_eq!((got.status, got.text().as_str()), (200, "ok"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 10);
    gw.shutdown().await;

    info!("an upstream whose keep-alive timeout closes idle connections");
    let (addr, accepted, closed) = keepalive_origin(Duration::from_millis(100)).await;
    let gw = gateway_for(addr, NO_RETRIES).await;
    for round in 1..=3 {
        let got = send(&client, "POST", &url(&gw, "/"), &[], Bytes::from("x")).await;
        assert_eq!(
            (got.status, got.text().as_str()),
            (200, "ok"),
            "round {round}"
        );
        eventually(
            "the upstream closes the idle connection",
            DEADLINE,
            async || closed.load(Ordering::SeqCst) == round,
        )
        .await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_body_dropped_midway_does_not_poison_the_pool() {
    let origin = origin::start(|req| async move {
        if req.uri().path() == "/endless" {
            // One chunk, then nothing until the gateway gives up.
            let first = futures::stream::once(async {
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from("part")))
            });
            let chunks = futures::StreamExt::chain(first, futures::stream::pending());
            http::Response::new(gatehouse::body::streaming(StreamBody::new(chunks)))
        } else {
            origin::text(200, "ok")
        }
    })
    .await;
    let gw = gateway_for(origin.addr, "").await;
    let client = http1();
    let req = Request::get(url(&gw, "/endless"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = client.request(req).await.expect("response head");
    let mut body = response.into_body();
    let frame = body
        .frame()
        .await
        .expect("a frame")
        .expect("no error")
        .into_data()
        .expect("data");
    assert_eq!(&frame[..], b"part");
    info!("the client drops the body midway; the gateway must drop the upstream connection");
    drop(body);
    drop(client);
    eventually("the upstream connection is closed", DEADLINE, async || {
        origin.ended() == 1
    })
    .await;
    let got = get(&url(&gw, "/"), &[]).await;
    assert_eq!((got.status, got.text().as_str()), (200, "ok"));
    assert_eq!(
        origin.accepted(),
        2,
        "the next request used a new connection"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_multiplexes_one_connection_and_survives_a_restart() {
    const M: usize = 10;
    let origin = gathering_origin(M).await;
    let gw = gateway_for(origin.addr, "protocol = \"h2c\"").await;
    assert_eq!(concurrently(&gw, "/together", M).await, [200; M]);
    assert_eq!(origin.accepted(), 1, "one multiplexed connection");
    assert_eq!(get(&url(&gw, "/"), &[]).await.text(), "HTTP/2.0");

    info!("the origin restarts");
    origin.restart().await;
    let got = get(&url(&gw, "/"), &[]).await;
    assert_eq!((got.status, got.text().as_str()), (200, "HTTP/2.0"));
    assert_eq!(concurrently(&gw, "/together", M).await, [200; M]);
    assert_eq!(origin.accepted(), 2, "one new connection after the restart");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_refused_connect_is_a_502_connect_failure() {
    let closed = origin::closed_port().await;
    let gw = gateway_for(closed, "").await;
    let got = get(&url(&gw, "/"), &[]).await;
    assert_eq!(got.status, 502);
    assert_eq!(got.headers["x-gatehouse-failure"], "connect");
    assert_eq!(got.json()["error"], "upstream_connect_failed");
    let message = got.json()["message"].as_str().expect("message").to_owned();
    assert!(
        message.contains(&closed.to_string()) && message.contains("refused"),
        "names the endpoint and the cause: {message}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_connect_timeout_is_a_504_connect_failure() {
    // A listener with a backlog of 0 that never accepts: once its queue is full, further
    // SYNs go unanswered and connects hang.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let addr = socket.local_addr().expect("address");
    let _listener = socket.listen(0).expect("listen");
    let mut fillers = Vec::new();
    loop {
        assert!(fillers.len() < 16, "the accept queue never filled up");
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => fillers.push(stream),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(e) => panic!("unexpected connect error: {e}"),
        }
    }
    let gw = gateway_for(addr, &format!("connect_timeout = \"300ms\"\n{NO_RETRIES}")).await;
    let started = Instant::now();
    let got = get(&url(&gw, "/"), &[]).await;
    // A connect that never completes is a timeout to the client (a refused one is a 502).
    assert_eq!(got.status, 504);
    assert_eq!(got.headers["x-gatehouse-failure"], "connect");
    assert_eq!(got.json()["error"], "upstream_connect_timeout");
    let message = got.json()["message"].as_str().expect("message").to_owned();
    assert!(message.contains("timed out after 300ms"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the connect timeout cut it"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_endpoint_closes_its_pooled_connections() {
    let origin = origin::echo("a").await;
    let gw = support::gateway(&format!(
        "{ONE_WORKER}[registry]\ntoken = \"s3cret\"\n\
         [[services]]\nname = \"s\"\ndiscovery = \"registry\"\n\
         [[routes]]\nname = \"all\"\nservice = \"s\"\n",
    ))
    .await;
    let registry = RegistryClient::new(gw.admin_addr, "s3cret");
    let spec = InstanceSpec {
        id: "a".to_owned(),
        address: origin.addr.ip(),
        port: origin.addr.port(),
        meta: EndpointMeta::default(),
    };
    registry.register_once("s", &spec).await.expect("register");
    eventually("a takes traffic", DEADLINE, async || {
        get(&url(&gw, "/"), &[]).await.status == 200
    })
    .await;
    for _ in 0..5 {
        assert_eq!(get(&url(&gw, "/"), &[]).await.status, 200);
    }
    assert_eq!(origin.accepted(), 1);
    assert_eq!(origin.ended(), 0, "the connection idles in the pool");

    info!("deregistering a: its backend, and the pool with it, goes away");
    registry.deregister("s", "a").await.expect("deregister");
    eventually("the pooled connection is closed", DEADLINE, async || {
        origin.ended() == 1
    })
    .await;
    gw.shutdown().await;
}
