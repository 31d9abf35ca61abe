//! What a service is, as config hands it over: name, endpoints, protocol, and its discovery,
//! balancing, health and resilience policy (docs/discovery.md).

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use http::Method;
use serde::Serialize;

use crate::balancing::{Algorithm, GrayPolicy, HashKey, ZonePolicy};
use crate::conn::{Protocol, UpstreamTls};
use crate::health::{ActiveCheck, OutlierPolicy};
use crate::resilience::{BreakerPolicy, RetryPolicy};
use crate::serialize::as_humantime;

/// A service's unique name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ServiceName(pub String);

/// Lets maps keyed by service name be probed with a `&str` (no allocation per request); the
/// derived `Hash` of the newtype equals `str`'s, as `Borrow` requires.
impl std::borrow::Borrow<str> for ServiceName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceConfig {
    pub name: ServiceName,
    pub endpoints: Vec<SocketAddr>,
    pub protocol: Protocol,
    /// `[services.tls]`: TLS to the endpoints, shown as its summary (paths, no keys).
    #[serde(serialize_with = "tls_summary")]
    pub tls: Option<UpstreamTls>,
    #[serde(serialize_with = "as_humantime")]
    pub connect_timeout: Duration,
    /// Discovery, balancing, health and resilience (docs/discovery.md).
    #[serde(flatten)]
    pub policy: ServicePolicy,
    /// Static endpoints drained by config (a subset of `endpoints`).
    pub drained: Vec<SocketAddr>,
    /// Whether no healthy endpoint means "use them all" (true) or 503 (false).
    pub panic_mode: bool,
}

fn tls_summary<S: serde::Serializer>(tls: &Option<UpstreamTls>, s: S) -> Result<S::Ok, S::Error> {
    tls.as_ref().map(UpstreamTls::summary).serialize(s)
}

/// Where a service's endpoints come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoveryConfig {
    /// The service's `endpoints`.
    Static,
    /// The built-in registry, under the service's name.
    Registry,
    /// `dns_name` resolved every `interval`, endpoints on `port`.
    Dns {
        name: String,
        port: u16,
        interval: Duration,
    },
}

/// The validated discovery, balancing, health and resilience settings of one service.
#[derive(Debug, Clone)]
pub struct ServicePolicy {
    pub discovery: DiscoveryConfig,
    pub balance: Algorithm,
    pub hash_key: Option<HashKey>,
    pub try_timeout: Option<Duration>,
    pub timeout: Option<Duration>,
    pub health: Option<ActiveCheck>,
    pub outlier: Option<OutlierPolicy>,
    /// `max_retries = 0` when `[services.retry]` is absent.
    pub retry: RetryPolicy,
    pub breaker: Option<BreakerPolicy>,
    /// Requests one endpoint may have in flight (`max_requests_per_endpoint`); `None`:
    /// unbounded.
    pub max_requests_per_endpoint: Option<NonZeroUsize>,
    /// Gray subsets by instance metadata (`[[services.gray]]`, docs/traffic.md).
    pub gray: Option<std::sync::Arc<GrayPolicy>>,
    /// Zone preference (`zone_aware`, with `gateway.zone`).
    pub zone: Option<ZonePolicy>,
}

impl Default for ServicePolicy {
    fn default() -> Self {
        Self {
            discovery: DiscoveryConfig::Static,
            balance: Algorithm::RoundRobin,
            hash_key: None,
            try_timeout: None,
            timeout: None,
            health: None,
            outlier: None,
            retry: RetryPolicy {
                max_retries: 0,
                ..RetryPolicy::default()
            },
            breaker: None,
            max_requests_per_endpoint: None,
            gray: None,
            zone: None,
        }
    }
}

// Shown in `/admin/config`, flattened into the service's entry.
impl serde::Serialize for ServicePolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl ServicePolicy {
    fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let mut v = json!({
            "balance": self.balance.name(),
            "try_timeout": self.try_timeout.map(human),
            "timeout": self.timeout.map(human),
        });
        if let Some(cap) = self.max_requests_per_endpoint {
            v["max_requests_per_endpoint"] = json!(cap.get());
        }
        v["discovery"] = match &self.discovery {
            DiscoveryConfig::Static => json!("static"),
            DiscoveryConfig::Registry => json!("registry"),
            DiscoveryConfig::Dns {
                name,
                port,
                interval,
            } => {
                json!({ "dns": { "name": name, "port": port, "interval": human(*interval) } })
            }
        };
        if let Some(g) = &self.gray {
            v["gray"] = json!(&**g);
        }
        if let Some(z) = &self.zone {
            v["zone_aware"] = json!({ "zone": &*z.local, "min_healthy": z.min_healthy });
        }
        if let Some(k) = &self.hash_key {
            v["hash_key"] = json!(match k {
                HashKey::Header(h) => format!("header:{h}"),
                HashKey::Cookie(c) => format!("cookie:{c}"),
                HashKey::ClientAddr => "client-address".to_owned(),
            });
        }
        if let Some(h) = &self.health {
            v["health"] = json!({
                "path": h.path, "interval": human(h.interval), "timeout": human(h.timeout),
                "healthy_threshold": h.healthy_threshold, "unhealthy_threshold": h.unhealthy_threshold,
            });
        }
        if let Some(o) = &self.outlier {
            v["outlier"] = json!({
                "consecutive_failures": o.consecutive_failures,
                "base_ejection": human(o.base_ejection), "max_ejection": human(o.max_ejection),
                "max_ejected_share": o.max_ejected_share,
            });
        }
        if self.retry.max_retries > 0 {
            let r = &self.retry;
            let on: Vec<&str> = [
                (r.on.connect_failure, "connect-failure"),
                (r.on.reset, "reset"),
                (r.on.timeout, "timeout"),
                (r.on.status_5xx, "5xx"),
            ]
            .into_iter()
            .filter_map(|(set, name)| set.then_some(name))
            .collect();
            v["retry"] = json!({
                "max_retries": r.max_retries,
                "methods": r.methods.iter().map(Method::as_str).collect::<Vec<_>>(),
                "on": on, "backoff": human(r.backoff),
                "budget_ratio": r.budget.ratio, "budget_min_per_sec": r.budget.min_per_sec,
                "budget_window": human(r.budget.window),
            });
        }
        if let Some(b) = &self.breaker {
            v["breaker"] = json!({
                "max_concurrent": b.max_concurrent, "max_pending": b.max_pending,
                "failure_rate": b.failure_rate, "min_requests": b.min_requests,
                "window": human(b.window), "open_for": human(b.open_for),
                "half_open_probes": b.half_open_probes,
            });
        }
        v
    }
}
