//! The backend pool of one service: discovery sets in, health-filtered balancer snapshots out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::{Algorithm, Backend, Balancer, GrayPolicy, Placement};
use crate::conn::ConnSettings;
use crate::discovery::EndpointSet;

/// Holds a service's backends (one `Arc<Backend>` per endpoint id, so in-flight counts and
/// health survive updates) and the current [`Balancer`], rebuilt whenever the endpoint set or
/// any endpoint's health changes. Requests only `load()` the balancer: no lock, and a request
/// keeps the backend it picked even if the set changes under it.
#[derive(Debug)]
pub struct BackendPool {
    service: Arc<str>,
    algorithm: Algorithm,
    /// How new backends reach their endpoint.
    connections: ConnSettings,
    all: ArcSwap<Vec<Arc<Backend>>>,
    balancer: ArcSwap<Balancer>,
    // Serialises rebuilds so an older rebuild cannot overwrite a newer one.
    rebuild_lock: Mutex<()>,
    // Wakes the driver task to recompute when the next ejection ends.
    health_changed: Notify,
    availability: Availability,
}

/// Which backends may take traffic besides the healthy ones (`services.drained`,
/// `services.panic_mode`).
#[derive(Debug, Clone)]
pub struct Availability {
    /// Endpoints drained by config: a backend for one of these starts drained.
    pub drained: Vec<SocketAddr>,
    /// With no healthy backend, use all undrained ones (true) or none (false: fast 503).
    pub panic_mode: bool,
    /// Requests one backend may have in flight; one at its cap is skipped, and with every
    /// backend at its cap the request gets a fast 503 (`services.max_requests_per_endpoint`).
    /// `None`: unbounded.
    pub max_per_endpoint: Option<NonZeroUsize>,
    /// Gray subsets and zone preference (docs/traffic.md). Default: neither.
    pub placement: Placement,
}

impl Default for Availability {
    fn default() -> Self {
        Self {
            drained: Vec::new(),
            panic_mode: true,
            max_per_endpoint: None,
            placement: Placement::default(),
        }
    }
}

impl BackendPool {
    pub fn new(
        service: impl Into<Arc<str>>,
        algorithm: Algorithm,
        connections: ConnSettings,
    ) -> Arc<Self> {
        Self::with_availability(service, algorithm, connections, Availability::default())
    }

    /// A pool whose drained endpoints and panic mode follow `availability`.
    pub fn with_availability(
        service: impl Into<Arc<str>>,
        algorithm: Algorithm,
        connections: ConnSettings,
        availability: Availability,
    ) -> Arc<Self> {
        Arc::new(Self {
            availability,
            service: service.into(),
            algorithm,
            connections,
            all: ArcSwap::from_pointee(Vec::new()),
            balancer: ArcSwap::from_pointee(Balancer::new(algorithm, Vec::new(), false)),
            rebuild_lock: Mutex::new(()),
            health_changed: Notify::new(),
        })
    }

    pub fn service(&self) -> &Arc<str> {
        &self.service
    }

    /// How the service's endpoints are reached (health probes connect the same way).
    pub fn connection_settings(&self) -> &ConnSettings {
        &self.connections
    }

    /// The service's gray subsets, which a request's [`GrayPolicy::select`] chooses among.
    pub fn gray(&self) -> Option<&GrayPolicy> {
        self.availability.placement.gray.as_deref()
    }

    /// The current balancing snapshot (lock-free).
    pub fn balancer(&self) -> Guard<Arc<Balancer>> {
        self.balancer.load()
    }

    /// Every known backend, healthy or not.
    pub fn all_backends(&self) -> Arc<Vec<Arc<Backend>>> {
        self.all.load_full()
    }

    /// Replaces the endpoint set. Endpoints whose id, address and metadata are unchanged keep
    /// their `Backend` (and so their load and health); others get a fresh one.
    pub fn set_endpoints(&self, set: &EndpointSet) {
        {
            let _serial = self.lock();
            let old = self.all.load();
            let by_id: HashMap<&str, &Arc<Backend>> =
                old.iter().map(|b| (&*b.endpoint.id, b)).collect();
            let next: Vec<Arc<Backend>> = set
                .iter()
                .map(|e| match by_id.get(&*e.id) {
                    Some(b) if b.endpoint == *e => Arc::clone(b),
                    _ => {
                        let backend = Backend::new(e.clone(), self.connections.clone());
                        backend.set_drained(self.availability.drained.contains(&e.addr));
                        Arc::new(backend)
                    }
                })
                .collect();
            // The balancer first, under the same lock: once `all_backends` shows the new
            // set, requests are already balanced over it.
            let next = Arc::new(next);
            self.rebuild_locked(&next);
            self.all.store(next);
        }
    }

    /// Rebuilds the balancer from the healthy, undrained backends. With none healthy it
    /// enters panic mode unless the service turned it off: all undrained backends take
    /// traffic (a failing service beats a certain 503), and the snapshot says so. Drained
    /// backends never take new requests, panic or not.
    pub fn rebuild(&self) {
        let _serial = self.lock();
        let all = self.all.load_full();
        self.rebuild_locked(&all);
    }

    /// [`Pool::rebuild`] over `all`, with the pool's lock held by the caller.
    fn rebuild_locked(&self, all: &[Arc<Backend>]) {
        let now = Instant::now();
        let open: Vec<&Arc<Backend>> = all.iter().filter(|b| !b.is_drained()).collect();
        let healthy: Vec<Arc<Backend>> = open
            .iter()
            .filter(|b| b.health.is_healthy(now))
            .map(|b| Arc::clone(b))
            .collect();
        let panic = self.availability.panic_mode && healthy.is_empty() && !open.is_empty();
        let chosen = if panic {
            tracing::warn!(
                service = %self.service,
                endpoints = open.len(),
                "no healthy endpoint: panic mode, spreading traffic over all endpoints"
            );
            open.into_iter().cloned().collect()
        } else {
            if healthy.is_empty() && !open.is_empty() {
                tracing::warn!(
                    service = %self.service,
                    endpoints = open.len(),
                    "no healthy endpoint and panic mode is off: requests get 503"
                );
            }
            healthy
        };
        let cap = self.availability.max_per_endpoint;
        let placement = &self.availability.placement;
        let balancer = if placement.is_plain() {
            Balancer::new(self.algorithm, chosen, panic).with_cap(cap)
        } else {
            // Gray subsets and zones: one snapshot per group, each already resolved to the
            // backends its traffic goes to (fallbacks, zone spill-over).
            let (base, subsets) = placement.groups(chosen);
            let subsets = subsets
                .into_iter()
                .map(|s| Balancer::new(self.algorithm, s, panic).with_cap(cap))
                .collect();
            Balancer::new(self.algorithm, base, panic)
                .with_cap(cap)
                .with_subsets(subsets)
        };
        self.balancer.store(Arc::new(balancer));
        self.health_changed.notify_one();
    }

    /// Drains (`true`) or undrains the backend at `addr`; returns whether the pool has one.
    /// In-flight requests finish; the balancer stops (or resumes) picking it at once.
    pub fn set_drained(&self, addr: SocketAddr, drained: bool) -> bool {
        let found = self
            .all
            .load()
            .iter()
            .filter(|b| b.endpoint.addr == addr)
            .map(|b| b.set_drained(drained))
            .count();
        if found > 0 {
            self.rebuild();
        }
        found > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is `()`: poisoning carries no broken state.
        self.rebuild_lock
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The earliest end of an ejection still in the future.
    fn next_ejection_end(&self, now: Instant) -> Option<Instant> {
        self.all
            .load()
            .iter()
            .filter_map(|b| b.health.ejected_until())
            .filter(|&t| t > now)
            .min()
    }

    /// Drives the pool: applies every published endpoint set, and rebuilds when an ejection
    /// ends so the endpoint returns. Runs until aborted.
    pub async fn drive(self: Arc<Self>, mut endpoints: watch::Receiver<EndpointSet>) {
        let first = endpoints.borrow_and_update().clone();
        self.set_endpoints(&first);
        let mut discovery_open = true;
        loop {
            let wake = self.next_ejection_end(Instant::now());
            tokio::select! {
                changed = endpoints.changed(), if discovery_open => {
                    match changed {
                        Ok(()) => {
                            let set = endpoints.borrow_and_update().clone();
                            self.set_endpoints(&set);
                        }
                        // A static source drops its sender once published: keep the set.
                        Err(_) => discovery_open = false,
                    }
                }
                _ = self.health_changed.notified() => {}
                _ = sleep_until_opt(wake) => self.rebuild(),
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancing::PickContext;
    use crate::discovery::Endpoint;
    use crate::health::{Outcome, OutlierDetector, OutlierPolicy};
    use std::time::Duration;

    /// A round-robin pool over ports 1 and 2 with the given availability rules.
    fn pool_of_two(drained: Vec<SocketAddr>, panic_mode: bool) -> Arc<BackendPool> {
        let availability = Availability {
            drained,
            panic_mode,
            max_per_endpoint: None,
            placement: Placement::default(),
        };
        let pool = BackendPool::with_availability(
            "svc",
            Algorithm::RoundRobin,
            ConnSettings::default(),
            availability,
        );
        pool.set_endpoints(&set(&[1, 2]));
        pool
    }

    fn all_unhealthy(pool: &BackendPool) {
        for b in pool.all_backends().iter() {
            b.health.set_active_ok(false);
        }
        pool.rebuild();
    }

    fn set(ports: &[u16]) -> EndpointSet {
        ports
            .iter()
            .map(|p| Endpoint::from_addr(([127, 0, 0, 1], *p).into()))
            .collect()
    }

    #[test]
    fn unchanged_endpoints_keep_their_state() {
        let pool = BackendPool::new("svc", Algorithm::RoundRobin, ConnSettings::default());
        pool.set_endpoints(&set(&[1, 2]));
        let before = pool.all_backends();
        let held = pool
            .balancer()
            .pick(&PickContext::default(), &[])
            .expect("two backends");
        pool.set_endpoints(&set(&[2, 1, 3]));
        let after = pool.all_backends();
        assert_eq!(after.len(), 3);
        assert!(after.iter().any(|b| Arc::ptr_eq(b, held.backend())));
        assert!(Arc::ptr_eq(&before[1], &after[0]));
        assert_eq!(
            held.backend().in_flight(),
            1,
            "in-flight count survives the update"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ejected_backend_leaves_and_returns_after_back_off() {
        let pool = BackendPool::new("svc", Algorithm::RoundRobin, ConnSettings::default());
        let (tx, rx) = watch::channel(set(&[1, 2]));
        let driver = tokio::spawn(Arc::clone(&pool).drive(rx));
        tokio::task::yield_now().await;
        assert_eq!(pool.balancer().backends().len(), 2);

        let detector = OutlierDetector::new(OutlierPolicy {
            consecutive_failures: 1,
            base_ejection: Duration::from_secs(30),
            ..OutlierPolicy::default()
        });
        let all = pool.all_backends();
        detector
            .record(&all[0], &all, Outcome::Failure, Instant::now())
            .expect("ejects");
        pool.rebuild();
        assert_eq!(pool.balancer().backends().len(), 1);
        assert!(Arc::ptr_eq(&pool.balancer().backends()[0], &all[1]));

        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(pool.balancer().backends().len(), 1, "still ejected at 29 s");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(pool.balancer().backends().len(), 2, "back after 30 s");

        // Discovery changes reach the balancer without anything else happening.
        tx.send(set(&[1, 2, 3])).expect("driver listens");
        tokio::task::yield_now().await;
        assert_eq!(pool.balancer().backends().len(), 3);
        driver.abort();
    }

    #[test]
    fn all_unhealthy_means_panic_mode_over_all_backends() {
        let pool = BackendPool::new("svc", Algorithm::RoundRobin, ConnSettings::default());
        pool.set_endpoints(&set(&[1, 2]));
        all_unhealthy(&pool);
        let bal = pool.balancer();
        assert!(bal.is_panic());
        assert_eq!(bal.backends().len(), 2);
        pool.all_backends()[0].health.set_active_ok(true);
        pool.rebuild();
        assert!(!pool.balancer().is_panic());
        assert_eq!(pool.balancer().backends().len(), 1);
    }

    #[test]
    fn panic_mode_off_leaves_no_backend() {
        let pool = pool_of_two(Vec::new(), false);
        all_unhealthy(&pool);
        assert!(!pool.balancer().is_panic());
        assert!(pool.balancer().backends().is_empty());
    }

    #[test]
    fn drained_backends_take_no_traffic_even_in_panic_mode() {
        let pool = pool_of_two(vec![([127, 0, 0, 1], 1).into()], true);
        let only = |pool: &BackendPool| {
            let bal = pool.balancer();
            bal.backends()
                .iter()
                .map(|b| b.endpoint.addr.port())
                .collect::<Vec<_>>()
        };
        assert_eq!(only(&pool), [2], "drained by config");
        all_unhealthy(&pool);
        assert_eq!(only(&pool), [2], "panic mode skips drained backends");
        assert!(pool.set_drained(([127, 0, 0, 1], 2).into(), true));
        assert!(only(&pool).is_empty());
        assert!(pool.set_drained(([127, 0, 0, 1], 1).into(), false));
        assert_eq!(only(&pool), [1]);
        assert!(!pool.set_drained(([127, 0, 0, 1], 9).into(), true));
    }

    #[test]
    fn gray_groups_follow_panic_mode_and_drain() {
        use crate::balancing::{GrayPolicy, GraySubset, MetadataSelector};
        use crate::discovery::EndpointMeta;
        let gray = GrayPolicy::new(vec![GraySubset {
            metadata: MetadataSelector {
                version: Some("v2".into()),
                ..MetadataSelector::default()
            },
            weight: 0,
            matcher: None,
        }]);
        let availability = Availability {
            placement: Placement {
                gray: Some(Arc::new(gray)),
                zone: None,
            },
            ..Availability::default()
        };
        let pool = BackendPool::with_availability(
            "svc",
            Algorithm::RoundRobin,
            ConnSettings::default(),
            availability,
        );
        let endpoint = |port: u16, version: &str| Endpoint {
            meta: EndpointMeta {
                version: Some(version.into()),
                ..EndpointMeta::default()
            },
            ..Endpoint::from_addr(([127, 0, 0, 1], port).into())
        };
        pool.set_endpoints(&EndpointSet::from(vec![
            endpoint(1, "v1"),
            endpoint(2, "v2"),
        ]));
        let ports = |pool: &BackendPool, subset: Option<usize>| {
            let bal = pool.balancer();
            bal.subset(subset)
                .backends()
                .iter()
                .map(|b| b.endpoint.addr.port())
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(&pool, None), [1]);
        assert_eq!(ports(&pool, Some(0)), [2]);
        all_unhealthy(&pool);
        assert!(pool.balancer().is_panic());
        assert_eq!(ports(&pool, None), [1], "panic mode keeps the groups");
        assert_eq!(ports(&pool, Some(0)), [2]);
        // Only v2 healthy: its subset keeps it, and the base set falls back to it.
        pool.all_backends()[1].health.set_active_ok(true);
        pool.rebuild();
        assert_eq!(
            (ports(&pool, None), ports(&pool, Some(0))),
            (vec![2], vec![2])
        );
        // v2 drained: the subset falls back to the base set (in panic over v1).
        assert!(pool.set_drained(([127, 0, 0, 1], 2).into(), true));
        assert_eq!(
            (ports(&pool, None), ports(&pool, Some(0))),
            (vec![1], vec![1])
        );
    }
}
