//! Real origin servers on 127.0.0.1:0 for the gateway to proxy to.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse::body::{self, Body};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// A running origin. It counts the connections it accepted and the ones that ended (closed
/// by the gateway, or failed). Dropping it, or `kill`, closes the listener and every
/// connection, like a crashed process; `restart` listens again on the same port.
pub struct Origin {
    pub addr: SocketAddr,
    handler: Handler,
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Origin {
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections that ended so far (not counting those `kill` cut).
    pub fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }

    /// Closes the listener and every connection.
    pub fn kill(&self) {
        for task in self.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
    }

    /// `kill`, then listen again on the same port with the same handler.
    pub async fn restart(&self) {
        self.kill();
        // The old listener closes when its aborted task is next polled.
        let start = Instant::now();
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    assert!(
                        start.elapsed() < Duration::from_secs(10),
                        "the old listener never closed"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("listen again on {}: {e}", self.addr),
            }
        };
        self.serve(listener);
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
                        // How a connection ends does not matter here, only that it did.
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
}

/// Starts an origin (HTTP/1.1 and h2c) whose every request is answered by `handler`.
pub async fn start<H, F>(handler: H) -> Origin
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let origin = Origin {
        addr: listener.local_addr().expect("origin addr"),
        handler: Arc::new(move |req| Box::pin(handler(req))),
        accepted: Arc::default(),
        ended: Arc::default(),
        tasks: Arc::default(),
    };
    origin.serve(listener);
    origin
}

/// An origin that answers with JSON describing the request: method, path, query, headers,
/// body length, HTTP version, and the origin's own name.
pub async fn echo(name: &'static str) -> Origin {
    start(move |req: Request<Incoming>| async move {
        let (parts, incoming) = req.into_parts();
        let body = incoming
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        let json = serde_json::json!({
            "origin": name,
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        let mut r = Response::new(body::full(json.to_string()));
        r.headers_mut()
            .insert("content-type", "application/json".parse().expect("header"));
        r.headers_mut()
            .insert("connection", "keep-alive".parse().expect("header"));
        r.headers_mut()
            .insert("keep-alive", "timeout=5".parse().expect("header"));
        r
    })
    .await
}

/// A response with this status and text body.
pub fn text(status: u16, text: &str) -> Response<Body> {
    let mut r = Response::new(body::full(Bytes::from(text.to_owned())));
    *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
    r
}

/// An address nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}
