//! Smooth weighted round robin with weights from endpoint metadata.
//!
//! nginx's smooth WRR needs a lock per pick (it updates every backend's current weight). We
//! precompute the same kind of smooth sequence once per snapshot instead, then walk it with
//! one atomic counter: backend `i` with weight `w` takes slots at virtual times
//! `(k + 1/2) / w`, so heavy backends are interleaved with light ones, never bunched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Backend, Balance, PickContext};

/// Upper bound on the schedule length; larger weight sums are scaled down proportionally
/// (every backend keeps at least one slot).
const MAX_SCHEDULE: u64 = 1 << 16;

#[derive(Debug)]
pub struct Weighted {
    schedule: Box<[u32]>,
    next: AtomicUsize,
}

impl Weighted {
    pub fn new(backends: &[Arc<Backend>]) -> Self {
        let weights: Vec<u64> = backends
            .iter()
            .map(|b| u64::from(b.endpoint.meta.weight.max(1)))
            .collect();
        let weights = reduce(&weights);
        let mut slots: Vec<(f64, u32)> = Vec::new();
        for (i, &w) in weights.iter().enumerate() {
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            for k in 0..w {
                slots.push(((k as f64 + 0.5) / w as f64, idx));
            }
        }
        slots.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        Self {
            schedule: slots.into_iter().map(|(_, i)| i).collect(),
            next: AtomicUsize::new(0),
        }
    }
}

/// Divides by the gcd, then scales down if the sum is still above `MAX_SCHEDULE`.
fn reduce(weights: &[u64]) -> Vec<u64> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let reduced: Vec<u64> = weights.iter().map(|w| w / g).collect();
    let sum: u64 = reduced.iter().sum();
    if sum <= MAX_SCHEDULE {
        return reduced;
    }
    reduced
        .iter()
        .map(|w| (w.saturating_mul(MAX_SCHEDULE) / sum).max(1))
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Balance for Weighted {
    fn pick(&self, backends: &[Arc<Backend>], _ctx: &PickContext) -> Option<usize> {
        if self.schedule.is_empty() || backends.is_empty() {
            return None;
        }
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        let i = self.schedule[slot] as usize;
        // The schedule is built for this exact slice; the bound check is cheap insurance.
        Some(i.min(backends.len() - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancing::test_support::backends;

    #[test]
    fn shares_follow_weights_and_are_interleaved() {
        let b = backends(3, |i| [5, 1, 1][i]);
        let w = Weighted::new(&b);
        let picks: Vec<usize> = (0..7)
            .map(|_| w.pick(&b, &PickContext::default()).expect("non-empty"))
            .collect();
        let count = |i| picks.iter().filter(|&&p| p == i).count();
        assert_eq!((count(0), count(1), count(2)), (5, 1, 1), "{picks:?}");
        // Smooth: the heavy backend never takes more than 3 slots in a row (nginx's smooth
        // WRR gives a,a,b,a,c,a,a for 5/1/1).
        let longest_run = picks
            .chunk_by(|a, b| a == b)
            .map(|run| run.len())
            .max()
            .unwrap_or(0);
        assert!(longest_run <= 3, "{picks:?}");
    }

    #[test]
    fn equal_weights_reduce_to_plain_rotation() {
        let b = backends(4, |_| 100);
        let w = Weighted::new(&b);
        assert_eq!(w.schedule.len(), 4);
    }

    #[test]
    fn huge_weights_are_scaled_into_a_bounded_schedule() {
        let b = backends(3, |i| [u32::MAX, 7, 1][i]);
        let w = Weighted::new(&b);
        assert!(w.schedule.len() as u64 <= MAX_SCHEDULE + 3);
        assert!(w.schedule.contains(&2), "light backend keeps a slot");
    }
}
