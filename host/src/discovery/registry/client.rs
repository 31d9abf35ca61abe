//! The registration client for code that holds the gateway's own [`InstanceSpec`] (the
//! examples, the tests): a thin adapter over the `gatehouse-registry-client` crate, which is
//! what a service uses (no wasmtime, no gateway) and where register, heartbeat and
//! deregister are implemented once.

use std::net::SocketAddr;
use std::time::Duration;

pub use gatehouse_registry_client::{ClientError, Registration};

use gatehouse_registry_client::Metadata;

use super::InstanceSpec;
use crate::discovery::EndpointMeta;

/// Talks to a gatehouse admin listener's `/registry` API.
#[derive(Clone, Debug)]
pub struct RegistryClient(gatehouse_registry_client::RegistryClient);

impl RegistryClient {
    /// `admin` is the gateway's admin listener; `token` its `[registry].token`.
    pub fn new(admin: SocketAddr, token: impl Into<String>) -> Self {
        Self(gatehouse_registry_client::RegistryClient::new(admin, token))
    }

    /// Registers once (no heartbeat).
    pub async fn register_once(
        &self,
        service: &str,
        spec: &InstanceSpec,
    ) -> Result<(), ClientError> {
        self.0.register_once(service, &instance(spec)).await
    }

    /// Renews the lease once.
    pub async fn renew(&self, service: &str, id: &str) -> Result<(), ClientError> {
        self.0.renew(service, id).await
    }

    /// Deregisters.
    pub async fn deregister(&self, service: &str, id: &str) -> Result<(), ClientError> {
        self.0.deregister(service, id).await
    }

    /// Registers, then renews every `heartbeat` in a background task (re-registering when
    /// the registry has forgotten the instance, as Eureka clients do). Drop or
    /// [`Registration::deregister`] the result to leave.
    pub async fn register(
        &self,
        service: &str,
        spec: InstanceSpec,
        heartbeat: Duration,
    ) -> Result<Registration, ClientError> {
        self.0.register(service, instance(&spec), heartbeat).await
    }
}

fn instance(spec: &InstanceSpec) -> gatehouse_registry_client::Instance {
    gatehouse_registry_client::Instance {
        id: spec.id.clone(),
        address: spec.address,
        port: spec.port,
        metadata: metadata(&spec.meta),
    }
}

/// An endpoint's metadata as an instance registers it (and as the etcd store keeps it).
pub(super) fn metadata(meta: &EndpointMeta) -> Metadata {
    Metadata {
        weight: meta.weight,
        zone: meta.zone.clone(),
        version: meta.version.clone(),
        tags: meta.tags.clone(),
    }
}
