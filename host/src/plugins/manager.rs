//! The plugin subsystem as the gateway holds it: engine, loader, registry, watcher, shared
//! cache, and the factory for per-route chains.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::chain::{OnError, PluginChain};
use super::reload::loader::Loader;
use super::reload::registry::{PluginRegistry, PluginStatus, RolloutError};
use super::reload::rollout::RolloutPolicy;
use super::reload::watcher::{self, PluginWatcher, WatchError};
use super::runtime::cache::PluginCache;
use super::runtime::capabilities::{Grants, PluginEnv, ServiceCaller};
use super::runtime::engine::{EngineError, PluginEngine, PluginLimits};
use super::runtime::shelf::{InstanceShelf, Lifetime, Recycler};
use super::PluginName;
use crate::ratelimit::Limiter;
use crate::redis_store::{RedisClient, RedisSettings};
use crate::telemetry::Metrics;

/// How the plugin subsystem is set up (from the `[plugins]` config table).
#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// The directory plugins are loaded from. Default `plugins`.
    pub dir: PathBuf,
    /// Where compiled artifacts are cached; `None` disables the cache.
    /// Default `<dir>/.cache`.
    pub cache_dir: Option<PathBuf>,
    /// Whether to watch `dir` and hot-reload. Default true.
    pub watch: bool,
    /// Quiet time after the last file event before reloading. Default 200 ms.
    pub debounce: Duration,
    /// Per-invocation limits.
    pub limits: PluginLimits,
    /// `[plugins.cache] store = "redis"`: the `cache` import's entries live in this Redis,
    /// shared with other gateways. `None`: in process.
    pub shared_cache: Option<RedisSettings>,
    /// Compile a new plugin first with the baseline compiler (live in about a second, slower
    /// code) and swap in the optimized build when it is ready; `false`: Cranelift only.
    /// Default true.
    pub tiered: bool,
    /// How a new version of a serving plugin goes live. Default: at once.
    pub rollout: RolloutPolicy,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            dir: PathBuf::from("plugins"),
            cache_dir: Some(PathBuf::from("plugins/.cache")),
            watch: true,
            debounce: Duration::from_millis(200),
            shared_cache: None,
            limits: PluginLimits::default(),
            tiered: true,
            rollout: RolloutPolicy::default(),
        }
    }
}

/// One plugin in a route's chain, as configured.
#[derive(Debug, Clone)]
pub struct PluginRef {
    /// The plugin to run.
    pub name: PluginName,
    /// Its config table, as JSON text.
    pub config_json: String,
    /// Services it may call.
    pub calls: Vec<String>,
    /// Its cache namespace, if any.
    pub cache: Option<String>,
    /// Keep instances between requests (see [`InstanceShelf`]) instead of a fresh one each.
    pub reuse_instances: bool,
    /// Its granted data files, by grant name.
    pub files: Arc<HashMap<String, Bytes>>,
    /// Its granted rate limits, by name.
    pub limits: Arc<HashMap<String, Arc<Limiter>>>,
    /// Its own deadline, memory limit and body cap, where they differ from `[plugins]`.
    pub deadline: Option<Duration>,
    pub memory: Option<usize>,
    pub body_cap: Option<usize>,
}

/// Why the plugin subsystem could not start.
#[derive(Debug, thiserror::Error)]
pub enum PluginsError {
    /// See [`EngineError`].
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// See [`WatchError`].
    #[error(transparent)]
    Watch(#[from] WatchError),
}

/// The `cache` import's store: Redis when configured (and its URL usable), else in process.
fn plugin_cache(settings: &PluginSettings) -> PluginCache {
    let Some(redis) = &settings.shared_cache else {
        return PluginCache::new(settings.limits.cache_bytes);
    };
    match RedisClient::new(redis.clone()) {
        Ok(client) => PluginCache::in_redis(client),
        Err(error) => {
            // `gatehouse check` validates the URL: this is not expected.
            tracing::error!(%error, "cannot use [redis] for the plugin cache; caching in process");
            PluginCache::new(settings.limits.cache_bytes)
        }
    }
}

/// The running plugin subsystem.
pub struct PluginManager {
    engine: Arc<PluginEngine>,
    loader: Arc<Loader>,
    registry: Arc<PluginRegistry>,
    cache: Arc<PluginCache>,
    services: Arc<dyn ServiceCaller>,
    recycler: Recycler,
    settings: PluginSettings,
    _watcher: Option<PluginWatcher>,
}

impl PluginManager {
    /// Build the engine, load every plugin in the directory, and start watching it.
    /// Plugins that fail to load are reported (log, [`PluginManager::status`]) but do not
    /// stop the gateway.
    pub async fn start(
        settings: PluginSettings,
        services: Arc<dyn ServiceCaller>,
    ) -> Result<Self, PluginsError> {
        Self::start_counted(settings, services, None).await
    }

    /// [`PluginManager::start`], counting every load of a plugin file (at start and on each
    /// change) in `metrics`.
    pub async fn start_counted(
        settings: PluginSettings,
        services: Arc<dyn ServiceCaller>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, PluginsError> {
        let engine = Arc::new(PluginEngine::new(settings.limits.clone())?);
        let loader = Arc::new(
            Loader::new(engine.clone(), settings.cache_dir.clone()).tiered(settings.tiered),
        );
        let registry =
            Arc::new(PluginRegistry::with_rollout(settings.rollout.clone()).counted_in(metrics));
        // Watch before the first scan so a file written during the scan is not missed.
        let watcher = if settings.watch {
            tokio::fs::create_dir_all(&settings.dir)
                .await
                .map_err(|source| WatchError::Dir {
                    dir: settings.dir.display().to_string(),
                    source,
                })?;
            Some(watcher::watch(
                loader.clone(),
                registry.clone(),
                &settings.dir,
                settings.debounce,
            )?)
        } else {
            None
        };
        watcher::load_dir(&loader, &registry, &settings.dir).await?;
        Ok(PluginManager {
            recycler: Recycler::new(engine.clone()),
            cache: Arc::new(plugin_cache(&settings)),
            engine,
            loader,
            registry,
            services,
            settings,
            _watcher: watcher,
        })
    }

    /// The chain for a route.
    pub fn chain(&self, route: &str, plugins: &[PluginRef], on_error: OnError) -> Arc<PluginChain> {
        let route: Arc<str> = route.into();
        let entries = plugins
            .iter()
            .map(|p| {
                Arc::new(PluginEnv {
                    name: p.name.clone(),
                    route: route.clone(),
                    config: p.config_json.as_str().into(),
                    grants: Grants {
                        services: p.calls.iter().cloned().collect::<HashSet<_>>(),
                        cache_namespace: p.cache.clone(),
                        files: p.files.clone(),
                        limits: p.limits.clone(),
                    },
                    services: self.services.clone(),
                    cache: self.cache.clone(),
                    snapshots: Default::default(),
                    shelf: InstanceShelf::new(if p.reuse_instances {
                        Lifetime::Reuse
                    } else {
                        Lifetime::Fresh
                    }),
                    limits: self.settings.limits.entry(p.deadline, p.memory, p.body_cap),
                })
            })
            .collect();
        Arc::new(PluginChain::new(
            entries,
            on_error,
            self.engine.clone(),
            self.registry.clone(),
            self.recycler.clone(),
        ))
    }

    /// Re-scan the plugins directory now (e.g. from an admin "reload" call).
    pub async fn rescan(&self) -> Result<(), WatchError> {
        watcher::load_dir(&self.loader, &self.registry, &self.settings.dir).await
    }

    /// The registry of active plugins.
    pub fn registry(&self) -> &Arc<PluginRegistry> {
        &self.registry
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<PluginEngine> {
        &self.engine
    }

    /// Every plugin's status, for `GET /admin/plugins`.
    pub fn status(&self) -> Vec<PluginStatus> {
        self.registry.status()
    }

    /// Make the version being rolled out of `name` the serving one now. Its hash.
    pub fn promote(&self, name: &PluginName) -> Result<String, RolloutError> {
        let hash = self.registry.promote(name)?;
        tracing::info!(plugin = %name, hash = %hash, "plugin rollout promoted by hand");
        Ok(hash)
    }

    /// Stop the rollout of `name`, keeping the serving version. The dropped version's hash.
    pub fn rollback(&self, name: &PluginName) -> Result<String, RolloutError> {
        let hash = self.registry.rollback(name, "rolled back by hand")?;
        tracing::warn!(plugin = %name, hash = %hash, "plugin rollout rolled back by hand");
        Ok(hash)
    }

    /// The settings the subsystem runs with.
    pub fn settings(&self) -> &PluginSettings {
        &self.settings
    }
}
