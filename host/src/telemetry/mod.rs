//! Telemetry: `tracing` setup (text or JSON), the one access-log line per request, metrics,
//! and the live per-route figures of the dashboard (`live`).

pub mod live;
mod metrics;
mod service_metrics;
mod throttle;
pub mod trace;

pub use metrics::{
    redis_metrics, CompressionCounters, ListenerEvent, MeteringPolicy, Metrics, OpenConnection,
    RedisCallLabels, RedisMetrics, RouteMeters, UpgradedMetrics,
};
pub use service_metrics::{EndpointMeters, ServiceMetrics};
pub use throttle::LogThrottle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, StatusCode, Uri};
use serde::Serialize;
use tracing_subscriber::EnvFilter;

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

/// The `tracing` target of audit lines (`admin::audit`): always written as JSON.
pub const AUDIT_TARGET: &str = "audit";

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the configured level.
/// Audit lines (target `audit`) are written as one JSON line each whatever the format and
/// level, so they can be shipped and parsed apart from the rest.
/// Returns false if a subscriber was already installed (as in tests).
pub fn init(log: &LogConfig) -> bool {
    use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // The h2 crate warns once per connection on floods a client controls (e.g.
        // "remotely-reset pending-accept streams reached limit"); the listener counts those
        // in `gatehouse_listener_events_total` and logs them rate-limited instead.
        if log.level.contains("h2") {
            EnvFilter::new(&log.level)
        } else {
            EnvFilter::new(format!("{},h2=error", log.level))
        }
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    // Each filter says how verbose it can get: without a hint the subscriber's is unknown,
    // so `log` records (wasmtime's `trace!`s: ~9 per fresh plugin instance) all pass the
    // `log` crate's level check and are turned into events only to be filtered out, ~600
    // instructions each. With the hints the `log` level is the configured one (at least
    // `info`, for audit lines) and those calls stop at one comparison.
    let not_audit =
        filter_fn(|meta| meta.target() != AUDIT_TARGET).with_max_level_hint(LevelFilter::TRACE);
    let main = match log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_target(true)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(ansi)
            .boxed(),
    }
    .with_filter(filter.and(not_audit));
    let audit = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_target(true)
        // Audit lines are `info` (admin/audit.rs).
        .with_filter(
            filter_fn(|meta| meta.target() == AUDIT_TARGET).with_max_level_hint(LevelFilter::INFO),
        );
    tracing_subscriber::registry()
        .with(main)
        .with(audit)
        .try_init()
        .is_ok()
}

/// Collects what the access-log line needs while the request flows.
#[derive(Debug)]
pub struct AccessLog {
    /// None when the access log is off: then nothing is copied out of the request.
    request: Option<RequestLine>,
    /// Set once routing picked a route.
    pub route: Option<Arc<String>>,
    /// Set once an upstream endpoint answered.
    pub upstream: Option<SocketAddr>,
    /// The service a split route picked (one-service routes leave it unset: the route says).
    pub service: Option<Arc<String>>,
    /// The request's server span, when tracing is on; ended with the line.
    pub trace: Option<trace::RequestSpan>,
    /// The span's ids once it ended before the line (an upgraded connection's).
    trace_ids: Option<(String, String)>,
}

#[derive(Debug)]
struct RequestLine {
    method: Method,
    uri: Uri,
    client: SocketAddr,
    request_id: HeaderValue,
}

impl AccessLog {
    pub fn begin<B>(req: &Request<B>, client: SocketAddr, request_id: &HeaderValue) -> Self {
        let enabled = tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO);
        AccessLog {
            // Cheap clones (shared bytes), and only when the line will be written.
            request: enabled.then(|| RequestLine {
                method: req.method().clone(),
                uri: req.uri().clone(),
                client,
                request_id: request_id.clone(),
            }),
            route: None,
            upstream: None,
            service: None,
            trace: None,
            trace_ids: None,
        }
    }

    /// The matched route's name, or `-`.
    pub fn route_name(&self) -> &str {
        self.route.as_deref().map_or("-", String::as_str)
    }

    /// Writes the line and records the metrics. `elapsed` runs until the response head is ready.
    /// `meters` are the matched route's cached handles (`LiveRoutes::meters`).
    pub fn finish(
        mut self,
        status: StatusCode,
        elapsed: Duration,
        metrics: &Metrics,
        meters: Option<&RouteMeters>,
    ) {
        self.record(status, elapsed, metrics, meters);
        self.write(status, elapsed, None);
        self.end_trace(status);
    }

    fn end_trace(&mut self, status: StatusCode) {
        if let Some(span) = self.trace.take() {
            span.finish(self.route.as_deref().map(String::as_str), status);
        }
    }

    /// For a request that switched protocols: records its metrics now (at the response
    /// head), and leaves the line to [`UpgradedLog::close`], when the connection closes.
    pub fn upgraded(
        mut self,
        status: StatusCode,
        elapsed: Duration,
        metrics: &Metrics,
        meters: Option<&RouteMeters>,
    ) -> UpgradedLog {
        self.record(status, elapsed, metrics, meters);
        // The line comes when the connection closes; the span covers the exchange up to
        // the 101, but its ids stay in the line.
        let ids = self.trace.as_ref().map(trace::RequestSpan::ids);
        self.end_trace(status);
        self.trace_ids = ids;
        UpgradedLog {
            log: self,
            status,
            head: elapsed,
        }
    }

    fn record(
        &self,
        status: StatusCode,
        elapsed: Duration,
        metrics: &Metrics,
        meters: Option<&RouteMeters>,
    ) {
        let seconds = elapsed.as_secs_f64();
        match (&self.route, meters) {
            (Some(route), Some(meters)) => {
                metrics.record_route(route, meters, status.as_u16(), seconds)
            }
            (route, _) => metrics.record(route.as_ref(), status.as_u16(), seconds),
        }
        if let (Some(route), Some(service)) = (&self.route, &self.service) {
            metrics.split_request(route, service);
        }
    }

    fn write(&self, status: StatusCode, elapsed: Duration, upgraded: Option<&Upgraded<'_>>) {
        let Some(line) = &self.request else {
            return;
        };
        let ids = match (&self.trace, &self.trace_ids) {
            (Some(span), _) => Some(span.ids()),
            (None, ids) => ids.clone(),
        };
        let (trace_id, span_id) = match &ids {
            Some((t, s)) => (Some(t.as_str()), Some(s.as_str())),
            None => (None, None),
        };
        // An `Option` field is left out of the line when `None`: only an upgraded connection's
        // line has the tunnel's fields.
        tracing::info!(
            target: "gatehouse::access",
            method = %line.method,
            path = line.uri.path(),
            route = self.route_name(),
            upstream = %self.upstream.map_or_else(|| "-".to_owned(), |u| u.to_string()),
            service = self.service.as_deref().map_or("-", String::as_str),
            status = status.as_u16(),
            duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            request_id = %String::from_utf8_lossy(line.request_id.as_bytes()),
            client = %line.client,
            trace_id,
            span_id,
            upgraded_us = upgraded.map(|u| u64::try_from(u.open_for.as_micros()).unwrap_or(u64::MAX)),
            bytes_up = upgraded.map(|u| u.bytes_up),
            bytes_down = upgraded.map(|u| u.bytes_down),
            closed = upgraded.map(|u| u.end),
        );
    }
}

/// The access-log line of a request that switched protocols, written when its connection
/// closes (see [`AccessLog::upgraded`]).
#[derive(Debug)]
pub struct UpgradedLog {
    log: AccessLog,
    status: StatusCode,
    head: Duration,
}

struct Upgraded<'a> {
    open_for: Duration,
    bytes_up: u64,
    bytes_down: u64,
    end: &'a str,
}

impl UpgradedLog {
    /// Writes the line: `duration_us` to the 101 as for any request, then `upgraded_us` (how
    /// long the upgraded connection was open), `bytes_up` (client to upstream), `bytes_down`
    /// and `closed` (why it ended: `closed`, `idle_timeout`, `shutdown`, `error`).
    pub fn close(self, open_for: Duration, bytes_up: u64, bytes_down: u64, end: &str) {
        let upgraded = Upgraded {
            open_for,
            bytes_up,
            bytes_down,
            end,
        };
        self.log.write(self.status, self.head, Some(&upgraded));
    }
}
