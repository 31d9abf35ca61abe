//! Backend: one endpoint plus the live state balancers, health checks and requests share
//! about it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::EndpointHealth;
use crate::conn::{ConnSettings, Connections};
use crate::discovery::Endpoint;

/// An endpoint with its in-flight counter, health and connections. The pool keeps one
/// `Arc<Backend>` per endpoint id across discovery updates, so counters, health and pooled
/// connections survive a new endpoint set; when the endpoint leaves the set, the last
/// `Arc` going away closes its idle connections.
#[derive(Debug)]
pub struct Backend {
    pub endpoint: Endpoint,
    in_flight: AtomicUsize,
    pub health: EndpointHealth,
    connections: Connections,
}

impl Backend {
    /// A backend for `endpoint`, reached as `settings` say. Opens nothing yet.
    pub fn new(endpoint: Endpoint, settings: ConnSettings) -> Self {
        Self {
            connections: Connections::new(endpoint.addr, settings),
            endpoint,
            in_flight: AtomicUsize::new(0),
            health: EndpointHealth::default(),
        }
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

    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
