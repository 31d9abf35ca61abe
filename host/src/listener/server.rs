//! Accepting connections: HTTP/1.1 and h2c (prior knowledge) on one listener, with graceful drain.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Limits;
use crate::body::Body;

/// Serves `listener` with `handler` until `shutdown` flips to true, then stops accepting and
/// waits up to `drain` for in-flight requests. Returns how many connections were cut at the end.
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: &Limits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    name: &'static str,
) -> usize
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send + 'static,
{
    let builder = connection_builder(limits);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(error) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(listener = name, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Best effort: latency matters more than packet count for a proxy.
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req| handler(req, peer));
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(listener = name, %peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        listener = name,
        open_connections = open,
        "stopped accepting; draining"
    );
    match tokio::time::timeout(drain, graceful.shutdown()).await {
        Ok(()) => 0,
        Err(_) => {
            tracing::warn!(
                listener = name,
                "drain timeout reached; closing remaining connections"
            );
            open
        }
    }
}

fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The pipeline enforces the configured limits with a JSON 431/414; hyper's own parser
    // limits sit above them as a backstop against unbounded buffering.
    let head_budget = limits.max_header_bytes + limits.max_uri_length + 4096;
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_headers(limits.max_header_count.saturating_mul(2).max(100))
        .max_buf_size(head_budget.max(8192) * 2);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(head_budget * 2).unwrap_or(u32::MAX))
        .max_concurrent_streams(1024);
    builder
}
