//! Backend: one endpoint plus the live state balancers and health checks share about it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::discovery::Endpoint;
use crate::health::EndpointHealth;

/// An endpoint with its in-flight counter and health. The pool keeps one `Arc<Backend>` per
/// endpoint id across discovery updates, so counters and health survive a new endpoint set.
#[derive(Debug)]
pub struct Backend {
    pub endpoint: Endpoint,
    /// `ip:port` as a URI authority, built once rather than per request.
    pub authority: http::uri::Authority,
    in_flight: AtomicUsize,
    pub health: EndpointHealth,
}

impl Backend {
    pub fn new(endpoint: Endpoint) -> Self {
        // A socket address always formats as a valid authority; the fallback is unreachable.
        let authority = http::uri::Authority::try_from(endpoint.addr.to_string())
            .unwrap_or_else(|_| http::uri::Authority::from_static("invalid"));
        Self {
            endpoint,
            authority,
            in_flight: AtomicUsize::new(0),
            health: EndpointHealth::default(),
        }
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
