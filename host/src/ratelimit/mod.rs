//! Rate limiting: per-route limits of requests per period (GCRA) keyed by the route, the
//! client address, a header or a cookie, limits that plugins charge with keys they compute,
//! and a cap on a route's requests in flight.
//!
//! ```text
//! route matched ─▶ Stage::Routed limits (key: route, client-address) ─▶ in-flight slot
//!              ─▶ headers, request plugins
//!              ─▶ Stage::Upstream limits (key: header, cookie: as they go upstream) ─▶ upstream
//! plugins ─▶ limits.take(name, key, cost) on `key = "plugin"` limits granted to them
//! ```
//!
//! The counters sit behind [`LimiterStore`]: [`MemoryStore`] keeps them in this process,
//! bounded in keys; a shared store (Redis) can sit beside it for several gateways.

mod gcra;
mod in_flight;
mod route;
mod shared;
mod store;

use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};

pub use gcra::Decision;
pub use in_flight::{InFlight, InFlightPermit, PermitBody};
pub use route::{Limiter, Limits, RouteLimiters};
pub use shared::RedisLimiterStore;
pub use store::{LimiterStore, MemoryStore, StoreError, Take};

use crate::redis_store::{OnError, RedisSettings};

use crate::serialize::as_humantime;

/// A rate: `requests` per `per`, with bursts of up to `burst` requests at once.
///
/// As a token bucket: the bucket holds `burst` tokens and refills one every
/// `per / requests`; a request takes `cost` tokens or is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rate {
    pub requests: NonZeroU32,
    #[serde(serialize_with = "as_humantime")]
    pub per: Duration,
    /// Default (in config): `requests`.
    pub burst: NonZeroU32,
}

impl Rate {
    /// The time one request's worth of quota takes to come back (GCRA's emission interval),
    /// in nanoseconds, at least 1.
    pub fn interval_nanos(&self) -> u64 {
        let nanos = self.per.as_nanos() / u128::from(self.requests.get());
        u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
    }

    /// The time an empty bucket takes to fill up again, in nanoseconds.
    pub fn window_nanos(&self) -> u64 {
        self.interval_nanos()
            .saturating_mul(u64::from(self.burst.get()))
    }
}

/// What a limit counts requests by (`key` in config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// One count for the whole route (`route`).
    Route,
    /// The client's IP address, port excluded (`client-address`): the TCP peer, so behind a
    /// proxy every client shares the proxy's address.
    ClientAddress,
    /// A request header's value as it goes upstream (`header:NAME`): after the route's
    /// `request_headers` policy and the request plugins, so a header an auth plugin sets
    /// (`x-consumer`) can be the key.
    Header(http::HeaderName),
    /// A cookie's value as it goes upstream (`cookie:NAME`).
    Cookie(String),
    /// Never checked by the host: plugins granted the limit charge it with keys they compute
    /// (`plugin`).
    Plugin,
}

impl LimitKey {
    /// Parses `route`, `client-address`, `header:NAME`, `cookie:NAME` or `plugin`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "route" => return Some(LimitKey::Route),
            "client-address" => return Some(LimitKey::ClientAddress),
            "plugin" => return Some(LimitKey::Plugin),
            _ => {}
        }
        if let Some(name) = s.strip_prefix("header:") {
            return http::HeaderName::from_bytes(name.as_bytes())
                .ok()
                .map(LimitKey::Header);
        }
        match s.strip_prefix("cookie:") {
            Some(name) if !name.is_empty() && !name.contains([';', '=', ' ']) => {
                Some(LimitKey::Cookie(name.to_owned()))
            }
            _ => None,
        }
    }

    /// Where on the request path the host checks a limit with this key; `None` for `plugin`.
    pub fn stage(&self) -> Option<Stage> {
        match self {
            LimitKey::Route | LimitKey::ClientAddress => Some(Stage::Routed),
            LimitKey::Header(_) | LimitKey::Cookie(_) => Some(Stage::Upstream),
            LimitKey::Plugin => None,
        }
    }
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitKey::Route => f.write_str("route"),
            LimitKey::ClientAddress => f.write_str("client-address"),
            LimitKey::Header(name) => write!(f, "header:{name}"),
            LimitKey::Cookie(name) => write!(f, "cookie:{name}"),
            LimitKey::Plugin => f.write_str("plugin"),
        }
    }
}

impl Serialize for LimitKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where the host checks a limit (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Right after routing: before the body, header rewriting, plugins or the upstream.
    Routed,
    /// After the request plugins, just before the upstream call.
    Upstream,
}

/// What a limit does with a request that lacks its key (the header or cookie is absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingKey {
    /// Count every such request under one shared key (default): leaving the header out
    /// does not escape the limit.
    #[default]
    Shared,
    /// Let it through uncounted.
    Pass,
}

/// One limit as config declares it on a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitSpec {
    /// Unique on its route: in metrics, the `RateLimit` headers, and plugin grants.
    #[serde(serialize_with = "name_as_str")]
    pub name: Arc<String>,
    pub rate: Rate,
    pub key: LimitKey,
    pub missing: MissingKey,
    /// Keys the limit remembers at most (default 100 000); see [`MemoryStore`].
    pub max_keys: NonZeroUsize,
}

/// A route's limits as config declares them. The default has none and costs nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouteLimitsSpec {
    /// `rate_limits = [...]`, in file order (the order they are checked in, per stage).
    pub rate_limits: Vec<LimitSpec>,
    /// `max_in_flight`: requests on the route at once, from routing to the response body's end.
    pub max_in_flight: Option<NonZeroU32>,
}

impl RouteLimitsSpec {
    /// Whether the route has any limit at all.
    pub fn is_empty(&self) -> bool {
        self.rate_limits.is_empty() && self.max_in_flight.is_none()
    }
}

fn name_as_str<S: Serializer>(name: &Arc<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(name)
}

/// Where limit counters live: `[rate_limits] store`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "store", rename_all = "lowercase")]
pub enum StorePolicy {
    /// In this process (default): each gateway counts alone.
    #[default]
    Memory,
    /// In Redis, shared by every gateway using the same `[redis]`; `on_error` says what a
    /// charge does when Redis fails.
    Redis {
        #[serde(rename = "redis")]
        settings: RedisSettings,
        on_error: OnError,
    },
}

/// Default for [`LimitSpec::max_keys`].
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Why a request was refused by a limit: the gateway answers 429.
#[derive(Debug, thiserror::Error)]
pub enum LimitRefusal {
    /// A rate limit's key is out of quota.
    #[error("rate limit \"{limit}\" exceeded ({} requests per {}); retry in {} s", .rate.requests, humantime::format_duration(.rate.per), seconds_up(.decision.retry_after))]
    Rate {
        limit: Arc<String>,
        rate: Rate,
        decision: Decision,
    },
    /// The route has `max_in_flight` requests in flight.
    #[error("the route already has {max} requests in flight (max_in_flight)")]
    InFlight { max: u32 },
    /// The limit's shared store (Redis) failed and the limit fails closed: 503.
    #[error("rate limit \"{limit}\" cannot be checked: its shared store is unavailable (on_error = \"closed\")")]
    Unavailable { limit: Arc<String> },
}

impl LimitRefusal {
    /// The limit's name (`max_in_flight` for the in-flight cap): the metric label and the
    /// `limit` field of the JSON error.
    pub fn limit(&self) -> &Arc<String> {
        static IN_FLIGHT: std::sync::LazyLock<Arc<String>> =
            std::sync::LazyLock::new(|| Arc::new("max_in_flight".to_owned()));
        match self {
            LimitRefusal::Rate { limit, .. } | LimitRefusal::Unavailable { limit } => limit,
            LimitRefusal::InFlight { .. } => &IN_FLIGHT,
        }
    }

    /// The machine-readable error code.
    pub fn code(&self) -> &'static str {
        match self {
            LimitRefusal::Rate { .. } => "rate_limited",
            LimitRefusal::InFlight { .. } => "concurrency_limited",
            LimitRefusal::Unavailable { .. } => "rate_limit_unavailable",
        }
    }

    /// 429, or 503 when the limit could not be checked.
    pub fn status(&self) -> http::StatusCode {
        match self {
            LimitRefusal::Unavailable { .. } => http::StatusCode::SERVICE_UNAVAILABLE,
            _ => http::StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// `Retry-After`, and for a rate limit the `RateLimit-Policy` and `RateLimit` fields of
    /// draft-ietf-httpapi-ratelimit-headers (structured fields: the policy named by a string
    /// item; `q` quota and `w` window in seconds as configured, `r` remaining and `t` seconds
    /// until the quota is whole again).
    pub fn headers(&self, headers: &mut http::HeaderMap) {
        use http::HeaderValue;
        let number = |n: u64| HeaderValue::from(n);
        match self {
            LimitRefusal::Rate {
                limit,
                rate,
                decision,
            } => {
                headers.insert(
                    http::header::RETRY_AFTER,
                    number(seconds_up(decision.retry_after).max(1)),
                );
                let policy = format!(
                    "\"{limit}\";q={};w={}",
                    rate.requests,
                    seconds_up(rate.per).max(1)
                );
                let state = format!(
                    "\"{limit}\";r={};t={}",
                    decision.remaining,
                    seconds_up(decision.reset)
                );
                // Limit names are checked at load (letters, digits, `-`, `_`, `.`), so both
                // are valid header values.
                if let (Ok(policy), Ok(state)) =
                    (HeaderValue::try_from(policy), HeaderValue::try_from(state))
                {
                    headers.insert(RATELIMIT_POLICY, policy);
                    headers.insert(RATELIMIT, state);
                }
            }
            // No window to announce: a slot frees when some request in flight ends; a
            // failed store is retried by the breaker within seconds.
            LimitRefusal::InFlight { .. } | LimitRefusal::Unavailable { .. } => {
                headers.insert(http::header::RETRY_AFTER, number(1));
            }
        }
    }
}

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

/// Whole seconds, rounded up: a client that waits this long is not refused again for it.
fn seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
