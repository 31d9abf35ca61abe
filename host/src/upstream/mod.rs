//! Upstreams: the named services and the one way to send a request to one of them.
//!
//! [`Upstreams::call`] is the single entry point for reaching a service: the proxy uses it for
//! routed traffic, and plugins' service calls go through it too, so both share endpoint
//! selection, pooling and timeouts.

mod client;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Uri};

use crate::config::{Config, ServiceConfig, ServiceName};
use crate::proxy::body::{self, Body};
use client::UpstreamClient;

/// Why a request did not get a response from its service.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no service named {0:?}")]
    UnknownService(String),
    #[error("service {service:?} has no endpoint to send to")]
    NoEndpoints { service: ServiceName },
    #[error("service {service:?}: cannot connect to {endpoint}: {source}")]
    Connect {
        service: ServiceName,
        endpoint: SocketAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("service {service:?}: {endpoint} did not answer within {}", humantime::format_duration(*timeout))]
    Timeout {
        service: ServiceName,
        endpoint: SocketAddr,
        timeout: Duration,
    },
    #[error("service {service:?}: request to {endpoint} failed: {source}")]
    Request {
        service: ServiceName,
        endpoint: SocketAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("service {service:?}: bad upstream uri: {message}")]
    BadUri {
        service: ServiceName,
        message: String,
    },
}

/// A response from a service, with the endpoint that gave it.
#[derive(Debug)]
pub struct UpstreamResponse {
    pub endpoint: SocketAddr,
    pub response: Response<Body>,
}

/// One named service: its endpoints and a pooled client.
#[derive(Debug)]
pub struct Service {
    pub config: ServiceConfig,
    next: AtomicUsize,
    client: UpstreamClient,
}

impl Service {
    fn new(config: ServiceConfig) -> Self {
        let client = UpstreamClient::new(config.protocol, config.connect_timeout);
        Service {
            config,
            next: AtomicUsize::new(0),
            client,
        }
    }

    /// Round robin over the static endpoints.
    fn pick(&self) -> Option<SocketAddr> {
        let endpoints = &self.config.endpoints;
        if endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % endpoints.len();
        Some(endpoints[i])
    }
}

/// All services of one config snapshot.
#[derive(Debug, Default)]
pub struct Upstreams {
    services: HashMap<ServiceName, Arc<Service>>,
}

impl Upstreams {
    pub fn new(config: &Config) -> Self {
        let services = config
            .services
            .iter()
            .map(|s| (s.name.clone(), Arc::new(Service::new(s.clone()))))
            .collect();
        Upstreams { services }
    }

    /// The service with this name.
    pub fn service(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.get(&ServiceName(name.to_owned()))
    }

    /// Sends `req` to an endpoint of `service` and waits up to `timeout` for the response head.
    ///
    /// `req`'s URI needs only a path and query; scheme and authority are set here. The body
    /// streams: the response is returned as soon as its head arrives.
    pub async fn call(
        &self,
        service: &str,
        mut req: Request<Body>,
        timeout: Duration,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let svc = self
            .service(service)
            .ok_or_else(|| UpstreamError::UnknownService(service.to_owned()))?;
        let name = &svc.config.name;
        let endpoint = svc.pick().ok_or_else(|| UpstreamError::NoEndpoints {
            service: name.clone(),
        })?;
        let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(endpoint.to_string())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| UpstreamError::BadUri {
                service: name.clone(),
                message: e.to_string(),
            })?;
        match tokio::time::timeout(timeout, svc.client.send(req)).await {
            Err(_) => Err(UpstreamError::Timeout {
                service: name.clone(),
                endpoint,
                timeout,
            }),
            Ok(Err(source)) if source.is_connect() => Err(UpstreamError::Connect {
                service: name.clone(),
                endpoint,
                source,
            }),
            Ok(Err(source)) => Err(UpstreamError::Request {
                service: name.clone(),
                endpoint,
                source,
            }),
            Ok(Ok(response)) => Ok(UpstreamResponse {
                endpoint,
                response: response.map(body::streaming),
            }),
        }
    }
}
