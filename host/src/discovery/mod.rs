//! Discovery: sources that publish a service's endpoint set (static, the built-in registry,
//! DNS) as immutable snapshots on a `watch` channel the backend pool follows.

mod dns;
mod endpoint;
pub mod registry;

pub use dns::DnsSource;
pub use endpoint::{Endpoint, EndpointMeta, EndpointSet};

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

/// A source of endpoint sets. `start` publishes the first set (possibly empty) and keeps
/// publishing changes until every receiver is gone.
pub trait Discover {
    fn start(self) -> watch::Receiver<EndpointSet>;
}

/// Fixed endpoints from config (`discovery = "static"`, `endpoints = [...]`).
#[derive(Debug, Clone)]
pub struct StaticSource(pub Vec<SocketAddr>);

impl Discover for StaticSource {
    fn start(self) -> watch::Receiver<EndpointSet> {
        let set: EndpointSet = self.0.into_iter().map(Endpoint::from_addr).collect();
        // The sender is dropped here: the set never changes, and receivers keep the value.
        watch::channel(set).1
    }
}

/// The instances of `service` in the built-in registry (`discovery = "registry"`).
#[derive(Debug, Clone)]
pub struct RegistrySource {
    pub registry: Arc<registry::Registry>,
    pub service: String,
}

impl Discover for RegistrySource {
    fn start(self) -> watch::Receiver<EndpointSet> {
        self.registry.watch(&self.service)
    }
}

/// The source a service is configured with.
#[derive(Debug, Clone)]
pub enum Source {
    Static(StaticSource),
    Registry(RegistrySource),
    Dns(DnsSource),
}

impl Discover for Source {
    fn start(self) -> watch::Receiver<EndpointSet> {
        match self {
            Source::Static(s) => s.start(),
            Source::Registry(s) => s.start(),
            Source::Dns(s) => s.start(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_source_publishes_its_endpoints_once() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().expect("valid");
        let rx = StaticSource(vec![addr]).start();
        assert_eq!(rx.borrow().len(), 1);
        assert_eq!(&*rx.borrow()[0].id, "127.0.0.1:8080");
    }
}
