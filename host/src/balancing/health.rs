//! The health state of one endpoint, as the backend pool filters on it. The checkers that
//! write it (active checks, outlier detection) live in [`crate::health`], above balancing.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

/// The health of one endpoint as both checkers see it. Endpoints start healthy: a new
/// registry instance takes traffic at once, and an active check takes it out after
/// `unhealthy_threshold` failures.
#[derive(Debug)]
pub struct EndpointHealth {
    /// Verdict of the active checker.
    active_ok: AtomicBool,
    /// Consecutive failed requests seen by the outlier detector.
    pub(crate) consecutive_failures: AtomicU32,
    /// How many times in a row the endpoint was ejected (the back-off multiplier).
    pub(crate) ejections: AtomicU32,
    /// Ejected until then. Written rarely (on ejection), read at pool rebuilds only.
    pub(crate) ejected_until: Mutex<Option<Instant>>,
    /// Why the last active probe failed (`None`: it passed, or none ran). Written once per
    /// probe round, read by the admin API.
    active_failure: Mutex<Option<Arc<str>>>,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        Self {
            active_ok: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
            active_failure: Mutex::new(None),
        }
    }
}

impl EndpointHealth {
    /// Whether traffic may go here at `now`.
    pub fn is_healthy(&self, now: Instant) -> bool {
        self.active_ok.load(Ordering::Relaxed) && !self.is_ejected(now)
    }

    /// Whether the outlier detector has this endpoint ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until().is_some_and(|t| now < t)
    }

    /// The end of the current (or last) ejection.
    pub fn ejected_until(&self) -> Option<Instant> {
        // A poisoned lock only means a panic elsewhere mid-write of an Option; the value
        // is still a valid Option, so read through the poison.
        *self
            .ejected_until
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The active checker's verdict.
    pub fn active_ok(&self) -> bool {
        self.active_ok.load(Ordering::Relaxed)
    }

    /// Why the last active probe failed, if it did: the status, the timeout, or the
    /// connection's error (a TLS reason, a refused connect).
    pub fn active_failure(&self) -> Option<Arc<str>> {
        self.active_failure
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Records the last probe's outcome (`None`: it passed).
    pub(crate) fn set_active_failure(&self, failure: Option<String>) {
        // Replaced whole; a poisoned lock cannot leave it half-written.
        *self
            .active_failure
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = failure.map(Arc::from);
    }

    /// Sets the active verdict; returns whether it changed.
    pub(crate) fn set_active_ok(&self, ok: bool) -> bool {
        self.active_ok.swap(ok, Ordering::Relaxed) != ok
    }
}
