//! Rate-limited log lines: for events a client can trigger at will (one per connection or per
//! request), so a flood costs a counter increment each and one log line per interval.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Lets one line through per `every`; counts the ones it holds back.
#[derive(Debug)]
pub struct LogThrottle {
    every_ms: u64,
    origin: Instant,
    /// Milliseconds since `origin` before which no line is written.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        LogThrottle {
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            origin: Instant::now(),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being the events held back since the
    /// last line; `None` (and the event counted) otherwise.
    pub fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now.saturating_add(self.every_ms), Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_rest_counted() {
        let throttle = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(throttle.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.allow(), None);
        }
        let zero = LogThrottle::new(Duration::ZERO);
        assert_eq!(zero.allow(), Some(0));
        assert_eq!(zero.allow(), Some(0));
    }
}
