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
    /// Admin API protection.
    #[serde(default)]
    pub admin: RawAdmin,
    /// Graceful shutdown.
    #[serde(default)]
    pub shutdown: RawShutdown,
    /// Named upstream services.
    #[serde(default)]
    pub services: Vec<RawService>,
    /// Routes, in file order (the order breaks ties).
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// WebAssembly plugins: where they live and the limits they run under.
    #[serde(default)]
    pub plugins: super::plugins::RawPlugins,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    /// Public (client-facing) address. Default `0.0.0.0:8080`.
    pub public: Option<Spanned<String>>,
    /// Admin address. Default `127.0.0.1:9901`.
    pub admin: Option<Spanned<String>>,
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
    /// `http1` (default) or `h2c` (HTTP/2 with prior knowledge).
    pub protocol: Option<Spanned<String>>,
    /// TCP connect timeout. Default `2s`.
    pub connect_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique route name (shows in logs).
    pub name: Spanned<String>,
    /// The service requests are proxied to.
    pub service: Spanned<String>,
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
    /// The plugin chain, run in order. Default: none.
    #[serde(default)]
    pub plugins: Vec<super::plugins::RawRoutePlugin>,
    /// What a plugin failure does: `fail-closed` (default: the request fails) or `fail-open`
    /// (the failing plugin is skipped).
    pub on_error: Option<Spanned<String>>,
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
}
