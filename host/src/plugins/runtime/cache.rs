//! The cache shared by plugins (the `cache` WIT import): namespaced keys, a TTL per entry,
//! bounded by bytes (moka with a weigher, per-entry expiry) — or, with
//! `[plugins.cache] store = "redis"`, in Redis ([`SharedCache`]), shared by every gateway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::redis_store::RedisClient;

/// Longest key, in bytes.
pub const MAX_KEY: usize = 1024;
/// Largest value, in bytes.
pub const MAX_VALUE: usize = 1 << 20;
/// Longest TTL; a TTL of 0 means this.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Bytes an entry weighs beyond its namespace, key and value (the map's own bookkeeping).
const ENTRY_OVERHEAD: usize = 64;

/// Why a cache operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// Key or value exceeds the limits.
    #[error("key or value too large")]
    TooLarge,
}

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
    expires: Instant,
}

/// Each entry lives for its own TTL.
struct EntryTtl;

impl moka::Expiry<(String, String), Entry> for EntryTtl {
    fn expire_after_create(
        &self,
        _key: &(String, String),
        value: &Entry,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &(String, String),
        value: &Entry,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// An in-process TTL cache of at most `max_bytes` (namespaces, keys and values); past it,
/// the least useful entries are evicted (moka's TinyLFU).
pub struct PluginCache {
    entries: moka::sync::Cache<(String, String), Entry>,
    shared: Option<SharedCache>,
}

impl PluginCache {
    /// A cache holding at most `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes.max(1))
            .weigher(|(ns, key): &(String, String), entry: &Entry| {
                let bytes = ENTRY_OVERHEAD + ns.len() + key.len() + entry.value.len();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .expire_after(EntryTtl)
            .build();
        PluginCache {
            entries,
            shared: None,
        }
    }

    /// A cache kept in Redis instead (the in-process one stays empty).
    pub fn in_redis(client: Arc<RedisClient>) -> Self {
        let prefix = format!("{}cache:", client.settings().key_prefix);
        PluginCache {
            shared: Some(SharedCache { client, prefix }),
            ..PluginCache::new(1)
        }
    }

    /// The Redis cache, when entries live there: the host awaits it (the in-process cache
    /// answers synchronously, with no future at all).
    pub fn shared(&self) -> Option<&SharedCache> {
        self.shared.as_ref()
    }

    /// The live value under `ns`/`key`.
    pub fn get(&self, ns: &str, key: &str) -> Option<Bytes> {
        self.entries
            .get(&(ns.to_owned(), key.to_owned()))
            .filter(|e| e.expires > Instant::now())
            .map(|e| e.value)
    }

    /// Store `value` under `ns`/`key` for `ttl` (zero or over [`MAX_TTL`] means [`MAX_TTL`]).
    pub fn set(&self, ns: &str, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        check_size(key, value.len())?;
        let ttl = capped(ttl);
        let entry = Entry {
            value,
            ttl,
            expires: Instant::now() + ttl,
        };
        self.entries.insert((ns.to_owned(), key.to_owned()), entry);
        Ok(())
    }

    /// Remove `ns`/`key`; whether a live entry was there.
    pub fn delete(&self, ns: &str, key: &str) -> bool {
        self.entries
            .remove(&(ns.to_owned(), key.to_owned()))
            .is_some_and(|e| e.expires > Instant::now())
    }
}

fn check_size(key: &str, value: usize) -> Result<(), CacheError> {
    if key.len() > MAX_KEY || value > MAX_VALUE {
        return Err(CacheError::TooLarge);
    }
    Ok(())
}

/// Zero or over [`MAX_TTL`] means [`MAX_TTL`].
fn capped(ttl: Duration) -> Duration {
    if ttl.is_zero() || ttl > MAX_TTL {
        MAX_TTL
    } else {
        ttl
    }
}

// --- impl SharedCache ---

/// Plugin cache entries in Redis under `<key_prefix>cache:<namespace>:<key>` (namespaces are
/// letters, digits, `-` and `_`, so no two namespaces' keys meet), expiring by `SET PX`.
/// It fails open: when Redis fails or its breaker is open, a get misses and a set or delete
/// is dropped (the plugin sees no error; `gatehouse_redis_calls_total` counts it).
pub struct SharedCache {
    client: Arc<RedisClient>,
    prefix: String,
}

impl SharedCache {
    fn key(&self, ns: &str, key: &str) -> String {
        format!("{}{ns}:{key}", self.prefix)
    }

    /// The live value under `ns`/`key`; `None` on a miss or when Redis fails.
    pub async fn get(&self, ns: &str, key: &str) -> Option<Bytes> {
        if key.len() > MAX_KEY || self.client.skipping() {
            return None;
        }
        let key = &self.key(ns, key);
        self.client
            .call("cache_get", |mut conn| async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<Vec<u8>>>(&mut conn)
                    .await
            })
            .await
            .ok()
            .flatten()
            .map(Bytes::from)
    }

    /// Store `value` under `ns`/`key` for `ttl` (as [`PluginCache::set`]); a Redis failure is
    /// not the plugin's error.
    pub async fn set(
        &self,
        ns: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        check_size(key, value.len())?;
        if self.client.skipping() {
            return Ok(());
        }
        let millis = u64::try_from(capped(ttl).as_millis()).unwrap_or(u64::MAX);
        let (key, value) = (&self.key(ns, key), &value);
        let _ = self
            .client
            .call("cache_set", |mut conn| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value.as_ref())
                    .arg("PX")
                    .arg(millis)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
        Ok(())
    }

    /// Remove `ns`/`key`; whether a live entry was there (false when Redis fails).
    pub async fn delete(&self, ns: &str, key: &str) -> bool {
        if key.len() > MAX_KEY || self.client.skipping() {
            return false;
        }
        let key = &self.key(ns, key);
        self.client
            .call("cache_delete", |mut conn| async move {
                redis::cmd("DEL")
                    .arg(key)
                    .query_async::<u64>(&mut conn)
                    .await
            })
            .await
            .is_ok_and(|n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_namespaces_are_separate() {
        let c = PluginCache::new(1 << 20);
        c.set(
            "a",
            "k",
            Bytes::from_static(b"1"),
            Duration::from_millis(30),
        )
        .expect("fits");
        assert_eq!(c.get("a", "k"), Some(Bytes::from_static(b"1")));
        assert_eq!(c.get("b", "k"), None);
        let deadline = Instant::now() + Duration::from_secs(2);
        while c.get("a", "k").is_some() {
            assert!(Instant::now() < deadline, "entry never expired");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn size_is_bounded_in_bytes() {
        let c = PluginCache::new(16 * 1024);
        for i in 0..100 {
            c.set(
                "n",
                &i.to_string(),
                Bytes::from(vec![0u8; 1024]),
                Duration::from_secs(60),
            )
            .expect("fits");
        }
        c.entries.run_pending_tasks();
        assert!(
            c.entries.weighted_size() <= 16 * 1024,
            "{}",
            c.entries.weighted_size()
        );
        assert!(c.entries.entry_count() < 100);
    }
}
