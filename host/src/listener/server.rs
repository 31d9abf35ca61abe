//! Accepting connections: HTTP/1.1 and h2c (prior knowledge) on one listener, or HTTP/1.1 and
//! HTTP/2 over TLS (`tls`, ALPN), with graceful drain, within the listener's connection and
//! in-flight caps (`shedding`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::counted::Counted;
use super::shedding::ListenerBudget;
use super::shedding::Permit;
use super::timer::{self, CoarseTimer};
use super::tls::{TlsTerminator, HANDSHAKE_TIMEOUT};
use super::upgrade::Leases;
use super::Limits;
use crate::body::Body;
use crate::error::json_error;
use crate::headers;
use crate::tls::{ClientCertificate, PeerIdentity};

/// Serves `listener` with `handler` until `shutdown` flips to true, then stops accepting and
/// waits up to `drain` for in-flight requests. Returns how many connections were cut at the end.
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: &Limits,
    budget: Arc<ListenerBudget>,
    tls: Option<Arc<TlsTerminator>>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) -> usize
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send + 'static,
{
    let builder = connection_builder(limits);
    // TLS connections are served from their own task, after the handshake.
    let shared = Arc::new(builder.clone());
    let graceful = GracefulShutdown::new();
    let leases = Arc::new(Leases::new());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(error) => {
                // Usually EMFILE: back off instead of spinning, and log rate-limited.
                budget.accept_failed(&error);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // At the cap: close it at once. Accepting keeps the backlog moving, so the listener
        // sheds load rather than stalling.
        let Some(permit) = budget.connection() else {
            drop(stream);
            continue;
        };
        // Best effort: latency matters more than packet count for a proxy.
        let _ = stream.set_nodelay(true);
        // Shared with the upgraded connection, if this one upgrades (`listener::upgrade`).
        let permit = Arc::new(permit);
        let upgrades = Upgrades {
            leases: Arc::clone(&leases),
            permit: Arc::clone(&permit),
        };
        let open = budget.open_connection(tls.is_some());
        let Some(tls) = &tls else {
            let service =
                request_service(handler.clone(), Arc::clone(&budget), peer, None, upgrades);
            let stream = Counted::new(stream, open);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let conn = graceful.watch(conn.into_owned());
            let budget = Arc::clone(&budget);
            tokio::spawn(async move {
                if let Err(error) = conn.await {
                    let (kind, abuse) = classify(&*error);
                    budget.connection_error(kind, abuse, &error);
                }
                drop(permit);
            });
            continue;
        };
        // The handshake runs in the connection's task, never in this loop: a slow or silent
        // client holds only its own connection slot, for at most `HANDSHAKE_TIMEOUT`.
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
        let (handler, budget, builder) =
            (handler.clone(), Arc::clone(&budget), Arc::clone(&shared));
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    budget.handshake(handshake_failure(&error), Some(&error));
                    return;
                }
                Err(_) => {
                    budget.handshake("timeout", Some(&"no handshake within the timeout"));
                    return;
                }
            };
            budget.handshake("ok", None);
            let client_cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(PeerIdentity::from_leaf)
                .map(|identity| ClientCertificate(Arc::new(identity)));
            let service =
                request_service(handler, Arc::clone(&budget), peer, client_cert, upgrades);
            let stream = Counted::new(stream, open);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(conn.into_owned()).await {
                let (kind, abuse) = classify(&*error);
                budget.connection_error(kind, abuse, &error);
            }
            drop(permit);
        });
    }
    drop(listener);
    let open = graceful.count();
    let name = budget.name();
    tracing::info!(
        listener = name,
        open_connections = open,
        upgraded_connections = leases.open(),
        "stopped accepting; draining"
    );
    let deadline = tokio::time::Instant::now() + drain;
    let cut = match tokio::time::timeout_at(deadline, graceful.shutdown()).await {
        Ok(()) => 0,
        Err(_) => {
            tracing::warn!(
                listener = name,
                "drain timeout reached; closing remaining connections"
            );
            open
        }
    };
    // Upgraded connections left hyper's count at the upgrade; they get the same deadline.
    let tunnels = leases.drain(deadline).await;
    if tunnels > 0 {
        tracing::warn!(
            listener = name,
            upgraded_connections = tunnels,
            "drain timeout reached; closed upgraded connections"
        );
    }
    cut + tunnels
}

/// What a request that may upgrade needs: the listener's tunnels, and the connection's
/// permit, which an upgraded connection keeps holding after hyper lets go of it.
struct Upgrades {
    leases: Arc<Leases>,
    permit: Arc<Permit>,
}

/// The per-connection service: admits each request within the in-flight cap and hands it,
/// with the connection's verified client certificate if any, to `handler`.
fn request_service<H, F>(
    handler: H,
    requests: Arc<ListenerBudget>,
    peer: SocketAddr,
    client_cert: Option<ClientCertificate>,
    upgrades: Upgrades,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future: Send + 'static,
> + Send
       + 'static
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    service_fn(move |mut req: Request<Incoming>| {
        if let Some(cert) = &client_cert {
            req.extensions_mut().insert(cert.clone());
        }
        if req
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_some()
        {
            let lease = upgrades.leases.lease(&upgrades.permit);
            req.extensions_mut().insert(lease);
        }
        // The slot is held until the response head: while the request waits on its
        // body, its plugins or its upstream, which is what holds descriptors and memory.
        // The request's future is boxed: hyper keeps the service future in place, and
        // moving the pipeline's large future there cost ~12k instructions of memcpy per
        // request (callgrind, benches/README.md); a box moves one pointer.
        let admitted = match requests.request() {
            Some(slot) => Ok((Box::pin(handler(req, peer)), slot)),
            None => Err(overloaded(&req)),
        };
        async move {
            match admitted {
                Ok((handled, slot)) => {
                    let response = handled.await;
                    drop(slot);
                    response
                }
                Err(response) => Ok(response),
            }
        }
    })
}

/// Names a failed handshake for `gatehouse_tls_handshakes_total`.
fn handshake_failure(error: &std::io::Error) -> &'static str {
    use rustls::Error as Tls;
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return match error.kind() {
            std::io::ErrorKind::UnexpectedEof => "eof",
            _ => "io",
        };
    };
    match tls {
        Tls::NoCertificatesPresented => "client_cert_missing",
        Tls::InvalidCertificate(_) => "client_cert_invalid",
        Tls::PeerIncompatible(_) | Tls::NoApplicationProtocol => "incompatible",
        Tls::AlertReceived(_) => "alert_received",
        Tls::InvalidMessage(_)
        | Tls::InappropriateMessage { .. }
        | Tls::InappropriateHandshakeMessage { .. }
        | Tls::PeerMisbehaved(_) => "protocol",
        _ => "other",
    }
}

/// The fast answer past `limits.max_requests_in_flight`.
fn overloaded(req: &Request<Incoming>) -> Response<Body> {
    let request_id = headers::request_id(req.headers());
    json_error(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many requests in flight on this listener; retry later",
        &request_id,
    )
}

/// Names a connection error for `gatehouse_listener_events_total`, and says whether it is a
/// client's protocol abuse the connection was closed for (floods of resets, CONTINUATION,
/// malformed frames): those are logged rate-limited, the rest at debug.
fn classify(error: &(dyn std::error::Error + 'static)) -> (&'static str, bool) {
    use h2::Reason;
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if h2.is_io() {
                return ("io", false);
            }
            return match h2.reason() {
                Some(Reason::ENHANCE_YOUR_CALM) => ("h2_enhance_your_calm", true),
                Some(
                    Reason::PROTOCOL_ERROR
                    | Reason::FRAME_SIZE_ERROR
                    | Reason::COMPRESSION_ERROR
                    | Reason::FLOW_CONTROL_ERROR,
                ) => ("h2_protocol_error", true),
                _ => ("h2_other", false),
            };
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            if hyper.is_timeout() {
                return ("timeout", false);
            }
            if hyper.is_parse() || hyper.is_parse_too_large() {
                return ("http1_parse", false);
            }
        }
        if e.is::<std::io::Error>() {
            return ("io", false);
        }
        source = e.source();
    }
    ("other", false)
}

/// How long a client may take to send a request head (slowloris protection), give or take
/// one tick of the coarse timer.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Must run on the worker's runtime: the coarse timer's ticker is spawned there.
fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The pipeline enforces the configured limits with a JSON 431/414; hyper's own parser
    // limits sit above them as a backstop against unbounded buffering.
    let head_budget = limits.max_header_bytes + limits.max_uri_length + 4096;
    builder
        .http1()
        // Armed and disarmed around every request head: see `listener::timer`.
        .timer(CoarseTimer::start(timer::TICK))
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // One copy of a small response into the write buffer costs less than gathering it
        // for a vectored write (~0.7k instructions per request, callgrind); a large body's
        // extra copy is small beside the kernel's own.
        .writev(false)
        .max_headers(limits.max_header_count.saturating_mul(2).max(100))
        .max_buf_size(head_budget.max(8192) * 2);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(head_budget * 2).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams);
    builder
}
