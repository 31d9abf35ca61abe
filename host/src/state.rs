//! The active state: an immutable snapshot of config, routes, services and plugin chains
//! behind an `ArcSwap`. Readers never lock; a reload builds a new snapshot and swaps it in
//! whole, so a request sees one config from start to end and never a mix of two.

pub mod plugins;

use std::collections::HashMap;
use std::sync::Arc;

use self::plugins::GatewayPlugins;
use crate::cache::ResponseCache;
use crate::config::Config;
use crate::discovery::registry::Registry;
use crate::plugins::PluginChain;
use crate::ratelimit::Limits;
use crate::routing::{RouteError, RouteTable, RouteTarget};
use crate::telemetry::live::LiveRoutes;
use crate::telemetry::Metrics;
use crate::upstream::Upstreams;

/// Everything a request needs, consistent with one config.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    /// Shared with the snapshots that only change route targets ([`Snapshot::with_targets`]):
    /// their services keep their connections, health and breakers.
    pub upstreams: Arc<Upstreams>,
    /// The plugin chain of every route that has plugins, by route name.
    pub chains: HashMap<String, Arc<PluginChain>>,
    /// Every route's rate limits and in-flight cap, by route index (`RouteId`).
    pub limits: Limits,
    /// The response cache (docs/cache.md): carried over from the snapshot this one replaces
    /// while `[cache] max_bytes` stays the same.
    pub cache: Arc<ResponseCache>,
    /// Every route's live figures for the dashboard, by route index; a route kept across a
    /// reload keeps its figures.
    pub live: LiveRoutes,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("config", &self.config.source)
            .field("routes", &self.routes.len())
            .field("upstreams", &self.upstreams)
            .field("chains", &self.chains.len())
            .finish()
    }
}

impl Snapshot {
    /// `registry` is the process's built-in registry (it outlives snapshots); `plugins` builds
    /// the routes' chains (`None` when the gateway runs without plugins); `previous` is the
    /// snapshot this one replaces, whose unchanged limits keep their counters. Must run inside a
    /// tokio runtime: it starts the services' discovery and health tasks, which stop when
    /// the snapshot is dropped.
    pub fn build(
        config: Config,
        registry: &Arc<Registry>,
        plugins: Option<&GatewayPlugins>,
        previous: &Snapshot,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, RouteError> {
        let routes = RouteTable::new(&config.routes)?;
        let upstreams = Arc::new(Upstreams::new(
            &config.services,
            config.listen.workers,
            config.limits.max_response_header_bytes,
            registry,
            Some(metrics),
        ));
        let limits = Limits::build(
            config.routes.iter().map(|r| (r.name.0.as_str(), &r.limits)),
            &previous.limits,
            &config.rate_limits,
        );
        let chains = plugins
            .map(|p| p.chains(&config, &limits, metrics))
            .unwrap_or_default();
        // Entries are keyed by the route's cache policy too: a route whose cache changed
        // never sees the old entries, which age out of the shared budget.
        let cache = if previous.cache.budget == config.cache {
            Arc::clone(&previous.cache)
        } else {
            Arc::new(ResponseCache::in_memory(config.cache))
        };
        let live = LiveRoutes::build(
            config.routes.iter().map(|r| r.name.0.as_str()),
            &previous.live,
        );
        Ok(Snapshot {
            config: Arc::new(config),
            routes,
            live,
            upstreams,
            chains,
            limits,
            cache,
        })
    }

    /// This snapshot with the targets of some routes changed (`(route index, target)`), each
    /// marked as set at run time. Services and plugin chains are shared, not rebuilt: only
    /// the config and the route table are new. The caller checks that the targets name
    /// existing services.
    pub fn with_targets(&self, changes: Vec<(usize, RouteTarget)>) -> Result<Self, RouteError> {
        let mut config = Config::clone(&self.config);
        for (index, target) in changes {
            if let Some(route) = config.routes.get_mut(index) {
                route.target = target;
                route.target_set_at_run_time = true;
            }
        }
        Ok(Snapshot {
            routes: RouteTable::new(&config.routes)?,
            config: Arc::new(config),
            upstreams: Arc::clone(&self.upstreams),
            chains: self.chains.clone(),
            // The same routes in the same order: the same limiters, counters and all.
            limits: self.limits.clone(),
            cache: Arc::clone(&self.cache),
            live: self.live.clone(),
        })
    }

    /// A snapshot with no routes or services, serving nothing: what the state holds while
    /// the gateway starts, before the first real snapshot.
    pub fn starting(config: Arc<Config>) -> Self {
        Snapshot {
            cache: Arc::new(ResponseCache::in_memory(config.cache)),
            config,
            routes: RouteTable::default(),
            upstreams: Arc::default(),
            chains: HashMap::new(),
            limits: Limits::default(),
            live: LiveRoutes::default(),
        }
    }
}
