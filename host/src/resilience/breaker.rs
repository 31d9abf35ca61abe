//! A circuit breaker per service: concurrency and pending limits, an error-rate trip, and
//! half-open probing before closing again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// `[services.breaker]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    /// Requests in flight at once. Default 1024.
    pub max_concurrent: usize,
    /// Requests waiting for a slot when all are taken; beyond that, a fast 503. Default 1024.
    pub max_pending: usize,
    /// Trip when this share of requests in the window failed... Default 0.5.
    pub failure_rate: f64,
    /// ...and at least this many requests were seen in it. Default 20.
    pub min_requests: u32,
    /// The tumbling window failures are counted in. Default 10 s.
    pub window: Duration,
    /// Stay open this long, then let probes through (half-open). Default 5 s.
    pub open_for: Duration,
    /// Probes let through while half-open; all must succeed to close. Default 3.
    pub half_open_probes: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            max_concurrent: 1024,
            max_pending: 1024,
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            half_open_probes: 3,
        }
    }
}

/// Why the breaker refused a request. Both become a fast 503 marked `circuit-open` or
/// `overloaded`, which a plugin's failure hook may turn into a fallback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakerError {
    #[error("service \"{service}\": circuit open")]
    Open { service: Arc<str> },
    #[error(
        "service \"{service}\": {max_concurrent} requests in flight and {max_pending} waiting"
    )]
    Overloaded {
        service: Arc<str>,
        max_concurrent: usize,
        max_pending: usize,
    },
}

/// The breaker's state, as the admin API and tests see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed {
        window_start: Instant,
        requests: u32,
        failures: u32,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        admitted: u32,
        succeeded: u32,
    },
}

#[derive(Debug)]
pub struct Breaker {
    service: Arc<str>,
    policy: BreakerPolicy,
    slots: Arc<Semaphore>,
    pending: AtomicUsize,
    state: Mutex<State>,
    /// Counts each time the circuit opens.
    metrics: Option<crate::telemetry::ServiceMetrics>,
}

impl Breaker {
    pub fn new(service: impl Into<Arc<str>>, policy: BreakerPolicy) -> Self {
        Self {
            service: service.into(),
            slots: Arc::new(Semaphore::new(policy.max_concurrent.max(1))),
            pending: AtomicUsize::new(0),
            state: Mutex::new(State::Closed {
                window_start: Instant::now(),
                requests: 0,
                failures: 0,
            }),
            policy,
            metrics: None,
        }
    }

    /// Counts the circuit's trips in `metrics`.
    pub fn counted_in(mut self, metrics: Option<crate::telemetry::ServiceMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn tripped(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.breaker_tripped();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each critical section writes a whole valid State; poisoning cannot leave half of one.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn open_error(&self) -> BreakerError {
        BreakerError::Open {
            service: Arc::clone(&self.service),
        }
    }

    /// Admits one request or refuses it at once. Waits (without bound: the caller's total
    /// timeout bounds it) only for a concurrency slot, and only if fewer than `max_pending`
    /// already wait.
    pub async fn acquire(&self) -> Result<BreakerPermit<'_>, BreakerError> {
        let probe = {
            let mut state = self.lock();
            match &mut *state {
                State::Closed { .. } => false,
                State::Open { until } => {
                    if Instant::now() < *until {
                        return Err(self.open_error());
                    }
                    tracing::info!(service = %self.service, "circuit half-open: probing");
                    *state = State::HalfOpen {
                        admitted: 1,
                        succeeded: 0,
                    };
                    true
                }
                State::HalfOpen { admitted, .. } => {
                    if *admitted >= self.policy.half_open_probes.max(1) {
                        return Err(self.open_error());
                    }
                    *admitted += 1;
                    true
                }
            }
        };
        let mut permit = BreakerPermit {
            breaker: self,
            probe,
            slot: None,
            recorded: false,
        };
        permit.slot = Some(match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if self.pending.fetch_add(1, Ordering::AcqRel) >= self.policy.max_pending {
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                    return Err(BreakerError::Overloaded {
                        service: Arc::clone(&self.service),
                        max_concurrent: self.policy.max_concurrent,
                        max_pending: self.policy.max_pending,
                    });
                }
                let slot = Arc::clone(&self.slots).acquire_owned().await;
                self.pending.fetch_sub(1, Ordering::AcqRel);
                // The semaphore is never closed, so acquiring only fails if that changes.
                slot.map_err(|_| self.open_error())?
            }
        });
        Ok(permit)
    }

    fn record(&self, probe: bool, success: bool) {
        let now = Instant::now();
        let mut state = self.lock();
        match &mut *state {
            State::Closed {
                window_start,
                requests,
                failures,
            } => {
                if now.saturating_duration_since(*window_start) >= self.policy.window {
                    *window_start = now;
                    *requests = 0;
                    *failures = 0;
                }
                *requests += 1;
                if !success {
                    *failures += 1;
                }
                let rate = f64::from(*failures) / f64::from(*requests);
                if *requests >= self.policy.min_requests && rate >= self.policy.failure_rate {
                    tracing::warn!(
                        service = %self.service,
                        requests = *requests,
                        failures = *failures,
                        open_for = ?self.policy.open_for,
                        "circuit opened: failure rate over the threshold"
                    );
                    *state = State::Open {
                        until: now + self.policy.open_for,
                    };
                    self.tripped();
                }
            }
            State::HalfOpen { succeeded, .. } if probe => {
                if !success {
                    tracing::warn!(service = %self.service, "probe failed: circuit open again");
                    *state = State::Open {
                        until: now + self.policy.open_for,
                    };
                    self.tripped();
                } else {
                    *succeeded += 1;
                    if *succeeded >= self.policy.half_open_probes.max(1) {
                        tracing::info!(service = %self.service, "probes succeeded: circuit closed");
                        *state = State::Closed {
                            window_start: now,
                            requests: 0,
                            failures: 0,
                        };
                    }
                }
            }
            // Outcomes of requests admitted before the trip do not count once open.
            _ => {}
        }
    }

    fn abandon_probe(&self) {
        // A probe that never reported (cancelled) frees its place for another probe.
        if let State::HalfOpen { admitted, .. } = &mut *self.lock() {
            *admitted = admitted.saturating_sub(1);
        }
    }
}

/// One admitted request. Report its outcome with [`BreakerPermit::record`]; dropping it
/// unreported (a cancelled request) counts as neither success nor failure.
#[derive(Debug)]
pub struct BreakerPermit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    slot: Option<OwnedSemaphorePermit>,
    recorded: bool,
}

impl BreakerPermit<'_> {
    pub fn record(mut self, success: bool) {
        self.recorded = true;
        self.breaker.record(self.probe, success);
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        self.slot.take();
        if !self.recorded && self.probe {
            self.breaker.abandon_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            max_concurrent: 2,
            max_pending: 1,
            failure_rate: 0.5,
            min_requests: 4,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            half_open_probes: 2,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn trips_on_failure_rate_then_half_opens_and_closes() {
        let b = Breaker::new("svc", policy());
        for ok in [true, false, true] {
            b.acquire().await.expect("closed").record(ok);
        }
        assert_eq!(b.state(), BreakerState::Closed, "below min_requests");
        b.acquire().await.expect("closed").record(false);
        assert_eq!(b.state(), BreakerState::Open, "2 of 4 failed");
        assert!(matches!(b.acquire().await, Err(BreakerError::Open { .. })));

        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let p1 = b.acquire().await.expect("probe 1");
        let p2 = b.acquire().await.expect("probe 2");
        assert!(b.acquire().await.is_err(), "only two probes at once");
        p1.record(true);
        p2.record(true);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens() {
        let b = Breaker::new("svc", policy());
        for _ in 0..4 {
            b.acquire().await.expect("closed").record(false);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        b.acquire().await.expect("probe").record(false);
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(b.acquire().await.is_err(), "a fresh open period");
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_leave_the_window() {
        let b = Breaker::new("svc", policy());
        for _ in 0..3 {
            b.acquire().await.expect("closed").record(false);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        b.acquire().await.expect("closed").record(false);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "a new window with one failure"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_and_pending_limits() {
        let b = Arc::new(Breaker::new("svc", policy()));
        let p1 = b.acquire().await.expect("slot 1");
        let _p2 = b.acquire().await.expect("slot 2");
        let waiter = {
            let b = Arc::clone(&b);
            tokio::spawn(async move { b.acquire().await.map(|p| p.record(true)).is_ok() })
        };
        tokio::task::yield_now().await;
        assert!(
            matches!(b.acquire().await, Err(BreakerError::Overloaded { .. })),
            "one already pending"
        );
        p1.record(true);
        assert!(
            waiter.await.expect("task ran"),
            "the pending request got the freed slot"
        );
    }
}
