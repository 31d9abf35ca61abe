//! Prometheus metrics for the request path, served on the admin listener at `/metrics`.

use std::sync::{Arc, LazyLock, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The route label of requests that matched no route.
static NO_ROUTE: LazyLock<Arc<String>> = LazyLock::new(|| Arc::new("-".to_owned()));

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<String>,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheLabels {
    route: Arc<String>,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SplitLabels {
    route: Arc<String>,
    service: Arc<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
    event: &'static str,
}

/// What a listener counts (label `event` of `gatehouse_listener_events_total`): load it shed
/// and connection failures a client can cause at will, which are logged only rate-limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerEvent {
    /// A connection closed at once: the listener was at `limits.max_connections`.
    ConnectionShed,
    /// A request answered 503 at once: `limits.max_requests_in_flight` were in flight.
    RequestShed,
    /// `accept` failed (e.g. out of file descriptors).
    AcceptFailed,
    /// A connection ended with an error; the kind names it (`h2_enhance_your_calm`, ...).
    ConnectionError(&'static str),
}

impl ListenerEvent {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerEvent::ConnectionShed => "connection_shed",
            ListenerEvent::RequestShed => "request_shed",
            ListenerEvent::AcceptFailed => "accept_failed",
            ListenerEvent::ConnectionError(kind) => kind,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConnectionLabels {
    listener: &'static str,
    protocol: &'static str,
    tls: &'static str,
}

/// A connection counted in `gatehouse_open_connections` while it lives: first as `pending`
/// (TLS handshake, or its first bytes not in yet), then under the protocol it speaks. The
/// gauge goes down on drop, so a connection whose task panics or is aborted is not leaked.
#[derive(Debug)]
pub struct OpenConnection {
    family: Family<ConnectionLabels, Gauge>,
    labels: ConnectionLabels,
    gauge: Gauge,
}

impl OpenConnection {
    /// The connection turned out to speak `protocol` (`http1`, `h2`).
    pub fn speaks(&mut self, protocol: &'static str) {
        if self.labels.protocol == protocol {
            return;
        }
        self.gauge.dec();
        self.labels.protocol = protocol;
        self.gauge = self.family.get_or_create(&self.labels).clone();
        self.gauge.inc();
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HandshakeLabels {
    listener: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CertificateLabels {
    /// The certificate's file, as configured.
    certificate: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    service: String,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    route: Arc<String>,
    limit: Arc<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DropLabels {
    route: Arc<String>,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConfigReloadLabels {
    source: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    route: Arc<String>,
    direction: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EncodingLabels {
    route: Arc<String>,
    encoding: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// `[metrics]`: which header names the consumer of a request (set by an auth plugin) and how
/// many consumers get a label of their own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MeteringPolicy {
    #[serde(serialize_with = "crate::serialize::as_str")]
    pub consumer_header: http::HeaderName,
    pub top_consumers: usize,
}

impl MeteringPolicy {
    pub const DEFAULT_TOP_CONSUMERS: usize = 50;
}

impl Default for MeteringPolicy {
    fn default() -> Self {
        MeteringPolicy {
            consumer_header: http::HeaderName::from_static("x-consumer"),
            top_consumers: Self::DEFAULT_TOP_CONSUMERS,
        }
    }
}

/// One gateway's metrics (each gateway in a process has its own registry).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    listener: Family<ListenerLabels, Counter>,
    tls_handshakes: Family<HandshakeLabels, Counter>,
    open_connections: Family<ConnectionLabels, Gauge>,
    tls_expiry: Family<CertificateLabels, Gauge>,
    underscore_headers: Family<ActionLabels, Counter>,
    upstream_refusals: Family<RefusalLabels, Counter>,
    split_requests: Family<SplitLabels, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
    mirror_sent: Family<RouteLabels, Counter>,
    mirror_dropped: Family<DropLabels, Counter>,
    upgraded_open: Family<RouteLabels, Gauge>,
    upgraded_bytes: Family<DirectionLabels, Counter>,
    upgraded_closed: Family<DropLabels, Counter>,
    cache_responses: Family<CacheLabels, Counter>,
    cache_stored_bytes: Gauge,
    cache_entries: Gauge,
    cache_evictions: Counter,
    compressed: Family<EncodingLabels, Counter>,
    compression_bytes: Family<DirectionLabels, Counter>,
    trace_spans: Family<ResultLabels, Counter>,
    config_reloads: Family<ConfigReloadLabels, Counter>,
    config_revision: Gauge,
    /// Upstream, plugin, registry and consumer families (`service_metrics`).
    pub(super) services: super::service_metrics::Families,
}

/// The byte counters of one compressed response, fetched once when compression starts.
#[derive(Debug, Clone)]
pub struct CompressionCounters {
    /// Bytes read from the response before compression.
    pub input: Counter,
    /// Compressed bytes sent.
    pub output: Counter,
}

/// One upgraded connection's metrics, fetched once when it opens: counted open until
/// dropped, its bytes counted as they flow.
#[derive(Debug)]
pub struct UpgradedMetrics {
    open: Gauge,
    up: Counter,
    down: Counter,
    closed: Family<DropLabels, Counter>,
    route: Arc<String>,
}

impl UpgradedMetrics {
    /// Counts `n` bytes from the client to the upstream (`up`) or back (`!up`).
    pub fn bytes(&self, up: bool, n: u64) {
        let counter = if up { &self.up } else { &self.down };
        counter.inc_by(n);
    }

    /// The connection closed for `reason` (`closed`, `idle_timeout`, `shutdown`, `error`).
    pub fn closed(self, reason: &'static str) {
        self.closed
            .get_or_create(&DropLabels {
                route: Arc::clone(&self.route),
                reason,
            })
            .inc();
        // The gauge goes down on drop.
    }
}

impl Drop for UpgradedMetrics {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        // 50 µs .. ~26 s: covers a cached answer through a slow upstream.
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
        });
        registry.register(
            "request_duration_seconds",
            "Time to the response head, by route",
            duration.clone(),
        );
        let listener = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "listener_events",
            "Load shed and client-caused connection failures, by listener and event",
            listener.clone(),
        );
        let tls_handshakes = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes on a listener, by result (`ok`, or why it failed)",
            tls_handshakes.clone(),
        );
        let open_connections = Family::<ConnectionLabels, Gauge>::default();
        registry.register(
            "open_connections",
            "Client connections open now, by listener, protocol (pending until known, http1, \
             h2) and tls (true, false); upgraded connections count until they close",
            open_connections.clone(),
        );
        let tls_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When each certificate the listener serves expires (Unix time), for alerts ahead of it",
            tls_expiry.clone(),
        );
        let underscore_headers = Family::<ActionLabels, Counter>::default();
        registry.register(
            "underscore_headers",
            "Request headers whose name holds '_', by action (dropped, or rejected with 400)",
            underscore_headers.clone(),
        );
        let upstream_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "upstream_refusals",
            "Requests answered 503 at once without reaching an upstream, by service and reason",
            upstream_refusals.clone(),
        );
        let split_requests = Family::<SplitLabels, Counter>::default();
        registry.register(
            "split_requests",
            "Requests a weighted split sent to each of its services, by route and service",
            split_requests.clone(),
        );
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests answered 429 by a route's rate limit (or `max_in_flight`), by route and limit",
            rate_limited.clone(),
        );
        let mirror_sent = Family::<RouteLabels, Counter>::default();
        registry.register(
            "mirror_requests",
            "Requests copied to a route's mirror service, by route",
            mirror_sent.clone(),
        );
        let mirror_dropped = Family::<DropLabels, Counter>::default();
        registry.register(
            "mirror_dropped",
            "Requests a route would have mirrored but did not, by route and reason",
            mirror_dropped.clone(),
        );
        let upgraded_open = Family::<RouteLabels, Gauge>::default();
        registry.register(
            "upgraded_connections",
            "Upgraded (WebSocket) connections open now, by route",
            upgraded_open.clone(),
        );
        let upgraded_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "upgraded_bytes",
            "Bytes relayed on upgraded connections, by route and direction (up: client to upstream)",
            upgraded_bytes.clone(),
        );
        let upgraded_closed = Family::<DropLabels, Counter>::default();
        registry.register(
            "upgraded_closed",
            "Upgraded connections closed, by route and reason (closed, idle_timeout, shutdown, error)",
            upgraded_closed.clone(),
        );
        let cache_responses = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_responses",
            "Responses of cached routes, by route and what the cache did (hit, miss, stale, \
             revalidated, collapsed, bypass)",
            cache_responses.clone(),
        );
        let cache_stored_bytes = Gauge::default();
        registry.register(
            "cache_stored_bytes",
            "Bytes the response cache holds (keys, headers and bodies), read at scrape time",
            cache_stored_bytes.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "cache_entries",
            "Keys the response cache holds, read at scrape time",
            cache_entries.clone(),
        );
        let cache_evictions = Counter::default();
        registry.register(
            "cache_evictions",
            "Response cache entries evicted to stay within cache.max_bytes",
            cache_evictions.clone(),
        );
        let compressed = Family::<EncodingLabels, Counter>::default();
        registry.register(
            "compressed_responses",
            "Responses the gateway compressed, by route and encoding (gzip, br, zstd)",
            compressed.clone(),
        );
        let compression_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "compression_bytes",
            "Bytes through response compression, by route and direction (in: before, out: after)",
            compression_bytes.clone(),
        );
        let trace_spans = Family::<ResultLabels, Counter>::default();
        registry.register(
            "trace_spans",
            "Sampled spans by what became of them: exported, dropped (export queue full) or \
             failed (the collector refused, failed or timed out)",
            trace_spans.clone(),
        );
        let config_reloads = Family::<ConfigReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads by source (file, etcd) and result (applied, refused: the running \
             config stayed)",
            config_reloads.clone(),
        );
        let config_revision = Gauge::default();
        registry.register(
            "config_revision",
            "The etcd revision (mod_revision of the config key) of the running config; 0 for a file",
            config_revision.clone(),
        );
        let services = super::service_metrics::Families::register(&mut registry);
        redis_metrics().register(&mut registry);
        Metrics {
            config_reloads,
            config_revision,
            services,
            trace_spans,
            cache_responses,
            cache_stored_bytes,
            cache_entries,
            cache_evictions,
            compressed,
            compression_bytes,
            upgraded_open,
            upgraded_bytes,
            upgraded_closed,
            split_requests,
            rate_limited,
            mirror_sent,
            mirror_dropped,
            registry,
            requests,
            duration,
            listener,
            tls_handshakes,
            open_connections,
            tls_expiry,
            underscore_headers,
            upstream_refusals,
        }
    }
}

/// The statuses most responses carry, each with a cached counter in [`RouteMeters`].
const COMMON_STATUSES: [u16; 16] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 429, 500, 502, 503, 504,
];

/// One route's request counters and duration histogram, taken from the label families once
/// and reused: a family lookup hashes the labels (SipHash over the route's name) under a
/// lock, twice per request (~0.5k instructions, callgrind). Filled lazily, so a series
/// still appears only once a request has counted in it. Belongs to one [`Metrics`] (the
/// snapshot's, see `telemetry::live`).
#[derive(Debug, Default)]
pub struct RouteMeters {
    duration: OnceLock<Histogram>,
    /// By the index of the status in [`COMMON_STATUSES`].
    requests: [OnceLock<Counter>; COMMON_STATUSES.len()],
}

impl Metrics {
    /// Records one answered request of `route`, through its cached handles.
    pub fn record_route(
        &self,
        route: &Arc<String>,
        meters: &RouteMeters,
        status: u16,
        seconds: f64,
    ) {
        let labels = || RequestLabels {
            route: Arc::clone(route),
            status,
        };
        match COMMON_STATUSES.iter().position(|&common| common == status) {
            Some(at) => meters.requests[at]
                .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                .inc(),
            None => self.requests.get_or_create(&labels()).inc(),
        };
        meters
            .duration
            .get_or_init(|| {
                self.duration
                    .get_or_create(&RouteLabels {
                        route: Arc::clone(route),
                    })
                    .clone()
            })
            .observe(seconds);
    }

    /// Records one answered request; `route` is None when nothing matched (label `-`).
    pub fn record(&self, route: Option<&Arc<String>>, status: u16, seconds: f64) {
        // Labels share the route's name: no copy per request.
        let route = route.unwrap_or(&NO_ROUTE);
        self.requests
            .get_or_create(&RequestLabels {
                route: Arc::clone(route),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels {
                route: Arc::clone(route),
            })
            .observe(seconds);
    }

    /// Counts one request that the split of `route` sent to `service`.
    pub fn split_request(&self, route: &Arc<String>, service: &Arc<String>) {
        self.split_requests
            .get_or_create(&SplitLabels {
                route: Arc::clone(route),
                service: Arc::clone(service),
            })
            .inc();
    }

    /// Counts one listener event.
    pub fn listener_event(&self, listener: &'static str, event: ListenerEvent) {
        self.listener
            .get_or_create(&ListenerLabels {
                listener,
                event: event.as_str(),
            })
            .inc();
    }

    /// Counts a connection accepted on `listener` as open until the guard is dropped.
    pub fn connection_opened(&self, listener: &'static str, tls: bool) -> OpenConnection {
        let labels = ConnectionLabels {
            listener,
            protocol: "pending",
            tls: if tls { "true" } else { "false" },
        };
        let gauge = self.open_connections.get_or_create(&labels).clone();
        gauge.inc();
        OpenConnection {
            family: self.open_connections.clone(),
            labels,
            gauge,
        }
    }

    /// How many of `event` `listener` counted so far.
    pub fn listener_events(&self, listener: &'static str, event: ListenerEvent) -> u64 {
        self.listener
            .get_or_create(&ListenerLabels {
                listener,
                event: event.as_str(),
            })
            .get()
    }

    /// Counts one TLS handshake on `listener`: `ok`, or the reason it failed.
    pub fn tls_handshake(&self, listener: &'static str, result: &'static str) {
        self.tls_handshakes
            .get_or_create(&HandshakeLabels { listener, result })
            .inc();
    }

    /// Sets the expiry of every certificate the listener serves, forgetting ones no longer
    /// served (a reload may drop some): `(certificate file, not_after as Unix seconds)`.
    pub fn tls_certificates(&self, expiries: impl IntoIterator<Item = (String, i64)>) {
        self.tls_expiry.clear();
        for (certificate, not_after) in expiries {
            self.tls_expiry
                .get_or_create(&CertificateLabels { certificate })
                .set(not_after);
        }
    }

    /// Counts `n` request headers with `_` in their name, `dropped` or `rejected`.
    pub fn underscore_headers(&self, action: &'static str, n: usize) {
        self.underscore_headers
            .get_or_create(&ActionLabels { action })
            .inc_by(n as u64);
    }

    /// Counts one request of `service` refused for `reason` (`endpoints_saturated`: every
    /// endpoint was at `max_requests_per_endpoint`).
    pub fn upstream_refusal(&self, service: &str, reason: &'static str) {
        self.upstream_refusals
            .get_or_create(&RefusalLabels {
                service: service.to_owned(),
                reason,
            })
            .inc();
    }

    /// Counts one request of `route` refused by its limit `limit`.
    pub fn rate_limited(&self, route: Option<&Arc<String>>, limit: &Arc<String>) {
        self.rate_limited
            .get_or_create(&LimitLabels {
                route: Arc::clone(route.unwrap_or(&NO_ROUTE)),
                limit: Arc::clone(limit),
            })
            .inc();
    }

    /// Counts one request copied to `route`'s mirror.
    pub fn mirror_sent(&self, route: &Arc<String>) {
        self.mirror_sent
            .get_or_create(&RouteLabels {
                route: Arc::clone(route),
            })
            .inc();
    }

    /// Counts one request of `route` not mirrored for `reason` (`full`, `body_too_large`,
    /// `body_error`).
    pub fn mirror_dropped(&self, route: &Arc<String>, reason: &'static str) {
        self.mirror_dropped
            .get_or_create(&DropLabels {
                route: Arc::clone(route),
                reason,
            })
            .inc();
    }

    /// Counts one compressed response; its bytes are counted on the returned counters.
    pub fn compressed(&self, route: &Arc<String>, encoding: &'static str) -> CompressionCounters {
        self.compressed
            .get_or_create(&EncodingLabels {
                route: Arc::clone(route),
                encoding,
            })
            .inc();
        let direction = |direction| {
            self.compression_bytes
                .get_or_create(&DirectionLabels {
                    route: Arc::clone(route),
                    direction,
                })
                .clone()
        };
        CompressionCounters {
            input: direction("in"),
            output: direction("out"),
        }
    }

    /// Counts one upgraded connection of `route` open until the returned handle is dropped.
    pub fn upgraded(&self, route: &Arc<String>) -> UpgradedMetrics {
        let open = self
            .upgraded_open
            .get_or_create(&RouteLabels {
                route: Arc::clone(route),
            })
            .clone();
        open.inc();
        let bytes = |direction| {
            self.upgraded_bytes
                .get_or_create(&DirectionLabels {
                    route: Arc::clone(route),
                    direction,
                })
                .clone()
        };
        UpgradedMetrics {
            open,
            up: bytes("up"),
            down: bytes("down"),
            closed: self.upgraded_closed.clone(),
            route: Arc::clone(route),
        }
    }

    /// Counts one response of a cached route; `status` is one of a fixed set.
    pub fn cache_response(&self, route: &Arc<String>, status: &'static str) {
        self.cache_responses
            .get_or_create(&CacheLabels {
                route: Arc::clone(route),
                status,
            })
            .inc();
    }

    /// Sets the response cache's size at scrape time; `evictions` is its running total.
    pub fn cache_size(&self, bytes: u64, entries: u64, evictions: u64) {
        self.cache_stored_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        // A new store (cache.max_bytes changed) starts from 0 again: count on from there.
        let seen = self.cache_evictions.get();
        if evictions > seen {
            self.cache_evictions.inc_by(evictions - seen);
        }
    }

    /// The counters of the span export queue (`[tracing]`).
    pub fn span_counters(&self) -> crate::telemetry::trace::SpanCounters {
        let counter = |result| {
            self.trace_spans
                .get_or_create(&ResultLabels { result })
                .clone()
        };
        crate::telemetry::trace::SpanCounters {
            exported: counter("exported"),
            dropped: counter("dropped"),
            failed: counter("failed"),
        }
    }

    /// A config reload from `source` (`file`, `etcd`) ended with `result` (`applied`,
    /// `refused`).
    pub fn config_reload(&self, source: &'static str, result: &'static str) {
        self.config_reloads
            .get_or_create(&ConfigReloadLabels { source, result })
            .inc();
    }

    /// The running config's etcd revision (0: not from etcd).
    pub fn config_revision(&self, revision: i64) {
        self.config_revision.set(revision);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; keep whatever was written and say why.
            out.push_str(&format!("# encoding error: {e}\n"));
        }
        out
    }
}

// --- Redis (shared state between gateways, docs/scale-out.md) ---

/// Labels of `gatehouse_redis_calls`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RedisCallLabels {
    /// What was asked: `gcra` (a limit charge), `cache_get`, `cache_set`...
    pub call: &'static str,
    /// `ok`, `error`, `timeout`, or `skipped` (breaker open: Redis not asked).
    pub outcome: &'static str,
}

/// The process's Redis figures. A process has one Redis client, which outlives every
/// `Metrics`, so these live in a static the registry holds clones of (a clone shares values).
#[derive(Debug, Default)]
pub struct RedisMetrics {
    pub calls: Family<RedisCallLabels, Counter>,
    /// Redis breakers open now (one per store using Redis).
    pub breaker_open: Gauge,
    /// Limit charges decided by this gateway's own counters because Redis failed
    /// (`on_error = "open"`).
    pub local_fallbacks: Counter,
    /// Requests refused with 503 because Redis failed (`on_error = "closed"`).
    pub refused: Counter,
}

impl RedisMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "redis_calls",
            "Redis calls by call and outcome (ok, error, timeout, skipped: breaker open)",
            self.calls.clone(),
        );
        registry.register(
            "redis_breaker_open",
            "Redis breakers open now, one per store using Redis (Redis is skipped)",
            self.breaker_open.clone(),
        );
        registry.register(
            "redis_local_fallbacks",
            "Rate limit charges counted locally because Redis failed (on_error = open)",
            self.local_fallbacks.clone(),
        );
        registry.register(
            "redis_refused",
            "Requests refused with 503 because Redis failed (on_error = closed)",
            self.refused.clone(),
        );
    }
}

/// The Redis metrics of this process.
pub fn redis_metrics() -> &'static RedisMetrics {
    static REDIS: LazyLock<RedisMetrics> = LazyLock::new(RedisMetrics::default);
    &REDIS
}
