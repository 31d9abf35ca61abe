//! Timeouts of an upstream call: connect, each try, and the whole call including retries.

use std::time::Duration;

/// One try: from sending the request to receiving the response head (`try_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TryTimeout(pub Duration);

/// The whole call, all tries and back-offs included: the route's `timeout`, capped by the
/// service's `timeout` when set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotalTimeout(pub Duration);

/// The per-service timeouts besides connect. Unset ones fall back to the call's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeouts {
    pub per_try: Option<TryTimeout>,
    pub total: Option<TotalTimeout>,
}

impl Timeouts {
    /// The (total, per-try) limits of one call whose caller allows `deadline`.
    pub fn for_call(&self, deadline: Duration) -> (TotalTimeout, TryTimeout) {
        let total = self.total.map_or(deadline, |t| t.0.min(deadline));
        let per_try = self.per_try.map_or(total, |t| t.0.min(total));
        (TotalTimeout(total), TryTimeout(per_try))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tightest_limit_wins() {
        let s = Duration::from_secs;
        let none = Timeouts::default();
        assert_eq!(
            none.for_call(s(30)),
            (TotalTimeout(s(30)), TryTimeout(s(30)))
        );
        let both = Timeouts {
            per_try: Some(TryTimeout(s(2))),
            total: Some(TotalTimeout(s(10))),
        };
        assert_eq!(
            both.for_call(s(30)),
            (TotalTimeout(s(10)), TryTimeout(s(2)))
        );
        assert_eq!(both.for_call(s(1)), (TotalTimeout(s(1)), TryTimeout(s(1))));
    }
}
