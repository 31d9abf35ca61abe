//! The limiters of one config snapshot: per route, the limits the pipeline checks at each
//! stage, the in-flight counter, and the limits plugins may charge. Counters outlive a
//! reload when the limit stays the same (see [`Limits::build`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;

use super::shared::RedisLimiterStore;
use super::{
    InFlight, InFlightPermit, LimitKey, LimitRefusal, LimitSpec, LimiterStore, MemoryStore,
    MissingKey, Rate, RouteLimitsSpec, Stage, StorePolicy, Take,
};
use crate::redis_store::{OnError, RedisClient};

/// The key all requests without the limit's header or cookie share (`missing = "shared"`).
/// Header values cannot hold a NUL byte, so no real key is this.
const MISSING: &[u8] = b"\0";

/// One limit with its counters.
pub struct Limiter {
    spec: LimitSpec,
    store: Arc<dyn LimiterStore>,
    /// Counters in Redis (a reload to or from Redis starts afresh).
    shared: bool,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("spec", &self.spec).finish()
    }
}

impl Limiter {
    /// A limit over the in-memory store.
    pub fn in_memory(spec: LimitSpec) -> Self {
        let store = Arc::new(MemoryStore::new(spec.max_keys.get()));
        Limiter {
            spec,
            store,
            shared: false,
        }
    }

    /// A limit over `store`.
    pub fn with_store(spec: LimitSpec, store: Arc<dyn LimiterStore>) -> Self {
        Limiter {
            spec,
            store,
            shared: false,
        }
    }

    /// A limit whose counters live in Redis, shared with every gateway using it.
    pub fn in_redis(
        route: &str,
        spec: LimitSpec,
        redis: &Arc<RedisClient>,
        on_error: OnError,
    ) -> Self {
        let store = Arc::new(RedisLimiterStore::new(
            Arc::clone(redis),
            route,
            &spec.name,
            on_error,
            spec.max_keys.get(),
        ));
        Limiter {
            spec,
            store,
            shared: true,
        }
    }

    /// Its declaration.
    pub fn spec(&self) -> &LimitSpec {
        &self.spec
    }

    /// Its rate.
    pub fn rate(&self) -> &Rate {
        &self.spec.rate
    }

    /// Charge `cost` to `key` at `now`.
    pub fn take(&self, key: &[u8], cost: u32, now: Instant) -> Take<'_> {
        self.store.take(key, cost, &self.spec.rate, now)
    }

    /// Charge one request whose key is `key` (`None`: the request lacks it); `Err` when over,
    /// or when a shared store failed under `on_error = "closed"`. The in-memory store
    /// answers at once; only a shared store awaits.
    async fn check(&self, key: Option<&[u8]>, now: Instant) -> Result<(), LimitRefusal> {
        let key = match (key, self.spec.missing) {
            (Some(key), _) => key,
            (None, MissingKey::Shared) => MISSING,
            (None, MissingKey::Pass) => return Ok(()),
        };
        let decision = match self.take(key, 1, now) {
            Take::Ready(decision) => decision,
            pending => pending.await,
        };
        match decision {
            Ok(d) if d.allowed => Ok(()),
            Ok(decision) => Err(LimitRefusal::Rate {
                limit: Arc::clone(&self.spec.name),
                rate: self.spec.rate,
                decision,
            }),
            // Only a shared store fails, and only when told to fail closed (fail-open stores
            // answer from their local counters instead).
            Err(error) => {
                tracing::debug!(limit = %self.spec.name, %error, "rate limit store failed; request refused (on_error = closed)");
                Err(LimitRefusal::Unavailable {
                    limit: Arc::clone(&self.spec.name),
                })
            }
        }
    }
}

/// A route's limiters.
#[derive(Debug, Default)]
pub struct RouteLimiters {
    /// Checked right after routing (key: route, client address).
    routed: Vec<Arc<Limiter>>,
    /// Checked just before the upstream call (key: header, cookie).
    upstream: Vec<Arc<Limiter>>,
    /// `key = "plugin"` limits, by name: charged by the plugins granted them.
    plugin: HashMap<String, Arc<Limiter>>,
    in_flight: Option<Arc<InFlight>>,
}

impl RouteLimiters {
    /// The first stage, right after routing: the route and client-address limits, then a
    /// place in flight (held by the caller until the response body ends).
    pub async fn admit(
        &self,
        client: IpAddr,
        now: Instant,
    ) -> Result<Option<InFlightPermit>, LimitRefusal> {
        if !self.routed.is_empty() {
            let octets = match client {
                IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
                IpAddr::V6(ip) => ip.octets(),
            };
            for limiter in &self.routed {
                let key: &[u8] = match limiter.spec.key {
                    LimitKey::ClientAddress => &octets,
                    _ => b"",
                };
                limiter.check(Some(key), now).await?;
            }
        }
        match &self.in_flight {
            None => Ok(None),
            Some(in_flight) => in_flight
                .try_acquire()
                .map(Some)
                .ok_or(LimitRefusal::InFlight {
                    max: in_flight.max(),
                }),
        }
    }

    /// The second stage, just before the upstream call: the header and cookie limits, on the
    /// request as it goes upstream.
    pub async fn check_upstream(
        &self,
        headers: &HeaderMap,
        now: Instant,
    ) -> Result<(), LimitRefusal> {
        for limiter in &self.upstream {
            let key = match &limiter.spec.key {
                LimitKey::Header(name) => headers.get(name).map(|v| v.as_bytes()),
                LimitKey::Cookie(name) => crate::headers::cookies(headers)
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_bytes()),
                _ => None,
            };
            limiter.check(key, now).await?;
        }
        Ok(())
    }

    /// Whether the second stage has anything to check.
    pub fn checks_upstream(&self) -> bool {
        !self.upstream.is_empty()
    }

    /// The `key = "plugin"` limit named `name`.
    pub fn plugin_limit(&self, name: &str) -> Option<&Arc<Limiter>> {
        self.plugin.get(name)
    }

    /// The in-flight counter, if the route caps it.
    pub fn in_flight(&self) -> Option<&Arc<InFlight>> {
        self.in_flight.as_ref()
    }

    fn limiters(&self) -> impl Iterator<Item = &Arc<Limiter>> {
        self.routed
            .iter()
            .chain(&self.upstream)
            .chain(self.plugin.values())
    }
}

/// Every route's limiters in one snapshot, by route index (the order of `routes` in the
/// config, which is also `routing::RouteId`).
#[derive(Debug, Default, Clone)]
pub struct Limits {
    routes: Vec<Option<(String, Arc<RouteLimiters>)>>,
    /// The Redis client and policy when counters are shared (`[rate_limits] store = "redis"`);
    /// kept across reloads while `[redis]` stays the same.
    redis: Option<(Arc<RedisClient>, OnError)>,
}

impl Limits {
    /// The limiters for `routes` (name and limits, in config order). A limit that `previous`
    /// also had — same route, same name, same key and `max_keys` — keeps its counters, so a
    /// reload does not hand every client a fresh quota; a changed rate applies to them at
    /// once. Likewise an unchanged `max_in_flight` keeps counting the requests in flight.
    ///
    /// `store` says where counters live; with Redis, the previous snapshot's client is reused
    /// when `[redis]` is unchanged (its connection and breaker state with it).
    pub fn build<'a>(
        routes: impl IntoIterator<Item = (&'a str, &'a RouteLimitsSpec)>,
        previous: &Limits,
        store: &StorePolicy,
    ) -> Self {
        let redis = match store {
            StorePolicy::Memory => None,
            StorePolicy::Redis { settings, on_error } => {
                let kept = previous
                    .redis
                    .as_ref()
                    .map(|(c, _)| c)
                    .filter(|c| c.settings() == settings);
                match kept {
                    Some(client) => Some((Arc::clone(client), *on_error)),
                    None => match RedisClient::new(settings.clone()) {
                        Ok(client) => Some((client, *on_error)),
                        Err(error) => {
                            // `gatehouse check` validates the URL: this is not expected.
                            tracing::error!(%error, "cannot use [redis]; rate limits count locally");
                            None
                        }
                    },
                }
            }
        };
        let before: HashMap<&str, &RouteLimiters> = previous
            .routes
            .iter()
            .flatten()
            .map(|(name, limiters)| (name.as_str(), &**limiters))
            .collect();
        let routes = routes
            .into_iter()
            .map(|(route, spec)| {
                if spec.is_empty() {
                    return None;
                }
                let old = before.get(route).copied();
                let mut limiters = RouteLimiters::default();
                for limit in &spec.rate_limits {
                    let kept = old
                        .and_then(|o| o.limiters().find(|l| l.spec.name == limit.name))
                        .filter(|l| {
                            l.spec.key == limit.key
                                && l.spec.max_keys == limit.max_keys
                                && l.shared == redis.is_some()
                        });
                    let limiter = Arc::new(match (kept, &redis) {
                        (Some(l), _) => Limiter {
                            spec: limit.clone(),
                            store: Arc::clone(&l.store),
                            shared: l.shared,
                        },
                        (None, Some((client, on_error))) => {
                            Limiter::in_redis(route, limit.clone(), client, *on_error)
                        }
                        (None, None) => Limiter::in_memory(limit.clone()),
                    });
                    match limit.key.stage() {
                        Some(Stage::Routed) => limiters.routed.push(limiter),
                        Some(Stage::Upstream) => limiters.upstream.push(limiter),
                        None => {
                            limiters
                                .plugin
                                .insert(limit.name.as_str().to_owned(), limiter);
                        }
                    }
                }
                limiters.in_flight = spec.max_in_flight.map(|max| {
                    old.and_then(|o| o.in_flight.clone())
                        .filter(|f| f.max() == max.get())
                        .unwrap_or_else(|| Arc::new(InFlight::new(max.get())))
                });
                Some((route.to_owned(), Arc::new(limiters)))
            })
            .collect();
        Limits { routes, redis }
    }

    /// The limiters of the route at `index`, if it has any.
    #[inline]
    pub fn route(&self, index: usize) -> Option<&RouteLimiters> {
        self.routes.get(index)?.as_ref().map(|(_, l)| &**l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::num::{NonZeroU32, NonZeroUsize};
    use std::time::Duration;

    fn spec(name: &str, key: &str, requests: u32) -> LimitSpec {
        LimitSpec {
            name: Arc::new(name.to_owned()),
            rate: Rate {
                requests: NonZeroU32::new(requests).expect("positive"),
                per: Duration::from_secs(60),
                burst: NonZeroU32::new(requests).expect("positive"),
            },
            key: LimitKey::parse(key).expect("a key"),
            missing: MissingKey::Shared,
            max_keys: NonZeroUsize::new(100).expect("positive"),
        }
    }

    fn route(limits: Vec<LimitSpec>, max_in_flight: Option<u32>) -> RouteLimitsSpec {
        RouteLimitsSpec {
            rate_limits: limits,
            max_in_flight: max_in_flight.and_then(NonZeroU32::new),
        }
    }

    #[test]
    fn routes_without_limits_have_no_limiters() {
        let plain = RouteLimitsSpec::default();
        let limited = route(vec![spec("ip", "client-address", 1)], None);
        let limits = Limits::build(
            [("a", &plain), ("b", &limited)],
            &Limits::default(),
            &StorePolicy::Memory,
        );
        assert!(limits.route(0).is_none());
        assert!(limits.route(1).is_some());
        assert!(limits.route(2).is_none());
    }

    #[test]
    fn client_addresses_are_counted_apart_and_refusals_name_the_limit() {
        let spec = route(vec![spec("ip", "client-address", 1)], None);
        let limits = Limits::build([("a", &spec)], &Limits::default(), &StorePolicy::Memory);
        let route = limits.route(0).expect("limited");
        let now = Instant::now();
        let (a, b) = ("10.0.0.1".parse().expect("ip"), "::1".parse().expect("ip"));
        assert!(route
            .admit(a, now)
            .now_or_never()
            .expect("in memory: at once")
            .is_ok());
        assert!(route
            .admit(b, now)
            .now_or_never()
            .expect("in memory: at once")
            .is_ok());
        let refusal = route
            .admit(a, now)
            .now_or_never()
            .expect("in memory: at once")
            .expect_err("second from a");
        assert_eq!(refusal.limit().as_str(), "ip");
        let mut headers = HeaderMap::new();
        refusal.headers(&mut headers);
        assert_eq!(headers["retry-after"], "60");
        assert_eq!(headers["ratelimit-policy"], "\"ip\";q=1;w=60");
        assert_eq!(headers["ratelimit"], "\"ip\";r=0;t=60");
    }

    #[test]
    fn header_and_cookie_keys_and_the_shared_missing_key() {
        let mut pass = spec("cookie", "cookie:session", 1);
        pass.missing = MissingKey::Pass;
        let spec = route(vec![spec("consumer", "header:x-consumer", 1), pass], None);
        let limits = Limits::build([("a", &spec)], &Limits::default(), &StorePolicy::Memory);
        let route = limits.route(0).expect("limited");
        let now = Instant::now();
        let with = |consumer: Option<&str>, cookie: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(c) = consumer {
                h.insert("x-consumer", c.parse().expect("value"));
            }
            if let Some(c) = cookie {
                h.insert("cookie", c.parse().expect("value"));
            }
            h
        };
        assert!(route
            .check_upstream(&with(Some("ann"), None), now)
            .now_or_never()
            .expect("in memory: at once")
            .is_ok());
        assert!(route
            .check_upstream(&with(Some("bob"), None), now)
            .now_or_never()
            .expect("in memory: at once")
            .is_ok());
        assert!(route
            .check_upstream(&with(Some("ann"), None), now)
            .now_or_never()
            .expect("in memory: at once")
            .is_err());
        // No x-consumer: one shared key for all such requests.
        assert!(route
            .check_upstream(&with(None, None), now)
            .now_or_never()
            .expect("in memory: at once")
            .is_ok());
        assert!(route
            .check_upstream(&with(None, None), now)
            .now_or_never()
            .expect("in memory: at once")
            .is_err());
        // The cookie limit lets requests without the cookie pass, counts those with it.
        let c = |v| with(Some(v), Some("a=1; session=s1"));
        assert!(route
            .check_upstream(&c("c1"), now)
            .now_or_never()
            .expect("in memory: at once")
            .is_ok());
        let refusal = route
            .check_upstream(&c("c2"), now)
            .now_or_never()
            .expect("in memory: at once")
            .expect_err("session s1 again");
        assert_eq!(refusal.limit().as_str(), "cookie");
    }

    #[test]
    fn in_flight_is_capped_after_the_rate_limits() {
        let spec = route(vec![], Some(1));
        let limits = Limits::build([("a", &spec)], &Limits::default(), &StorePolicy::Memory);
        let route = limits.route(0).expect("limited");
        let ip = "10.0.0.1".parse().expect("ip");
        let permit = route
            .admit(ip, Instant::now())
            .now_or_never()
            .expect("in memory: at once")
            .expect("first")
            .expect("a permit");
        let refusal = route
            .admit(ip, Instant::now())
            .now_or_never()
            .expect("in memory: at once")
            .expect_err("second");
        assert!(matches!(refusal, LimitRefusal::InFlight { max: 1 }));
        drop(permit);
        assert!(route
            .admit(ip, Instant::now())
            .now_or_never()
            .expect("in memory: at once")
            .is_ok());
    }

    #[test]
    fn a_reload_keeps_the_counters_of_unchanged_limits() {
        let spec1 = route(
            vec![spec("all", "route", 1), spec("ip", "client-address", 1)],
            Some(1),
        );
        let first = Limits::build([("a", &spec1)], &Limits::default(), &StorePolicy::Memory);
        let ip = "10.0.0.1".parse().expect("ip");
        let now = Instant::now();
        let permit = first
            .route(0)
            .expect("limited")
            .admit(ip, now)
            .now_or_never()
            .expect("in memory: at once")
            .expect("allowed");
        // "all" keeps its counters; "ip" changes its key kind, so it starts afresh.
        let spec2 = route(
            vec![spec("all", "route", 1), spec("ip", "header:x-ip", 1)],
            Some(1),
        );
        let second = Limits::build([("a", &spec2)], &first, &StorePolicy::Memory);
        let route = second.route(0).expect("limited");
        let refusal = route
            .admit(ip, now)
            .now_or_never()
            .expect("in memory: at once")
            .expect_err("the route's quota is spent");
        assert_eq!(refusal.limit().as_str(), "all");
        assert_eq!(route.in_flight().expect("capped").current(), 1);
        drop(permit);
        assert_eq!(route.in_flight().expect("capped").current(), 0);
        assert!(route
            .check_upstream(&HeaderMap::new(), now)
            .now_or_never()
            .expect("in memory: at once")
            .is_ok());
    }
}
