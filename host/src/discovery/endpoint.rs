//! Endpoints: one reachable instance of a service, as a discovery source publishes it.

use std::net::SocketAddr;
use std::sync::Arc;

/// One instance of a service. Discovery sources publish whole sets of these; an endpoint's
/// `id` is what ties it to its load, health and outlier state across successive sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Stable identity: the registry instance id, or `ip:port` for static and DNS endpoints.
    pub id: Arc<str>,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Registry metadata; defaults for static and DNS endpoints.
    pub meta: EndpointMeta,
}

/// Metadata an instance may carry: `weight` feeds the weighted balancer; `version`, `zone`
/// and `tags` select gray subsets and the local zone (`balancing::Placement`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointMeta {
    /// Relative share for the weighted balancer (default 1, at least 1).
    pub weight: u32,
    pub zone: Option<String>,
    pub version: Option<String>,
    pub tags: Vec<String>,
}

impl Default for EndpointMeta {
    fn default() -> Self {
        Self {
            weight: 1,
            zone: None,
            version: None,
            tags: Vec::new(),
        }
    }
}

impl Endpoint {
    /// An endpoint with default metadata, identified by its address (static and DNS sources).
    pub fn from_addr(addr: SocketAddr) -> Self {
        Self {
            id: Arc::from(addr.to_string()),
            addr,
            meta: EndpointMeta::default(),
        }
    }
}

/// An immutable snapshot of a service's endpoints. Sources replace it wholesale; readers
/// never see a half-updated set.
pub type EndpointSet = Arc<[Endpoint]>;
