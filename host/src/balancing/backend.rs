//! Backend: one endpoint plus the live state balancers, health checks and requests share
//! about it.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::EndpointHealth;
use crate::conn::{ConnSettings, Connections};
use crate::discovery::Endpoint;
use crate::telemetry::EndpointMeters;

/// An endpoint with its in-flight counter, health and connections. The pool keeps one
/// `Arc<Backend>` per endpoint id across discovery updates, so counters, health and pooled
/// connections survive a new endpoint set; when the endpoint leaves the set, the last
/// `Arc` going away closes its idle connections.
#[derive(Debug)]
pub struct Backend {
    pub endpoint: Endpoint,
    in_flight: AtomicUsize,
    pub health: EndpointHealth,
    /// Drained (config or admin API): no new requests; those in flight finish.
    drained: AtomicBool,
    connections: Connections,
    /// This endpoint's try metrics, cached (`ServiceMetrics::try_done_at`).
    pub meters: EndpointMeters,
}

impl Backend {
    /// A backend for `endpoint`, reached as `settings` say. Opens nothing yet.
    pub fn new(endpoint: Endpoint, settings: ConnSettings) -> Self {
        Self {
            connections: Connections::new(endpoint.addr, settings),
            endpoint,
            in_flight: AtomicUsize::new(0),
            health: EndpointHealth::default(),
            drained: AtomicBool::new(false),
            meters: EndpointMeters::default(),
        }
    }

    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Marks the backend drained or not; the pool must rebuild its balancer afterwards.
    pub(crate) fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::Relaxed);
    }

    /// The endpoint's connections, for sending it a request.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Requests currently sent to this backend and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A picked backend. Holding it counts one request in flight (least-request reads that);
/// dropping it releases the count, however the request ended.
#[derive(Debug)]
pub struct Picked {
    backend: Arc<Backend>,
}

impl Picked {
    pub(crate) fn new(backend: &Arc<Backend>) -> Self {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            backend: Arc::clone(backend),
        }
    }

    /// Counts one more request on `backend` unless `cap` are already in flight there
    /// (`None` with no cap: always). Compare-and-increment, so concurrent picks of the same
    /// backend cannot all pass a cap that only one more request fits under.
    pub(crate) fn within(backend: &Arc<Backend>, cap: Option<NonZeroUsize>) -> Option<Self> {
        let Some(cap) = cap else {
            return Some(Self::new(backend));
        };
        backend
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap.get()).then_some(n + 1)
            })
            .ok()
            .map(|_| Self {
                backend: Arc::clone(backend),
            })
    }

    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
