//! The cache shared by plugins (the `cache` WIT import): namespaced keys, a TTL per entry,
//! bounded by bytes (moka with a weigher, per-entry expiry).

use std::time::{Duration, Instant};

use bytes::Bytes;

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
        PluginCache { entries }
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
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return Err(CacheError::TooLarge);
        }
        let ttl = if ttl.is_zero() || ttl > MAX_TTL {
            MAX_TTL
        } else {
            ttl
        };
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
