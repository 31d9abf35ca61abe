//! Raw TOML shape of the configuration file: serde types only, no validation.
//!
//! Every table rejects unknown keys. Values that need checking (addresses, durations, names that
//! cross-reference) are kept as `Spanned` so that validation can point at the line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Listener addresses.
    #[serde(default)]
    pub listen: RawListen,
    /// Logging.
    #[serde(default)]
    pub log: RawLog,
    /// Request limits on the public listener.
    #[serde(default)]
    pub limits: RawLimits,
    /// How request paths are canonicalised (README, "Path canonicalisation").
    #[serde(default)]
    pub paths: RawPaths,
    /// Admin API protection.
    #[serde(default)]
    pub admin: RawAdmin,
    /// Which peers' forwarding headers are believed.
    #[serde(default)]
    pub forwarding: RawForwarding,
    /// Graceful shutdown.
    #[serde(default)]
    pub shutdown: RawShutdown,
    /// Named upstream services.
    #[serde(default)]
    pub services: Vec<RawService>,
    /// The built-in service registry (see docs/discovery.md).
    #[serde(default)]
    pub registry: RawRegistry,
    /// Routes, in file order (the order breaks ties).
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// WebAssembly plugins: where they live and the limits they run under.
    #[serde(default)]
    pub plugins: super::plugins::RawPlugins,
    /// This gateway instance: its zone (docs/traffic.md).
    #[serde(default)]
    pub gateway: super::traffic::RawGateway,
    /// The response cache's byte budget (docs/cache.md).
    #[serde(default)]
    pub cache: super::cache::RawCache,
    /// Response compression for every route (docs/compression.md). Default: off.
    pub compression: Option<super::compression::RawCompression>,
    /// Call-chain tracing over OTLP (docs/observability.md). Default: off.
    pub tracing: Option<Spanned<super::observability::RawTracing>>,
    /// API metering by consumer (docs/observability.md).
    #[serde(default)]
    pub metrics: super::observability::RawMetrics,
    /// Redis for state shared between gateways (docs/scale-out.md). Default: none.
    pub redis: Option<Spanned<super::scale_out::RawRedis>>,
    /// Where rate limit counters live (docs/scale-out.md). Default: in this process.
    #[serde(default)]
    pub rate_limits: super::scale_out::RawStoreChoice,
    /// etcd for state shared between gateways: the registry (docs/scale-out.md). Default:
    /// none.
    pub etcd: Option<Spanned<super::scale_out::RawEtcd>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    /// Public (client-facing) address. Default `0.0.0.0:8080`.
    pub public: Option<Spanned<String>>,
    /// Admin address. Default `127.0.0.1:9901`.
    pub admin: Option<Spanned<String>>,
    /// Worker threads serving the public listener, each with its own event loop. Default:
    /// the CPUs this process may run on.
    pub workers: Option<Spanned<i64>>,
    /// A plaintext listener beside the TLS one (needs `[listen.tls]`). Default: none.
    pub http: Option<Spanned<String>>,
    /// What `http` does: `redirect` (default) to https, or `serve` routes as usual.
    pub http_mode: Option<Spanned<String>>,
    /// The redirect's status: 308 (default) or 301.
    pub redirect_status: Option<Spanned<i64>>,
    /// The port redirects name. Default: the port of `public`.
    pub redirect_port: Option<Spanned<i64>>,
    /// TLS on the public listener (docs/tls.md). Default: none (plaintext).
    pub tls: Option<Spanned<RawListenTls>>,
}

/// `[listen.tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenTls {
    /// Certificate chains and keys, picked by SNI. At least one.
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    /// `off` (default), `optional` or `required`.
    pub client_auth: Option<Spanned<String>>,
    /// CA bundle for client certificates. Required with `client_auth`.
    pub client_ca: Option<Spanned<String>>,
    /// Header that carries the verified client identity upstream. Default: none.
    pub client_cert_header: Option<Spanned<String>>,
}

/// One `[listen.tls] certificates` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM certificate chain, leaf first. Required.
    pub cert: Spanned<String>,
    /// PEM private key of the leaf. Required.
    pub key: Spanned<String>,
    /// SNI names (exact or `*.wildcard`). Default: the certificate's DNS names.
    pub names: Option<Vec<Spanned<String>>>,
    /// Served when no name matches. Default: the first certificate is.
    pub default: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` (default) or `json`.
    pub format: Option<Spanned<String>>,
    /// A `tracing` filter such as `info` or `gatehouse=debug`. Default `info`.
    pub level: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Most request headers accepted (431 beyond). Default 100.
    pub max_header_count: Option<Spanned<i64>>,
    /// Most bytes of request headers accepted (431 beyond). Default 16384 (16 KiB).
    pub max_header_bytes: Option<Spanned<i64>>,
    /// Longest request URI accepted (414 beyond). Default 8192.
    pub max_uri_length: Option<Spanned<i64>>,
    /// Timeout for routes that set none. Default `30s`.
    pub default_timeout: Option<Spanned<String>>,
    /// Largest request body accepted (413 beyond), for routes that set none. Default
    /// 10485760 (10 MiB).
    pub max_body_bytes: Option<Spanned<i64>>,
    /// Request headers whose name holds `_`: `drop` (default) or `reject` (400).
    pub underscore_headers: Option<Spanned<String>>,
    // --- connection and load bounds (docs/limits.md) ---
    /// HTTP/2 streams a client may have open at once on one connection. Default 128.
    pub max_concurrent_streams: Option<Spanned<i64>>,
    /// A request body that sends no byte for this long gets 408. Default `30s`.
    pub body_idle_timeout: Option<Spanned<String>>,
    /// Requests awaiting their response head at once on the public listener; beyond, a fast
    /// 503. Default: a quarter of the file-descriptor limit, at most 10000.
    pub max_requests_in_flight: Option<Spanned<i64>>,
    /// Client connections open at once on the public listener; beyond, new ones are closed
    /// at once. Default: half of the file-descriptor limit, at most 10000.
    pub max_connections: Option<Spanned<i64>>,
    /// Largest upstream response head accepted (502 beyond). Default 65536 (64 KiB), at
    /// least 8192.
    pub max_response_header_bytes: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwarding {
    /// CIDRs of proxies in front of the gateway whose X-Forwarded-* / Forwarded headers are
    /// kept and appended to. Default: none (those headers are replaced for every client).
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPaths {
    /// Merge repeated slashes (`//a` → `/a`) before routing. Default true.
    pub merge_slashes: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Bearer token for the admin API. Required when the admin listener is not on loopback.
    pub token: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    /// How long in-flight requests may take to finish after SIGINT/SIGTERM. Default `30s`.
    pub drain_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// Unique service name.
    pub name: Spanned<String>,
    /// Static endpoints, `host:port` (IP addresses).
    #[serde(default)]
    pub endpoints: Vec<Spanned<String>>,
    /// `http1` (default), `h2` (HTTP/2 over TLS, needs `tls`) or `h2c` (cleartext HTTP/2
    /// with prior knowledge, refuses `tls`).
    pub protocol: Option<Spanned<String>>,
    /// TLS to the endpoints (docs/upstream-tls.md). Default: none (plaintext).
    pub tls: Option<RawUpstreamTls>,
    /// TCP connect timeout. Default `2s`.
    pub connect_timeout: Option<Spanned<String>>,
    // --- discovery, balancing, health, resilience (docs/discovery.md) ---
    /// `static` (default: `endpoints`), `registry` or `dns`.
    pub discovery: Option<Spanned<String>>,
    /// The name to resolve when `discovery = "dns"`.
    pub dns_name: Option<Spanned<String>>,
    /// The port of DNS endpoints. Required with `discovery = "dns"`.
    pub dns_port: Option<Spanned<i64>>,
    /// How often the DNS name is re-resolved. Default `30s`.
    pub dns_interval: Option<Spanned<String>>,
    /// `round-robin` (default), `weighted`, `random`, `least-request` or `hash`.
    pub balance: Option<Spanned<String>>,
    /// With `balance = "hash"`: `header:NAME`, `cookie:NAME` or `client-address`.
    pub hash_key: Option<Spanned<String>>,
    /// Time for one try to get a response head. Default: the whole call's timeout.
    pub try_timeout: Option<Spanned<String>>,
    /// Cap on a whole call, retries included (the route's timeout also applies). Default none.
    pub timeout: Option<Spanned<String>>,
    /// Active HTTP health checks. Default: none.
    pub health: Option<RawHealth>,
    /// Passive outlier detection. Default: off.
    pub outlier: Option<RawOutlier>,
    /// Retries. Default: off.
    pub retry: Option<RawRetry>,
    /// Circuit breaker. Default: off.
    pub breaker: Option<RawBreaker>,
    /// Static endpoints (from `endpoints`) that get no new requests. Default: none.
    #[serde(default)]
    pub drained: Vec<Spanned<String>>,
    /// With no healthy endpoint, spread traffic over all of them (`true`, default) or answer
    /// 503 at once (`false`).
    pub panic_mode: Option<bool>,
    /// Requests one endpoint may have in flight; at the cap it is skipped, and with every
    /// endpoint at its cap the request gets a fast 503. Default: unbounded.
    pub max_requests_per_endpoint: Option<Spanned<i64>>,
    // --- gray release and zones (docs/traffic.md) ---
    /// Gray subsets by instance metadata. Default: none.
    #[serde(default)]
    pub gray: Vec<super::traffic::RawGray>,
    /// Prefer instances whose zone is `gateway.zone`. Default false.
    pub zone_aware: Option<Spanned<bool>>,
    /// Fewest healthy local instances that keep traffic in the zone. Default 1.
    pub zone_min_healthy: Option<Spanned<i64>>,
}

/// `[services.tls]`: its presence turns TLS on. Paths are relative to the config file's
/// directory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// CA bundle (PEM) the endpoints' certificates must chain to. Default: the system's roots.
    pub ca: Option<Spanned<String>>,
    /// The name sent as SNI and verified against the certificate. Default: the endpoint's IP
    /// address (an IP SAN), or `dns_name` with `discovery = "dns"`.
    pub server_name: Option<Spanned<String>>,
    /// `false` accepts any certificate (warned at every load). Default true.
    pub verify: Option<Spanned<bool>>,
    /// Client certificate chain (PEM) for endpoints that require one (mTLS). Needs `key`.
    pub cert: Option<Spanned<String>>,
    /// The client certificate's private key (PEM). Needs `cert`.
    pub key: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    /// Bearer token for write calls. Default: none (writes refused).
    pub token: Option<Spanned<String>>,
    /// Lease length. Default `90s`.
    pub lease: Option<Spanned<String>>,
    /// Heartbeat interval advertised to clients. Default `30s`.
    pub heartbeat: Option<Spanned<String>>,
    /// How often lapsed leases are swept. Default `30s`.
    pub eviction_interval: Option<Spanned<String>>,
    /// Self-preservation share, 0 < x <= 1 (1 disables). Default 0.5.
    pub self_preservation: Option<Spanned<f64>>,
    /// `memory` (default) or `etcd` (needs `[etcd]`; docs/scale-out.md).
    pub store: Option<Spanned<String>>,
    /// With `etcd`: every key starts with this. Default `/gatehouse/registry/`.
    pub key_prefix: Option<Spanned<String>>,
    /// With `etcd`: `/readyz` answers 503 while etcd is unreachable. Default false.
    pub ready_requires_store: Option<Spanned<bool>>,
    /// Blocking queries (watches) held open at once. Default 4096.
    pub max_watches: Option<Spanned<i64>>,
    /// The longest a blocking query is held. Default `5m`.
    pub max_wait: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Path to GET; 2xx passes. Required.
    pub path: Spanned<String>,
    /// Default `10s`.
    pub interval: Option<Spanned<String>>,
    /// Default `2s`.
    pub timeout: Option<Spanned<String>>,
    /// Default 2.
    pub healthy_threshold: Option<Spanned<i64>>,
    /// Default 3.
    pub unhealthy_threshold: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    /// Default 5.
    pub consecutive_failures: Option<Spanned<i64>>,
    /// Default `30s`.
    pub base_ejection: Option<Spanned<String>>,
    /// Default `300s`.
    pub max_ejection: Option<Spanned<String>>,
    /// Default 0.5.
    pub max_ejected_share: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Default 2.
    pub max_retries: Option<Spanned<i64>>,
    /// Default: GET, HEAD, OPTIONS, TRACE, PUT, DELETE.
    pub methods: Option<Vec<Spanned<String>>>,
    /// Default all of `connect-failure`, `reset`, `timeout`, `5xx`.
    pub on: Option<Vec<Spanned<String>>>,
    /// Default `25ms`.
    pub backoff: Option<Spanned<String>>,
    /// Default 0.2.
    pub budget_ratio: Option<Spanned<f64>>,
    /// Default 10.
    pub budget_min_per_sec: Option<Spanned<i64>>,
    /// Default `10s`.
    pub budget_window: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Default 1024.
    pub max_concurrent: Option<Spanned<i64>>,
    /// Default 1024.
    pub max_pending: Option<Spanned<i64>>,
    /// Default 0.5.
    pub failure_rate: Option<Spanned<f64>>,
    /// Default 20.
    pub min_requests: Option<Spanned<i64>>,
    /// Default `10s`.
    pub window: Option<Spanned<String>>,
    /// Default `5s`.
    pub open_for: Option<Spanned<String>>,
    /// Default 3.
    pub half_open_probes: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique route name (shows in logs).
    pub name: Spanned<String>,
    /// The service requests are proxied to. Exactly one of `service` and `split`.
    pub service: Option<Spanned<String>>,
    /// Several services with weights (`[[routes.split]]`): each request goes to one of them.
    pub split: Option<Spanned<Vec<RawSplitTarget>>>,
    /// With `split`: `header:NAME`, `cookie:NAME` or `client-address`, so that one key keeps
    /// one target while the weights hold. Default: none (each request picks at random).
    pub sticky: Option<Spanned<String>>,
    /// What a request must look like to take this route.
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    /// Remove the matched `prefix` from the path before proxying. Default false.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Replace the upstream path with this template; `{name}` is filled from the matched path.
    pub rewrite: Option<Spanned<String>>,
    /// Time allowed for the upstream to answer with its response head. Default `limits.default_timeout`.
    pub timeout: Option<Spanned<String>>,
    /// Largest request body accepted on this route (413 beyond). Default `limits.max_body_bytes`.
    pub max_body_bytes: Option<Spanned<i64>>,
    /// Let encoded separators (`%2F`, `%5C`) through to this route, still encoded. Default false.
    #[serde(default)]
    pub allow_encoded_slash: bool,
    /// The plugin chain, run in order. Default: none.
    #[serde(default)]
    pub plugins: Vec<super::plugins::RawRoutePlugin>,
    /// What a plugin failure does: `fail-closed` (default: the request fails) or `fail-open`
    /// (the failing plugin is skipped).
    pub on_error: Option<Spanned<String>>,
    /// Headers removed, set or appended on the request before the plugins run. Default: none.
    pub request_headers: Option<RawHeaderPolicy>,
    /// Headers removed, set or appended on the response, last. Default: none.
    pub response_headers: Option<RawHeaderPolicy>,
    /// Answer every request with this status (400-599) and a JSON error, without plugins or
    /// the upstream. Default: none.
    pub deny: Option<Spanned<i64>>,
    /// Rate limits (docs/traffic.md, "Rate limits"). Default: none.
    #[serde(default)]
    pub rate_limits: Vec<super::ratelimit::RawRateLimit>,
    /// Requests in flight on this route at once; beyond, 429. Default: unbounded.
    pub max_in_flight: Option<Spanned<i64>>,
    /// Copy a share of the requests to another service (docs/traffic.md). Default: none.
    pub mirror: Option<super::traffic::RawMirror>,
    /// HTTP/1.1 upgrades this route proxies: `["websocket"]` (docs/websocket.md). Default:
    /// none (an upgrade request is served as a plain request).
    pub upgrades: Option<Spanned<Vec<Spanned<String>>>>,
    /// An upgraded connection silent both ways this long is closed. Default `5m`.
    pub upgrade_idle_timeout: Option<Spanned<String>>,
    /// The route's HTTP response cache (docs/cache.md). Default: none.
    pub cache: Option<Spanned<super::cache::RawRouteCache>>,
    /// Answer every request with this status, headers and body, without a service
    /// (docs/static-responses.md). Exclusive with `service`, `split` and `redirect`.
    pub respond: Option<Spanned<RawRespond>>,
    /// Answer every request with a redirect, without a service. Exclusive with `service`,
    /// `split` and `respond`.
    pub redirect: Option<Spanned<RawRedirect>>,
    /// This route's compression, over the global `[compression]` (docs/compression.md).
    pub compression: Option<super::compression::RawCompression>,
    /// The gateway answers preflights and sets CORS headers (docs/cors.md). Default: none.
    pub cors: Option<super::cors::RawCors>,
}

/// `[routes.respond]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRespond {
    /// 200-599. Default 200.
    pub status: Option<Spanned<i64>>,
    /// Response headers. Default: `content-type` from `body_file`'s extension, or
    /// `text/plain; charset=utf-8` for an inline `body`.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    /// The body, inline. Exclusive with `body_file`. Default: empty.
    pub body: Option<Spanned<String>>,
    /// The body, from a file read at load (relative to the config file's directory; at most
    /// 1 MiB).
    pub body_file: Option<Spanned<String>>,
}

/// `[routes.redirect]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    /// Where to: an absolute URL or a path; `{name}` is filled from the route's path template.
    /// Required.
    pub location: Spanned<String>,
    /// 301, 302, 303, 307 or 308. Default 302.
    pub status: Option<Spanned<i64>>,
    /// Append the request's query string. Default true.
    pub keep_query: Option<bool>,
}

/// One `[[routes.split]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplitTarget {
    /// A service name. Required.
    pub service: Spanned<String>,
    /// A positive integer; shares are `weight / sum of weights`. Required.
    pub weight: Spanned<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderPolicy {
    /// Header names to remove.
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
    /// Headers to set, replacing any values.
    #[serde(default)]
    pub set: BTreeMap<String, Spanned<String>>,
    /// Headers to add, keeping existing values.
    #[serde(default)]
    pub append: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Exact host (`api.example.com`) or wildcard (`*.example.com`). Default: any host.
    pub host: Option<Spanned<String>>,
    /// Exact path or template (`/users/{id}`). Mutually exclusive with `prefix`.
    pub path: Option<Spanned<String>>,
    /// Path prefix on segment boundaries (`/api` matches `/api` and `/api/x`, not `/apix`).
    pub prefix: Option<Spanned<String>>,
    /// Allowed methods. Default: any.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// Headers that must be present with exactly these values (`"*"` = present with any value).
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    /// Query parameters that must be present with exactly these values (`"*"` = any value).
    #[serde(default)]
    pub query: BTreeMap<String, Spanned<String>>,
    /// Cookies that must be present with exactly these values (`"*"` = any value).
    #[serde(default)]
    pub cookies: BTreeMap<String, Spanned<String>>,
}
