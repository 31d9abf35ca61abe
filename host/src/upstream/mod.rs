//! Upstreams: the named services and the one way to send a request to one of them.
//!
//! [`Upstreams::call`] is the single entry point for reaching a service: the proxy uses it for
//! routed traffic, and plugins' service calls go through it too, so both share discovery,
//! health filtering, balancing, pooling, timeouts, retries and the circuit breaker
//! ([`crate::resilience::UpstreamService`]).

mod spec;

pub use spec::{DiscoveryConfig, ServiceConfig, ServiceName, ServicePolicy};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};

use crate::balancing::pool::Availability;
use crate::balancing::Placement;
use crate::body::{self, Body};
use crate::conn::{ConnError, ConnSettings};
use crate::discovery::registry::Registry;
use crate::discovery::{DnsSource, RegistrySource, Source, StaticSource};
use crate::resilience::{
    BreakerError, CallError, ConnectTimeout, ServiceSpec, Timeouts, TotalTimeout, TryTimeout,
    UpstreamService,
};
use crate::telemetry::Metrics;

/// Why a request did not get a response from its service.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no service named {0:?}")]
    UnknownService(String),
    #[error("service \"{service}\" has no endpoint to send to")]
    NoEndpoints { service: ServiceName },
    #[error("service \"{service}\": cannot connect to {endpoint}: {source}")]
    Connect {
        service: ServiceName,
        endpoint: SocketAddr,
        #[source]
        source: ConnError,
    },
    #[error("service \"{service}\": {endpoint} did not answer within {}", humantime::format_duration(*timeout))]
    Timeout {
        service: ServiceName,
        endpoint: SocketAddr,
        timeout: Duration,
    },
    #[error("service \"{service}\": request to {endpoint} failed: {source}")]
    Request {
        service: ServiceName,
        endpoint: SocketAddr,
        #[source]
        source: ConnError,
    },
    #[error("service \"{service}\": bad upstream uri: {message}")]
    BadUri {
        service: ServiceName,
        message: String,
    },
    /// Failures of the resilient path with no variant above: a total timeout, the circuit
    /// breaker refusing, an unreadable request body.
    #[error(transparent)]
    Call(CallError),
}

impl UpstreamError {
    /// The status for failures the variants above do not already decide (see `error.rs`).
    pub fn call_status(&self) -> Option<StatusCode> {
        match self {
            UpstreamError::Call(e) => Some(e.status()),
            _ => None,
        }
    }

    /// A stable marker of the failure, sent as `x-gatehouse-failure`: `circuit-open`,
    /// `overloaded`, `no-endpoints`, `connect`, `reset`, `timeout`, ... A plugin's failure
    /// hook reads it to decide on a fallback.
    pub fn failure_kind(&self) -> &'static str {
        match self {
            UpstreamError::UnknownService(_) => "unknown-service",
            UpstreamError::NoEndpoints { .. } => "no-endpoints",
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Request { .. } => "reset",
            UpstreamError::BadUri { .. } => "request-uri",
            UpstreamError::Call(e) => e.kind(),
        }
    }

    fn from_call(service: &ServiceName, e: CallError) -> Self {
        match e {
            CallError::NoEndpoints { .. } => UpstreamError::NoEndpoints {
                service: service.clone(),
            },
            CallError::Connect {
                endpoint, source, ..
            } => UpstreamError::Connect {
                service: service.clone(),
                endpoint,
                source,
            },
            CallError::Reset {
                endpoint, source, ..
            } => UpstreamError::Request {
                service: service.clone(),
                endpoint,
                source,
            },
            CallError::TryTimeout {
                endpoint, after, ..
            } => UpstreamError::Timeout {
                service: service.clone(),
                endpoint,
                timeout: after,
            },
            CallError::Uri { source, .. } => UpstreamError::BadUri {
                service: service.clone(),
                message: source.to_string(),
            },
            other => UpstreamError::Call(other),
        }
    }

    /// Whether every endpoint of the service was at its in-flight cap (fast 503).
    pub fn is_saturated(&self) -> bool {
        self.saturated_service().is_some()
    }

    /// The service whose endpoints were all at their in-flight cap, if that was the failure.
    pub fn saturated_service(&self) -> Option<&str> {
        match self {
            UpstreamError::Call(CallError::Saturated { service, .. }) => Some(service),
            _ => None,
        }
    }

    /// Whether the circuit breaker refused the call (fast 503).
    pub fn is_breaker(&self) -> bool {
        matches!(
            self,
            UpstreamError::Call(CallError::Breaker(BreakerError::Open { .. }))
        )
    }
}

/// A response from a service, with the endpoint that gave it.
#[derive(Debug)]
pub struct UpstreamResponse {
    pub endpoint: SocketAddr,
    pub response: Response<Body>,
}

/// One named service: discovery, health, balancing and resilience around its endpoints'
/// pooled connections.
#[derive(Debug)]
pub struct Service {
    pub config: ServiceConfig,
    pub upstream: UpstreamService,
}

impl Service {
    fn new(
        config: ServiceConfig,
        registry: &Arc<Registry>,
        workers: usize,
        max_response_head: usize,
        metrics: Option<&Metrics>,
    ) -> Self {
        if config.tls.as_ref().is_some_and(|tls| !tls.verify()) {
            // Logged at every start and reload, so it is never missed.
            tracing::warn!(
                service = %config.name,
                "TLS certificate verification is OFF for this service (tls.verify = false): any certificate is accepted, so anyone on the network path can impersonate its endpoints"
            );
        }
        let policy = &config.policy;
        let source = match &policy.discovery {
            DiscoveryConfig::Static => Source::Static(StaticSource(config.endpoints.clone())),
            DiscoveryConfig::Registry => Source::Registry(RegistrySource {
                registry: Arc::clone(registry),
                service: config.name.0.clone(),
            }),
            DiscoveryConfig::Dns {
                name,
                port,
                interval,
            } => Source::Dns(DnsSource {
                name: name.clone(),
                port: *port,
                interval: *interval,
            }),
        };
        let name: Arc<str> = Arc::from(config.name.0.as_str());
        let spec = ServiceSpec {
            metrics: metrics.map(|m| m.service(&name)),
            name,
            source,
            connections: ConnSettings {
                workers,
                max_response_head,
                tls: config.tls.clone(),
                ..ConnSettings::new(config.protocol, ConnectTimeout(config.connect_timeout))
            },
            algorithm: policy.balance,
            hash_key: policy.hash_key.clone(),
            health: policy.health.clone(),
            outlier: policy.outlier.clone(),
            retry: policy.retry.clone(),
            breaker: policy.breaker.clone(),
            timeouts: Timeouts {
                per_try: policy.try_timeout.map(TryTimeout),
                total: policy.timeout.map(TotalTimeout),
            },
            availability: Availability {
                drained: config.drained.clone(),
                panic_mode: config.panic_mode,
                max_per_endpoint: policy.max_requests_per_endpoint,
                placement: Placement {
                    gray: policy.gray.clone(),
                    zone: policy.zone.clone(),
                },
            },
        };
        let upstream = UpstreamService::start(spec);
        Service { config, upstream }
    }
}

/// All services of one config snapshot. Dropping it stops their discovery and health tasks.
#[derive(Debug, Default)]
pub struct Upstreams {
    services: HashMap<ServiceName, Arc<Service>>,
}

impl Upstreams {
    /// Starts every service of `services`, with connections for `workers` public listener
    /// workers that refuse response heads over `max_response_head` bytes; `registry` backs
    /// `discovery = "registry"`; `metrics` counts their tries. Must run inside a tokio runtime.
    pub fn new(
        services: &[ServiceConfig],
        workers: usize,
        max_response_head: usize,
        registry: &Arc<Registry>,
        metrics: Option<&Metrics>,
    ) -> Self {
        let services = services
            .iter()
            .map(|s| {
                let service =
                    Service::new(s.clone(), registry, workers, max_response_head, metrics);
                (s.name.clone(), Arc::new(service))
            })
            .collect();
        Upstreams { services }
    }

    /// The service with this name.
    pub fn service(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.get(name)
    }

    /// Sends `req` to a healthy endpoint of `service` chosen by its balancer, with its
    /// retries and breaker, and waits up to `timeout` (all tries) for the response head.
    ///
    /// `req`'s URI needs only a path and query; scheme and authority are set per try. The body
    /// streams (bodies up to 64 KiB with a known length are buffered when the service retries,
    /// so a retry can resend them): the response is returned as soon as its head arrives.
    pub async fn call(
        &self,
        service: &str,
        req: Request<Body>,
        timeout: Duration,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let svc = self
            .service(service)
            .ok_or_else(|| UpstreamError::UnknownService(service.to_owned()))?;
        match svc.upstream.call(req, timeout).await {
            Ok((endpoint, response)) => Ok(UpstreamResponse {
                endpoint,
                response: response.map(body::streaming),
            }),
            Err(e) => Err(UpstreamError::from_call(&svc.config.name, e)),
        }
    }
}
