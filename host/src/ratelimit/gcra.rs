//! The generic cell rate algorithm (GCRA): one timestamp per key, the "theoretical arrival
//! time" (TAT) at which the key's bucket would be full again.
//!
//! With emission interval `T = per / requests` and window `W = burst × T`, a request of
//! `cost` at `now` is allowed when `max(TAT, now) + cost × T − now ≤ W`, and then moves TAT
//! there. A TAT at or before `now` means a full bucket: such a key is the same as an absent
//! one, which is what lets a store forget it (`store.rs`).

use std::time::Duration;

use super::Rate;

/// What a charge decided, and the key's quota afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the cost was charged.
    pub allowed: bool,
    /// Requests (units of cost) the key may still spend at once.
    pub remaining: u64,
    /// Until the key's quota is whole again.
    pub reset: Duration,
    /// Refused: until the same charge would be allowed. Zero when allowed.
    pub retry_after: Duration,
}

/// Charges `cost` at `now` (nanoseconds on the store's clock) to a key whose TAT is `tat`
/// (0 for a key never seen); returns the decision and the key's new TAT (unchanged when
/// refused). A cost above the burst is refused with the time a full bucket takes to refill.
pub fn charge(tat: u64, now: u64, cost: u32, rate: &Rate) -> (Decision, u64) {
    let interval = rate.interval_nanos();
    let window = rate.window_nanos();
    let tat = tat.max(now);
    let new_tat = tat.saturating_add(interval.saturating_mul(u64::from(cost)));
    let limit = now.saturating_add(window);
    if new_tat <= limit {
        let decision = Decision {
            allowed: true,
            remaining: (limit - new_tat) / interval,
            reset: Duration::from_nanos(new_tat - now),
            retry_after: Duration::ZERO,
        };
        return (decision, new_tat);
    }
    let retry_after = if u64::from(cost) > u64::from(rate.burst.get()) {
        window
    } else {
        new_tat - limit
    };
    let decision = Decision {
        allowed: false,
        remaining: limit.saturating_sub(tat) / interval,
        reset: Duration::from_nanos(tat - now),
        retry_after: Duration::from_nanos(retry_after),
    };
    (decision, tat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn rate(requests: u32, per_ms: u64, burst: u32) -> Rate {
        Rate {
            requests: NonZeroU32::new(requests).expect("positive"),
            per: Duration::from_millis(per_ms),
            burst: NonZeroU32::new(burst).expect("positive"),
        }
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn a_full_burst_then_one_per_interval() {
        // 10 per second, bursts of 3: 100 ms per request.
        let r = rate(10, 1000, 3);
        let mut tat = 0;
        let now = 5_000 * MS;
        for left in [2, 1, 0] {
            let (d, t) = charge(tat, now, 1, &r);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
            tat = t;
        }
        let (d, t) = charge(tat, now, 1, &r);
        assert!(!d.allowed, "the 4th at once is refused");
        assert_eq!(t, tat, "a refusal charges nothing");
        assert_eq!(d.retry_after, Duration::from_millis(100));
        assert_eq!(d.reset, Duration::from_millis(300));
        assert_eq!(d.remaining, 0);
        // 99 ms later still refused, at 100 ms allowed once.
        assert!(!charge(tat, now + 99 * MS, 1, &r).0.allowed);
        let (d, t) = charge(tat, now + 100 * MS, 1, &r);
        assert!(d.allowed);
        assert!(!charge(t, now + 100 * MS, 1, &r).0.allowed);
    }

    #[test]
    fn exact_counts_over_a_second_of_steady_arrivals() {
        // 10 per second, bursts of 5; one request every 10 ms for one second (100 requests):
        // the burst of 5, then one per 100 ms after the bucket emptied.
        let r = rate(10, 1000, 5);
        let (mut tat, mut allowed) = (0, 0);
        for i in 0..100 {
            let (d, t) = charge(tat, 1_000 * MS + i * 10 * MS, 1, &r);
            tat = t;
            allowed += u32::from(d.allowed);
        }
        // Allowed at 0,10,20,30,40 ms (burst), then TAT = 500 ms, so each next one is allowed
        // when now ≥ TAT − 400 ms: at 100, 200, ... 900 ms (9 more).
        assert_eq!(allowed, 14);
    }

    #[test]
    fn cost_counts_as_several_requests_and_an_oversized_cost_never_passes() {
        let r = rate(10, 1000, 5);
        let (d, tat) = charge(0, 0, 3, &r);
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
        let (d, _) = charge(tat, 0, 3, &r);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(100));
        let (d, _) = charge(0, 0, 6, &r);
        assert!(!d.allowed, "more than the burst");
        assert_eq!(d.retry_after, Duration::from_millis(500));
    }

    #[test]
    fn an_idle_key_is_a_fresh_key() {
        let r = rate(2, 1000, 2);
        let (_, tat) = charge(0, 0, 2, &r);
        assert_eq!(tat, 1_000 * MS);
        // Once now passes TAT, the key behaves as if never seen.
        assert_eq!(charge(tat, 1_000 * MS, 1, &r), charge(0, 1_000 * MS, 1, &r));
    }
}
