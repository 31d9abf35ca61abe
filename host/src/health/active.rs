//! Active health checks: periodic HTTP GETs to every endpoint of a service.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::balancing::pool::BackendPool;
use crate::balancing::Backend;

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
    client: Client<HttpConnector, Empty<Bytes>>,
    streaks: HashMap<Arc<str>, Streak>,
}

impl ActiveChecker {
    pub fn new(check: ActiveCheck, pool: Arc<BackendPool>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(check.timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(check.interval.saturating_mul(2))
            .build(connector);
        Self {
            check,
            pool,
            client,
            streaks: HashMap::new(),
        }
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
        let probes = backends.iter().map(|b| self.probe(b));
        let results = futures::future::join_all(probes).await;
        let mut changed = false;
        for (backend, ok) in backends.iter().zip(results) {
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
                tracing::warn!(
                    service = %self.pool.service(),
                    endpoint = %backend.endpoint.addr,
                    healthy = !healthy,
                    "active health check changed endpoint state"
                );
            }
        }
        // Forget endpoints that discovery dropped.
        self.streaks
            .retain(|id, _| backends.iter().any(|b| &b.endpoint.id == id));
        if changed {
            self.pool.rebuild();
        }
    }

    async fn probe(&self, backend: &Backend) -> bool {
        let uri = format!("http://{}{}", backend.endpoint.addr, self.check.path);
        let Ok(req) = http::Request::get(uri).body(Empty::new()) else {
            // The path was validated at config load; an unbuildable URI fails the probe.
            return false;
        };
        match tokio::time::timeout(self.check.timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => resp.status().is_success(),
            _ => false,
        }
    }
}
