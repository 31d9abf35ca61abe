//! Redis as shared state between gateways (docs/scale-out.md): one client per process with
//! bounded timeouts and a breaker, the policy types config produces (`[redis]`, a store's
//! `on_error`), and the metrics of every call.
//!
//! Users: `ratelimit` (counters shared by every gateway, GCRA in one Lua script). Whatever
//! Redis does, a call ends within `timeout`; after `breaker_failures` failures in a row the
//! breaker opens and calls fail at once, without I/O, until one probe after
//! `breaker_cooldown` succeeds.

mod breaker;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;

pub use breaker::{Admit, Breaker};

/// Checks a `[redis] url` as the client will read it (for `gatehouse check`).
pub fn check_url(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

use crate::serialize::as_humantime;
use crate::telemetry::{redis_metrics, LogThrottle, RedisCallLabels};

/// Default `[redis] timeout`: a call's whole budget, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// Default `[redis] key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "gatehouse:";
/// Default `[redis] breaker_failures`.
pub const DEFAULT_BREAKER_FAILURES: u32 = 3;
/// Default `[redis] breaker_cooldown`.
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(2);

/// `[redis]`: where Redis is and how long the gateway waits for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`. Not serialized: it may hold a password.
    #[serde(skip)]
    pub url: String,
    /// A call's budget, from asking to answer (a reconnect included).
    #[serde(serialize_with = "as_humantime")]
    pub timeout: Duration,
    /// Put before every key: several deployments can share one Redis.
    pub key_prefix: String,
    /// Failures in a row that open the breaker.
    pub breaker_failures: u32,
    /// How long an open breaker skips Redis before one probe.
    #[serde(serialize_with = "as_humantime")]
    pub breaker_cooldown: Duration,
}

/// What a store does when Redis fails (timeout, error, open breaker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Carry on locally (a limit counts in this gateway alone; a cache misses).
    #[default]
    Open,
    /// Refuse: a limit answers 503.
    Closed,
}

/// Why a Redis call gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisError {
    #[error("redis breaker open (redis failed {0} times in a row); not called")]
    BreakerOpen(u32),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Failed(String),
}

/// One Redis for the process: a reconnecting connection (multiplexed: every caller shares
/// it), the breaker and a throttled warning.
pub struct RedisClient {
    settings: RedisSettings,
    conn: ConnectionManager,
    breaker: Breaker,
    warn: LogThrottle,
    failures_logged: AtomicU64,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Drop for RedisClient {
    fn drop(&mut self) {
        // A client replaced by a reload while its breaker is open takes its count along.
        if self.breaker.is_open() {
            redis_metrics().breaker_open.dec();
        }
    }
}

impl RedisClient {
    /// A client for `settings`; connects on first use, so a gateway starts while Redis is
    /// down. Must run inside a tokio runtime. Fails only on a malformed URL (config checks it).
    pub fn new(settings: RedisSettings) -> Result<Arc<Self>, RedisError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| RedisError::Failed(e.to_string()))?;
        // No retries inside the manager: the breaker decides when to try again, and every
        // call has `timeout` for all of it.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| RedisError::Failed(e.to_string()))?;
        Ok(Arc::new(RedisClient {
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_cooldown),
            settings,
            conn,
            warn: LogThrottle::new(Duration::from_secs(10)),
            failures_logged: AtomicU64::new(0),
        }))
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Whether a call now would be turned away by the open breaker, without I/O: a caller
    /// can then take its `on_error` path without even building the call.
    pub fn skipping(&self) -> bool {
        self.breaker.skipping()
    }

    /// Run one call (`what` names it in metrics: `gcra`, `get`...) within the timeout and
    /// under the breaker.
    pub async fn call<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, RedisError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let m = redis_metrics();
        if self.breaker.admit() == Admit::No {
            m.calls
                .get_or_create(&RedisCallLabels {
                    call: what,
                    outcome: "skipped",
                })
                .inc();
            return Err(RedisError::BreakerOpen(self.settings.breaker_failures));
        }
        // A connection Redis dropped (a restart) fails the first call on it while the manager
        // reconnects: one retry, within the same budget, so a returning Redis does not cost a
        // failed request per gateway.
        let attempt = async {
            match f(self.conn.clone()).await {
                Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                    f(self.conn.clone()).await
                }
                other => other,
            }
        };
        let outcome = tokio::time::timeout(self.settings.timeout, attempt).await;
        let error = match outcome {
            Ok(Ok(value)) => {
                m.calls
                    .get_or_create(&RedisCallLabels {
                        call: what,
                        outcome: "ok",
                    })
                    .inc();
                if self.breaker.success() {
                    m.breaker_open.dec();
                    tracing::info!("redis answers again: breaker closed, shared state back");
                }
                return Ok(value);
            }
            Ok(Err(e)) => RedisError::Failed(e.to_string()),
            Err(_) => RedisError::Timeout(self.settings.timeout),
        };
        let outcome = if matches!(error, RedisError::Timeout(_)) {
            "timeout"
        } else {
            "error"
        };
        m.calls
            .get_or_create(&RedisCallLabels {
                call: what,
                outcome,
            })
            .inc();
        let total = self.failures_logged.fetch_add(1, Ordering::Relaxed) + 1;
        if self.breaker.failure() {
            m.breaker_open.inc();
        }
        if let Some(held_back) = self.warn.allow() {
            tracing::warn!(%error, failures = total, held_back, breaker_open = self.breaker.is_open(),
                "redis call failed; stores follow their on_error policy");
        }
        Err(error)
    }
}
