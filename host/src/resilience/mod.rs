//! Resilience around an upstream call: timeouts, budgeted retries, a circuit breaker.

mod breaker;
mod retry;
mod service;
mod timeout;

pub use breaker::{Breaker, BreakerError, BreakerPermit, BreakerPolicy, BreakerState};
pub use retry::{RetryBudget, RetryBudgetPolicy, RetryOn, RetryPolicy, TryFailure};
pub use service::{BoxError, CallBody, CallError, ServiceSpec, UpstreamService, MAX_REPLAY_BODY};
pub use timeout::{Timeouts, TotalTimeout, TryTimeout};

pub use crate::conn::ConnectTimeout;
