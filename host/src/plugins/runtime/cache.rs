//! The cache shared by plugins: namespaced keys, a TTL per entry, bounded size.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Longest key, in bytes.
pub const MAX_KEY: usize = 1024;
/// Largest value, in bytes.
pub const MAX_VALUE: usize = 1 << 20;
/// Longest TTL; a TTL of 0 means this.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// Why a cache operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// Key or value exceeds the limits.
    #[error("key or value too large")]
    TooLarge,
}

struct Entry {
    value: Bytes,
    expires: Instant,
}

/// An in-process TTL cache. Past `capacity` entries, expired entries are swept, then the
/// entry closest to expiry is evicted.
pub struct PluginCache {
    entries: Mutex<HashMap<(String, String), Entry>>,
    capacity: usize,
}

impl PluginCache {
    /// A cache holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        PluginCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent (every update is a
        // single insert/remove), so a poisoned lock is safe to keep using.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live value under `ns`/`key`.
    pub fn get(&self, ns: &str, key: &str) -> Option<Bytes> {
        let mut map = self.lock();
        let k = (ns.to_string(), key.to_string());
        match map.get(&k) {
            Some(e) if e.expires > Instant::now() => Some(e.value.clone()),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
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
        let now = Instant::now();
        let mut map = self.lock();
        let k = (ns.to_string(), key.to_string());
        if map.len() >= self.capacity && !map.contains_key(&k) {
            map.retain(|_, e| e.expires > now);
            if map.len() >= self.capacity {
                let victim = map
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone());
                if let Some(v) = victim {
                    map.remove(&v);
                }
            }
        }
        map.insert(
            k,
            Entry {
                value,
                expires: now + ttl,
            },
        );
        Ok(())
    }

    /// Remove `ns`/`key`; whether a live entry was there.
    pub fn delete(&self, ns: &str, key: &str) -> bool {
        let now = Instant::now();
        self.lock()
            .remove(&(ns.to_string(), key.to_string()))
            .is_some_and(|e| e.expires > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_namespaces_are_separate() {
        let c = PluginCache::new(10);
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
    fn capacity_is_bounded() {
        let c = PluginCache::new(2);
        for i in 0..5 {
            c.set(
                "n",
                &i.to_string(),
                Bytes::new(),
                Duration::from_secs(i + 1),
            )
            .expect("fits");
        }
        assert_eq!(c.lock().len(), 2);
        assert!(c.get("n", "4").is_some());
    }
}
