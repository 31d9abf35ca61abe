//! The per-endpoint connections against real origins on 127.0.0.1: reuse, concurrency, idle
//! limits, endpoints that close connections, bodies dropped midway, h2c, connect failures.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{stream, StreamExt};
use http::uri::PathAndQuery;
use http::{Request, Response};
use http_body::Body as _;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Barrier;
use tokio::task::AbortHandle;

use super::{ConnError, ConnSettings, Connections, Kind};
use crate::body::{self, Body};
use crate::config::Protocol;
use crate::resilience::ConnectTimeout;

const DEADLINE: Duration = Duration::from_secs(10);

type Handler = Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)))
}

/// An origin (HTTP/1.1 and h2c) that counts the connections it accepted and the ones that
/// ended (closed by the client, or failed). `kill` drops the listener and every connection,
/// like a crashed process; `restart` listens again on the same port.
struct Origin {
    addr: SocketAddr,
    handler: Handler,
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Origin {
    async fn start(handler: Handler) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let origin = Origin {
            addr: listener.local_addr().expect("origin address"),
            handler,
            accepted: Arc::default(),
            ended: Arc::default(),
            tasks: Arc::default(),
        };
        origin.serve(listener);
        origin
    }

    /// Answers `ok` to everything.
    async fn ok() -> Origin {
        Origin::start(handler(|_req| async { Response::new(body::full("ok")) })).await
    }

    fn serve(&self, listener: TcpListener) {
        let (handler, accepted, ended, tasks) = (
            Arc::clone(&self.handler),
            Arc::clone(&self.accepted),
            Arc::clone(&self.ended),
            Arc::clone(&self.tasks),
        );
        let accept = tokio::spawn({
            let tasks = Arc::clone(&tasks);
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (handler, ended) = (Arc::clone(&handler), Arc::clone(&ended));
                    let conn = tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let response = handler(req);
                            async move { Ok::<_, Infallible>(response.await) }
                        });
                        // How the connection ended does not matter here, only that it did.
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        ended.fetch_add(1, Ordering::SeqCst);
                    });
                    tasks.lock().expect("tasks lock").push(conn.abort_handle());
                }
            }
        });
        tasks
            .lock()
            .expect("tasks lock")
            .push(accept.abort_handle());
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }

    fn kill(&self) {
        for task in self.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
    }

    async fn restart(&self) {
        self.kill();
        // The old listener closes when its aborted task is next polled.
        let start = Instant::now();
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    assert!(start.elapsed() < DEADLINE, "the old listener never closed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("listen again on {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.kill();
    }
}

fn chunk(text: &'static str) -> Result<Frame<Bytes>, Infallible> {
    Ok(Frame::data(Bytes::from_static(text.as_bytes())))
}

/// Polls `check` until it holds or the deadline passes.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An origin that answers "ok" only once `m` requests are waiting at it, so a round of `m`
/// concurrent requests needs `m` connections at once.
async fn held_origin(m: usize) -> Origin {
    let barrier = Arc::new(Barrier::new(m));
    Origin::start(handler(move |_req| {
        let barrier = Arc::clone(&barrier);
        async move {
            barrier.wait().await;
            Response::new(body::full("ok"))
        }
    }))
    .await
}

fn settings(protocol: Protocol) -> ConnSettings {
    ConnSettings::new(protocol, ConnectTimeout(Duration::from_secs(2)))
}

fn get(conns: &Connections, path: &'static str) -> Request<Body> {
    let uri = conns
        .request_uri(PathAndQuery::from_static(path))
        .expect("a static path makes a valid URI");
    let mut req = Request::new(body::empty());
    *req.uri_mut() = uri;
    req.headers_mut()
        .insert(http::header::HOST, "client.example".parse().expect("host"));
    req
}

async fn text(response: Response<super::PooledBody>) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("the response body arrives whole")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Sends `GET path` and reads the whole body.
async fn fetch(conns: &Connections, path: &'static str) -> String {
    let response = conns
        .send(get(conns, path))
        .await
        .expect("the origin answers");
    text(response).await
}

fn ready_idle(conns: &Connections) -> usize {
    match &conns.kind {
        Kind::Http1(pool) => pool.ready_count(),
        Kind::Http2(_) => 0,
    }
}

fn h2_open(conns: &Connections) -> bool {
    match &conns.kind {
        Kind::Http1(_) => false,
        Kind::Http2(shared) => shared.iter().any(super::http2::Shared::is_open),
    }
}

// --- HTTP/1.1 ---

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let origin = Origin::ok().await;
    let conns = Connections::new(origin.addr, settings(Protocol::Http1));
    for _ in 0..20 {
        assert_eq!(fetch(&conns, "/").await, "ok");
    }
    assert_eq!(origin.accepted(), 1, "one keep-alive connection for all");
    assert_eq!(conns.idle_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_open_one_connection_each_then_reuse_them() {
    const M: usize = 8;
    let origin = held_origin(M).await;
    let conns = Arc::new(Connections::new(origin.addr, settings(Protocol::Http1)));
    for round in 0..3 {
        let requests: Vec<_> = (0..M)
            .map(|_| {
                let conns = Arc::clone(&conns);
                tokio::spawn(async move { fetch(&conns, "/").await })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.expect("request task"), "ok");
        }
        assert_eq!(
            origin.accepted(),
            M,
            "round {round}: M connections, no more"
        );
        assert_eq!(conns.idle_count(), M, "round {round}: all back in the pool");
    }
}

#[tokio::test]
async fn the_upstream_sees_origin_form_and_the_forwarded_host() {
    let origin = Origin::start(handler(|req: Request<Incoming>| async move {
        // hyper's server keeps an absolute-form request target in the URI.
        let line = format!(
            "{} {} {:?} host={}",
            req.method(),
            req.uri(),
            req.version(),
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("-")
        );
        Response::new(body::full(line))
    }))
    .await;
    let conns = Connections::new(origin.addr, settings(Protocol::Http1));
    assert_eq!(
        fetch(&conns, "/a/b?q=1").await,
        "GET /a/b?q=1 HTTP/1.1 host=client.example"
    );
}

#[tokio::test]
async fn an_empty_body_gives_the_connection_back_at_once() {
    let origin = Origin::start(handler(|_req| async {
        let mut r = Response::new(body::empty());
        *r.status_mut() = http::StatusCode::NO_CONTENT;
        r
    }))
    .await;
    let conns = Connections::new(origin.addr, settings(Protocol::Http1));
    let response = conns.send(get(&conns, "/")).await.expect("204");
    assert!(response.body().is_end_stream());
    assert_eq!(conns.idle_count(), 1, "back before the body is even polled");
    drop(response);
    conns.send(get(&conns, "/")).await.expect("204 again");
    assert_eq!(origin.accepted(), 1);
}

#[tokio::test]
async fn connection_close_responses_are_not_reused() {
    let origin = Origin::start(handler(|_req| async {
        let mut r = Response::new(body::full("bye"));
        r.headers_mut()
            .insert(http::header::CONNECTION, "close".parse().expect("header"));
        r
    }))
    .await;
    let conns = Connections::new(origin.addr, settings(Protocol::Http1));
    for _ in 0..5 {
        assert_eq!(fetch(&conns, "/").await, "bye");
    }
    assert_eq!(origin.accepted(), 5, "a new connection per request");
}

/// Reads one request head (no body) from `reader`; false at end of stream.
fn read_head(reader: &mut impl BufRead) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line == "\r\n" => return true,
            Ok(_) => {}
        }
    }
}

/// A plain-socket origin on its own thread, so nothing it does depends on the test's runtime.
/// It answers "first" on one connection, keeps it open (keep-alive as far as the client can
/// tell), and closes it while idle when told to: `before_close` runs, the socket closes, then
/// `closed` says so. The next connection gets "again".
struct ClosingOrigin {
    addr: SocketAddr,
    close: std::sync::mpsc::Sender<()>,
    closed: std::sync::mpsc::Receiver<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ClosingOrigin {
    fn start(before_close: impl FnOnce() + Send + 'static) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let (close, close_rx) = std::sync::mpsc::channel::<()>();
        let (closed_tx, closed) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut before_close = Some(before_close);
            for answer in [b"first", b"again"] {
                let (stream, _) = listener.accept().expect("accept");
                let mut reader = BufReader::new(&stream);
                if read_head(&mut reader) {
                    let mut w = &stream;
                    w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
                        .and_then(|()| w.write_all(answer))
                        .expect("write the response");
                    if let Some(before_close) = before_close.take() {
                        close_rx.recv().expect("the test says when");
                        before_close();
                        drop(reader);
                        drop(stream);
                        closed_tx.send(()).expect("the test waits");
                    }
                }
            }
        });
        ClosingOrigin {
            addr,
            close,
            closed,
            thread,
        }
    }

    /// Sends the first request, waits until its connection is idle and ready in the pool, then
    /// has the origin close it; returns once the origin has.
    async fn close_an_idle_connection(&self) -> Connections {
        let conns = Connections::new(self.addr, settings(Protocol::Http1));
        assert_eq!(fetch(&conns, "/").await, "first");
        eventually("the connection is idle and ready", || {
            ready_idle(&conns) == 1
        })
        .await;
        self.close.send(()).expect("origin listens");
        self.closed.recv().expect("origin closed the connection");
        conns
    }

    /// Asserts the next request goes out on a new connection rather than failing, then waits
    /// for the origin thread (it answers once per connection and needs nothing from the
    /// runtime).
    async fn assert_next_request_uses_a_new_connection(self, conns: &Connections) {
        let again = conns
            .send(get(conns, "/"))
            .await
            .expect("sent on a new connection, not an error");
        assert_eq!(text(again).await, "again");
        self.thread.join().expect("origin thread");
    }
}

/// The race the legacy client's `retry_canceled_requests` covered: the endpoint closed an
/// idle keep-alive connection, the runtime has seen the close and queued the connection's
/// task, but a request is handed to the connection before that task runs. hyper gives the
/// unsent request back, and it must go out again on a new connection.
///
/// Staged on the test's single thread: the origin first signals on a side channel the test
/// task waits on, then closes the connection; the thread is blocked until both happened, so
/// one poll of the I/O driver wakes the test task first and the connection's task second.
#[tokio::test]
async fn a_request_handed_to_a_connection_the_endpoint_just_closed_is_resent() {
    use tokio::io::AsyncReadExt;

    let (side_std, side_origin) = std::os::unix::net::UnixStream::pair().expect("side channel");
    side_std.set_nonblocking(true).expect("nonblocking");
    let origin =
        ClosingOrigin::start(move || (&side_origin).write_all(b"!").expect("side channel"));

    let mut side = tokio::net::UnixStream::from_std(side_std).expect("register side channel");
    let conns = origin.close_an_idle_connection().await;
    // Loopback delivers the FIN as the origin closes; this margin only guards against a slow
    // kernel. The runtime's one thread stays blocked, so nothing in it has seen anything yet.
    std::thread::sleep(Duration::from_millis(50));
    let mut signal = [0u8; 1];
    side.read_exact(&mut signal).await.expect("side channel");
    assert_eq!(
        ready_idle(&conns),
        1,
        "the connection's task has not run yet"
    );
    origin
        .assert_next_request_uses_a_new_connection(&conns)
        .await;
}

/// The endpoint closed an idle connection a while ago, but the runtime's I/O driver has not
/// looked since (a busy runtime polls it only now and then): the close sits unseen. Sent
/// right away, the request would be written to the dead socket and fail as a reset. A
/// connection idle this long is re-checked first (`RECHECK_AFTER`).
#[tokio::test]
async fn a_long_idle_connection_whose_close_is_still_unseen_is_not_written_to() {
    let origin = ClosingOrigin::start(|| {});
    let conns = origin.close_an_idle_connection().await;
    // The runtime's one thread stays blocked past `RECHECK_AFTER`, so nothing in it has seen
    // the close when the next request is sent.
    std::thread::sleep(super::http1::RECHECK_AFTER + Duration::from_millis(100));
    assert_eq!(ready_idle(&conns), 1, "the pool has not noticed the close");
    origin
        .assert_next_request_uses_a_new_connection(&conns)
        .await;
}

#[tokio::test]
async fn an_endpoint_closing_idle_connections_costs_no_error() {
    // Answers each connection's first request, then closes it (no `Connection: close`).
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let origin = tokio::spawn({
        let accepted = Arc::clone(&accepted);
        async move {
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
            loop {
                let (stream, _) = listener.accept().await.expect("accept");
                accepted.fetch_add(1, Ordering::SeqCst);
                let mut stream = tokio::io::BufStream::new(stream);
                let mut line = String::new();
                while stream.read_line(&mut line).await.is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                // Errors only mean the client went away first.
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = stream.flush().await;
            }
        }
    });
    let conns = Connections::new(addr, settings(Protocol::Http1));
    for _ in 0..10 {
        assert_eq!(fetch(&conns, "/").await, "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 10);
    origin.abort();
}

#[tokio::test]
async fn a_body_dropped_midway_closes_its_connection() {
    let origin = Origin::start(handler(|req: Request<Incoming>| async move {
        if req.uri().path() == "/endless" {
            // One chunk, then nothing until the client gives up.
            let chunks = stream::once(async { chunk("part") }).chain(stream::pending());
            Response::new(body::streaming(StreamBody::new(chunks)))
        } else {
            Response::new(body::full("ok"))
        }
    }))
    .await;
    let conns = Connections::new(origin.addr, settings(Protocol::Http1));
    let response = conns.send(get(&conns, "/endless")).await.expect("head");
    let mut body = response.into_body();
    let first = body
        .frame()
        .await
        .expect("a frame")
        .expect("no error")
        .into_data()
        .expect("data");
    assert_eq!(&first[..], b"part");
    drop(body);
    assert_eq!(
        conns.idle_count(),
        0,
        "a half-read connection is not reused"
    );
    eventually("the origin sees the connection closed", || {
        origin.ended() == 1
    })
    .await;
    assert_eq!(fetch(&conns, "/").await, "ok");
    assert_eq!(
        origin.accepted(),
        2,
        "the next request used a new connection"
    );
}

/// An upstream may answer before it has read the whole request body (an early 413, say);
/// the connection then stays busy until the upload ends, which may take long. A request
/// that finds only such a connection in the pool waits a short grace, then opens its own.
#[tokio::test]
async fn a_connection_still_uploading_does_not_hold_up_the_next_request() {
    let held = Arc::new(Mutex::new(Vec::new()));
    let origin = Origin::start(handler({
        let held = Arc::clone(&held);
        move |req: Request<Incoming>| {
            let held = Arc::clone(&held);
            async move {
                if req.uri().path() == "/early" {
                    // Keep the request body open (unread) and answer at once.
                    held.lock().expect("held lock").push(req.into_body());
                    Response::new(body::full("early"))
                } else {
                    Response::new(body::full("ok"))
                }
            }
        }
    }))
    .await;
    let conns = Connections::new(origin.addr, settings(Protocol::Http1));
    let mut upload = get(&conns, "/early");
    *upload.method_mut() = http::Method::POST;
    let chunks = stream::once(async { chunk("some") }).chain(stream::pending());
    *upload.body_mut() = body::streaming(StreamBody::new(chunks));
    let early = conns.send(upload).await.expect("the early answer");
    assert_eq!(text(early).await, "early");
    assert_eq!(conns.idle_count(), 1, "back in the pool, still uploading");

    let started = Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(5), fetch(&conns, "/"))
        .await
        .expect("the next request does not wait for the upload");
    assert_eq!(next, "ok");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(origin.accepted(), 2, "it opened its own connection");
}

#[tokio::test]
async fn idle_connections_expire() {
    let origin = Origin::ok().await;
    let conns = Connections::new(origin.addr, settings(Protocol::Http1));
    assert_eq!(fetch(&conns, "/").await, "ok");
    assert_eq!(conns.idle_count(), 1);
    conns.sweep(Instant::now() + Duration::from_secs(60));
    assert_eq!(
        conns.idle_count(),
        1,
        "60 s idle is within the 90 s default"
    );
    conns.sweep(Instant::now() + Duration::from_secs(91));
    assert_eq!(conns.idle_count(), 0, "the sweep closes it");
    eventually("the origin sees the connection closed", || {
        origin.ended() == 1
    })
    .await;

    // A checkout evicts expired connections too (here with a very short timeout).
    let short = ConnSettings {
        idle_timeout: Duration::from_millis(20),
        ..settings(Protocol::Http1)
    };
    let conns = Connections::new(origin.addr, short);
    assert_eq!(fetch(&conns, "/").await, "ok");
    let returned = Instant::now();
    eventually("the idle timeout passes", || {
        returned.elapsed() > Duration::from_millis(40)
    })
    .await;
    assert_eq!(fetch(&conns, "/").await, "ok");
    assert_eq!(origin.accepted(), 3, "the expired connection was not used");
    eventually("the origin sees the expired one closed", || {
        origin.ended() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_keeps_at_most_max_idle() {
    const M: usize = 4;
    let origin = held_origin(M).await;
    let conns = Arc::new(Connections::new(
        origin.addr,
        ConnSettings {
            max_idle: 2,
            ..settings(Protocol::Http1)
        },
    ));
    let requests: Vec<_> = (0..M)
        .map(|_| {
            let conns = Arc::clone(&conns);
            tokio::spawn(async move { fetch(&conns, "/").await })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.expect("request task"), "ok");
    }
    assert_eq!(origin.accepted(), M);
    assert_eq!(conns.idle_count(), 2);
    eventually("the extra connections are closed", || {
        origin.ended() == M - 2
    })
    .await;
}

#[tokio::test]
async fn dropping_the_connections_closes_idle_ones_and_bodies_in_flight_do_not_return() {
    let origin = Origin::start(handler(|req: Request<Incoming>| async move {
        if req.uri().path() == "/slow" {
            let chunks = stream::once(async { chunk("a") }).chain(stream::once(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                chunk("b")
            }));
            Response::new(body::streaming(StreamBody::new(chunks)))
        } else {
            Response::new(body::full("ok"))
        }
    }))
    .await;
    let conns = Connections::new(origin.addr, settings(Protocol::Http1));
    let slow = conns.send(get(&conns, "/slow")).await.expect("head");
    assert_eq!(fetch(&conns, "/").await, "ok");
    assert_eq!(
        origin.accepted(),
        2,
        "the slow body keeps its connection busy"
    );
    assert_eq!(conns.idle_count(), 1);
    // The endpoint leaves: its backend, and with it the pool, goes away.
    drop(conns);
    eventually("the idle connection is closed", || origin.ended() == 1).await;
    // The body in flight still streams to its end, then its connection closes too.
    assert_eq!(text(slow).await, "ab");
    eventually("the streamed one is closed after its body", || {
        origin.ended() == 2
    })
    .await;
}

/// A request body fed chunk by chunk from the test.
fn fed_body() -> (futures::channel::mpsc::UnboundedSender<&'static str>, Body) {
    let (feed, chunks) = futures::channel::mpsc::unbounded::<&'static str>();
    let frames = chunks.map(chunk);
    (feed, body::streaming(StreamBody::new(frames)))
}

/// A response body read in another task than the one that sent the request, across a pause
/// in the origin's body, gives its connection back for reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_read_in_another_task_gives_its_connection_back() {
    let origin = Origin::start(handler(|_req| async {
        let chunks = stream::once(async { chunk("a") }).chain(stream::once(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            chunk("b")
        }));
        Response::new(body::streaming(StreamBody::new(chunks)))
    }))
    .await;
    let conns = Arc::new(Connections::new(origin.addr, settings(Protocol::Http1)));
    for _ in 0..3 {
        let response = conns.send(get(&conns, "/")).await.expect("head");
        let read = tokio::spawn(text(response));
        assert_eq!(read.await.expect("reader task"), "ab");
    }
    assert_eq!(
        origin.accepted(),
        1,
        "given back after each body, and reused"
    );
}

/// An origin that answers before it has read the request body; the client sends the rest of
/// the body only after the response head, and reads no response body meanwhile. The upload
/// must still reach the origin.
#[tokio::test]
async fn an_upload_answered_early_goes_on_while_nobody_reads_the_response() {
    let received = Arc::new(Mutex::new(None::<String>));
    let origin = Origin::start(handler({
        let received = Arc::clone(&received);
        move |req: Request<Incoming>| {
            let received = Arc::clone(&received);
            async move {
                tokio::spawn(async move {
                    let bytes = req.into_body().collect().await.map(|b| b.to_bytes());
                    let text = bytes.map(|b| String::from_utf8_lossy(&b).into_owned());
                    *received.lock().expect("received lock") =
                        Some(text.unwrap_or_else(|e| format!("failed: {e}")));
                });
                Response::new(body::full("early"))
            }
        }
    }))
    .await;
    let conns = Connections::new(origin.addr, settings(Protocol::Http1));
    let (feed, upload) = fed_body();
    feed.unbounded_send("one,").expect("feed");
    let mut req = get(&conns, "/early");
    *req.method_mut() = http::Method::POST;
    *req.body_mut() = upload;
    let early = conns.send(req).await.expect("the early answer");
    feed.unbounded_send("two,").expect("feed");
    feed.unbounded_send("three").expect("feed");
    drop(feed);
    eventually("the origin has the whole body", || {
        received.lock().expect("received lock").is_some()
    })
    .await;
    assert_eq!(
        received.lock().expect("received lock").as_deref(),
        Some("one,two,three")
    );
    assert_eq!(text(early).await, "early");
    assert_eq!(
        fetch(&conns, "/").await,
        "early",
        "the connection is reused"
    );
    assert_eq!(origin.accepted(), 1);
}

/// A streamed request body echoed back as it arrives: each chunk's echo is read before the
/// next chunk is sent.
#[tokio::test]
async fn a_streamed_upload_and_its_echo_flow_together() {
    let origin = Origin::start(handler(|req: Request<Incoming>| async move {
        Response::new(body::streaming(req.into_body()))
    }))
    .await;
    let conns = Connections::new(origin.addr, settings(Protocol::Http1));
    let (feed, upload) = fed_body();
    let mut req = get(&conns, "/echo");
    *req.method_mut() = http::Method::POST;
    *req.body_mut() = upload;
    feed.unbounded_send("ping").expect("feed");
    let response = tokio::time::timeout(DEADLINE, conns.send(req))
        .await
        .expect("the head in time")
        .expect("the head");
    let mut echo = response.into_body();
    for (sent, next) in [("ping", Some("pong")), ("pong", None)] {
        let frame = tokio::time::timeout(DEADLINE, echo.frame())
            .await
            .expect("the echo in time")
            .expect("a frame")
            .expect("no error");
        assert_eq!(frame.into_data().expect("data"), sent.as_bytes());
        match next {
            Some(next) => feed.unbounded_send(next).expect("feed"),
            None => feed.close_channel(),
        }
    }
    let end = tokio::time::timeout(DEADLINE, echo.frame())
        .await
        .expect("the end in time");
    assert!(matches!(end, None | Some(Ok(_))), "the echo ends cleanly");
}

/// The sweep forgets idle connections the endpoint closed.
#[tokio::test]
async fn the_sweep_forgets_idle_connections_the_endpoint_closed() {
    let origin = Origin::ok().await;
    let conns = Connections::new(origin.addr, settings(Protocol::Http1));
    assert_eq!(fetch(&conns, "/").await, "ok");
    assert_eq!(conns.idle_count(), 1);
    origin.kill();
    eventually("the sweep drops the closed connection", || {
        conns.sweep(Instant::now());
        conns.idle_count() == 0
    })
    .await;
}

// --- h2c ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_requests_share_one_connection_and_survive_a_restart() {
    const M: usize = 20;
    let barrier = Arc::new(Barrier::new(M));
    let origin = Origin::start(handler({
        let barrier = Arc::clone(&barrier);
        move |req: Request<Incoming>| {
            let barrier = Arc::clone(&barrier);
            async move {
                if req.uri().path() == "/together" {
                    barrier.wait().await;
                }
                Response::new(body::full(format!(
                    "{:?} {}",
                    req.version(),
                    req.uri().authority().map_or("-", |a| a.as_str())
                )))
            }
        }
    }))
    .await;
    let conns = Arc::new(Connections::new(origin.addr, settings(Protocol::H2c)));
    let expected = format!("HTTP/2.0 {}", origin.addr);
    let requests: Vec<_> = (0..M)
        .map(|_| {
            let conns = Arc::clone(&conns);
            tokio::spawn(async move { fetch(&conns, "/together").await })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.expect("request task"), expected);
    }
    assert_eq!(origin.accepted(), 1, "one multiplexed connection for all");

    origin.restart().await;
    eventually("the connection's task notices the restart", || {
        !h2_open(&conns)
    })
    .await;
    assert_eq!(fetch(&conns, "/").await, expected, "a new connection");
    assert_eq!(origin.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_burst_after_a_restart_opens_one_connection() {
    let origin = Origin::ok().await;
    let conns = Arc::new(Connections::new(origin.addr, settings(Protocol::H2c)));
    assert_eq!(fetch(&conns, "/").await, "ok");
    origin.restart().await;
    // (A request written to the old connection before its task noticed the close would fail
    // as a reset; that race is the resilience layer's to retry, not this test's subject.)
    eventually("the connection's task notices the restart", || {
        !h2_open(&conns)
    })
    .await;
    // Connects are serialized: the first request of the burst connects, the rest wait.
    let requests: Vec<_> = (0..10)
        .map(|_| {
            let conns = Arc::clone(&conns);
            tokio::spawn(async move { conns.send(get(&conns, "/")).await.map(|_| ()) })
        })
        .collect();
    for request in requests {
        request
            .await
            .expect("request task")
            .expect("no request fails");
    }
    assert_eq!(origin.accepted(), 2, "one new connection for the burst");
}

// --- connect failures ---

#[tokio::test]
async fn a_refused_connect_is_a_connect_error() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("address");
    for protocol in [Protocol::Http1, Protocol::H2c] {
        let conns = Connections::new(closed, settings(protocol));
        let error = conns
            .send(get(&conns, "/"))
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(error, ConnError::Connect(_)) && error.is_connect(),
            "{protocol:?}: {error:?}"
        );
        assert!(error.to_string().contains("refused"), "readable: {error}");
    }
}

#[tokio::test]
async fn a_connect_that_hangs_times_out() {
    // A listener with a backlog of 0 that never accepts: once its queue is full, further
    // SYNs go unanswered and connects hang.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let addr = socket.local_addr().expect("address");
    let _listener = socket.listen(0).expect("listen");
    let mut fillers = Vec::new();
    let hangs = loop {
        assert!(fillers.len() < 16, "the accept queue never filled up");
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => fillers.push(stream),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break true,
            Err(e) => panic!("unexpected connect error: {e}"),
        }
    };
    assert!(hangs);
    let conns = Connections::new(
        addr,
        ConnSettings::new(Protocol::Http1, ConnectTimeout(Duration::from_millis(300))),
    );
    let started = Instant::now();
    let error = conns
        .send(get(&conns, "/"))
        .await
        .expect_err("the connect hangs");
    assert!(matches!(error, ConnError::ConnectTimeout(_)), "{error:?}");
    assert!(error.is_connect());
    assert_eq!(error.to_string(), "timed out after 300ms");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout cut it"
    );
}

#[test]
fn only_send_errors_happen_after_the_request_went_out() {
    let refused = ConnError::Connect(std::io::ErrorKind::ConnectionRefused.into());
    assert!(refused.is_connect());
    assert!(ConnError::ConnectTimeout(Duration::from_secs(1)).is_connect());
}
