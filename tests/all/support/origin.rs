//! Real origin servers on 127.0.0.1:0 for the gateway to proxy to.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use gatehouse::proxy::body::{self, Body};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running origin; aborted on drop.
pub struct Origin {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts an origin (HTTP/1.1 and h2c) whose every request is answered by `handler`.
pub async fn start<H, F>(handler: H) -> Origin
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Origin { addr, task }
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
