//! Configuration: the validated types the rest of the host sees, and how they are loaded.
//!
//! Loading is two steps (see [`load`]): the raw serde shape in [`model`], then [`validate`]
//! which turns it into [`Config`], whose types cannot hold bad values.

mod cache;
pub mod compression;
pub mod cors;
mod listen;
mod load;
pub mod model;
mod observability;
pub mod plugins;
mod policy;
pub mod ratelimit;
mod respond;
mod scale_out;
mod traffic;
mod upgrade;
mod upstream_tls;
mod validate;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

pub use crate::conn::Protocol;
pub use crate::listener::Limits;
pub use crate::routing::{HostMatch, MatchConfig, PathMatch, RouteConfig, RouteName};
pub use crate::telemetry::{LogConfig, LogFormat};
pub use crate::upstream::{DiscoveryConfig, ServiceConfig, ServiceName, ServicePolicy};
pub use load::{load_file, load_str, load_text, EMBEDDED_DEFAULT, EMBEDDED_SOURCE};
// The policy types above are owned by the modules that use them; config converts into them.
use crate::serialize::as_humantime;

pub use crate::body::limit::MaxBodyBytes;
pub use crate::headers::refuse::UnderscoreHeaders;

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Where the configuration came from: a path, or `<embedded default>`.
    pub source: String,
    pub listen: Listen,
    pub log: LogConfig,
    pub limits: Limits,
    /// `[paths]`: the global path canonicalisation policy.
    pub paths: crate::path::PathPolicy,
    pub admin: AdminConfig,
    /// `[forwarding]`: trusted proxies.
    pub forwarding: crate::headers::forwarding::ForwardingPolicy,
    pub shutdown: ShutdownConfig,
    pub services: Vec<ServiceConfig>,
    pub routes: Vec<RouteConfig>,
    /// `[registry]`. Not serialized: it holds the registry token.
    #[serde(skip)]
    pub registry: crate::discovery::registry::RegistryConfig,
    pub plugins: plugins::PluginsConfig,
    /// `[cache]`: the response cache's byte budget.
    pub cache: crate::cache::CacheBudget,
    /// `[tracing]`: call-chain tracing; `None` when off.
    pub tracing: Option<crate::telemetry::trace::TracingPolicy>,
    /// `[metrics]`: API metering by consumer.
    pub metering: crate::telemetry::MeteringPolicy,
    /// `[rate_limits]` (with `[redis]`): where limit counters live (docs/scale-out.md).
    pub rate_limits: crate::ratelimit::StorePolicy,
    /// `[plugins.cache] store = "redis"`: plugin cache entries in this Redis. `None`: in
    /// process.
    pub plugin_cache: Option<crate::redis_store::RedisSettings>,
    /// Problems that do not make the config invalid (an expired certificate), each rendered
    /// like an error; `gatehouse check` prints them and the gateway logs them at start.
    #[serde(skip)]
    pub warnings: Vec<Problem>,
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
    /// Worker threads serving the public listener (see `listener::workers`).
    pub workers: usize,
    /// `[listen.tls]`: the public listener terminates TLS. `None`: plaintext.
    pub tls: Option<crate::listener::tls::TlsPolicy>,
    /// `listen.http`: a plaintext listener beside the TLS one.
    pub http: Option<crate::listener::redirect::PlaintextListener>,
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

impl Config {
    /// The warnings as `file:line:column: field: message` lines.
    pub fn warning_lines(&self) -> Vec<String> {
        self.warnings
            .iter()
            .map(|p| {
                format!(
                    "{}:{}:{}: {}: {}",
                    self.source, p.line, p.column, p.field, p.message
                )
            })
            .collect()
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
