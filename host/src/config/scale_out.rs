//! Raw TOML and validation of the scale-out keys: `[redis]` and `[rate_limits]`
//! (docs/scale-out.md). Converts into `ratelimit::StorePolicy` with its
//! `redis_store::RedisSettings`.

use serde::Deserialize;
use toml::Spanned;

use super::validate::Validator;
use crate::ratelimit::StorePolicy;
use crate::redis_store::{
    check_url, OnError, RedisSettings, DEFAULT_BREAKER_COOLDOWN, DEFAULT_BREAKER_FAILURES,
    DEFAULT_KEY_PREFIX, DEFAULT_TIMEOUT,
};

/// `[redis]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://[user:password@]host:port[/db]`. Required.
    pub url: Option<Spanned<String>>,
    /// A call's whole budget. Default `50ms`.
    pub timeout: Option<Spanned<String>>,
    /// Put before every key. Default `gatehouse:`.
    pub key_prefix: Option<Spanned<String>>,
    /// Failures in a row that open the breaker. Default 3.
    pub breaker_failures: Option<Spanned<i64>>,
    /// How long the open breaker skips Redis before one probe. Default `2s`.
    pub breaker_cooldown: Option<Spanned<String>>,
}

/// `[rate_limits]` (top level; a route's `rate_limits = [...]` declares the limits) and
/// `[plugins.cache]`: where a store keeps its state.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStoreChoice {
    /// `memory` (default) or `redis`.
    pub store: Option<Spanned<String>>,
    /// With `redis`: `open` (default; carry on locally while Redis fails) or `closed` (rate
    /// limits only: 503).
    pub on_error: Option<Spanned<String>>,
}

/// `[plugins.cache]`: `Some` settings when plugin cache entries live in Redis. A cache
/// fails open only (a miss), so `on_error = "closed"` is refused.
pub(super) fn plugin_cache_store(
    v: &mut Validator<'_>,
    redis: Option<&Spanned<RawRedis>>,
    raw: Option<&RawStoreChoice>,
) -> Option<RedisSettings> {
    let raw = raw?;
    if let Some(e) = raw.on_error.as_ref().filter(|e| e.get_ref() != "open") {
        v.problem(
            e.span(),
            "plugins.cache.on_error",
            format!(
                "{:?}: the plugin cache can only fail open (a miss while Redis is down); \
                 remove on_error or set it to \"open\"",
                e.get_ref()
            ),
        );
    }
    match raw.store.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("memory", _)) => None,
        Some(("redis", span)) => match redis {
            Some(r) => settings(v, r),
            None => {
                v.problem(
                    span,
                    "plugins.cache.store",
                    "store = \"redis\" needs a [redis] table with its url, such as \
                     url = \"redis://127.0.0.1:6379\""
                        .to_owned(),
                );
                None
            }
        },
        Some((other, span)) => {
            v.problem(
                span,
                "plugins.cache.store",
                format!("{other:?} is not a cache store; expected \"memory\" or \"redis\""),
            );
            None
        }
    }
}

/// `[redis]` and `[rate_limits]` into where counters live.
pub(super) fn rate_limit_store(
    v: &mut Validator<'_>,
    redis: Option<&Spanned<RawRedis>>,
    raw: &RawStoreChoice,
) -> StorePolicy {
    let settings = redis.and_then(|r| settings(v, r));
    let on_error = on_error(v, raw.on_error.as_ref(), "rate_limits.on_error");
    match raw.store.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("memory", _)) => {
            if let Some(e) = &raw.on_error {
                v.problem(
                    e.span(),
                    "rate_limits.on_error",
                    "on_error applies to store = \"redis\" only; counters in memory never fail"
                        .to_owned(),
                );
            }
            StorePolicy::Memory
        }
        Some(("redis", span)) => match (settings, redis) {
            (Some(settings), _) => StorePolicy::Redis { settings, on_error },
            // `settings` reported its own problem.
            (None, Some(_)) => StorePolicy::Memory,
            (None, None) => {
                v.problem(
                    span,
                    "rate_limits.store",
                    "store = \"redis\" needs a [redis] table with its url, such as \
                     url = \"redis://127.0.0.1:6379\""
                        .to_owned(),
                );
                StorePolicy::Memory
            }
        },
        Some((other, span)) => {
            v.problem(
                span,
                "rate_limits.store",
                format!("{other:?} is not a counter store; expected \"memory\" or \"redis\""),
            );
            StorePolicy::Memory
        }
    }
}

fn on_error(v: &mut Validator<'_>, raw: Option<&Spanned<String>>, field: &str) -> OnError {
    match raw.map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("open", _)) => OnError::Open,
        Some(("closed", _)) => OnError::Closed,
        Some((other, span)) => {
            v.problem(
                span,
                field,
                format!("{other:?} is not an error policy; expected \"open\" or \"closed\""),
            );
            OnError::Open
        }
    }
}

/// `[redis]`; `None` (with a problem reported) when it is unusable.
fn settings(v: &mut Validator<'_>, raw: &Spanned<RawRedis>) -> Option<RedisSettings> {
    let r = raw.get_ref();
    let url = match &r.url {
        None => {
            v.problem(
                raw.span(),
                "redis.url",
                "[redis] needs url, such as url = \"redis://127.0.0.1:6379\"".to_owned(),
            );
            None
        }
        Some(url) => {
            match check_url(url.get_ref()) {
                Ok(()) => Some(url.get_ref().clone()),
                Err(e) => {
                    // The URL may hold a password: name the problem, not the value.
                    v.problem(
                    url.span(),
                    "redis.url",
                    format!("not a Redis URL ({e}); expected redis://[user:password@]host:port[/db]"),
                );
                    None
                }
            }
        }
    };
    let timeout = v.duration(&r.timeout, "redis.timeout", DEFAULT_TIMEOUT);
    let breaker_cooldown = v.duration(
        &r.breaker_cooldown,
        "redis.breaker_cooldown",
        DEFAULT_BREAKER_COOLDOWN,
    );
    let breaker_failures = v.positive(
        &r.breaker_failures,
        "redis.breaker_failures",
        DEFAULT_BREAKER_FAILURES as usize,
    );
    let key_prefix = match &r.key_prefix {
        None => DEFAULT_KEY_PREFIX.to_owned(),
        Some(p) if p.get_ref().len() <= 128 && !p.get_ref().chars().any(char::is_control) => {
            p.get_ref().clone()
        }
        Some(p) => {
            v.problem(
                p.span(),
                "redis.key_prefix",
                format!(
                    "{:?} is not a key prefix; use at most 128 printable characters",
                    p.get_ref()
                ),
            );
            DEFAULT_KEY_PREFIX.to_owned()
        }
    };
    Some(RedisSettings {
        url: url?,
        timeout,
        key_prefix,
        breaker_failures: u32::try_from(breaker_failures).unwrap_or(u32::MAX),
        breaker_cooldown,
    })
}
