//! `GET /admin/services`: every service with its protocol, TLS settings and each endpoint's
//! health as the checkers see it (the active probe's last failure included).

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::state::Snapshot;

/// The services of the running snapshot, in config order.
pub(super) fn services(snapshot: &Snapshot) -> Value {
    let now = Instant::now();
    let services: Vec<Value> = snapshot
        .config
        .services
        .iter()
        .filter_map(|config| {
            let service = snapshot.upstreams.service(&config.name.0)?;
            let endpoints: Vec<Value> = service
                .upstream
                .pool()
                .all_backends()
                .iter()
                .map(|b| {
                    json!({
                        "address": b.endpoint.addr.to_string(),
                        "healthy": b.health.is_healthy(now),
                        "active_check": {
                            "ok": b.health.active_ok(),
                            "last_failure": b.health.active_failure().as_deref(),
                        },
                        "ejected": b.health.is_ejected(now),
                        "drained": b.is_drained(),
                        "in_flight": b.in_flight(),
                    })
                })
                .collect();
            Some(json!({
                "name": config.name.0,
                "protocol": config.protocol.name(),
                "tls": config.tls.as_ref().map(|t| t.summary()),
                "health_checked": config.policy.health.is_some(),
                "endpoints": endpoints,
            }))
        })
        .collect();
    json!({ "services": services })
}
