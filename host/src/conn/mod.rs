//! Connections to one endpoint: a keep-alive pool of HTTP/1.1 connections, or one shared
//! HTTP/2 connection (h2c, or h2 over TLS), per public listener worker. Each [`crate::balancing::Backend`] owns one, so
//! dropping a backend (its endpoint left the discovery set) closes its idle connections.
//!
//! A connection's task runs on the worker that opened it, and only that worker sends on it
//! (see [`Shards`]): a request never waits on another thread, and a worker that stops takes
//! only its own connections with it.
//!
//! This replaces hyper-util's legacy pooled client on the request path: there is no pool key
//! to hash (the backend *is* the key), no checkout future, and no task spawned per request to
//! return a connection. A task is spawned once per connection, to drive it; an HTTP/1.1
//! connection goes back to its pool when the response body ends ([`PooledBody`]).
//!
//! TLS ([`UpstreamTls`]) happens inside [`Target::connect`], between the TCP connect and the
//! HTTP handshake; the pool and the shared HTTP/2 connection hold only hyper's senders, which
//! do not depend on the transport. The transport stays a concrete type per connection
//! (plain `TcpStream` or rustls over it, each its own monomorphic hyper connection task), so
//! plaintext pays nothing for TLS being possible.

mod body;
mod http1;
mod http2;
#[cfg(test)]
mod tests;
pub mod tls;
mod upgrade;

use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use serde::Serialize;

use crate::body::Body;

pub use body::PooledBody;
pub use tls::{TlsFailure, UpstreamTls};
pub use upgrade::UpgradeRequest;

/// How often each service closes connections idle past their timeout. Checkouts and returns
/// evict too; this sweep is for endpoints that get no traffic at all.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// [`ConnSettings::max_response_head`] by default.
pub const DEFAULT_MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// hyper's HTTP/1.1 client refuses (panics on) a smaller read buffer.
const MIN_RESPONSE_HEAD: usize = 8192;
/// Which HTTP version the gateway speaks to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 with pooled keep-alive connections (over TLS too, ALPN `http/1.1`).
    Http1,
    /// HTTP/2 over TLS, agreed through ALPN `h2` (one multiplexed connection per endpoint).
    H2,
    /// HTTP/2 over cleartext with prior knowledge (one multiplexed connection per endpoint).
    H2c,
}

impl Protocol {
    /// HTTP/2 (`h2` or `h2c`), which has no HTTP/1.1 `Upgrade`.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::H2 | Protocol::H2c)
    }

    /// The config spelling: `http1`, `h2` or `h2c`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2 => "h2",
            Protocol::H2c => "h2c",
        }
    }
}

/// Establishing a connection to an endpoint: TCP connect, TLS handshake if any, and HTTP
/// handshake (`connect_timeout`, default 2 s; applied by this module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectTimeout(pub Duration);

/// How a service's endpoints are reached and how many idle connections each keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnSettings {
    /// The service's `protocol`. Default HTTP/1.1.
    pub protocol: Protocol,
    /// The service's `connect_timeout`; bounds the TCP connect, the TLS handshake and the
    /// HTTP handshake. Default 2 s.
    pub connect_timeout: ConnectTimeout,
    /// `[services.tls]`: TLS to every endpoint. Default none (plaintext).
    pub tls: Option<UpstreamTls>,
    /// Idle HTTP/1.1 connections kept per endpoint and worker; returning one more closes the
    /// oldest. Default 256.
    pub max_idle: usize,
    /// An HTTP/1.1 connection idle this long is closed. Default 90 s.
    pub idle_timeout: Duration,
    /// The public listener's workers (`listen.workers`), each with connections of its own.
    /// Default 1.
    pub workers: usize,
    /// Largest response head read from the endpoint (`limits.max_response_header_bytes`):
    /// the HTTP/1.1 read buffer (a head that does not fit is a parse error, so a 502) and
    /// the HTTP/2 header list size. Default 64 KiB; never below hyper's 8 KiB minimum.
    pub max_response_head: usize,
}

impl ConnSettings {
    /// `protocol` and `connect_timeout` from the service's config, default idle limits.
    pub fn new(protocol: Protocol, connect_timeout: ConnectTimeout) -> Self {
        Self {
            protocol,
            connect_timeout,
            tls: None,
            max_idle: 256,
            idle_timeout: Duration::from_secs(90),
            workers: 1,
            max_response_head: DEFAULT_MAX_RESPONSE_HEAD,
        }
    }
}

impl Default for ConnSettings {
    fn default() -> Self {
        Self::new(Protocol::Http1, ConnectTimeout(Duration::from_secs(2)))
    }
}

/// Why a request got no response head from an endpoint. The caller adds the service and the
/// endpoint address.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Connect(#[source] io::Error),
    #[error("timed out after {}", humantime::format_duration(*.0))]
    ConnectTimeout(Duration),
    /// The TLS handshake failed: an untrusted or mismatched certificate, a refused client
    /// certificate, no common protocol. Nothing was sent.
    #[error("TLS handshake with {server_name} failed: {reason}")]
    Tls {
        /// The name verified (and sent as SNI unless it is an IP address).
        server_name: String,
        reason: TlsFailure,
    },
    /// `protocol = "h2"`, but the endpoint did not choose HTTP/2 through ALPN.
    #[error("the endpoint did not agree to HTTP/2 over TLS (ALPN offered \"h2\", it chose {}); use protocol = \"http1\" for it", .chosen.as_deref().map_or_else(|| "none".to_owned(), |p| format!("{p:?}")))]
    NoH2 { chosen: Option<String> },
    #[error("HTTP handshake failed: {}", Chain(.0))]
    Handshake(#[source] hyper::Error),
    /// A new connection closed before the request was written.
    #[error("the connection closed before the request was sent: {}", Chain(.0))]
    Closed(#[source] hyper::Error),
    /// The request was (at least partly) sent; the connection failed before a response head.
    #[error("{}", Chain(.0))]
    Send(#[source] hyper::Error),
    /// The response head was bigger than [`ConnSettings::max_response_head`]; it is dropped
    /// (and its connection closed), never relayed.
    #[error("response head of {bytes} bytes exceeds the limit of {max}")]
    HeadTooLarge { bytes: usize, max: usize },
    /// A 1xx as the final response on a pooled connection: hyper skips 100 and 103, but
    /// returns a 101 even though `Upgrade` only goes out on dedicated connections
    /// ([`UpgradeRequest`]). Relayed, it would tell the client the protocol switched; its
    /// connection is closed instead.
    #[error("the endpoint answered {0} as its final response")]
    Informational(http::StatusCode),
    /// An upgrade ([`UpgradeRequest`]) to a service spoken to over HTTP/2 (h2 or h2c), which
    /// cannot carry HTTP/1.1's `Upgrade` (config refuses `upgrades` on such routes; a run-time
    /// split can still point one there). Nothing was sent.
    #[error("an HTTP/1.1 upgrade cannot be sent to a service spoken to over HTTP/2")]
    UpgradeOverHttp2,
    /// The endpoint switched to another protocol than the request's `Upgrade` named.
    #[error("the endpoint switched protocols to {got} when asked for {asked}")]
    UpgradeMismatch { asked: String, got: String },
}

impl ConnError {
    /// Whether the request certainly never reached the endpoint (so any method may be retried
    /// elsewhere). [`ConnError::Send`], [`ConnError::HeadTooLarge`] and
    /// [`ConnError::Informational`] happen after the request went out.
    pub fn is_connect(&self) -> bool {
        !matches!(
            self,
            ConnError::Send(_)
                | ConnError::HeadTooLarge { .. }
                | ConnError::Informational(_)
                | ConnError::UpgradeMismatch { .. }
        )
    }
}

/// Displays a hyper error with its causes: hyper's own `Display` names only the kind
/// ("connection error"), and the useful part ("Connection reset by peer") is its source.
struct Chain<'a>(&'a hyper::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// The connections to one endpoint. Sending needs a tokio runtime; building does not.
pub struct Connections {
    kind: Kind,
}

enum Kind {
    Http1(Arc<http1::Pool>),
    /// h2c, or h2 over TLS.
    Http2(Shards<http2::Shared>),
}

/// One `T` per public listener worker (see `crate::worker`), picked by the calling
/// thread. Threads that are not workers (tests, anything off the request path) share the
/// first.
struct Shards<T>(Box<[T]>);

impl<T> Shards<T> {
    fn new(workers: usize, make: impl FnMut(usize) -> T) -> Self {
        Shards((0..workers.max(1)).map(make).collect())
    }

    /// The calling worker's shard.
    fn own(&self) -> &T {
        let worker = crate::worker::current().unwrap_or(0);
        &self.0[worker % self.0.len()]
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Http1(pool) => f
                .debug_struct("Connections")
                .field("protocol", &Protocol::Http1)
                .field("idle", &pool.idle_count())
                .finish(),
            Kind::Http2(_) => f
                .debug_struct("Connections")
                .field("protocol", &"HTTP/2")
                .finish(),
        }
    }
}

impl Connections {
    pub fn new(addr: SocketAddr, settings: ConnSettings) -> Self {
        let target = Target::new(addr, &settings);
        let kind = match settings.protocol {
            Protocol::Http1 => Kind::Http1(Arc::new(http1::Pool::new(target, &settings))),
            Protocol::H2 | Protocol::H2c => Kind::Http2(Shards::new(settings.workers, |_| {
                http2::Shared::new(target.clone())
            })),
        };
        Self { kind }
    }

    /// The URI to send for `path`. HTTP/1.1 gets origin-form (`/path?query`): hyper writes
    /// the URI as given, and the upstream must see `GET /path?query HTTP/1.1` with the Host
    /// header forwarded from the client. HTTP/2 gets `http://ip:port/path?query` (h2c) or
    /// `https://authority/path?query` (h2 over TLS; the authority is the configured
    /// `server_name` with the port, or `ip:port`), where `:scheme` and `:authority` come from.
    pub fn request_uri(&self, path: PathAndQuery) -> Result<Uri, http::Error> {
        match &self.kind {
            Kind::Http1(_) => Ok(Uri::from(path)),
            Kind::Http2(shared) => {
                let target = shared.own().target();
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(if target.tls.is_some() {
                    Scheme::HTTPS
                } else {
                    Scheme::HTTP
                });
                parts.authority = Some(target.authority.clone());
                parts.path_and_query = Some(path);
                Ok(Uri::from_parts(parts)?)
            }
        }
    }

    /// The endpoint as a request names it: the TLS `server_name` with the port if one is
    /// configured, otherwise `ip:port` (the `Host` of health probes, HTTP/2's `:authority`).
    pub fn authority(&self) -> &Authority {
        match &self.kind {
            Kind::Http1(pool) => &pool.target().authority,
            Kind::Http2(shared) => &shared.own().target().authority,
        }
    }

    /// Sends `req` (its URI from [`Connections::request_uri`]) on an idle or new connection
    /// and waits for the response head. An idle connection the endpoint had closed is
    /// detected and the request resent on a new one, transparently, as long as it was never
    /// written. Cancel-safe: dropping the future closes the HTTP/1.1 connection it was using
    /// (its state is unknown), or resets its h2c stream.
    ///
    /// A request marked [`UpgradeRequest`] goes on a dedicated connection instead (see
    /// `conn::upgrade`), and may be answered `101`.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<PooledBody>, ConnError> {
        let upgrade = req.extensions().get::<UpgradeRequest>().is_some();
        let (response, max) = match &self.kind {
            // Boxed: a rare path, kept out of every pooled request's future.
            Kind::Http1(pool) if upgrade => (
                Box::pin(upgrade::send(pool.target(), req)).await?,
                pool.max_response_head(),
            ),
            Kind::Http2(_) if upgrade => return Err(ConnError::UpgradeOverHttp2),
            Kind::Http1(pool) => (pool.send(req).await?, pool.max_response_head()),
            Kind::Http2(shared) => {
                let shared = shared.own();
                (shared.send(req).await?, shared.max_response_head())
            }
        };
        // hyper's HTTP/1.1 read buffer bounds the head only roughly (a head that arrives in
        // one large read can pass it), so the limit is checked here exactly, as the request
        // side counts it. Dropping the response closes its HTTP/1.1 connection.
        let bytes = crate::headers::header_bytes(response.headers());
        if bytes > max {
            return Err(ConnError::HeadTooLarge { bytes, max });
        }
        Ok(response)
    }

    /// Closes idle connections past the idle timeout and forgets closed ones (the periodic
    /// sweep, see [`SWEEP_INTERVAL`]).
    pub fn sweep(&self, now: Instant) {
        if let Kind::Http1(pool) = &self.kind {
            pool.sweep(now);
        }
    }

    /// Idle HTTP/1.1 connections in the pool (0 for HTTP/2).
    pub fn idle_count(&self) -> usize {
        match &self.kind {
            Kind::Http1(pool) => pool.idle_count(),
            Kind::Http2(_) => 0,
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
struct Target {
    addr: SocketAddr,
    connect_timeout: Duration,
    /// At least [`MIN_RESPONSE_HEAD`].
    max_response_head: usize,
    /// The TLS settings and the name to verify, when the service uses TLS.
    tls: Option<(UpstreamTls, ServerName<'static>)>,
    /// See [`Connections::authority`].
    authority: Authority,
}

/// The HTTP handshake on a new transport, generic over it so that each transport gets its
/// own monomorphic connection task.
trait Handshake {
    type Sender;
    fn handshake<I>(
        self,
        io: TokioIo<I>,
    ) -> impl Future<
        Output = Result<
            (
                Self::Sender,
                impl Future<Output = Result<(), hyper::Error>> + Send + 'static,
            ),
            hyper::Error,
        >,
    >
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static;
}

impl Target {
    fn new(addr: SocketAddr, settings: &ConnSettings) -> Self {
        let tls = settings
            .tls
            .as_ref()
            .map(|tls| (tls.clone(), tls.server_name_for(addr)));
        let authority = settings
            .tls
            .as_ref()
            .and_then(|tls| tls.dns_name())
            .and_then(|name| Authority::try_from(format!("{name}:{}", addr.port())).ok())
            // A socket address always formats as a valid authority; the fallback is
            // unreachable.
            .or_else(|| Authority::try_from(addr.to_string()).ok())
            .unwrap_or_else(|| Authority::from_static("invalid"));
        Self {
            addr,
            connect_timeout: settings.connect_timeout.0,
            max_response_head: settings.max_response_head.max(MIN_RESPONSE_HEAD),
            tls,
            authority,
        }
    }

    /// Runs the TLS handshake (if any) and `handshake` on a new TCP connection, all of it
    /// within the connect timeout, and spawns the connection's driver: once per connection,
    /// it runs until the endpoint or the last sender closes it. Returns the sender.
    async fn connect<H: Handshake>(&self, handshake: H) -> Result<H::Sender, ConnError> {
        let connect = async {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(ConnError::Connect)?;
            // Small request heads must not wait for Nagle's algorithm (the legacy connector
            // set it too). Failing to set it costs latency, not correctness.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(endpoint = %self.addr, error = %e, "cannot set TCP_NODELAY");
            }
            match &self.tls {
                None => self.start(handshake, stream).await,
                Some((tls, server_name)) => {
                    let stream = tls.handshake(server_name, stream).await?;
                    self.start(handshake, stream).await
                }
            }
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(ConnError::ConnectTimeout(self.connect_timeout)),
        }
    }

    /// The HTTP handshake on `io`, then the connection's driver task.
    async fn start<H, I>(&self, handshake: H, io: I) -> Result<H::Sender, ConnError>
    where
        H: Handshake,
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, conn) = handshake
            .handshake(TokioIo::new(io))
            .await
            .map_err(ConnError::Handshake)?;
        let endpoint = self.addr;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%endpoint, %error, "upstream connection ended with an error");
            }
        });
        Ok(tx)
    }
}
