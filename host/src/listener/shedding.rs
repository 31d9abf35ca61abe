//! Load shedding on a listener: caps on open connections and on requests in flight, shared by
//! all of the listener's workers, and the file-descriptor headroom they are sized from.
//!
//! Every client connection costs a descriptor, and so does every in-flight request's upstream
//! connection. Unbounded, a few clients holding many HTTP/2 streams open exhaust the process's
//! descriptors, and then `accept` fails on every listener. So the process raises its soft
//! descriptor limit to the hard one at start, and each listener stays below it: past
//! `max_connections` a new connection is closed at once, past `max_requests_in_flight` a
//! request gets a fast 503, and the listener keeps accepting (and shedding) throughout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

use super::Limits;
use crate::telemetry::{ListenerEvent, LogThrottle, Metrics, OpenConnection};

/// The most connections (and requests in flight) a listener allows by default, however high
/// the descriptor limit.
const DEFAULT_CAP: usize = 10_000;
/// The descriptor limit assumed when the system reports none.
const UNKNOWN_NOFILE: u64 = 1024;
/// How often a rate-limited listener warning may be written.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Raises the soft file-descriptor limit to the hard limit (capped at what the kernel takes)
/// and returns the soft limit in force afterwards.
pub fn raise_nofile_limit() -> u64 {
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    let Some(maximum) = limit.maximum else {
        return current;
    };
    if current >= maximum {
        return current;
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(maximum),
            maximum: Some(maximum),
        },
    ) {
        Ok(()) => {
            tracing::debug!(from = current, to = maximum, "raised the descriptor limit");
            maximum
        }
        Err(error) => {
            tracing::warn!(%error, current, maximum, "cannot raise the descriptor limit");
            current
        }
    }
}

/// One listener's caps and counters.
#[derive(Debug)]
pub struct ListenerBudget {
    name: &'static str,
    max_connections: usize,
    connections: AtomicUsize,
    max_in_flight: usize,
    in_flight: AtomicUsize,
    metrics: Option<Arc<Metrics>>,
    shed_log: LogThrottle,
    accept_log: LogThrottle,
    abuse_log: LogThrottle,
}

impl ListenerBudget {
    /// The public listener's budget: `limits`' caps, or defaults sized from `nofile` (the
    /// descriptor limit): half of it for connections, a quarter for requests in flight
    /// (each may hold an upstream connection), at most 10 000 each.
    pub fn public(limits: &Limits, nofile: u64, metrics: Arc<Metrics>) -> Self {
        let nofile = usize::try_from(if nofile == u64::MAX {
            UNKNOWN_NOFILE.max(DEFAULT_CAP as u64 * 4)
        } else {
            nofile
        })
        .unwrap_or(usize::MAX);
        let max_connections = limits
            .max_connections
            .unwrap_or((nofile / 2).clamp(1, DEFAULT_CAP));
        let max_in_flight = limits
            .max_requests_in_flight
            .unwrap_or((nofile / 4).clamp(1, DEFAULT_CAP));
        tracing::debug!(
            max_connections,
            max_in_flight,
            nofile,
            "public listener caps"
        );
        Self::new("public", max_connections, max_in_flight, Some(metrics))
    }

    /// The same budget under another listener name (in logs and metrics).
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// No caps (the admin and demo listeners), still logging accept failures rate-limited.
    pub fn unbounded(name: &'static str, metrics: Option<Arc<Metrics>>) -> Self {
        Self::new(name, usize::MAX, usize::MAX, metrics)
    }

    fn new(
        name: &'static str,
        max_connections: usize,
        max_in_flight: usize,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        ListenerBudget {
            name,
            max_connections,
            connections: AtomicUsize::new(0),
            max_in_flight,
            in_flight: AtomicUsize::new(0),
            metrics,
            shed_log: LogThrottle::new(LOG_EVERY),
            accept_log: LogThrottle::new(LOG_EVERY),
            abuse_log: LogThrottle::new(LOG_EVERY),
        }
    }

    /// The listener's name in logs and metrics.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A connection just accepted, counted open until the guard drops (if metrics are kept).
    pub fn open_connection(&self, tls: bool) -> Option<OpenConnection> {
        self.metrics
            .as_ref()
            .map(|metrics| metrics.connection_opened(self.name, tls))
    }

    fn count(&self, event: ListenerEvent) {
        if let Some(metrics) = &self.metrics {
            metrics.listener_event(self.name, event);
        }
    }

    /// A slot for one more connection, or `None` (counted, logged rate-limited) at the cap.
    pub fn connection(self: &Arc<Self>) -> Option<Permit> {
        acquire(&self.connections, self.max_connections)
            .map(|()| Permit {
                budget: Arc::clone(self),
                kind: Kind::Connection,
            })
            .or_else(|| {
                self.count(ListenerEvent::ConnectionShed);
                if let Some(more) = self.shed_log.allow() {
                    tracing::warn!(
                        listener = self.name,
                        max_connections = self.max_connections,
                        shed_since_last_line = more,
                        "at the connection cap: closing new connections"
                    );
                }
                None
            })
    }

    /// A slot for one more request in flight, or `None` (counted, logged rate-limited).
    pub fn request(self: &Arc<Self>) -> Option<Permit> {
        acquire(&self.in_flight, self.max_in_flight)
            .map(|()| Permit {
                budget: Arc::clone(self),
                kind: Kind::Request,
            })
            .or_else(|| {
                self.count(ListenerEvent::RequestShed);
                if let Some(more) = self.shed_log.allow() {
                    tracing::warn!(
                        listener = self.name,
                        max_requests_in_flight = self.max_in_flight,
                        shed_since_last_line = more,
                        "at the in-flight request cap: answering 503"
                    );
                }
                None
            })
    }

    /// `accept` failed: count it and log it rate-limited.
    pub fn accept_failed(&self, error: &std::io::Error) {
        self.count(ListenerEvent::AcceptFailed);
        if let Some(more) = self.accept_log.allow() {
            tracing::warn!(listener = self.name, %error, failed_since_last_line = more, "accept failed");
        }
    }

    /// A TLS handshake ended with `result` (`ok` or a failure reason): counted; a failure
    /// is logged at debug only, since any client can cause one per connection.
    pub fn handshake(&self, result: &'static str, error: Option<&dyn std::fmt::Display>) {
        if let Some(metrics) = &self.metrics {
            metrics.tls_handshake(self.name, result);
        }
        if let Some(error) = error {
            tracing::debug!(listener = self.name, result, %error, "TLS handshake failed");
        }
    }

    /// A connection ended with an error of `kind`: counted; client abuse (`abuse`) is logged
    /// rate-limited at warn, anything else at debug.
    pub fn connection_error(&self, kind: &'static str, abuse: bool, error: &dyn std::fmt::Display) {
        self.count(ListenerEvent::ConnectionError(kind));
        if !abuse {
            tracing::debug!(listener = self.name, kind, %error, "connection ended with an error");
        } else if let Some(more) = self.abuse_log.allow() {
            tracing::warn!(
                listener = self.name,
                kind,
                %error,
                closed_since_last_line = more,
                "closed a connection for protocol abuse"
            );
        }
    }
}

fn acquire(counter: &AtomicUsize, max: usize) -> Option<()> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| ())
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Connection,
    Request,
}

/// Holds one connection or request slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    budget: Arc<ListenerBudget>,
    kind: Kind,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let counter = match self.kind {
            Kind::Connection => &self.budget.connections,
            Kind::Request => &self.budget.in_flight,
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_stop_at_the_cap_and_free_their_slot() {
        let budget = Arc::new(ListenerBudget::new("t", 2, 1, None));
        let a = budget.connection().expect("first");
        let _b = budget.connection().expect("second");
        assert!(budget.connection().is_none(), "over the cap");
        drop(a);
        assert!(budget.connection().is_some(), "a slot was freed");
        let r = budget.request().expect("request");
        assert!(budget.request().is_none());
        drop(r);
        assert!(budget.request().is_some());
    }

    #[test]
    fn the_soft_descriptor_limit_ends_at_the_hard_one() {
        let now = raise_nofile_limit();
        let limit = getrlimit(Resource::Nofile);
        assert_eq!(limit.current.unwrap_or(u64::MAX), now);
        assert_eq!(limit.current, limit.maximum);
    }
}
