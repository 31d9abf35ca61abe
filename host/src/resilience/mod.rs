//! Resilience around an upstream call: timeouts, budgeted retries, a circuit breaker.

mod breaker;
mod retry;
mod timeout;

pub use breaker::{Breaker, BreakerError, BreakerPermit, BreakerPolicy, BreakerState};
pub use retry::{RetryBudget, RetryBudgetPolicy, RetryOn, RetryPolicy, TryFailure};
pub use timeout::{ConnectTimeout, Timeouts, TotalTimeout, TryTimeout};
