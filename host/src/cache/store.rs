//! Where stored responses live: one small trait (a Redis-backed store can implement it,
//! issue #21) and the in-memory store on `moka`, bounded by bytes (headers and bodies).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use moka::notification::RemovalCause;
use serde::Serialize;

use super::entry::Variants;
use super::CacheKey;

/// What `DELETE /admin/cache` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// Every entry.
    All,
    /// Every entry of a route.
    Route(String),
    /// One path of a route: every query string, key extension and variant of it.
    Path { route: String, path: String },
    /// Every path of a route that starts with `prefix`.
    Prefix { route: String, prefix: String },
}

impl Purge {
    pub fn matches(&self, key: &CacheKey) -> bool {
        match self {
            Purge::All => true,
            Purge::Route(route) => key.route.as_str() == route,
            Purge::Path { route, path } => key.route.as_str() == route && &key.path == path,
            Purge::Prefix { route, prefix } => {
                key.route.as_str() == route && key.path.starts_with(prefix.as_str())
            }
        }
    }
}

/// What `GET /admin/cache` and the metrics show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Keys held (each with one or more Vary variants).
    pub entries: u64,
    /// Their weight: key, headers and body bytes.
    pub bytes: u64,
    /// The budget.
    pub max_bytes: u64,
    /// Entries evicted to stay within the budget, since the store started.
    pub evictions: u64,
}

/// A store of responses by key. Every method may be called from any task or runtime.
pub trait ResponseStore: Send + Sync {
    /// The variants stored under `key`.
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Option<Arc<Variants>>>;
    /// Stores (or replaces) the variants under `key`; the store may refuse or evict.
    fn put(&self, key: CacheKey, variants: Arc<Variants>) -> BoxFuture<'_, ()>;
    /// Removes `key`, if stored.
    fn remove<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, ()>;
    /// Removes what `purge` names; how many keys it removed.
    fn purge<'a>(&'a self, purge: &'a Purge) -> BoxFuture<'a, usize>;
    /// Size and counts, with pending evictions applied first.
    fn stats(&self) -> BoxFuture<'_, StoreStats>;
}

/// The in-memory store: moka with a weigher in bytes and `max_capacity` = the budget; each
/// entry expires when its last variant may no longer be served or revalidated.
pub struct MemoryStore {
    cache: moka::future::Cache<CacheKey, Arc<Variants>>,
    evictions: Arc<AtomicU64>,
    max_bytes: u64,
}

impl MemoryStore {
    pub fn new(max_bytes: u64) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&evictions);
        let cache = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &CacheKey, variants: &Arc<Variants>| {
                let bytes = key.weight() + variants.iter().map(|v| v.weight()).sum::<usize>();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .expire_after(KeepUntil)
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        MemoryStore {
            cache,
            evictions,
            max_bytes,
        }
    }
}

impl ResponseStore for MemoryStore {
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Option<Arc<Variants>>> {
        Box::pin(self.cache.get(key))
    }

    fn put(&self, key: CacheKey, variants: Arc<Variants>) -> BoxFuture<'_, ()> {
        Box::pin(self.cache.insert(key, variants))
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, ()> {
        Box::pin(self.cache.invalidate(key))
    }

    fn purge<'a>(&'a self, purge: &'a Purge) -> BoxFuture<'a, usize> {
        Box::pin(async move {
            let keys: Vec<Arc<CacheKey>> = self
                .cache
                .iter()
                .filter(|(key, _)| purge.matches(key))
                .map(|(key, _)| key)
                .collect();
            for key in &keys {
                self.cache.invalidate(key.as_ref()).await;
            }
            keys.len()
        })
    }

    fn stats(&self) -> BoxFuture<'_, StoreStats> {
        Box::pin(async move {
            self.cache.run_pending_tasks().await;
            StoreStats {
                entries: self.cache.entry_count(),
                bytes: self.cache.weighted_size(),
                max_bytes: self.max_bytes,
                evictions: self.evictions.load(Ordering::Relaxed),
            }
        })
    }
}

/// moka's per-entry expiry: until the last variant's `keep_until`.
struct KeepUntil;

impl KeepUntil {
    fn ttl(variants: &Variants) -> Option<Duration> {
        let until = variants.iter().map(|v| v.keep_until()).max()?;
        Some(until.duration_since(SystemTime::now()).unwrap_or_default())
    }
}

impl moka::Expiry<CacheKey, Arc<Variants>> for KeepUntil {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Variants>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Self::ttl(value)
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<Variants>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Self::ttl(value)
    }
}
