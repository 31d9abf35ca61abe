//! The gateway's lifecycle: bind the listeners, serve, and drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{Admin, Readiness};
use crate::config::Config;
use crate::discovery::registry::Registry;
use crate::listener::redirect::{self, PlaintextMode};
use crate::listener::shedding::{self, ListenerBudget};
use crate::listener::tls::InboundTls;
use crate::listener::{server, workers};
use crate::proxy::pipeline::Pipeline;
use crate::reload::source::ConfigSource;
use crate::reload::Reloader;
use crate::routing::RouteError;
use crate::state::plugins::GatewayPlugins;
use crate::state::Snapshot;
use crate::telemetry::trace::Tracer;
use crate::telemetry::Metrics;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({listener} listener): {source}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("routes: {0}")]
    Routes(#[from] RouteError),
    #[error("plugins: {0}")]
    Plugins(#[from] crate::plugins::PluginsError),
    #[error("cannot start the public listener's workers: {0}")]
    Workers(#[source] std::io::Error),
    #[error("listen.tls: {0}")]
    Tls(#[from] crate::listener::tls::TlsError),
    #[error("{0}")]
    Tracing(#[from] crate::telemetry::trace::TraceError),
}

/// A started gateway. [`RunningGateway::shutdown`] stops it; dropping it stops it too, but
/// without waiting for the drain.
pub struct RunningGateway {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The plaintext listener beside a TLS public listener (`listen.http`).
    pub http_addr: Option<SocketAddr>,
    /// The built-in service registry (its REST API is on the admin listener).
    pub registry: Arc<Registry>,
    pub state: Arc<ArcSwap<Snapshot>>,
    /// Applies a new config (SIGHUP, `POST /admin/reload`, or directly).
    pub reloader: Arc<Reloader>,
    ready: Arc<Readiness>,
    stop: watch::Sender<bool>,
    public: workers::Workers,
    admin: JoinHandle<usize>,
    http: Option<JoinHandle<usize>>,
}

/// What a shutdown left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections still open when the drain timeout ran out (0 = clean drain).
    pub cut_connections: usize,
}

/// Binds the public and admin listeners and starts serving; reloads re-read the file the
/// config was loaded from ([`Config::source`]).
pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    let source = ConfigSource::of_loaded(&config);
    start_from(config, source, None).await
}

/// [`start`] with `config` read from `source` (at etcd revision `revision`): reloads re-read
/// that source, and `/admin/config` names it.
pub async fn start_from(
    config: Config,
    source: ConfigSource,
    revision: Option<i64>,
) -> Result<RunningGateway, StartError> {
    let bind = |listener: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind {
                listener,
                addr,
                source,
            })
    };
    let public_listener = bind("public", config.listen.public).await?;
    let admin_listener = bind("admin", config.listen.admin).await?;
    let http_listener = match &config.listen.http {
        Some(http) => Some(bind("http", http.addr).await?),
        None => None,
    };
    let public_addr = local_addr(&public_listener, config.listen.public);
    let admin_addr = local_addr(&admin_listener, config.listen.admin);
    let http_addr = http_listener
        .as_ref()
        .zip(config.listen.http.as_ref())
        .map(|(l, http)| local_addr(l, http.addr));
    for warning in config.warning_lines() {
        tracing::warn!("{warning}");
    }
    let tls = match &config.listen.tls {
        Some(policy) => Some(Arc::new(InboundTls::start(policy)?)),
        None => None,
    };
    let plaintext = config.listen.http.clone();
    let limits = config.limits.clone();
    let drain = config.shutdown.drain_timeout;
    let workers = config.listen.workers;

    let metrics = Arc::new(Metrics::default());
    let tracer = match &config.tracing {
        Some(policy) => Some(Tracer::start(policy, metrics.span_counters())?),
        None => None,
    };
    // The registry outlives config snapshots: instances stay registered across reloads.
    let registry = Registry::new(config.registry.clone());
    registry.spawn_evictions();
    registry.start_store().await;
    // Plugins' service calls read the state, so it exists (serving nothing) before the plugin
    // runtime starts; the first real snapshot then carries the routes' chains.
    let state = Arc::new(ArcSwap::from_pointee(Snapshot::starting(Arc::new(
        config.clone(),
    ))));
    let plugins = GatewayPlugins::start(&config, &state, &metrics).await?;
    let first = Snapshot::build(
        config,
        &registry,
        plugins.as_deref(),
        &state.load(),
        &metrics,
    )?;
    state.store(Arc::new(first));
    let reloader = Arc::new(Reloader::new(
        state.clone(),
        registry.clone(),
        plugins.clone(),
        tls.clone(),
        metrics.clone(),
        Arc::new(source),
        revision,
    ));
    let ready = Arc::new(Readiness::default());
    let (stop, stopped) = watch::channel(false);

    // Headroom for connections: the public listener's caps stay below the descriptor limit.
    let nofile = shedding::raise_nofile_limit();
    let budget = Arc::new(ListenerBudget::public(&limits, nofile, metrics.clone()));
    let pipeline = Pipeline::new(state.clone(), metrics.clone()).with_tracer(tracer.clone());
    let handler = {
        let pipeline = pipeline.clone();
        move |req, peer| pipeline.clone().handle(req, peer)
    };
    let terminator = tls.as_ref().map(|tls| Arc::clone(&tls.terminator));
    let public = public_listener
        .into_std()
        .and_then(|listener| {
            workers::spawn(
                listener,
                workers,
                &limits,
                &budget,
                terminator.as_ref(),
                handler,
                &stopped,
                drain,
            )
        })
        .map_err(StartError::Workers)?;
    let http = http_listener.zip(plaintext).map(|(listener, plaintext)| {
        let stopped = stopped.clone();
        let limits = limits.clone();
        match plaintext.mode {
            PlaintextMode::Redirect { status, port } => {
                let port = port.unwrap_or(public_addr.port());
                let budget = Arc::new(ListenerBudget::unbounded("http", Some(metrics.clone())));
                let handler = move |req: http::Request<hyper::body::Incoming>, _peer| async move {
                    Ok::<_, std::convert::Infallible>(redirect::redirect(&req, status, port))
                };
                tokio::spawn(async move {
                    server::serve(listener, &limits, budget, None, handler, stopped, drain).await
                })
            }
            // Served on the control runtime: the plaintext side is the minor one.
            PlaintextMode::Serve => {
                let budget = Arc::new(
                    ListenerBudget::public(&limits, nofile, metrics.clone()).named("http"),
                );
                let handler = move |req, peer| pipeline.clone().handle(req, peer);
                tokio::spawn(async move {
                    server::serve(listener, &limits, budget, None, handler, stopped, drain).await
                })
            }
        }
    });
    let admin_budget = Arc::new(ListenerBudget::unbounded("admin", Some(metrics.clone())));
    let admin_api = Admin {
        state: state.clone(),
        ready: ready.clone(),
        metrics,
        registry: registry.clone(),
        plugins,
        reloader: reloader.clone(),
        tls,
    };
    let admin = tokio::spawn(async move {
        let handler = move |req, peer| admin_api.clone().handle(req, peer);
        server::serve(
            admin_listener,
            &limits,
            admin_budget,
            None,
            handler,
            stopped,
            Duration::from_secs(1),
        )
        .await
    });

    ready.set(true);
    tracing::info!(%public_addr, %admin_addr, http_addr = ?http_addr, tls = terminator.is_some(), "gatehouse started");
    Ok(RunningGateway {
        public_addr,
        admin_addr,
        http_addr,
        registry,
        state,
        reloader,
        ready,
        stop,
        public,
        admin,
        http,
    })
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}

impl RunningGateway {
    /// Stops accepting, lets in-flight requests finish (up to `shutdown.drain_timeout`), and
    /// returns once both listeners are closed.
    pub async fn shutdown(self) -> ShutdownReport {
        self.ready.set(false);
        // Held blocking queries answer now, so they do not hold the admin drain.
        self.registry.close_watches();
        // Err only if every receiver is gone, i.e. both servers already stopped.
        let _ = self.stop.send(true);
        let cut_public = self.public.join().await;
        let cut_admin = self.admin.await.unwrap_or(0);
        let cut_http = match self.http {
            Some(http) => http.await.unwrap_or(0),
            None => 0,
        };
        tracing::info!("gatehouse stopped");
        ShutdownReport {
            cut_connections: cut_public + cut_admin + cut_http,
        }
    }
}
