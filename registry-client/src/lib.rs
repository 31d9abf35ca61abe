//! A client of gatehouse's built-in service registry, without the gateway: a service
//! registers itself (with heartbeats) and discovers its peers client-side, Eureka + Ribbon
//! style, calling them directly instead of through the gateway.
//!
//! ```no_run
//! use std::time::Duration;
//! use gatehouse_registry_client::{Discovery, Instance, RegistryClient};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = "127.0.0.1:9901".parse()?;
//! // Service "b" registers and heartbeats until the registration is dropped.
//! let client = RegistryClient::new(registry, "registry-token");
//! let me = Instance::new("b-1", "127.0.0.1".parse()?, 8081);
//! let _registration = client.register("b", me, Duration::from_secs(30)).await?;
//!
//! // Service "a" follows b's instances (one blocking query at a time) and balances itself.
//! let b = Discovery::builder(registry, "b").start();
//! b.ready(Duration::from_secs(5)).await?;
//! if let Some(instance) = b.pick() {
//!     println!("calling b at {}", instance.addr());
//!     // ... on a failed call: b.mark_failed(&instance);
//! }
//! # Ok(()) }
//! ```
//!
//! The watch uses the registry's blocking queries
//! (`GET /registry/services/{name}/instances?index=N&wait=D`, docs/discovery.md): the
//! request is held until the service's instance set changes, so a change arrives within a
//! round trip, without polling. When the registry is unreachable the last list keeps being
//! served and the watch retries with back-off.

mod discovery;
mod error;
mod registration;
mod transport;

pub use discovery::{Discovery, DiscoveryBuilder, Snapshot};
pub use error::ClientError;
pub use registration::{Registration, RegistryClient};

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// An instance of a service, as it registers and as discovery lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique within the service: 1–128 of letters, digits, `-_.:`.
    pub id: String,
    /// An IP literal the instance is reached at.
    pub address: IpAddr,
    pub port: u16,
    #[serde(default)]
    pub metadata: Metadata,
}

impl Instance {
    /// An instance with default metadata (weight 1, no zone, version or tags).
    pub fn new(id: impl Into<String>, address: IpAddr, port: u16) -> Self {
        Self {
            id: id.into(),
            address,
            port,
            metadata: Metadata::default(),
        }
    }

    /// Where to call it.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// What an instance tells about itself (the gateway's balancers and gray subsets read it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// 1–10000, default 1.
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

fn one() -> u32 {
    1
}

impl Default for Metadata {
    fn default() -> Self {
        Self {
            weight: 1,
            zone: None,
            version: None,
            tags: Vec::new(),
        }
    }
}
