//! The HTTP response cache's storage and rules (RFC 9111, docs/cache.md): a route's cache
//! policy, the key, stored responses and their freshness (`http-cache-semantics` as a shared
//! cache, with stale-while-revalidate and stale-if-error on top), the byte-bounded store and
//! the fill locks that coalesce misses. It knows nothing of upstreams: the request path
//! (`proxy::cached`) asks it what it holds and hands it what came back.

mod entry;
mod fill;
mod key;
mod store;
mod tee;
#[cfg(test)]
mod tests;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderName;
use serde::{Serialize, Serializer};

pub use entry::{
    admit, condition_met, not_modified_response, Admission, CachedResponse, Lookup, NotStored,
    Variants,
};
pub use fill::{Fill, FillGuard, Fills};
pub use key::CacheKey;
pub use store::{MemoryStore, Purge, ResponseStore, StoreStats};
pub use tee::TeeBody;

use crate::serialize::as_humantime;

/// `[cache] max_bytes` unless set: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// `[routes.cache] max_body_bytes` unless set: 1 MiB.
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 1 << 20;
/// The largest `max_body_bytes` a route may set (an entry's weight must fit the store's u32).
pub const MAX_ENTRY_BYTES_LIMIT: u64 = 256 << 20;
/// `[routes.cache] lock_timeout` unless set.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// A route's cache (`[routes.cache]`): what it stores and for how long.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RouteCachePolicy {
    /// Freshness of responses that carry none of their own (no `max-age`, `s-maxage` or
    /// `Expires`). `None`: such responses are not stored.
    #[serde(serialize_with = "opt_humantime")]
    pub ttl: Option<Duration>,
    /// Largest body stored; a larger one streams through uncached.
    pub max_body_bytes: u64,
    /// Request headers whose values extend the key (after the request plugins).
    #[serde(serialize_with = "header_names")]
    pub key_headers: Vec<HeaderName>,
    /// Request cookies whose values extend the key.
    pub key_cookies: Vec<String>,
    /// How long past its freshness an entry may be served while it is refreshed in the
    /// background (the response's own `stale-while-revalidate=` counts too; the larger wins).
    #[serde(serialize_with = "as_humantime")]
    pub stale_while_revalidate: Duration,
    /// How long past its freshness an entry may be served when the upstream fails (connect
    /// error, timeout, 5xx); the response's own `stale-if-error=` counts too.
    #[serde(serialize_with = "as_humantime")]
    pub stale_if_error: Duration,
    /// How long a request waits for another request filling the same key.
    #[serde(serialize_with = "as_humantime")]
    pub lock_timeout: Duration,
    /// Store responses to requests that carry `Authorization`.
    pub authorized: bool,
    /// Store responses that carry `Set-Cookie`.
    pub set_cookie: bool,
    /// [`RouteCachePolicy::generation`], hashed once by [`RouteCachePolicy::fingerprinted`]
    /// when the config is loaded, not on every request.
    #[serde(skip)]
    pub fingerprint: u64,
}

impl RouteCachePolicy {
    /// A fingerprint of the policy: part of every key, so a route whose cache policy changes
    /// on reload no longer sees the entries stored under the old one.
    pub fn generation(&self) -> u64 {
        self.fingerprint
    }

    /// The policy with its fingerprint computed from its settings.
    pub fn fingerprinted(mut self) -> Self {
        self.fingerprint = 0;
        // DefaultHasher::new() has fixed keys: the same policy hashes the same in one process.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut hasher);
        self.fingerprint = hasher.finish();
        self
    }
}

fn opt_humantime<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => as_humantime(d, s),
        None => s.serialize_none(),
    }
}

fn header_names<S: Serializer>(names: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(names.iter().map(HeaderName::as_str))
}

/// `[cache]`: the whole response cache's byte budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CacheBudget {
    /// Bytes of stored responses (headers and bodies) the process keeps at most.
    pub max_bytes: u64,
}

impl Default for CacheBudget {
    fn default() -> Self {
        CacheBudget {
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// The time the cache reads. Wall-clock based (HTTP dates are), but advanced by tokio's
/// clock, so a test with a paused runtime drives freshness with `tokio::time::advance`.
#[derive(Debug, Clone, Copy)]
pub struct CacheClock {
    base: SystemTime,
    start: tokio::time::Instant,
}

impl CacheClock {
    pub fn new() -> Self {
        CacheClock {
            base: SystemTime::now(),
            start: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }
}

impl Default for CacheClock {
    fn default() -> Self {
        Self::new()
    }
}

/// The process's response cache: the store, the fills in progress and the clock. It outlives
/// config snapshots while `[cache] max_bytes` stays the same.
pub struct ResponseCache {
    pub store: Arc<dyn ResponseStore>,
    pub fills: Arc<Fills>,
    pub clock: CacheClock,
    pub budget: CacheBudget,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// An in-memory cache of `budget.max_bytes`.
    pub fn in_memory(budget: CacheBudget) -> Self {
        ResponseCache {
            store: Arc::new(MemoryStore::new(budget.max_bytes)),
            fills: Arc::default(),
            clock: CacheClock::new(),
            budget,
        }
    }

    /// The stored response for this request, if any, and what it may be used for now.
    /// `request` is the request as it goes upstream (Vary is matched against it).
    pub async fn lookup(
        &self,
        key: &CacheKey,
        policy: &RouteCachePolicy,
        request: &http::request::Parts,
    ) -> Lookup {
        let now = self.clock.now();
        match self.store.get(key).await {
            Some(variants) => entry::select(&variants, policy, request, now),
            None => Lookup::Miss { vary_miss: false },
        }
    }

    /// Stores `response` as the variant of `key` it is (replacing one with the same Vary
    /// values).
    pub async fn put(&self, key: CacheKey, response: Arc<CachedResponse>) {
        let now = self.clock.now();
        let current = self.store.get(&key).await;
        let variants = entry::with_variant(current.as_deref(), response, now);
        self.store.put(key, Arc::new(variants)).await;
    }
}
