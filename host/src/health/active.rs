//! Active health checks: periodic HTTP GETs to every endpoint of a service, over connections
//! made exactly as the service's traffic makes them ([`crate::conn`]: protocol, TLS, connect
//! timeout), but of their own, so probes never take a request's pooled connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{header, Request};
use http_body::Body as _;

use crate::balancing::pool::BackendPool;
use crate::balancing::Backend;
use crate::body;
use crate::conn::{ConnSettings, Connections};

/// Most of a probe's response body read so its HTTP/1.1 connection can be reused; a bigger
/// body is dropped unread, and the connection with it.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// `[services.health]`: what to probe and how strict to be.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveCheck {
    /// Path to GET; a 2xx answer is a pass. Required.
    pub path: String,
    /// Time between rounds. Default 10 s.
    pub interval: Duration,
    /// A probe slower than this fails. Default 2 s.
    pub timeout: Duration,
    /// Consecutive passes that make an unhealthy endpoint healthy again. Default 2.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy. Default 3.
    pub unhealthy_threshold: u32,
}

impl ActiveCheck {
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Streak {
    passes: u32,
    failures: u32,
}

/// Runs the checks of one service as a background task.
pub struct ActiveChecker {
    check: ActiveCheck,
    pool: Arc<BackendPool>,
    /// How probe connections are made: the service's settings, one idle connection kept.
    settings: ConnSettings,
    /// Probe connections per endpoint id (and the address they go to).
    probes: HashMap<Arc<str>, (SocketAddr, Connections)>,
    streaks: HashMap<Arc<str>, Streak>,
    /// Counts each probe's result.
    metrics: Option<crate::telemetry::ServiceMetrics>,
}

impl ActiveChecker {
    pub fn new(check: ActiveCheck, pool: Arc<BackendPool>) -> Self {
        let settings = ConnSettings {
            max_idle: 1,
            idle_timeout: check.interval.saturating_mul(2),
            // Probes run on the control runtime, never on a worker.
            workers: 1,
            ..pool.connection_settings().clone()
        };
        Self {
            check,
            pool,
            settings,
            probes: HashMap::new(),
            streaks: HashMap::new(),
            metrics: None,
        }
    }

    /// Counts every probe's result in `metrics`.
    pub fn counted_in(mut self, metrics: Option<crate::telemetry::ServiceMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Probes every endpoint each interval until the task is aborted.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.check.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.round().await;
        }
    }

    /// One round: probe all endpoints concurrently, update verdicts, rebuild on change.
    pub async fn round(&mut self) {
        let backends = self.pool.all_backends();
        for b in backends.iter() {
            let stale = self
                .probes
                .get(&b.endpoint.id)
                .is_none_or(|(addr, _)| *addr != b.endpoint.addr);
            if stale {
                let conns = Connections::new(b.endpoint.addr, self.settings.clone());
                self.probes
                    .insert(b.endpoint.id.clone(), (b.endpoint.addr, conns));
            }
        }
        let probes = backends.iter().map(|b| self.probe(b));
        let results = futures::future::join_all(probes).await;
        let mut changed = false;
        for (backend, result) in backends.iter().zip(results) {
            let ok = result.is_ok();
            if let Some(metrics) = &self.metrics {
                metrics.health_checked(backend.endpoint.addr, ok);
            }
            backend.health.set_active_failure(result.err());
            let streak = self.streaks.entry(backend.endpoint.id.clone()).or_default();
            if ok {
                *streak = Streak {
                    passes: streak.passes.saturating_add(1),
                    failures: 0,
                };
            } else {
                *streak = Streak {
                    passes: 0,
                    failures: streak.failures.saturating_add(1),
                };
            }
            let healthy = backend.health.active_ok();
            let flip = if healthy {
                streak.failures >= self.check.unhealthy_threshold
            } else {
                streak.passes >= self.check.healthy_threshold
            };
            if flip && backend.health.set_active_ok(!healthy) {
                changed = true;
                let reason = backend.health.active_failure();
                tracing::warn!(
                    service = %self.pool.service(),
                    endpoint = %backend.endpoint.addr,
                    healthy = !healthy,
                    reason = reason.as_deref().unwrap_or("passed"),
                    "active health check changed endpoint state"
                );
            }
        }
        // Forget endpoints that discovery dropped (closing their probe connections).
        self.streaks
            .retain(|id, _| backends.iter().any(|b| &b.endpoint.id == id));
        self.probes
            .retain(|id, _| backends.iter().any(|b| &b.endpoint.id == id));
        if changed {
            self.pool.rebuild();
        }
    }

    /// One probe: `Ok` for a 2xx within the timeout, otherwise why not.
    async fn probe(&self, backend: &Backend) -> Result<(), String> {
        let Some((_, conns)) = self.probes.get(&backend.endpoint.id) else {
            return Err("no probe connection".to_owned());
        };
        let probe = async {
            // The path was validated at config load.
            let path = PathAndQuery::try_from(self.check.path.as_str())
                .map_err(|e| format!("bad health path: {e}"))?;
            let uri = conns
                .request_uri(path)
                .map_err(|e| format!("bad health URI: {e}"))?;
            let mut req = Request::get(uri)
                .body(body::empty())
                .map_err(|e| format!("bad health request: {e}"))?;
            // HTTP/1.1 needs a Host; HTTP/2 has `:authority` from the URI.
            if let Ok(host) = http::HeaderValue::from_str(conns.authority().as_str()) {
                req.headers_mut().insert(header::HOST, host);
            }
            let response = conns.send(req).await.map_err(|e| e.to_string())?;
            let status = response.status();
            // Read a small body to its end so the connection is kept for the next probe.
            let mut body = response.into_body();
            let mut read = 0;
            while read <= MAX_PROBE_BODY && !body.is_end_stream() {
                match http_body_util::BodyExt::frame(&mut body).await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                    _ => break,
                }
            }
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("answered {status}"))
            }
        };
        match tokio::time::timeout(self.check.timeout, probe).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(self.check.timeout)
            )),
        }
    }
}
