//! [`RedisLimiterStore`]: limit counters in Redis, shared by every gateway that points at the
//! same Redis and key prefix, so N gateways together allow the configured rate, not N times it.
//!
//! The GCRA step (`gcra.rs`) runs inside Redis as one Lua script (EVALSHA; the client loads
//! it again after a Redis restart), so read-modify-write is atomic across gateways, and `now`
//! is Redis' own `TIME`, so gateways with skewed clocks agree. Times in the script are
//! microseconds as Lua doubles (exact below 2^53 µs, centuries away). A TAT expires with its
//! bucket: an idle key costs Redis nothing.
//!
//! When Redis fails (timeout, error, open breaker) the store follows `on_error`: `open`
//! charges this gateway's own [`MemoryStore`] instead, `closed` answers an error (the
//! pipeline turns it into 503).

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::gcra::Decision;
use super::store::stored_key;
use super::{LimiterStore, MemoryStore, Rate, StoreError, Take};
use crate::redis_store::{OnError, RedisClient};
use crate::telemetry::redis_metrics;

/// KEYS[1]: the key. ARGV: interval µs (may be fractional), window µs, cost, burst.
/// Returns {allowed, remaining, reset µs, retry-after µs}, as `gcra::charge`.
const GCRA_LUA: &str = r#"
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or 0
if tat < now then tat = now end
local new_tat = tat + interval * cost
local limit = now + window
if new_tat <= limit then
  redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
  return {1, math.floor((limit - new_tat) / interval), math.ceil(new_tat - now), 0}
end
local retry
if cost > burst then retry = window else retry = new_tat - limit end
return {0, math.max(0, math.floor((limit - tat) / interval)), math.ceil(tat - now), math.ceil(retry)}
"#;

static GCRA: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA_LUA));

/// One limit's counters in Redis, with local counters for `on_error = "open"`.
pub struct RedisLimiterStore {
    client: Arc<RedisClient>,
    /// `key_prefix` + `rl:` + route + `:` + limit + `:`.
    prefix: Vec<u8>,
    on_error: OnError,
    local: MemoryStore,
}

impl RedisLimiterStore {
    /// The store of limit `limit` on route `route`; `max_keys` bounds the local fallback.
    pub fn new(
        client: Arc<RedisClient>,
        route: &str,
        limit: &str,
        on_error: OnError,
        max_keys: usize,
    ) -> Self {
        let prefix = format!("{}rl:{route}:{limit}:", client.settings().key_prefix).into_bytes();
        RedisLimiterStore {
            client,
            prefix,
            on_error,
            local: MemoryStore::new(max_keys),
        }
    }

    /// Redis failed or is skipped: what `on_error` says.
    fn failed(
        &self,
        key: &[u8],
        cost: u32,
        rate: &Rate,
        now: Instant,
        why: String,
    ) -> Result<Decision, StoreError> {
        match self.on_error {
            OnError::Open => {
                redis_metrics().local_fallbacks.inc();
                Ok(self.local.charge(key, cost, rate, now))
            }
            OnError::Closed => {
                redis_metrics().refused.inc();
                Err(StoreError(why))
            }
        }
    }
}

impl LimiterStore for RedisLimiterStore {
    fn take(&self, key: &[u8], cost: u32, rate: &Rate, now: Instant) -> Take<'_> {
        if self.client.skipping() {
            // A dead Redis costs one atomic load per request, no I/O, no allocation.
            return Take::Ready(self.failed(key, cost, rate, now, "redis breaker open".to_owned()));
        }
        let mut redis_key = Vec::with_capacity(self.prefix.len() + key.len().min(64));
        redis_key.extend_from_slice(&self.prefix);
        redis_key.extend_from_slice(&stored_key(key));
        let interval_us = rate.interval_nanos() as f64 / 1000.0;
        let window_us = interval_us * f64::from(rate.burst.get());
        let burst = rate.burst.get();
        let key = key.to_vec();
        let rate = *rate;
        Take::Pending(
            async move {
                let redis_key = &redis_key;
                let answer = self
                    .client
                    .call("gcra", |mut conn| async move {
                        GCRA.key(redis_key)
                            .arg(interval_us)
                            .arg(window_us)
                            .arg(cost)
                            .arg(burst)
                            .invoke_async::<Vec<i64>>(&mut conn)
                            .await
                    })
                    .await;
                match answer {
                    Ok(reply) => decision(&reply).ok_or_else(|| {
                        StoreError(format!("unexpected reply from the GCRA script: {reply:?}"))
                    }),
                    Err(e) => self.failed(&key, cost, &rate, now, e.to_string()),
                }
            }
            .boxed(),
        )
    }
}

fn decision(reply: &[i64]) -> Option<Decision> {
    let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
    match *reply {
        [allowed, remaining, reset, retry_after] => Some(Decision {
            allowed: allowed == 1,
            remaining: u64::try_from(remaining).unwrap_or(0),
            reset: micros(reset),
            retry_after: micros(retry_after),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_reply_becomes_a_decision() {
        let allowed = decision(&[1, 4, 250_000, 0]).expect("four numbers");
        assert!(allowed.allowed);
        assert_eq!(allowed.remaining, 4);
        assert_eq!(allowed.reset, Duration::from_millis(250));
        let refused = decision(&[0, 0, 1_000_000, 100_000]).expect("four numbers");
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert!(
            decision(&[1, 2]).is_none(),
            "a short reply is an error, not a decision"
        );
        assert_eq!(decision(&[1, -1, -5, 0]).map(|d| d.remaining), Some(0));
    }
}
