//! Configuration: the validated types the rest of the host sees, and how they are loaded.
//!
//! Loading is two steps (see [`load`]): the raw serde shape in [`model`], then [`validate`]
//! which turns it into [`Config`], whose types cannot hold bad values.

mod load;
pub mod model;
pub mod plugins;
mod policy;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, Method};
use serde::{Serialize, Serializer};

pub use load::{load_file, load_str, EMBEDDED_DEFAULT, EMBEDDED_SOURCE};
pub use policy::{DiscoveryConfig, ServicePolicy};

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Where the configuration came from: a path, or `<embedded default>`.
    pub source: String,
    pub listen: Listen,
    pub log: LogConfig,
    pub limits: Limits,
    pub admin: AdminConfig,
    pub shutdown: ShutdownConfig,
    pub services: Vec<ServiceConfig>,
    pub routes: Vec<RouteConfig>,
    /// `[registry]`. Not serialized: it holds the registry token.
    #[serde(skip)]
    pub registry: crate::discovery::registry::RegistryConfig,
    pub plugins: plugins::PluginsConfig,
}

impl Config {
    /// The service with this name (validation guarantees every route's service exists).
    pub fn service(&self, name: &ServiceName) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| &s.name == name)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Listen {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// Worker threads serving the public listener (see `proxy::workers`).
    pub workers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    pub max_uri_length: usize,
    #[serde(serialize_with = "as_humantime")]
    pub default_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    /// Never serialized: `/admin/config` must not leak it.
    #[serde(skip)]
    pub token: Option<String>,
    /// Shown instead of the token.
    pub token_set: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShutdownConfig {
    #[serde(serialize_with = "as_humantime")]
    pub drain_timeout: Duration,
}

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

/// A route's unique name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RouteName(pub String);

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which HTTP version the gateway speaks to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 with pooled keep-alive connections.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (one multiplexed connection per endpoint).
    H2c,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceConfig {
    pub name: ServiceName,
    pub endpoints: Vec<SocketAddr>,
    pub protocol: Protocol,
    #[serde(serialize_with = "as_humantime")]
    pub connect_timeout: Duration,
    /// Discovery, balancing, health and resilience (docs/discovery.md).
    #[serde(flatten)]
    pub policy: ServicePolicy,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    pub name: RouteName,
    pub service: ServiceName,
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    pub strip_prefix: bool,
    pub rewrite: Option<String>,
    #[serde(serialize_with = "as_humantime")]
    pub timeout: Duration,
    /// The plugin chain, in order.
    pub plugins: Vec<plugins::RoutePlugin>,
    /// What a plugin failure does to the request.
    pub on_error: plugins::OnErrorConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum HostMatch {
    /// `api.example.com`, lowercased.
    Exact(String),
    /// `*.example.com`: stored as the suffix `.example.com`; matches any depth of subdomain.
    Wildcard(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum PathMatch {
    /// An exact path or a template with `{param}` segments (and `{*rest}` catch-all).
    Path(String),
    /// A prefix on segment boundaries. `/` matches everything.
    Prefix(String),
}

/// How a header or query value must look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum ValueMatch {
    Present,
    Exact(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct MatchConfig {
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    #[serde(serialize_with = "methods_as_strings")]
    pub methods: Vec<Method>,
    #[serde(serialize_with = "headers_as_strings")]
    pub headers: Vec<(HeaderName, ValueMatch)>,
    pub query: Vec<(String, ValueMatch)>,
}

fn as_humantime<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

fn methods_as_strings<S: Serializer>(methods: &[Method], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(methods.iter().map(Method::as_str))
}

fn headers_as_strings<S: Serializer>(
    h: &[(HeaderName, ValueMatch)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(h.iter().map(|(n, v)| (n.as_str(), v)))
}

/// Why a configuration was rejected. Every variant names the file; parse and validation
/// problems also name the line, column and key path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {field}: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
    #[error("{file}: {}:\n{}", count(problems.len(), "problem"), render_problems(file, problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

/// One validation problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    /// Key path such as `routes[2].service`.
    pub field: String,
    pub message: String,
}

/// "1 problem", "3 problems".
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn render_problems(file: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| {
            format!(
                "  {file}:{}:{}: {}: {}",
                p.line, p.column, p.field, p.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
