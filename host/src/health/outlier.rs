//! Passive outlier detection: consecutive failed requests eject an endpoint for a back-off.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::balancing::Backend;

/// `[services.outlier]`: when to eject and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierPolicy {
    /// Consecutive failures (5xx or connect failure) that eject an endpoint. Default 5.
    pub consecutive_failures: u32,
    /// First ejection lasts this long; the n-th consecutive ejection n times as long. 30 s.
    pub base_ejection: Duration,
    /// Cap on one ejection's length. Default 300 s.
    pub max_ejection: Duration,
    /// At most this share of a service's endpoints is ejected at once (at least one may
    /// always be). Default 0.5.
    pub max_ejected_share: f64,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_share: 0.5,
        }
    }
}

/// How one request to an endpoint went, as far as outlier detection cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A 5xx answer, a connect failure, a reset or a per-try timeout.
    Failure,
}

#[derive(Debug, Clone)]
pub struct OutlierDetector {
    policy: OutlierPolicy,
}

impl OutlierDetector {
    pub fn new(policy: OutlierPolicy) -> Self {
        Self { policy }
    }

    /// Records one outcome for `backend` (one of `all`). Returns the end of a new ejection
    /// when this outcome caused one, so the caller can rebuild the balancer now and again
    /// when the ejection ends.
    pub fn record(
        &self,
        backend: &Backend,
        all: &[Arc<Backend>],
        outcome: Outcome,
        now: Instant,
    ) -> Option<Instant> {
        let h = &backend.health;
        match outcome {
            Outcome::Success => {
                // Loads first: the common case (nothing to reset) writes nothing and takes no
                // lock, so successes stay cheap on the request path.
                if h.consecutive_failures.load(Ordering::Relaxed) != 0 {
                    h.consecutive_failures.store(0, Ordering::Relaxed);
                }
                // Back in good standing: the next ejection starts from the base again.
                if h.ejections.load(Ordering::Relaxed) != 0 && !h.is_ejected(now) {
                    h.ejections.store(0, Ordering::Relaxed);
                }
                None
            }
            Outcome::Failure => {
                let n = h.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n < self.policy.consecutive_failures || h.is_ejected(now) {
                    return None;
                }
                let ejected = all.iter().filter(|b| b.health.is_ejected(now)).count();
                let cap =
                    ((all.len() as f64 * self.policy.max_ejected_share).floor() as usize).max(1);
                if ejected >= cap {
                    tracing::warn!(
                        endpoint = %backend.endpoint.addr,
                        ejected, cap,
                        "outlier not ejected: ejection cap reached"
                    );
                    return None;
                }
                let times = h.ejections.fetch_add(1, Ordering::Relaxed) + 1;
                let length = self
                    .policy
                    .base_ejection
                    .saturating_mul(times)
                    .min(self.policy.max_ejection);
                let until = now + length;
                *h.ejected_until
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner()) = Some(until);
                h.consecutive_failures.store(0, Ordering::Relaxed);
                tracing::warn!(
                    endpoint = %backend.endpoint.addr,
                    id = %backend.endpoint.id,
                    failures = n,
                    ejected_for = ?length,
                    "endpoint ejected as an outlier"
                );
                Some(until)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancing::test_support::backends;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            max_ejected_share: 0.5,
        }
    }

    #[test]
    fn consecutive_failures_eject_with_growing_back_off() {
        let b = backends(4, |_| 1);
        let d = OutlierDetector::new(policy());
        let t0 = Instant::now();
        assert_eq!(d.record(&b[0], &b, Outcome::Failure, t0), None);
        assert_eq!(d.record(&b[0], &b, Outcome::Failure, t0), None);
        let until = d
            .record(&b[0], &b, Outcome::Failure, t0)
            .expect("third failure ejects");
        assert_eq!(until, t0 + Duration::from_secs(10));
        assert!(!b[0].health.is_healthy(t0 + Duration::from_secs(9)));
        let t1 = t0 + Duration::from_secs(10);
        assert!(b[0].health.is_healthy(t1), "returns after the back-off");
        // Fails again right away: twice as long, then capped at 25 s.
        for _ in 0..2 {
            d.record(&b[0], &b, Outcome::Failure, t1);
        }
        let until = d
            .record(&b[0], &b, Outcome::Failure, t1)
            .expect("ejects again");
        assert_eq!(until, t1 + Duration::from_secs(20));
        let t2 = until;
        for _ in 0..2 {
            d.record(&b[0], &b, Outcome::Failure, t2);
        }
        let until = d
            .record(&b[0], &b, Outcome::Failure, t2)
            .expect("ejects again");
        assert_eq!(until, t2 + Duration::from_secs(25));
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = backends(2, |_| 1);
        let d = OutlierDetector::new(policy());
        let t = Instant::now();
        d.record(&b[0], &b, Outcome::Failure, t);
        d.record(&b[0], &b, Outcome::Failure, t);
        d.record(&b[0], &b, Outcome::Success, t);
        assert_eq!(d.record(&b[0], &b, Outcome::Failure, t), None);
        assert!(b[0].health.is_healthy(t));
    }

    #[test]
    fn ejected_share_is_capped() {
        let b = backends(4, |_| 1);
        let d = OutlierDetector::new(policy());
        let t = Instant::now();
        let mut ejected = 0;
        for backend in &b {
            for _ in 0..3 {
                if d.record(backend, &b, Outcome::Failure, t).is_some() {
                    ejected += 1;
                }
            }
        }
        assert_eq!(ejected, 2, "half of 4 may be ejected");
        assert_eq!(b.iter().filter(|x| x.health.is_ejected(t)).count(), 2);
    }
}
