//! Config reload: re-read the config file, validate it whole, build a new snapshot (routes,
//! services, plugin chains) and swap it in atomically. Triggered by SIGHUP or
//! `POST /admin/reload`.
//!
//! Nothing is half-applied: a file that does not load, or that changes a setting only a restart
//! can change, leaves the running config untouched. In-flight requests finish on the snapshot
//! they started with; the old snapshot's discovery and health tasks stop when the last of them
//! is done.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::{self, Config, ConfigError};
use crate::discovery::registry::Registry;
use crate::listener::tls::{InboundTls, TlsError};
use crate::routing::{RouteError, RouteTarget};
use crate::state::plugins::GatewayPlugins;
use crate::state::Snapshot;

/// Why a reload was refused. The running config is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the gateway runs on the embedded default config, which has no file to re-read; start it with --config FILE to reload")]
    NoFile,
    /// The file does not load (syntax, types, validation): the message names file and line.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{fields} changed; only a restart applies that (nothing was applied)")]
    NeedsRestart { fields: String },
    #[error("the new config gives routes plugins, but none had plugins at start so the plugin runtime is not running; restart to add the first plugin chain (nothing was applied)")]
    PluginsNotRunning,
    #[error("routes: {0} (nothing was applied)")]
    Routes(#[from] RouteError),
    #[error("listen.tls: {0} (nothing was applied)")]
    Tls(#[from] TlsError),
    #[error("the reload task failed: {0}")]
    Task(String),
}

impl ReloadError {
    /// Whether the new config itself is at fault (400), rather than the running gateway's
    /// situation (409).
    pub fn is_bad_config(&self) -> bool {
        matches!(
            self,
            ReloadError::Config(_) | ReloadError::Routes(_) | ReloadError::Tls(_)
        )
    }
}

/// What a successful reload applied.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadSummary {
    pub source: String,
    pub services: usize,
    pub routes: usize,
}

/// Applies new configs to a running gateway, one at a time.
pub struct Reloader {
    state: Arc<ArcSwap<Snapshot>>,
    registry: Arc<Registry>,
    plugins: Option<Arc<GatewayPlugins>>,
    /// The public listener's TLS: `[listen.tls]` certificates and CA apply on reload.
    tls: Option<Arc<InboundTls>>,
    /// Where the new snapshots' services and plugins count.
    metrics: Arc<crate::telemetry::Metrics>,
    /// Serializes reloads (SIGHUP and the admin call may race).
    applying: Mutex<()>,
}

impl Reloader {
    pub fn new(
        state: Arc<ArcSwap<Snapshot>>,
        registry: Arc<Registry>,
        plugins: Option<Arc<GatewayPlugins>>,
        tls: Option<Arc<InboundTls>>,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Self {
        Reloader {
            state,
            registry,
            plugins,
            tls,
            metrics,
            applying: Mutex::new(()),
        }
    }

    /// Re-read the file the running config came from and apply it.
    pub async fn reload_file(&self) -> Result<ReloadSummary, ReloadError> {
        let source = self.state.load().config.source.clone();
        if source == config::EMBEDDED_SOURCE {
            return Err(ReloadError::NoFile);
        }
        let path = PathBuf::from(source);
        // Reading the file (and any plugin data files it grants) is blocking I/O.
        let loaded = tokio::task::spawn_blocking(move || config::load_file(&path))
            .await
            .map_err(|e| ReloadError::Task(e.to_string()))?;
        self.apply(loaded?)
    }

    /// Apply `config` if only reloadable settings changed. Must run inside the gateway's
    /// tokio runtime (the new services start their tasks there).
    pub fn apply(&self, config: Config) -> Result<ReloadSummary, ReloadError> {
        // A poisoned lock only means an earlier reload panicked; the state itself is whole.
        let _one_at_a_time = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.state.load_full();
        let changed = restart_only_changes(&current.config, &config);
        if !changed.is_empty() {
            return Err(ReloadError::NeedsRestart {
                fields: changed.join(", "),
            });
        }
        if self.plugins.is_none() && config.routes.iter().any(|r| !r.plugins.is_empty()) {
            return Err(ReloadError::PluginsNotRunning);
        }
        let summary = ReloadSummary {
            source: config.source.clone(),
            services: config.services.len(),
            routes: config.routes.len(),
        };
        if config.tracing != current.config.tracing {
            tracing::warn!("[tracing] changed: the new settings apply at the next restart");
        }
        let snapshot = Snapshot::build(
            config,
            &self.registry,
            self.plugins.as_deref(),
            &current,
            &self.metrics,
        )?;
        // Last of what can fail: new handshakes use the new certificates from here on.
        if let (Some(tls), Some(policy)) = (&self.tls, &snapshot.config.listen.tls) {
            tls.apply(policy)?;
        }
        // The file is the source of truth: run-time targets do not survive a reload.
        for route in current.config.routes.iter() {
            if route.target_set_at_run_time {
                let now = snapshot.config.routes.iter().find(|r| r.name == route.name);
                tracing::info!(route = %route.name, dropped = %route.target,
                    now = %now.map_or_else(|| "(route removed)".to_owned(), |r| r.target.to_string()),
                    "config reload drops the route's target set through the admin API; the file's applies");
            }
        }
        self.state.store(Arc::new(snapshot));
        tracing::info!(source = %summary.source, services = summary.services,
            routes = summary.routes, "config reloaded");
        Ok(summary)
    }
}

impl Reloader {
    /// Changes route targets at run time (the admin API's split and switch endpoints):
    /// `plan` reads the current snapshot and returns `(route index, new target)` pairs, or
    /// refuses. The new snapshot shares the services and plugin chains of the current one
    /// and is swapped in whole; in-flight requests finish on the one they started with.
    /// Serialized with reloads, so a change never lands on a snapshot a reload replaced.
    pub fn change_targets<E: From<RouteError>>(
        &self,
        plan: impl FnOnce(&Snapshot) -> Result<Vec<(usize, RouteTarget)>, E>,
    ) -> Result<Arc<Snapshot>, E> {
        let _one_at_a_time = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.state.load_full();
        let changes = plan(&current)?;
        let names: Vec<(String, String)> = changes
            .iter()
            .filter_map(|(i, target)| {
                let route = current.config.routes.get(*i)?;
                Some((route.name.0.clone(), target.to_string()))
            })
            .collect();
        let snapshot = Arc::new(current.with_targets(changes)?);
        self.state.store(Arc::clone(&snapshot));
        for (route, target) in names {
            tracing::info!(route, %target,
                "route target set through the admin API; a config reload or restart puts back the file's");
        }
        Ok(snapshot)
    }
}

/// The settings a running gateway cannot change in place: its listeners, the shutdown drain,
/// the plugin runtime's setup and the registry (compared directly: it holds a token and is
/// not serialized).
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    fn same<T: Serialize>(a: &T, b: &T) -> bool {
        serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
    }
    let mut changed = Vec::new();
    // `[listen.tls]` certificates, CA and client auth apply on reload; the addresses and
    // turning TLS on or off do not.
    let (o, n) = (&old.listen, &new.listen);
    if o.public != n.public
        || o.admin != n.admin
        || o.workers != n.workers
        || o.http != n.http
        || o.tls.is_some() != n.tls.is_some()
    {
        changed.push("[listen]");
    }
    if !same(&old.shutdown, &new.shutdown) {
        changed.push("[shutdown]");
    }
    if !same(&old.plugins, &new.plugins) {
        changed.push("[plugins]");
    }
    if old.registry != new.registry {
        changed.push("[registry]");
    }
    changed
}
