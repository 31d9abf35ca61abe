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
mod subset;
mod weighted;

pub use backend::{Backend, Picked};
pub use hash::{ClientAddr, HashKey, RingHash};
pub use health::EndpointHealth;
pub use random::{LeastRequest, Random};
pub use round_robin::RoundRobin;
pub use subset::{GrayPolicy, GraySubset, MetadataSelector, Placement, ZonePolicy};
pub use weighted::Weighted;

use std::fmt;
use std::num::NonZeroUsize;
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

/// Why [`Balancer::pick`] found no backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPick {
    /// The snapshot holds no backend (none healthy, drained, or none discovered).
    Empty,
    /// Every backend already has the service's `max_requests_per_endpoint` in flight.
    Saturated { cap: NonZeroUsize },
}

/// An immutable balancing snapshot: the backends traffic may go to, and the algorithm's state
/// built for exactly them.
#[derive(Debug)]
pub struct Balancer {
    backends: Arc<[Arc<Backend>]>,
    algorithm: Box<dyn Balance>,
    panic: bool,
    /// In-flight requests one backend may have (`services.max_requests_per_endpoint`).
    cap: Option<NonZeroUsize>,
    /// One snapshot per gray subset (`services.gray`), fallback already resolved; empty for
    /// a service without subsets.
    subsets: Box<[Balancer]>,
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
            cap: None,
            subsets: Box::default(),
        }
    }

    /// The same snapshot, with one snapshot per gray subset.
    pub fn with_subsets(mut self, subsets: Vec<Balancer>) -> Self {
        self.subsets = subsets.into();
        self
    }

    /// The snapshot for gray subset `subset` (see [`GrayPolicy::select`]), or this one (the
    /// base set) for `None`.
    pub fn subset(&self, subset: Option<usize>) -> &Balancer {
        subset.and_then(|i| self.subsets.get(i)).unwrap_or(self)
    }

    /// The same snapshot, skipping backends that have `cap` requests in flight.
    pub fn with_cap(mut self, cap: Option<NonZeroUsize>) -> Self {
        self.cap = cap;
        self
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
    /// when there is one) and skipping those at the in-flight cap (the algorithm's choice
    /// first, then the next ones in order: for `hash`, one hot key spills over to the next
    /// instance instead of overloading its own). The returned guard counts the request as
    /// in flight until dropped.
    pub fn pick(&self, ctx: &PickContext, tried: &[Arc<Backend>]) -> Result<Picked, NoPick> {
        let backends = &self.backends[..];
        let n = backends.len();
        let first = self
            .algorithm
            .pick(backends, ctx)
            .filter(|&i| i < n)
            .ok_or(NoPick::Empty)?;
        let take = |i: usize| Picked::within(&backends[i], self.cap);
        let is_tried = |i: usize| tried.iter().any(|t| Arc::ptr_eq(t, &backends[i]));
        if !is_tried(first) {
            if let Some(p) = take(first) {
                return Ok(p);
            }
        } else {
            // The algorithm chose an instance already tried: ask again a couple of times
            // (random and least-request usually move).
            for extra in 1..=2 {
                let again = PickContext {
                    attempt: ctx.attempt.saturating_add(extra),
                    ..*ctx
                };
                if let Some(i) = self.algorithm.pick(backends, &again) {
                    if i < n && !is_tried(i) {
                        if let Some(p) = take(i) {
                            return Ok(p);
                        }
                    }
                }
            }
        }
        // Walk on from the algorithm's choice: untried backends first, then tried ones (a
        // lone backend is retried), each only if under the cap.
        let walk = (1..n).map(|step| (first + step) % n);
        let untried = walk.clone().filter(|&i| !is_tried(i));
        let retried = std::iter::once(first).chain(walk).filter(|&i| is_tried(i));
        untried
            .chain(retried)
            .find_map(take)
            .ok_or(NoPick::Saturated {
                cap: self.cap.unwrap_or(NonZeroUsize::MIN),
            })
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

    const ALL: [Algorithm; 5] = [
        Algorithm::RoundRobin,
        Algorithm::Weighted,
        Algorithm::Random,
        Algorithm::LeastRequest,
        Algorithm::Hash,
    ];

    fn cap(n: usize) -> Option<NonZeroUsize> {
        NonZeroUsize::new(n)
    }

    #[test]
    fn capped_backend_is_skipped_by_every_algorithm() {
        for algo in ALL {
            let b = backends(3, |_| 1);
            let bal = Balancer::new(algo, b.clone(), false).with_cap(cap(2));
            let ctx = PickContext {
                hash: Some(7),
                attempt: 0,
            };
            // Six requests fill three backends of cap 2 exactly, whatever the algorithm's
            // preference (a hash key always prefers the same one).
            let held: Vec<Picked> = (0..6)
                .map(|_| bal.pick(&ctx, &[]).expect("room left"))
                .collect();
            for backend in &b {
                assert_eq!(backend.in_flight(), 2, "{algo:?}");
            }
            assert_eq!(
                bal.pick(&ctx, &[]).err(),
                Some(NoPick::Saturated {
                    cap: NonZeroUsize::MIN.saturating_add(1)
                }),
                "{algo:?}"
            );
            // A saturated pick counts nothing.
            assert!(b.iter().all(|x| x.in_flight() == 2), "{algo:?}");
            drop(held);
            assert!(b.iter().all(|x| x.in_flight() == 0), "{algo:?}");
            assert!(bal.pick(&ctx, &[]).is_ok(), "{algo:?} flows again");
        }
    }

    #[test]
    fn hot_hash_key_spills_over_to_the_next_backend() {
        let b = backends(4, |_| 1);
        let bal = Balancer::new(Algorithm::Hash, b.clone(), false).with_cap(cap(1));
        let ctx = PickContext {
            hash: Some(99),
            attempt: 0,
        };
        let home = bal.pick(&ctx, &[]).expect("room");
        let spill = bal.pick(&ctx, &[]).expect("room elsewhere");
        assert!(!Arc::ptr_eq(home.backend(), spill.backend()));
        drop(spill);
        // Deterministic: the same key spills to the same next backend.
        let again = bal.pick(&ctx, &[]).expect("room elsewhere");
        let home_at = b.iter().position(|x| Arc::ptr_eq(x, home.backend()));
        let again_at = b.iter().position(|x| Arc::ptr_eq(x, again.backend()));
        assert_eq!(again_at, home_at.map(|i| (i + 1) % 4));
    }

    #[test]
    fn retry_takes_a_tried_backend_under_its_cap_but_never_one_at_it() {
        let b = backends(2, |_| 1);
        let bal = Balancer::new(Algorithm::RoundRobin, b.clone(), false).with_cap(cap(1));
        let _busy = bal.pick(&PickContext::default(), &[]).expect("room");
        let free = b
            .iter()
            .find(|x| x.in_flight() == 0)
            .cloned()
            .expect("one free");
        // Both were tried; only the free one has room.
        let p = bal
            .pick(
                &PickContext {
                    attempt: 1,
                    ..PickContext::default()
                },
                &b,
            )
            .expect("the free one");
        assert!(Arc::ptr_eq(p.backend(), &free));
        assert!(matches!(
            bal.pick(&PickContext::default(), &b),
            Err(NoPick::Saturated { .. })
        ));
    }

    #[test]
    fn concurrent_picks_never_exceed_the_cap() {
        let b = backends(1, |_| 1);
        let bal = Arc::new(Balancer::new(Algorithm::Random, b.clone(), false).with_cap(cap(3)));
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (bal, barrier) = (Arc::clone(&bal), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    bal.pick(&PickContext::default(), &[]).ok()
                })
            })
            .collect();
        let held: Vec<Picked> = threads
            .into_iter()
            .filter_map(|t| t.join().expect("thread ran"))
            .collect();
        assert_eq!(held.len(), 3);
        assert_eq!(b[0].in_flight(), 3);
    }

    #[test]
    fn empty_balancer_picks_nothing() {
        let bal = Balancer::new(Algorithm::LeastRequest, Vec::new(), false);
        assert_eq!(
            bal.pick(&PickContext::default(), &[]).err(),
            Some(NoPick::Empty)
        );
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
