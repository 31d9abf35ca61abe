//! Telemetry: `tracing` setup (text or JSON), the one access-log line per request, and metrics.

mod metrics;

pub use metrics::Metrics;

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderValue, Request, StatusCode};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the configured level.
/// Returns false if a subscriber was already installed (as in tests).
pub fn init(log: &LogConfig) -> bool {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(ansi);
    match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init().is_ok(),
        LogFormat::Text => builder.try_init().is_ok(),
    }
}

/// Collects what the access-log line needs while the request flows.
#[derive(Debug)]
pub struct AccessLog {
    method: String,
    path: String,
    client: SocketAddr,
    request_id: String,
    /// Set once routing picked a route.
    pub route: Option<String>,
    /// Set once an upstream endpoint answered.
    pub upstream: Option<SocketAddr>,
}

impl AccessLog {
    pub fn begin<B>(req: &Request<B>, client: SocketAddr, request_id: &HeaderValue) -> Self {
        AccessLog {
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
            client,
            request_id: String::from_utf8_lossy(request_id.as_bytes()).into_owned(),
            route: None,
            upstream: None,
        }
    }

    /// Writes the line and records the metrics. `elapsed` runs until the response head is ready.
    pub fn finish(self, status: StatusCode, elapsed: Duration, metrics: &Metrics) {
        let route = self.route.as_deref().unwrap_or("-");
        metrics.record(route, status.as_u16(), elapsed.as_secs_f64());
        tracing::info!(
            target: "gatehouse::access",
            method = %self.method,
            path = %self.path,
            route,
            upstream = %self.upstream.map_or_else(|| "-".to_owned(), |u| u.to_string()),
            status = status.as_u16(),
            duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            request_id = %self.request_id,
            client = %self.client,
        );
    }
}
