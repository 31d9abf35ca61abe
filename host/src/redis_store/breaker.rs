//! A circuit breaker in front of Redis: after `failures` errors in a row it opens for
//! `cooldown`, during which callers skip Redis entirely (a dead Redis costs nothing per
//! request); then one caller probes, and its success closes it again.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Whether a caller may use Redis now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: go ahead.
    Yes,
    /// Open, cool-down over: this caller is the one probe.
    Probe,
    /// Open: skip Redis.
    No,
}

/// Lock-free: one atomic load on the closed path.
#[derive(Debug)]
pub struct Breaker {
    failures_to_open: u32,
    cooldown: Duration,
    epoch: Instant,
    /// Consecutive failures.
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which the breaker stays open.
    open_until: AtomicU64,
    probing: AtomicBool,
}

impl Breaker {
    pub fn new(failures_to_open: u32, cooldown: Duration) -> Self {
        Breaker {
            failures_to_open: failures_to_open.max(1),
            cooldown,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn admit(&self) -> Admit {
        if self.failures.load(Ordering::Relaxed) < self.failures_to_open {
            return Admit::Yes;
        }
        if self.now_ms() < self.open_until.load(Ordering::Relaxed) {
            return Admit::No;
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::No,
        }
    }

    /// Open and cooling down: a caller would be turned away ([`Breaker::admit`] without
    /// taking the probe).
    pub fn skipping(&self) -> bool {
        self.is_open() && self.now_ms() < self.open_until.load(Ordering::Relaxed)
    }

    /// Whether the breaker is open (callers skip Redis).
    pub fn is_open(&self) -> bool {
        self.failures.load(Ordering::Relaxed) >= self.failures_to_open
    }

    /// A call succeeded; returns whether this closed an open breaker.
    pub fn success(&self) -> bool {
        self.probing.store(false, Ordering::Release);
        self.failures.swap(0, Ordering::Relaxed) >= self.failures_to_open
    }

    /// A call failed; returns whether this opened a closed breaker (a failed probe re-opens
    /// it for another cool-down and returns false).
    pub fn failure(&self) -> bool {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures >= self.failures_to_open {
            let until = self
                .now_ms()
                .saturating_add(u64::try_from(self.cooldown.as_millis()).unwrap_or(u64::MAX));
            self.open_until.store(until, Ordering::Relaxed);
            self.probing.store(false, Ordering::Release);
            return failures == self.failures_to_open;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_then_lets_one_probe_through() {
        let b = Breaker::new(2, Duration::ZERO);
        assert_eq!(b.admit(), Admit::Yes);
        assert!(!b.failure());
        assert!(!b.success(), "a success resets the count");
        assert!(!b.failure());
        assert!(b.failure(), "the second failure in a row opens it");
        assert!(b.is_open());
        assert!(!b.failure(), "already open: no second opening");
        // Cool-down of zero: over at once; one probe, the others skip.
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.admit(), Admit::No);
        assert!(b.success(), "the probe's success closes it");
        assert_eq!(b.admit(), Admit::Yes);
    }

    #[test]
    fn an_open_breaker_skips_until_the_cooldown_ends() {
        let b = Breaker::new(1, Duration::from_secs(3600));
        b.failure();
        assert_eq!(b.admit(), Admit::No);
        assert_eq!(b.admit(), Admit::No);
    }
}
