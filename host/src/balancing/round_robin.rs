//! Round robin: each backend in turn, one shared atomic counter.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Backend, Balance, PickContext};

#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balance for RoundRobin {
    fn pick(&self, backends: &[Arc<Backend>], _ctx: &PickContext) -> Option<usize> {
        if backends.is_empty() {
            return None;
        }
        Some(self.next.fetch_add(1, Ordering::Relaxed) % backends.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancing::test_support::backends;

    #[test]
    fn visits_each_backend_in_turn() {
        let b = backends(3, |_| 1);
        let rr = RoundRobin::new();
        let picks: Vec<_> = (0..6)
            .map(|_| rr.pick(&b, &PickContext::default()).expect("non-empty"))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }
}
