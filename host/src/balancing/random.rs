//! Random and least-request (power of two random choices) balancers.

use std::sync::Arc;

use rand::RngExt;

use super::{Backend, Balance, PickContext};

/// Uniform random choice.
#[derive(Debug, Default)]
pub struct Random;

impl Balance for Random {
    fn pick(&self, backends: &[Arc<Backend>], _ctx: &PickContext) -> Option<usize> {
        match backends.len() {
            0 => None,
            n => Some(rand::rng().random_range(0..n)),
        }
    }
}

/// Least request with the power of two choices: sample two distinct backends at random and
/// take the one with fewer requests in flight. Nearly as good as scanning all backends for
/// the least loaded, at O(1), and it avoids the herd a global minimum causes when many
/// requests pick at once.
#[derive(Debug, Default)]
pub struct LeastRequest;

impl Balance for LeastRequest {
    fn pick(&self, backends: &[Arc<Backend>], _ctx: &PickContext) -> Option<usize> {
        let n = backends.len();
        match n {
            0 => None,
            1 => Some(0),
            _ => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                // A second index distinct from the first, still uniform.
                let b = (a + rng.random_range(1..n)) % n;
                let (la, lb) = (backends[a].in_flight(), backends[b].in_flight());
                Some(if lb < la { b } else { a })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancing::test_support::backends;
    use crate::balancing::Picked;

    #[test]
    fn random_covers_all_backends() {
        let b = backends(4, |_| 1);
        let mut seen = [0usize; 4];
        for _ in 0..4000 {
            seen[Random.pick(&b, &PickContext::default()).expect("non-empty")] += 1;
        }
        assert!(seen.iter().all(|&c| c > 700), "{seen:?}");
    }

    #[test]
    fn least_request_avoids_the_loaded_backend() {
        let b = backends(2, |_| 1);
        // Hold 5 requests on backend 0: every pick must now choose backend 1, since with two
        // backends both are always sampled.
        let _held: Vec<Picked> = (0..5).map(|_| Picked::new(&b[0])).collect();
        for _ in 0..100 {
            assert_eq!(LeastRequest.pick(&b, &PickContext::default()), Some(1));
        }
    }

    #[test]
    fn least_request_spreads_held_load_evenly() {
        let b = backends(10, |_| 1);
        let mut held = Vec::new();
        for _ in 0..1000 {
            let i = LeastRequest
                .pick(&b, &PickContext::default())
                .expect("non-empty");
            held.push(Picked::new(&b[i]));
        }
        let loads: Vec<_> = b.iter().map(|x| x.in_flight()).collect();
        let (min, max) = (
            loads.iter().min().copied().unwrap_or(0),
            loads.iter().max().copied().unwrap_or(0),
        );
        // P2C keeps the spread within a few requests; round robin-like evenness, not random's.
        assert!(max - min <= 6, "{loads:?}");
        drop(held);
        assert!(
            b.iter().all(|x| x.in_flight() == 0),
            "guards release counts"
        );
    }
}
