//! How the gateway holds its plugins: the manager started from config, one chain per route,
//! and the service caller that sends plugin calls through `Upstreams::call`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;

use super::Snapshot;
use crate::config::Config;
use crate::plugins::{
    Body, PluginChain, PluginLimits, PluginManager, PluginName, PluginRef, PluginSettings,
    PluginsError, ServiceCallError, ServiceCaller,
};
use crate::ratelimit::Limits;
use crate::telemetry::Metrics;
use crate::upstream::UpstreamError;

/// Plugin service calls go through the gateway's upstreams, like proxied requests.
///
/// It holds the state weakly: the snapshots hold the plugin chains, which hold the runtime
/// and so this caller. A strong reference would make a cycle that keeps a stopped gateway's
/// engines (and their epoch threads and reserved memory) alive for good.
pub struct UpstreamCaller {
    state: std::sync::Weak<ArcSwap<Snapshot>>,
}

impl ServiceCaller for UpstreamCaller {
    fn call(
        &self,
        service: &str,
        req: http::Request<Body>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, ServiceCallError>> {
        let Some(state) = self.state.upgrade() else {
            return Box::pin(async {
                Err(ServiceCallError::Failed(
                    "the gateway has stopped".to_owned(),
                ))
            });
        };
        let snapshot = state.load_full();
        let service = service.to_owned();
        Box::pin(async move {
            let timeout = snapshot.config.limits.default_timeout;
            match snapshot.upstreams.call(&service, req, timeout).await {
                Ok(r) => Ok(r.response),
                Err(UpstreamError::UnknownService(s)) => Err(ServiceCallError::UnknownService(s)),
                Err(UpstreamError::Timeout { .. }) => Err(ServiceCallError::Timeout),
                Err(e) => Err(ServiceCallError::Failed(e.to_string())),
            }
        })
    }
}

/// The gateway's plugins: the manager, which builds each route's chain for a snapshot.
pub struct GatewayPlugins {
    manager: PluginManager,
}

/// Turn the `[plugins]` config into runtime settings.
pub fn settings(config: &Config) -> PluginSettings {
    let p = &config.plugins;
    PluginSettings {
        dir: p.dir.clone(),
        cache_dir: p.cache_dir.clone(),
        watch: p.watch,
        debounce: Duration::from_millis(200),
        limits: PluginLimits {
            deadline: p.deadline,
            memory: p.memory_limit_mib << 20,
            body_cap: p.body_limit_kib << 10,
            max_instances: p.max_instances,
            ..PluginLimits::default()
        },
        shared_cache: config.plugin_cache.clone(),
        tiered: p.tiered_compile,
        rollout: p.rollout.clone(),
    }
}

/// `gatehouse check` for plugins: load every plugin a route of `config` names, as `run`
/// would. The problems, one line each, if any would not load.
pub async fn check(config: &Config) -> Result<(), String> {
    let uses: Vec<(&str, &str)> = config
        .routes
        .iter()
        .flat_map(|r| {
            r.plugins
                .iter()
                .map(move |p| (r.name.0.as_str(), p.name.as_str()))
        })
        .collect();
    if uses.is_empty() {
        return Ok(());
    }
    let settings = settings(config);
    let problems = crate::plugins::preflight::check(&settings.dir, &settings.limits, uses)
        .await
        .map_err(|e| e.to_string())?;
    if problems.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
    Err(format!(
        "{} would not load:\n{}",
        crate::config::count(problems.len(), "plugin"),
        lines.join("\n")
    ))
}

impl GatewayPlugins {
    /// Start the plugin subsystem if any route of `config` has plugins; `None` otherwise (no
    /// engine, no watcher: a gateway without plugins pays nothing for them). Plugins' service
    /// calls go through whatever snapshot `state` holds at the time of the call.
    pub async fn start(
        config: &Config,
        state: &Arc<ArcSwap<Snapshot>>,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<Arc<Self>>, PluginsError> {
        if config.routes.iter().all(|r| r.plugins.is_empty()) {
            return Ok(None);
        }
        let caller = Arc::new(UpstreamCaller {
            state: Arc::downgrade(state),
        });
        let settings = settings(config);
        let uses = config.routes.iter().flat_map(|r| {
            r.plugins
                .iter()
                .map(move |p| (r.name.0.as_str(), p.name.as_str()))
        });
        for missing in crate::plugins::preflight::missing_files(&settings.dir, uses) {
            tracing::warn!(plugin = %missing.plugin, routes = %missing.routes.join(","),
                "{missing}; its routes answer 503 not_loaded until the file appears");
        }
        let manager =
            PluginManager::start_counted(settings, caller, Some(Arc::clone(metrics))).await?;
        Ok(Some(Arc::new(GatewayPlugins { manager })))
    }

    /// Every route's chain for `config`, by route name (part of each config snapshot);
    /// `limits` holds the routes' limiters, which plugins are granted by name.
    pub fn chains(
        &self,
        config: &Config,
        limits: &Limits,
        metrics: &Arc<Metrics>,
    ) -> HashMap<String, Arc<PluginChain>> {
        config
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.plugins.is_empty())
            .map(|(index, r)| {
                let route_limits = limits.route(index);
                let refs: Vec<PluginRef> = r
                    .plugins
                    .iter()
                    .filter_map(|p| {
                        // Validation already checked every name.
                        let name = PluginName::new(&p.name).ok()?;
                        Some(PluginRef {
                            name,
                            config_json: p.config.to_string(),
                            calls: p.calls.clone(),
                            cache: p.cache.clone(),
                            reuse_instances: p.reuse_instances,
                            files: Arc::new(
                                p.files
                                    .iter()
                                    .map(|(k, f)| (k.clone(), f.bytes.clone()))
                                    .collect(),
                            ),
                            // Validation checked that each names a `plugin` limit of the route.
                            limits: Arc::new(
                                p.limits
                                    .iter()
                                    .filter_map(|name| {
                                        let limiter = route_limits?.plugin_limit(name)?;
                                        Some((name.clone(), Arc::clone(limiter)))
                                    })
                                    .collect(),
                            ),
                            deadline: p.deadline,
                            memory: p.memory_limit_mib.map(|m| m << 20),
                            body_cap: p.body_limit_kib.map(|k| k << 10),
                        })
                    })
                    .collect();
                let chain = self.manager.chain(&r.name.0, &refs, r.on_error);
                chain.count_in(Arc::clone(metrics));
                (r.name.0.clone(), chain)
            })
            .collect()
    }

    /// The plugin manager.
    pub fn manager(&self) -> &PluginManager {
        &self.manager
    }

    /// `GET /admin/plugins`: settings, every plugin's status, and the limits each route's
    /// plugin entry runs under (its own where set, else `[plugins]`).
    pub fn admin_status(plugins: Option<&Self>, config: &Config) -> serde_json::Value {
        match plugins {
            None => serde_json::json!({ "enabled": false, "plugins": [] }),
            Some(p) => {
                let s = p.manager.settings();
                let global = &s.limits;
                let entries: Vec<serde_json::Value> = config
                    .routes
                    .iter()
                    .flat_map(|r| r.plugins.iter().map(move |e| (r, e)))
                    .map(|(r, e)| {
                        let limits = global.entry(
                            e.deadline,
                            e.memory_limit_mib.map(|m| m << 20),
                            e.body_limit_kib.map(|k| k << 10),
                        );
                        serde_json::json!({
                            "route": r.name.0,
                            "plugin": e.name,
                            "deadline": humantime::format_duration(limits.deadline).to_string(),
                            "memory_limit_mib": limits.memory >> 20,
                            "body_limit_kib": limits.body_cap >> 10,
                            "reuse_instances": e.reuse_instances,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "enabled": true,
                    "dir": s.dir.display().to_string(),
                    "watch": s.watch,
                    "tiered_compile": s.tiered,
                    "rollout": s.rollout,
                    "defaults": {
                        "deadline": humantime::format_duration(global.deadline).to_string(),
                        "memory_limit_mib": global.memory >> 20,
                        "body_limit_kib": global.body_cap >> 10,
                    },
                    "plugins": p.manager.status(),
                    "routes": entries,
                })
            }
        }
    }
}
