//! A mock service as a running thing: a hyper server on 127.0.0.1 answering from
//! [`crate::catalog`], registered with the gateway's registry (heartbeat in the background),
//! stopped either politely (deregister, then close) or as a crash (close, lease left to lapse).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use gatehouse::discovery::registry::{InstanceSpec, Registration, RegistryClient};
use gatehouse::discovery::EndpointMeta;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{catalog, DemoError};

/// The four services of the demo, named as in `gatehouse.toml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// `GET /products/{id}`: name, brand, category, images. Unknown id → 404.
    ProductInfo,
    /// `GET /recommendations/{id}?top=N`: up to 10 related products.
    Recommendations,
    /// `GET /reviews/{id}`: average stars and a few reviews.
    Reviews,
    /// `GET /prices/{id}`: amount, currency and when it was read.
    Price,
}

impl ServiceKind {
    /// All four, in the order the demo starts them.
    pub const ALL: [ServiceKind; 4] = [
        ServiceKind::ProductInfo,
        ServiceKind::Recommendations,
        ServiceKind::Reviews,
        ServiceKind::Price,
    ];

    /// The service name in the gateway's config and registry.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::ProductInfo => "product-info",
            ServiceKind::Recommendations => "recommendations",
            ServiceKind::Reviews => "reviews",
            ServiceKind::Price => "price",
        }
    }

    /// The kind called `name`, if any.
    pub fn from_name(name: &str) -> Option<ServiceKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A running mock service. Dropping it closes the server (the watch sender goes away) and
/// deregisters in the background (best effort); [`MockService::stop`] does it and reports
/// the outcome.
pub struct MockService {
    kind: ServiceKind,
    addr: SocketAddr,
    registration: Registration,
    /// Sending `true` (or dropping it) ends the accept loop and every open connection.
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    /// Every `traceparent` received (W3C Trace Context), oldest first.
    traceparents: Traceparents,
}

/// The `traceparent` headers a mock service received.
type Traceparents = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

impl MockService {
    /// Listen on `listen` (port 0 for any), then register with the gateway's registry behind
    /// `registry`, renewing every `heartbeat`.
    pub async fn start(
        kind: ServiceKind,
        listen: SocketAddr,
        registry: &RegistryClient,
        heartbeat: Duration,
    ) -> Result<MockService, DemoError> {
        let bind_error = |source| DemoError::Bind {
            service: kind.name(),
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let (shutdown, stopped) = watch::channel(false);
        let traceparents = Traceparents::default();
        let server = tokio::spawn(serve(kind, listener, stopped, traceparents.clone()));
        let spec = InstanceSpec {
            id: format!("{}-{}", kind.name(), addr.port()),
            address: addr.ip(),
            port: addr.port(),
            meta: EndpointMeta {
                version: Some(env!("CARGO_PKG_VERSION").to_string()),
                ..EndpointMeta::default()
            },
        };
        let registration = match registry.register(kind.name(), spec, heartbeat).await {
            Ok(r) => r,
            Err(source) => {
                server.abort();
                return Err(DemoError::Registry {
                    service: kind.name(),
                    source,
                });
            }
        };
        Ok(MockService {
            kind,
            addr,
            registration,
            shutdown,
            server,
            traceparents,
        })
    }

    /// Which service this is.
    pub fn kind(&self) -> ServiceKind {
        self.kind
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `traceparent` headers received so far (a traced gateway sends one per call).
    pub fn traceparents(&self) -> Vec<String> {
        self.traceparents
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
    }

    /// Its instance id in the registry (`<service>-<port>`).
    pub fn id(&self) -> &str {
        self.registration.id()
    }

    /// Deregister, then close the listener and every connection. The server is closed
    /// even when deregistering fails (the lease then lapses on its own); the error says why.
    pub async fn stop(self) -> Result<(), DemoError> {
        let MockService {
            kind,
            registration,
            shutdown,
            server,
            ..
        } = self;
        let deregistered = registration.deregister().await;
        close(shutdown, server).await;
        deregistered.map_err(|source| DemoError::Registry {
            service: kind.name(),
            source,
        })
    }

    /// Close the listener and every connection without deregistering, as a crash would:
    /// the gateway sees refused connections until the lease lapses.
    pub async fn crash(self) {
        let MockService {
            registration,
            shutdown,
            server,
            ..
        } = self;
        registration.abandon();
        close(shutdown, server).await;
    }
}

async fn close(shutdown: watch::Sender<bool>, server: JoinHandle<()>) {
    // Receivers gone means the server already ended: nothing to tell.
    let _ = shutdown.send(true);
    // The server task only ends by the signal; a JoinError (panic) is already reported by
    // tokio and leaves nothing to clean up.
    let _ = server.await;
}

/// Accept until told to stop; each connection also ends when told, so a stopped service
/// really refuses the gateway's pooled keep-alive connections too.
async fn serve(
    kind: ServiceKind,
    listener: TcpListener,
    mut stopped: watch::Receiver<bool>,
    traceparents: Traceparents,
) {
    let mut connections = tokio::task::JoinSet::new();
    // The accept loop's own receiver is borrowed by `select!`; connections clone this one.
    let for_connections = stopped.clone();
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let mut stopped = for_connections.clone();
                let traceparents = traceparents.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let traceparent = req.headers().get("traceparent").and_then(|v| v.to_str().ok());
                        if let (Some(value), Ok(mut seen)) = (traceparent, traceparents.lock()) {
                            seen.push(value.to_owned());
                        }
                        async move { Ok::<_, Infallible>(handle(kind, req)) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        // A connection error only ends that connection.
                        _ = conn => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                });
            }
        }
    }
    drop(listener);
    connections.shutdown().await;
}

fn handle(kind: ServiceKind, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let user = req.headers().get("x-user-id").and_then(|v| v.to_str().ok());
    let (status, body) = if req.method() == http::Method::GET {
        catalog::answer(kind, req.uri().path(), req.uri().query(), user)
    } else {
        (
            405,
            serde_json::json!({ "error": "method_not_allowed", "message": "only GET" }),
        )
    };
    tracing::debug!(service = kind.name(), path = %req.uri(), status, "answered");
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
