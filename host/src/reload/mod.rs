//! Config reload: re-read the config (a file, or an etcd key: `source`), validate it whole,
//! build a new snapshot (routes, services, plugin chains) and swap it in atomically. Triggered
//! by SIGHUP, `POST /admin/reload`, or a new revision of the etcd key (`etcd`).
//!
//! Nothing is half-applied: a file that does not load, or that changes a setting only a restart
//! can change, leaves the running config untouched. In-flight requests finish on the snapshot
//! they started with; the old snapshot's discovery and health tasks stop when the last of them
//! is done.

pub mod etcd;
pub mod source;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::discovery::registry::Registry;
use crate::etcd::config_key::KeyError;
use crate::listener::tls::{InboundTls, TlsError};
use crate::routing::{RouteError, RouteTarget};
use crate::state::plugins::GatewayPlugins;
use crate::state::Snapshot;
use source::{ConfigSource, Fetched, Origin, SourceView};

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
    /// etcd could not be read (the config in it may be fine).
    #[error(transparent)]
    Etcd(#[from] KeyError),
    #[error("etcd at {endpoints}: no config at key {key}; push one with `gatehouse config push --etcd {endpoints} --config-key {key} FILE`")]
    NoKey { key: String, endpoints: String },
    #[error("etcd: the config key {key} was deleted at revision {revision} (nothing was applied; the running config stays until a new push)")]
    KeyDeleted { key: String, revision: i64 },
    #[error("{name}: the value is not UTF-8 text: {error}")]
    NotText { name: String, error: String },
    #[error("{name}: --listen-admin {addr} is not a loopback address, so admin.token must be set: the admin API must not be open to the network")]
    OpenAdmin { addr: SocketAddr, name: String },
}

impl ReloadError {
    /// Whether the new config itself is at fault (400), rather than the running gateway's
    /// situation (409).
    pub fn is_bad_config(&self) -> bool {
        matches!(
            self,
            ReloadError::Config(_)
                | ReloadError::Routes(_)
                | ReloadError::Tls(_)
                | ReloadError::NoKey { .. }
                | ReloadError::KeyDeleted { .. }
                | ReloadError::NotText { .. }
                | ReloadError::OpenAdmin { .. }
        )
    }
}

/// What a successful reload applied.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadSummary {
    pub source: String,
    /// The etcd revision applied; `None` for a file.
    pub revision: Option<i64>,
    pub services: usize,
    pub routes: usize,
}

/// Which config a gateway runs, for `/admin/config` (`running`).
#[derive(Debug, Clone, Serialize)]
pub struct RunningConfig {
    pub source: SourceView,
    /// The etcd revision (`mod_revision` of the key) running; `None` for a file.
    pub revision: Option<i64>,
    /// When it was applied (RFC 3339, UTC): the start, or the last reload.
    pub applied_at: String,
    /// The last config this gateway refused, if any (it may be older than the running one).
    pub last_refused: Option<Refusal>,
}

/// A config a reload refused.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// Its etcd revision; `None` for a file.
    pub revision: Option<i64>,
    pub at: String,
    pub error: String,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
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
    /// Where reloads read the config.
    source: Arc<ConfigSource>,
    /// What runs now, and the last refusal. Written under `applying`.
    running: Mutex<RunningConfig>,
    /// Serializes reloads (SIGHUP, the admin call and the etcd watch may race).
    applying: Mutex<()>,
}

impl Reloader {
    pub fn new(
        state: Arc<ArcSwap<Snapshot>>,
        registry: Arc<Registry>,
        plugins: Option<Arc<GatewayPlugins>>,
        tls: Option<Arc<InboundTls>>,
        metrics: Arc<crate::telemetry::Metrics>,
        source: Arc<ConfigSource>,
        revision: Option<i64>,
    ) -> Self {
        metrics.config_revision(revision.unwrap_or(0));
        let running = RunningConfig {
            source: source.view(),
            revision,
            applied_at: now(),
            last_refused: None,
        };
        Reloader {
            state,
            registry,
            plugins,
            tls,
            metrics,
            source,
            running: Mutex::new(running),
            applying: Mutex::new(()),
        }
    }

    /// Which config runs, and the last one refused.
    pub fn running(&self) -> RunningConfig {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where reloads read the config.
    pub fn source(&self) -> &Arc<ConfigSource> {
        &self.source
    }

    /// Re-read the source the running config came from (the file, or the etcd key) and
    /// apply it: SIGHUP and `POST /admin/reload`.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        if matches!(self.source.origin(), Origin::Embedded) {
            return Err(ReloadError::NoFile);
        }
        match self.source.fetch().await {
            Ok(fetched) => self.apply_fetched(fetched).await,
            Err(error) => {
                self.refused(None, &error);
                Err(error)
            }
        }
    }

    /// [`Reloader::reload`], by its name from before configs could live in etcd.
    pub async fn reload_file(&self) -> Result<ReloadSummary, ReloadError> {
        self.reload().await
    }

    /// Load text read from the source and apply it; a refusal is logged by the caller,
    /// counted, and kept for `/admin/config`. The one path of every reload: a file re-read
    /// and each new etcd revision alike.
    pub async fn apply_fetched(&self, fetched: Fetched) -> Result<ReloadSummary, ReloadError> {
        let revision = fetched.revision;
        if let Some(summary) = self.already_running(revision) {
            return Ok(summary);
        }
        let source = Arc::clone(&self.source);
        // Loading reads the files the config names (plugin data, certificates): blocking I/O.
        let loaded = tokio::task::spawn_blocking(move || source.load(&fetched))
            .await
            .map_err(|e| ReloadError::Task(e.to_string()))
            .and_then(|loaded| loaded);
        let applied = loaded.and_then(|config| self.apply_at(config, revision));
        if let Err(error) = &applied {
            self.refused(revision, error);
        }
        applied
    }

    /// Counts and keeps a refusal (the running config stays).
    pub fn refused(&self, revision: Option<i64>, error: &ReloadError) {
        self.metrics.config_reload(self.source.kind(), "refused");
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.last_refused = Some(Refusal {
            revision,
            at: now(),
            error: error.to_string(),
        });
    }

    /// The running config's summary when `revision` is not newer than it: a reload that
    /// read an older revision than the etcd watch already applied must not go back to it.
    fn already_running(&self, revision: Option<i64>) -> Option<ReloadSummary> {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .revision;
        let (new, running) = (revision?, running?);
        if new > running {
            return None;
        }
        let config = &self.state.load().config;
        Some(ReloadSummary {
            source: config.source.clone(),
            revision: Some(running),
            services: config.services.len(),
            routes: config.routes.len(),
        })
    }

    /// Apply `config` if only reloadable settings changed. Must run inside the gateway's
    /// tokio runtime (the new services start their tasks there).
    pub fn apply(&self, config: Config) -> Result<ReloadSummary, ReloadError> {
        self.apply_at(config, None)
    }

    /// [`Reloader::apply`] of the config at etcd revision `revision`.
    fn apply_at(
        &self,
        config: Config,
        revision: Option<i64>,
    ) -> Result<ReloadSummary, ReloadError> {
        // A poisoned lock only means an earlier reload panicked; the state itself is whole.
        let _one_at_a_time = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(summary) = self.already_running(revision) {
            return Ok(summary);
        }
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
            revision,
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
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            running.revision = revision;
            running.applied_at = now();
        }
        self.metrics.config_reload(self.source.kind(), "applied");
        self.metrics.config_revision(revision.unwrap_or(0));
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
