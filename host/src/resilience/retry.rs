//! Retries: which failures and methods may be retried, and a budget capping the extra load.

use std::sync::Mutex;
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::time::Instant;

/// Why one try failed, as the retry and outlier logic see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryFailure {
    /// The TCP connection could not be established (or timed out connecting); the request
    /// never reached the endpoint, so any method may be retried.
    Connect,
    /// The connection broke after the request was sent (reset, closed early).
    Reset,
    /// No response head within the per-try timeout.
    Timeout,
    /// The endpoint answered with this 5xx status.
    Status(StatusCode),
}

/// Which failures are retried (`[services.retry] on = [...]`). Default: all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn {
    pub connect_failure: bool,
    pub reset: bool,
    pub timeout: bool,
    pub status_5xx: bool,
}

impl Default for RetryOn {
    fn default() -> Self {
        Self {
            connect_failure: true,
            reset: true,
            timeout: true,
            status_5xx: true,
        }
    }
}

/// `[services.retry]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first try. Default 2; 0 disables retries.
    pub max_retries: u32,
    /// Methods retried on any listed failure. Default: the idempotent ones (GET, HEAD,
    /// OPTIONS, TRACE, PUT, DELETE). Any method is retried on a connect failure, since the
    /// request never left.
    pub methods: Vec<Method>,
    pub on: RetryOn,
    /// Pause before each retry, doubled each time (with jitter). Default 25 ms.
    pub backoff: Duration,
    pub budget: RetryBudgetPolicy,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            methods: vec![
                Method::GET,
                Method::HEAD,
                Method::OPTIONS,
                Method::TRACE,
                Method::PUT,
                Method::DELETE,
            ],
            on: RetryOn::default(),
            backoff: Duration::from_millis(25),
            budget: RetryBudgetPolicy::default(),
        }
    }
}

impl RetryPolicy {
    /// Whether a try of `method` that failed with `failure` may be retried (budget aside).
    pub fn allows(&self, method: &Method, failure: TryFailure) -> bool {
        if self.max_retries == 0 {
            return false;
        }
        if failure == TryFailure::Connect {
            return self.on.connect_failure;
        }
        if !self.methods.contains(method) {
            return false;
        }
        match failure {
            TryFailure::Connect => self.on.connect_failure,
            TryFailure::Reset => self.on.reset,
            TryFailure::Timeout => self.on.timeout,
            TryFailure::Status(s) => self.on.status_5xx && s.is_server_error(),
        }
    }

    /// Back-off before retry number `retry` (1-based): base · 2^(retry-1), ±50 % jitter.
    pub fn backoff_for(&self, retry: u32) -> Duration {
        let base = self
            .backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(10));
        let jitter: f64 = rand::random_range(0.5..1.5);
        base.mul_f64(jitter)
    }
}

/// `[services.retry.budget]`: retries may add at most `ratio` of the requests in the last
/// `window`, plus `min_per_sec` so a quiet service can still retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetPolicy {
    /// Default 0.2: retries add at most 20 % load.
    pub ratio: f64,
    /// Default 10 retries per second always allowed.
    pub min_per_sec: u32,
    /// Default 10 s.
    pub window: Duration,
}

impl Default for RetryBudgetPolicy {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_sec: 10,
            window: Duration::from_secs(10),
        }
    }
}

const BUCKETS: usize = 10;

#[derive(Debug)]
struct Buckets {
    /// Index of the newest bucket since `origin`, in bucket lengths.
    newest: u64,
    requests: [u64; BUCKETS],
    retries: [u64; BUCKETS],
}

/// A sliding-window retry budget (10 buckets per window), shared by all calls to a service.
/// The lock is held for a few arithmetic operations per request; only first tries deposit
/// and only retries withdraw.
#[derive(Debug)]
pub struct RetryBudget {
    policy: RetryBudgetPolicy,
    origin: Instant,
    bucket: Duration,
    state: Mutex<Buckets>,
}

impl RetryBudget {
    pub fn new(policy: RetryBudgetPolicy) -> Self {
        let window = policy.window.max(Duration::from_millis(10));
        Self {
            policy,
            origin: Instant::now(),
            bucket: window / BUCKETS as u32,
            state: Mutex::new(Buckets {
                newest: 0,
                requests: [0; BUCKETS],
                retries: [0; BUCKETS],
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Buckets, usize) -> R) -> R {
        let now = Instant::now();
        let index = (now.saturating_duration_since(self.origin).as_nanos()
            / self.bucket.as_nanos().max(1)) as u64;
        // Counters only: a poisoned lock holds valid numbers.
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // Clear buckets that fell out of the window since the last call.
        let stale = index.saturating_sub(b.newest).min(BUCKETS as u64);
        for k in 1..=stale {
            let slot = ((b.newest + k) % BUCKETS as u64) as usize;
            b.requests[slot] = 0;
            b.retries[slot] = 0;
        }
        b.newest = b.newest.max(index);
        let slot = (index % BUCKETS as u64) as usize;
        f(&mut b, slot)
    }

    /// Counts one original request (not a retry).
    pub fn deposit(&self) {
        self.with(|b, slot| b.requests[slot] += 1);
    }

    /// Takes one retry from the budget; `false` means the budget is spent.
    pub fn try_withdraw(&self) -> bool {
        let floor = f64::from(self.policy.min_per_sec) * self.policy.window.as_secs_f64();
        let ratio = self.policy.ratio;
        self.with(|b, slot| {
            let requests: u64 = b.requests.iter().sum();
            let retries: u64 = b.retries.iter().sum();
            let allowed = floor + ratio * requests as f64;
            if (retries as f64) < allowed {
                b.retries[slot] += 1;
                true
            } else {
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods_by_default_and_connect_failures_always() {
        let p = RetryPolicy::default();
        let five = TryFailure::Status(StatusCode::BAD_GATEWAY);
        assert!(p.allows(&Method::GET, five));
        assert!(!p.allows(&Method::POST, five));
        assert!(!p.allows(&Method::POST, TryFailure::Reset));
        assert!(p.allows(&Method::POST, TryFailure::Connect));
        assert!(!p.allows(&Method::GET, TryFailure::Status(StatusCode::NOT_FOUND)));
        let post = RetryPolicy {
            methods: vec![Method::POST],
            ..RetryPolicy::default()
        };
        assert!(post.allows(&Method::POST, five));
        let off = RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        };
        assert!(!off.allows(&Method::GET, TryFailure::Connect));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_caps_retries_at_the_ratio_and_refills_with_time() {
        let budget = RetryBudget::new(RetryBudgetPolicy {
            ratio: 0.2,
            min_per_sec: 0,
            window: Duration::from_secs(10),
        });
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 20, "20 % of 100 requests");
        // A full window later the old requests and retries are forgotten.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(
            !budget.try_withdraw(),
            "no requests in the window, no floor"
        );
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!((0..10).filter(|_| budget.try_withdraw()).count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_floor_allows_retries_on_a_quiet_service() {
        let budget = RetryBudget::new(RetryBudgetPolicy {
            ratio: 0.0,
            min_per_sec: 1,
            window: Duration::from_secs(5),
        });
        assert_eq!((0..20).filter(|_| budget.try_withdraw()).count(), 5);
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        let p = RetryPolicy::default();
        let b1 = p.backoff_for(1);
        let b3 = p.backoff_for(3);
        assert!(b1 >= Duration::from_micros(12_500) && b1 <= Duration::from_micros(37_500));
        assert!(b3 >= Duration::from_millis(50) && b3 <= Duration::from_millis(150));
    }
}
