//! Upstream, plugin, registry, listener and consumer metrics (docs/observability.md). Label
//! sets are bounded: services, endpoints, plugins and routes come from config or discovery,
//! consumers are capped at `metrics.top_consumers` plus `other`; no raw path is a label.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// An endpoint address as a label value, written only when scraped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointLabel(pub SocketAddr);

impl EncodeLabelValue for EndpointLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        write!(encoder, "{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TryLabels {
    service: Arc<str>,
    endpoint: EndpointLabel,
    class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    service: Arc<str>,
    endpoint: EndpointLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HealthLabels {
    service: Arc<str>,
    endpoint: EndpointLabel,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServiceLabels {
    service: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BreakerLabels {
    service: Arc<str>,
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HookLabels {
    plugin: Arc<str>,
    version: Arc<str>,
    hook: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HookDurationLabels {
    plugin: Arc<str>,
    hook: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PluginLabels {
    plugin: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    plugin: Arc<str>,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConsumerLabels {
    route: Arc<String>,
    consumer: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RegistryLabels {
    service: String,
}

/// The families; one set per gateway, inside [`super::Metrics`].
#[derive(Debug)]
pub(super) struct Families {
    tries: Family<TryLabels, Counter>,
    try_duration: Family<EndpointLabels, Histogram>,
    retries: Family<ServiceLabels, Counter>,
    budget_refusals: Family<ServiceLabels, Counter>,
    ejections: Family<EndpointLabels, Counter>,
    breaker: Family<BreakerLabels, Gauge>,
    breaker_trips: Family<ServiceLabels, Counter>,
    health: Family<HealthLabels, Counter>,
    pool_idle: Family<EndpointLabels, Gauge>,
    hooks: Family<HookLabels, Counter>,
    hook_duration: Family<HookDurationLabels, Histogram>,
    fail_open: Family<PluginLabels, Counter>,
    instances: Family<PluginLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    consumers: Family<ConsumerLabels, Counter>,
    /// Consumers with a label of their own (at most `top_consumers`).
    admitted: RwLock<HashSet<Arc<str>>>,
    registry_instances: Family<RegistryLabels, Gauge>,
    registry_preserving: Family<RegistryLabels, Gauge>,
    registry_renewals: Counter,
    registry_expirations: Counter,
    registry_store_up: Gauge,
    registry_watches: Gauge,
    registry_watches_refused: Counter,
    registry_store_events: Counter,
    registry_store_errors: Counter,
    in_flight: Gauge,
}

static OTHER: &str = "other";

impl Families {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let latency = || Histogram::new(exponential_buckets(0.000_05, 2.0, 20));
        let f = Families {
            tries: Family::default(),
            try_duration: Family::new_with_constructor(latency),
            retries: Family::default(),
            budget_refusals: Family::default(),
            ejections: Family::default(),
            breaker: Family::default(),
            breaker_trips: Family::default(),
            health: Family::default(),
            pool_idle: Family::default(),
            hooks: Family::default(),
            hook_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_005, 2.0, 20))
            }),
            fail_open: Family::default(),
            instances: Family::default(),
            reloads: Family::default(),
            consumers: Family::default(),
            admitted: RwLock::default(),
            registry_instances: Family::default(),
            registry_preserving: Family::default(),
            registry_renewals: Counter::default(),
            registry_expirations: Counter::default(),
            registry_store_up: Gauge::default(),
            registry_watches: Gauge::default(),
            registry_watches_refused: Counter::default(),
            registry_store_events: Counter::default(),
            registry_store_errors: Counter::default(),
            in_flight: Gauge::default(),
        };
        registry.register(
            "upstream_requests",
            "Upstream tries, by service, endpoint and status class (2xx..5xx, or error)",
            f.tries.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time of one upstream try to its response head, by service and endpoint",
            f.try_duration.clone(),
        );
        registry.register(
            "upstream_retries",
            "Retries sent, by service",
            f.retries.clone(),
        );
        registry.register(
            "upstream_retry_budget_refusals",
            "Retries the retry budget refused, by service",
            f.budget_refusals.clone(),
        );
        registry.register(
            "upstream_ejections",
            "Endpoints ejected by outlier detection, by service and endpoint",
            f.ejections.clone(),
        );
        registry.register(
            "upstream_breaker_state",
            "Circuit breaker state by service (1 for the current state), read at scrape time",
            f.breaker.clone(),
        );
        registry.register(
            "upstream_breaker_trips",
            "Times a service's circuit breaker opened",
            f.breaker_trips.clone(),
        );
        registry.register(
            "upstream_health_checks",
            "Active health check probes, by service, endpoint and result (pass, fail)",
            f.health.clone(),
        );
        registry.register(
            "upstream_idle_connections",
            "Idle pooled connections by service and endpoint, read at scrape time",
            f.pool_idle.clone(),
        );
        registry.register(
            "plugin_invocations",
            "Plugin hook calls, by plugin, version (hash prefix), hook and outcome \
             (continue, respond, trap, deadline, oom, ...)",
            f.hooks.clone(),
        );
        registry.register(
            "plugin_duration_seconds",
            "Time of one plugin hook call, by plugin and hook",
            f.hook_duration.clone(),
        );
        registry.register(
            "plugin_fail_open",
            "Plugin failures a fail-open route passed over, by plugin",
            f.fail_open.clone(),
        );
        registry.register(
            "plugin_instances_created",
            "Plugin instances created on the request path (none was shelved), by plugin",
            f.instances.clone(),
        );
        registry.register(
            "plugin_reloads",
            "Plugin version loads by the plugins directory scan and watcher, by plugin and \
             result (loaded, failed)",
            f.reloads.clone(),
        );
        registry.register(
            "consumer_requests",
            "Requests by route and consumer (metrics.consumer_header as an auth plugin set it); \
             consumers past metrics.top_consumers are counted as `other`",
            f.consumers.clone(),
        );
        registry.register(
            "registry_instances",
            "Instances registered per service, read at scrape time",
            f.registry_instances.clone(),
        );
        registry.register(
            "registry_self_preservation",
            "1 while a service's lapsed instances are kept by self-preservation",
            f.registry_preserving.clone(),
        );
        registry.register(
            "registry_renewals",
            "Registry lease renewals (heartbeats)",
            f.registry_renewals.clone(),
        );
        registry.register(
            "registry_expirations",
            "Registry instances evicted because their lease lapsed",
            f.registry_expirations.clone(),
        );
        registry.register(
            "registry_watches",
            "Blocking queries (watches) held open on the registry API",
            f.registry_watches.clone(),
        );
        registry.register(
            "registry_watches_refused",
            "Blocking queries refused with a 503 because [registry] max_watches were open",
            f.registry_watches_refused.clone(),
        );
        registry.register(
            "registry_store_up",
            "1 while the registry's etcd watch is established (store = \"etcd\"; 0 otherwise)",
            f.registry_store_up.clone(),
        );
        registry.register(
            "registry_store_events",
            "etcd watch events applied to this gateway's registry view",
            f.registry_store_events.clone(),
        );
        registry.register(
            "registry_store_errors",
            "Failed calls to the registry's etcd store (writes, reads, watches)",
            f.registry_store_errors.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests on the public listener being answered now",
            f.in_flight.clone(),
        );
        f
    }
}

/// A request counted in `gatehouse_requests_in_flight` while it lives.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The label `class` of a try's status, with its index in [`CachedEndpoint::tries`].
fn status_class(status: Option<u16>) -> (usize, &'static str) {
    match status {
        Some(100..=199) => (0, "1xx"),
        Some(200..=299) => (1, "2xx"),
        Some(300..=399) => (2, "3xx"),
        Some(400..=499) => (3, "4xx"),
        Some(_) => (4, "5xx"),
        None => (5, "error"),
    }
}

/// One endpoint's try counters and duration histogram, taken from the label families on its
/// first try and reused after: a family lookup hashes the service name and the address under
/// a lock, twice per try (~1.4k instructions per request, callgrind). Each backend holds
/// one (`balancing::Backend::meters`).
#[derive(Debug, Default)]
pub struct EndpointMeters(OnceLock<CachedEndpoint>);

#[derive(Debug)]
struct CachedEndpoint {
    service: Arc<str>,
    endpoint: SocketAddr,
    /// By [`status_class`] index.
    tries: [OnceLock<Counter>; 6],
    duration: Histogram,
}

/// One service's upstream metrics, resolved once when its snapshot is built.
#[derive(Debug, Clone)]
pub struct ServiceMetrics {
    service: Arc<str>,
    tries: Family<TryLabels, Counter>,
    try_duration: Family<EndpointLabels, Histogram>,
    ejections: Family<EndpointLabels, Counter>,
    health: Family<HealthLabels, Counter>,
    retries: Counter,
    budget_refusals: Counter,
    breaker_trips: Counter,
}

impl ServiceMetrics {
    /// One try to `endpoint` ended: `status` is None for a transport failure.
    pub fn try_done(&self, endpoint: SocketAddr, status: Option<u16>, elapsed: Duration) {
        let (_, class) = status_class(status);
        let endpoint = EndpointLabel(endpoint);
        self.tries
            .get_or_create(&TryLabels {
                service: Arc::clone(&self.service),
                endpoint,
                class,
            })
            .inc();
        self.try_duration
            .get_or_create(&EndpointLabels {
                service: Arc::clone(&self.service),
                endpoint,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// [`ServiceMetrics::try_done`] through the endpoint's cached handles (its backend's
    /// `meters`): no label hashing once they are filled. Handles cached for another service
    /// or address are not used.
    pub fn try_done_at(
        &self,
        meters: &EndpointMeters,
        endpoint: SocketAddr,
        status: Option<u16>,
        elapsed: Duration,
    ) {
        let cached = meters.0.get_or_init(|| CachedEndpoint {
            service: Arc::clone(&self.service),
            endpoint,
            tries: Default::default(),
            duration: self
                .try_duration
                .get_or_create(&EndpointLabels {
                    service: Arc::clone(&self.service),
                    endpoint: EndpointLabel(endpoint),
                })
                .clone(),
        });
        if cached.endpoint != endpoint || *cached.service != *self.service {
            return self.try_done(endpoint, status, elapsed);
        }
        let (index, class) = status_class(status);
        cached.tries[index]
            .get_or_init(|| {
                self.tries
                    .get_or_create(&TryLabels {
                        service: Arc::clone(&self.service),
                        endpoint: EndpointLabel(endpoint),
                        class,
                    })
                    .clone()
            })
            .inc();
        cached.duration.observe(elapsed.as_secs_f64());
    }

    /// A retry was sent.
    pub fn retried(&self) {
        self.retries.inc();
    }

    /// The retry budget refused a retry.
    pub fn budget_refused(&self) {
        self.budget_refusals.inc();
    }

    /// The circuit breaker opened.
    pub fn breaker_tripped(&self) {
        self.breaker_trips.inc();
    }

    /// An active health check of `endpoint` passed (`ok`) or failed.
    pub fn health_checked(&self, endpoint: SocketAddr, ok: bool) {
        self.health
            .get_or_create(&HealthLabels {
                service: Arc::clone(&self.service),
                endpoint: EndpointLabel(endpoint),
                result: if ok { "pass" } else { "fail" },
            })
            .inc();
    }

    /// Outlier detection ejected `endpoint`.
    pub fn ejected(&self, endpoint: SocketAddr) {
        self.ejections
            .get_or_create(&EndpointLabels {
                service: Arc::clone(&self.service),
                endpoint: EndpointLabel(endpoint),
            })
            .inc();
    }
}

impl super::Metrics {
    fn families(&self) -> &Families {
        &self.services
    }

    /// The handles of `service`, for its upstream calls.
    pub fn service(&self, service: &Arc<str>) -> ServiceMetrics {
        let f = self.families();
        let labels = ServiceLabels {
            service: Arc::clone(service),
        };
        ServiceMetrics {
            service: Arc::clone(service),
            tries: f.tries.clone(),
            try_duration: f.try_duration.clone(),
            ejections: f.ejections.clone(),
            health: f.health.clone(),
            breaker_trips: f.breaker_trips.get_or_create(&labels).clone(),
            retries: f.retries.get_or_create(&labels).clone(),
            budget_refusals: f.budget_refusals.get_or_create(&labels).clone(),
        }
    }

    /// Sets a service's breaker state and its endpoints' idle connections (at scrape time).
    pub fn service_state(
        &self,
        service: &Arc<str>,
        breaker: Option<&'static str>,
        idle: impl IntoIterator<Item = (SocketAddr, usize)>,
    ) {
        let f = self.families();
        if let Some(current) = breaker {
            for state in ["closed", "open", "half_open"] {
                f.breaker
                    .get_or_create(&BreakerLabels {
                        service: Arc::clone(service),
                        state,
                    })
                    .set(i64::from(state == current));
            }
        }
        for (endpoint, n) in idle {
            f.pool_idle
                .get_or_create(&EndpointLabels {
                    service: Arc::clone(service),
                    endpoint: EndpointLabel(endpoint),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Forgets per-service gauges before a scrape refills them (services come and go).
    pub fn clear_service_state(&self) {
        let f = self.families();
        f.breaker.clear();
        f.pool_idle.clear();
        f.registry_instances.clear();
        f.registry_preserving.clear();
    }

    /// One plugin hook call ended with `outcome` after `elapsed`.
    pub fn plugin_hook(
        &self,
        plugin: &Arc<str>,
        version: &Arc<str>,
        hook: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        let f = self.families();
        f.hooks
            .get_or_create(&HookLabels {
                plugin: Arc::clone(plugin),
                version: Arc::clone(version),
                hook,
                outcome,
            })
            .inc();
        f.hook_duration
            .get_or_create(&HookDurationLabels {
                plugin: Arc::clone(plugin),
                hook,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A fail-open route passed over a failure of `plugin`.
    pub fn plugin_fail_open(&self, plugin: &Arc<str>) {
        self.families()
            .fail_open
            .get_or_create(&PluginLabels {
                plugin: Arc::clone(plugin),
            })
            .inc();
    }

    /// An instance of `plugin` was created on the request path.
    pub fn plugin_instance_created(&self, plugin: &Arc<str>) {
        self.families()
            .instances
            .get_or_create(&PluginLabels {
                plugin: Arc::clone(plugin),
            })
            .inc();
    }

    /// A version of `plugin` was loaded from its file, or failed to (`loaded` false).
    pub fn plugin_reload(&self, plugin: &str, loaded: bool) {
        self.families()
            .reloads
            .get_or_create(&ReloadLabels {
                plugin: Arc::from(plugin),
                result: if loaded { "loaded" } else { "failed" },
            })
            .inc();
    }

    /// Counts one request of `route` by `consumer`: the first `top` distinct consumers get
    /// their own label, later ones count as `other`, so the label set stays bounded.
    pub fn consumer_request(&self, route: &Arc<String>, consumer: &[u8], top: usize) {
        let f = self.families();
        let name = std::str::from_utf8(consumer).unwrap_or(OTHER);
        let known = f
            .admitted
            .read()
            .ok()
            .and_then(|set| set.get(name).cloned());
        let label: Arc<str> = match known {
            Some(label) => label,
            None => match f.admitted.write() {
                Ok(mut set) if set.len() < top => {
                    let label: Arc<str> = Arc::from(name);
                    set.insert(Arc::clone(&label));
                    label
                }
                _ => Arc::from(OTHER),
            },
        };
        f.consumers
            .get_or_create(&ConsumerLabels {
                route: Arc::clone(route),
                consumer: label,
            })
            .inc();
    }

    /// Sets the registry's gauges and counters at scrape time: `(service, instances,
    /// self-preservation active)`, and the running totals of renewals and expirations.
    pub fn registry_state(
        &self,
        services: impl IntoIterator<Item = (String, usize, bool)>,
        renewals: u64,
        expirations: u64,
    ) {
        let f = self.families();
        for (service, instances, preserving) in services {
            f.registry_instances
                .get_or_create(&RegistryLabels {
                    service: service.clone(),
                })
                .set(i64::try_from(instances).unwrap_or(i64::MAX));
            f.registry_preserving
                .get_or_create(&RegistryLabels { service })
                .set(i64::from(preserving));
        }
        for (counter, total) in [
            (&f.registry_renewals, renewals),
            (&f.registry_expirations, expirations),
        ] {
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        }
    }

    /// The registry API's blocking queries, read at scrape time: open now, refused in all.
    pub fn registry_watches(&self, open: usize, refused: u64) {
        let f = self.families();
        f.registry_watches
            .set(i64::try_from(open).unwrap_or(i64::MAX));
        let seen = f.registry_watches_refused.get();
        if refused > seen {
            f.registry_watches_refused.inc_by(refused - seen);
        }
    }

    /// The etcd registry store (`[registry] store = "etcd"`), read at scrape time.
    pub fn registry_store(&self, up: bool, events: u64, errors: u64) {
        let f = self.families();
        f.registry_store_up.set(i64::from(up));
        for (counter, total) in [
            (&f.registry_store_events, events),
            (&f.registry_store_errors, errors),
        ] {
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        }
    }

    /// Counts one request in flight on the public listener until the guard is dropped.
    pub fn request_in_flight(&self) -> InFlight<'_> {
        let gauge = &self.families().in_flight;
        gauge.inc();
        InFlight(gauge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;

    fn tries_line(text: &str, endpoint: &str, class: &str) -> Option<String> {
        text.lines()
            .find(|l| {
                l.starts_with("gatehouse_upstream_requests_total")
                    && l.contains(&format!("endpoint=\"{endpoint}\""))
                    && l.contains(&format!("class=\"{class}\""))
            })
            .map(str::to_owned)
    }

    /// The cached handles count in the same series the label lookups do, and handles cached
    /// for one endpoint are never used for another.
    #[test]
    fn cached_try_meters_count_in_the_labelled_series() {
        let metrics = Metrics::default();
        let service = metrics.service(&Arc::from("users"));
        let meters = EndpointMeters::default();
        let a: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1002".parse().unwrap();
        let ms = Duration::from_millis(1);
        service.try_done_at(&meters, a, Some(200), ms);
        service.try_done_at(&meters, a, Some(204), ms);
        service.try_done(a, Some(200), ms);
        service.try_done_at(&meters, a, None, ms);
        // The same meters handed another address: counted under that address.
        service.try_done_at(&meters, b, Some(503), ms);
        let text = metrics.encode();
        let ok = tries_line(&text, "127.0.0.1:1001", "2xx").expect("2xx series");
        assert!(ok.ends_with(" 3"), "{ok}");
        let failed = tries_line(&text, "127.0.0.1:1001", "error").expect("error series");
        assert!(failed.ends_with(" 1"), "{failed}");
        let other = tries_line(&text, "127.0.0.1:1002", "5xx").expect("other endpoint");
        assert!(other.ends_with(" 1"), "{other}");
        assert!(tries_line(&text, "127.0.0.1:1001", "5xx").is_none());
    }
}
