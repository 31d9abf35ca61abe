//! Load balancing: the algorithms that pick one backend of a service for each request.
//!
//! A [`Balancer`] is an immutable snapshot built from the currently healthy backends of one
//! service; [`pool::BackendPool`] rebuilds it when discovery or health change and swaps it in
//! behind an `ArcSwap`, so `pick` never takes a lock and in-flight requests keep their backend.

mod backend;
mod hash;
mod health;
pub mod pool;
mod random;
mod round_robin;
mod weighted;

pub use backend::{Backend, Picked};
pub use hash::{ClientAddr, HashKey, RingHash};
pub use health::EndpointHealth;
pub use random::{LeastRequest, Random};
pub use round_robin::RoundRobin;
pub use weighted::Weighted;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// What a balancer may know about the request it picks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickContext {
    /// The request's hash key (see [`HashKey`]); `None` when the key is absent, in which case
    /// the hash balancer falls back to a random pick.
    pub hash: Option<u64>,
    /// 0 for the first try, 1.. for retries: lets deterministic algorithms move on.
    pub attempt: u32,
}

/// One load-balancing algorithm over a fixed slice of backends (the slice it was built for).
pub trait Balance: Send + Sync + fmt::Debug {
    /// Index of the chosen backend in `backends`, or `None` when `backends` is empty.
    /// Must be cheap and lock-free: it runs once per request.
    fn pick(&self, backends: &[Arc<Backend>], ctx: &PickContext) -> Option<usize>;
}

/// The algorithms a service can choose in config (`balance = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    Weighted,
    Random,
    LeastRequest,
    Hash,
}

impl Algorithm {
    /// All accepted config spellings, for error messages.
    pub const NAMES: &'static str = "round-robin, weighted, random, least-request, hash";

    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::Weighted => "weighted",
            Algorithm::Random => "random",
            Algorithm::LeastRequest => "least-request",
            Algorithm::Hash => "hash",
        }
    }

    /// Builds the algorithm's state for this exact backend slice.
    pub fn build(self, backends: &[Arc<Backend>]) -> Box<dyn Balance> {
        match self {
            Algorithm::RoundRobin => Box::new(RoundRobin::new()),
            Algorithm::Weighted => Box::new(Weighted::new(backends)),
            Algorithm::Random => Box::new(Random),
            Algorithm::LeastRequest => Box::new(LeastRequest),
            Algorithm::Hash => Box::new(RingHash::new(backends, RingHash::DEFAULT_REPLICAS)),
        }
    }
}

impl FromStr for Algorithm {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "round-robin" => Algorithm::RoundRobin,
            "weighted" => Algorithm::Weighted,
            "random" => Algorithm::Random,
            "least-request" => Algorithm::LeastRequest,
            "hash" => Algorithm::Hash,
            _ => return Err(()),
        })
    }
}

/// An immutable balancing snapshot: the backends traffic may go to, and the algorithm's state
/// built for exactly them.
#[derive(Debug)]
pub struct Balancer {
    backends: Arc<[Arc<Backend>]>,
    algorithm: Box<dyn Balance>,
    panic: bool,
}

impl Balancer {
    /// `panic` records that `backends` are *all* backends because none was healthy (see
    /// docs/discovery.md, "panic mode").
    pub fn new(algorithm: Algorithm, backends: Vec<Arc<Backend>>, panic: bool) -> Self {
        let algorithm = algorithm.build(&backends);
        Self {
            backends: backends.into(),
            algorithm,
            panic,
        }
    }

    /// The backends this snapshot spreads traffic over.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// Whether this snapshot was built in panic mode.
    pub fn is_panic(&self) -> bool {
        self.panic
    }

    /// Picks a backend, preferring one not in `tried` (retries go to a different instance
    /// when there is one). The returned guard counts the request as in flight until dropped.
    pub fn pick(&self, ctx: &PickContext, tried: &[Arc<Backend>]) -> Option<Picked> {
        let backends = &self.backends[..];
        let first = self.algorithm.pick(backends, ctx)?;
        let is_tried = |i: usize| tried.iter().any(|t| Arc::ptr_eq(t, &backends[i]));
        if tried.is_empty() || !is_tried(first) {
            return backends.get(first).map(Picked::new);
        }
        // The algorithm chose an instance already tried: ask again a couple of times (random
        // and least-request usually move), then walk from its choice to the next untried one.
        for extra in 1..=2 {
            let again = PickContext {
                attempt: ctx.attempt.saturating_add(extra),
                ..*ctx
            };
            if let Some(i) = self.algorithm.pick(backends, &again) {
                if !is_tried(i) {
                    return backends.get(i).map(Picked::new);
                }
            }
        }
        let n = backends.len();
        let chosen = (1..n)
            .map(|step| (first + step) % n)
            .find(|&i| !is_tried(i))
            .unwrap_or(first);
        backends.get(chosen).map(Picked::new)
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::Backend;
    use crate::conn::ConnSettings;
    use crate::discovery::{Endpoint, EndpointMeta};
    use std::net::SocketAddr;
    use std::sync::Arc;

    /// `n` backends on 10.0.0.x:80 with ids `b0..`, weights from `weight(i)`.
    pub fn backends(n: usize, weight: impl Fn(usize) -> u32) -> Vec<Arc<Backend>> {
        (0..n)
            .map(|i| {
                let addr: SocketAddr = format!("10.0.{}.{}:80", i / 250, i % 250)
                    .parse()
                    .expect("test address parses");
                Arc::new(Backend::new(
                    Endpoint {
                        id: Arc::from(format!("b{i}")),
                        addr,
                        meta: EndpointMeta {
                            weight: weight(i),
                            ..EndpointMeta::default()
                        },
                    },
                    ConnSettings::default(),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::backends;
    use super::*;

    #[test]
    fn retry_pick_avoids_tried_backends_for_every_algorithm() {
        for algo in [
            Algorithm::RoundRobin,
            Algorithm::Weighted,
            Algorithm::Random,
            Algorithm::LeastRequest,
            Algorithm::Hash,
        ] {
            let b = backends(3, |_| 1);
            let bal = Balancer::new(algo, b.clone(), false);
            let ctx = PickContext {
                hash: Some(42),
                attempt: 0,
            };
            let first = bal.pick(&ctx, &[]).expect("non-empty");
            let tried = vec![first.backend().clone()];
            let second = bal
                .pick(&PickContext { attempt: 1, ..ctx }, &tried)
                .expect("non-empty");
            assert!(
                !Arc::ptr_eq(first.backend(), second.backend()),
                "{algo:?} retried the same backend"
            );
        }
    }

    #[test]
    fn single_backend_is_retried_when_it_is_the_only_one() {
        let b = backends(1, |_| 1);
        let bal = Balancer::new(Algorithm::RoundRobin, b.clone(), false);
        let p = bal.pick(&PickContext::default(), &b).expect("one backend");
        assert!(Arc::ptr_eq(p.backend(), &b[0]));
    }

    #[test]
    fn empty_balancer_picks_nothing() {
        let bal = Balancer::new(Algorithm::LeastRequest, Vec::new(), false);
        assert!(bal.pick(&PickContext::default(), &[]).is_none());
    }

    #[test]
    fn algorithm_names_parse() {
        assert_eq!("least-request".parse(), Ok(Algorithm::LeastRequest));
        for a in [
            Algorithm::RoundRobin,
            Algorithm::Weighted,
            Algorithm::Random,
            Algorithm::Hash,
        ] {
            assert_eq!(a.name().parse(), Ok(a));
        }
        assert!("fastest".parse::<Algorithm>().is_err());
    }
}
