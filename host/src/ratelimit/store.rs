//! Where limit counters live: the [`LimiterStore`] trait, and [`MemoryStore`], its in-process
//! implementation with a bounded key space.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::gcra::{self, Decision};
use super::Rate;
use crate::telemetry::LogThrottle;

/// Why a store could not decide (a remote store unreachable). The in-memory store never fails.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// The outcome of [`LimiterStore::take`]: decided at once, or after a round trip.
///
/// The in-memory store always answers `Ready`, so its callers pay no allocation and need no
/// await (the pipeline matches `Ready` directly); a store behind the network answers
/// `Pending` with a boxed future, one allocation next to a round trip. `Take` is itself a
/// future, for callers that do not care which.
pub enum Take<'a> {
    /// Decided without waiting.
    Ready(Result<Decision, StoreError>),
    /// Decided when the future completes.
    Pending(BoxFuture<'a, Result<Decision, StoreError>>),
}

impl Future for Take<'_> {
    type Output = Result<Decision, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Take::Ready(result) => Poll::Ready(std::mem::replace(
                result,
                Err(StoreError("polled after completion".to_owned())),
            )),
            Take::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

/// Counters for one limit: charges `cost` to `key` under `rate` at `now`.
///
/// One store serves one limit (so a store shared between gateways puts the route and limit
/// in its own key prefix). `now` is the caller's clock, injectable in tests; a shared store
/// may prefer its own clock so that gateways with skewed clocks agree.
pub trait LimiterStore: Send + Sync + 'static {
    /// Charge `cost` units to `key`; a refusal charges nothing.
    fn take(&self, key: &[u8], cost: u32, rate: &Rate, now: Instant) -> Take<'_>;
}

/// Keys are stored as given up to this length; longer ones (a JWT as the header key) are
/// stored as their SHA-256, so one entry never holds more than this.
const MAX_STORED_KEY: usize = 64;

/// Shards, each its own lock: workers on different keys rarely wait for each other.
const SHARDS: usize = 16;

/// The in-memory store: a TAT (`gcra.rs`) per key, in sharded hash maps, with at most
/// `max_keys` keys.
///
/// Memory stays bounded whatever clients send:
/// - a key whose TAT has passed is exactly a key never seen (a full bucket), so forgetting it
///   changes no decision. Each shard drops such idle keys at most once per window (the
///   time a bucket takes to refill, at least a second) when it adds a key, and always
///   before it would grow past its share of `max_keys`;
/// - if the shard is still full (a flood of distinct keys, every one active), it evicts the
///   eighth of its keys closest to a full bucket: those are the keys an eviction hurts least,
///   while heavy hitters, far from full, stay limited. Evicting an active key gives it a
///   fresh bucket early; that this happened is logged (at most once a minute).
///
/// Keys use the standard library's randomly seeded SipHash, so clients cannot aim their keys
/// at one bucket of the map.
pub struct MemoryStore {
    epoch: Instant,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
    evicted: AtomicU64,
    evict_log: LogThrottle,
}

#[derive(Default)]
struct Shard {
    tats: HashMap<Box<[u8]>, u64>,
    /// Store-clock nanoseconds at which idle keys are next dropped.
    next_sweep: u64,
}

impl MemoryStore {
    /// A store holding at most `max_keys` keys (at least one per shard).
    pub fn new(max_keys: usize) -> Self {
        MemoryStore {
            epoch: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_cap: max_keys.div_ceil(SHARDS).max(1),
            evicted: AtomicU64::new(0),
            evict_log: LogThrottle::new(Duration::from_secs(60)),
        }
    }

    /// Keys held now (idle ones not yet swept included).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).tats.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys the store holds.
    pub fn capacity(&self) -> usize {
        self.shard_cap * SHARDS
    }

    /// Active keys evicted so far to stay within capacity.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Charge synchronously (what [`LimiterStore::take`] wraps in `Take::Ready`).
    pub fn charge(&self, key: &[u8], cost: u32, rate: &Rate, now: Instant) -> Decision {
        let now =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let key = stored_key(key);
        let shard = &self.shards[self.hasher.hash_one(&*key) as usize % SHARDS];
        let mut shard = lock(shard);
        let known = shard.tats.get_mut(&*key);
        let tat = known.as_ref().map_or(0, |t| **t);
        let (decision, new_tat) = gcra::charge(tat, now, cost, rate);
        if decision.allowed {
            match known {
                Some(t) => *t = new_tat,
                None => {
                    let sweep_every = rate.window_nanos().max(1_000_000_000);
                    let evicted = shard.make_room(now, self.shard_cap, sweep_every);
                    shard
                        .tats
                        .insert(key.into_owned().into_boxed_slice(), new_tat);
                    drop(shard);
                    if evicted > 0 {
                        self.note_evictions(evicted);
                    }
                }
            }
        }
        decision
    }

    fn note_evictions(&self, n: usize) {
        let total = self.evicted.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if let Some(held_back) = self.evict_log.allow() {
            tracing::warn!(
                evicted = total,
                capacity = self.capacity(),
                held_back,
                "rate limit key table full of active keys: evicted the keys nearest a full \
                 quota (raise max_keys if this is legitimate traffic)"
            );
        }
    }
}

impl LimiterStore for MemoryStore {
    fn take(&self, key: &[u8], cost: u32, rate: &Rate, now: Instant) -> Take<'_> {
        Take::Ready(Ok(self.charge(key, cost, rate, now)))
    }
}

impl Shard {
    /// Before adding a key: drop idle keys if a sweep is due or the shard is full; if it is
    /// still full, evict the eighth of its keys with the earliest TAT. Returns how many
    /// active keys were evicted.
    fn make_room(&mut self, now: u64, cap: usize, sweep_every: u64) -> usize {
        if now < self.next_sweep && self.tats.len() < cap {
            return 0;
        }
        self.tats.retain(|_, tat| *tat > now);
        self.next_sweep = now.saturating_add(sweep_every);
        if self.tats.len() < cap {
            return 0;
        }
        let target = cap - cap / 8;
        let excess = self.tats.len() + 1 - target.max(1);
        let mut tats: Vec<u64> = self.tats.values().copied().collect();
        let (_, threshold, _) = tats.select_nth_unstable(excess - 1);
        let threshold = *threshold;
        // Every key below the threshold goes, and as many at it as make up `excess` (a flood
        // arriving at one instant has many equal TATs).
        let mut ties = excess - tats.iter().filter(|t| **t < threshold).count();
        self.tats.retain(|_, tat| {
            if *tat == threshold && ties > 0 {
                ties -= 1;
                return false;
            }
            *tat >= threshold
        });
        excess
    }
}

fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    // Every update is one map operation, so a panic elsewhere cannot leave a shard half
    // changed: a poisoned lock is safe to keep using.
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

/// The key as stored: itself, or past [`MAX_STORED_KEY`] bytes `0xff` + its SHA-256.
pub(super) fn stored_key(key: &[u8]) -> Cow<'_, [u8]> {
    if key.len() <= MAX_STORED_KEY {
        return Cow::Borrowed(key);
    }
    use sha2::Digest;
    let mut out = Vec::with_capacity(33);
    out.push(0xff);
    out.extend_from_slice(&sha2::Sha256::digest(key));
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn rate(requests: u32, per: Duration, burst: u32) -> Rate {
        Rate {
            requests: NonZeroU32::new(requests).expect("positive"),
            per,
            burst: NonZeroU32::new(burst).expect("positive"),
        }
    }

    #[test]
    fn keys_are_counted_apart() {
        let store = MemoryStore::new(100);
        let r = rate(2, Duration::from_secs(60), 2);
        let now = Instant::now();
        for key in [&b"a"[..], b"b"] {
            assert!(store.charge(key, 1, &r, now).allowed);
            assert!(store.charge(key, 1, &r, now).allowed);
            assert!(!store.charge(key, 1, &r, now).allowed, "third for {key:?}");
        }
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn long_keys_are_hashed_and_still_apart() {
        let store = MemoryStore::new(100);
        let r = rate(1, Duration::from_secs(60), 1);
        let now = Instant::now();
        let a = vec![b'a'; 4096];
        let mut b = a.clone();
        b[4095] = b'b';
        assert!(store.charge(&a, 1, &r, now).allowed);
        assert!(!store.charge(&a, 1, &r, now).allowed);
        assert!(store.charge(&b, 1, &r, now).allowed, "a different long key");
        assert_eq!(stored_key(&a).len(), 33);
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_at_capacity() {
        let store = MemoryStore::new(10_000);
        // A long window: every key stays active, so only eviction can make room.
        let r = rate(10, Duration::from_secs(3600), 10);
        let now = Instant::now();
        for i in 0..150_000u32 {
            assert!(store.charge(&i.to_be_bytes(), 1, &r, now).allowed);
        }
        assert!(store.len() <= store.capacity(), "{} keys", store.len());
        assert!(
            store.len() >= store.capacity() * 3 / 4,
            "{} keys",
            store.len()
        );
        assert!(store.evicted() >= 140_000);
    }

    #[test]
    fn idle_keys_expire_and_a_heavy_hitter_survives_the_flood() {
        let store = MemoryStore::new(1_600);
        let r = rate(10, Duration::from_secs(1), 10);
        let t0 = Instant::now();
        // The heavy hitter empties its bucket: its TAT is a second ahead of everyone's.
        for _ in 0..10 {
            assert!(store.charge(b"heavy", 1, &r, t0).allowed);
        }
        for i in 0..1_000u32 {
            store.charge(&i.to_be_bytes(), 1, &r, t0);
        }
        assert_eq!(store.len(), 1_001);
        // Two seconds later every one of those keys is idle; new keys sweep them away.
        let t2 = t0 + Duration::from_secs(2);
        for _ in 0..10 {
            assert!(store.charge(b"heavy", 1, &r, t2).allowed);
        }
        for i in 0..100_000u32 {
            store.charge(&(1_000_000 + i).to_be_bytes(), 1, &r, t2);
        }
        assert!(store.len() <= store.capacity());
        assert!(
            !store.charge(b"heavy", 1, &r, t2).allowed,
            "the flood evicted keys nearest a full bucket, not the heavy hitter"
        );
    }
}
