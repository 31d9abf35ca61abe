//! `GET /admin/dashboard/state`: what the dashboard shows, in one read: routes and their
//! services, each service's instances (health, ejection, breaker, weight, lease age), the
//! loaded plugins, and each route's live figures (`telemetry::live`).

use std::collections::HashMap;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::discovery::registry::Registry;
use crate::resilience::BreakerState;
use crate::routing::{PathMatch, RouteTarget};
use crate::state::plugins::GatewayPlugins;
use crate::state::Snapshot;
use crate::upstream::DiscoveryConfig;

/// How many seconds of live figures each read carries (two minutes of 1 s points).
const SERIES_SECONDS: usize = 120;

pub(super) fn state(
    snapshot: &Snapshot,
    registry: &Registry,
    plugins: Option<&GatewayPlugins>,
) -> Value {
    json!({
        "routes": routes(snapshot),
        "services": services(snapshot, registry),
        "plugins": GatewayPlugins::admin_status(plugins, &snapshot.config),
        "live": snapshot.live.series(SERIES_SECONDS),
    })
}

fn routes(snapshot: &Snapshot) -> Vec<Value> {
    snapshot
        .config
        .routes
        .iter()
        .map(|route| {
            let (kind, path) = match &route.matcher.path {
                PathMatch::Path(p) => ("path", p),
                PathMatch::Prefix(p) => ("prefix", p),
            };
            let services: Vec<Value> = route
                .target
                .targets()
                .into_iter()
                .map(|(service, weight)| json!({ "name": service.0, "weight": weight }))
                .collect();
            json!({
                "name": route.name.0,
                "match": { kind: path },
                "methods": route.matcher.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                "services": services,
                // A route that answers by itself (`respond`, `redirect`) or refuses (`deny`).
                "answers_itself": matches!(route.target, RouteTarget::Static(_)) || route.deny.is_some(),
                "plugins": route.plugins.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn services(snapshot: &Snapshot, registry: &Registry) -> Vec<Value> {
    let now = Instant::now();
    snapshot
        .config
        .services
        .iter()
        .filter_map(|config| {
            let service = snapshot.upstreams.service(&config.name.0)?;
            let (discovery, leases) = match &config.policy.discovery {
                DiscoveryConfig::Static => ("static", HashMap::new()),
                DiscoveryConfig::Dns { .. } => ("dns", HashMap::new()),
                // The registry knows when each instance last renewed; the pool does not.
                DiscoveryConfig::Registry => (
                    "registry",
                    registry
                        .instances(&config.name.0)
                        // Unknown only before the service's pool first watched it: no
                        // instance to show a lease for yet.
                        .unwrap_or_default()
                        .into_iter()
                        .map(|i| (i.spec.id, now.saturating_duration_since(i.last_renewal)))
                        .collect(),
                ),
            };
            let instances: Vec<Value> = service
                .upstream
                .pool()
                .all_backends()
                .iter()
                .map(|b| {
                    let lease_age = leases.get(&*b.endpoint.id).map(|age| age.as_secs_f64());
                    json!({
                        "address": b.endpoint.addr.to_string(),
                        "id": &*b.endpoint.id,
                        "healthy": b.health.is_healthy(now),
                        "ejected": b.health.is_ejected(now),
                        "active_check_failure": b.health.active_failure().as_deref(),
                        "drained": b.is_drained(),
                        "weight": b.endpoint.meta.weight,
                        "zone": b.endpoint.meta.zone,
                        "version": b.endpoint.meta.version,
                        "in_flight": b.in_flight(),
                        "lease_age_seconds": lease_age,
                    })
                })
                .collect();
            let breaker = service.upstream.breaker().map(|b| match b.state() {
                BreakerState::Closed => "closed",
                BreakerState::Open => "open",
                BreakerState::HalfOpen => "half-open",
            });
            Some(json!({
                "name": config.name.0,
                "discovery": discovery,
                "balance": config.policy.balance.name(),
                "breaker": breaker,
                "instances": instances,
            }))
        })
        .collect()
}
