//! Registering an instance: register, heartbeat in the background, deregister on leaving.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::task::JoinHandle;

use crate::transport::Transport;
use crate::{ClientError, Instance};

/// A write call gets this long for its answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Talks to the write side of a gatehouse registry (its admin listener's `/registry`).
#[derive(Clone, Debug)]
pub struct RegistryClient {
    transport: Transport,
    token: String,
}

impl RegistryClient {
    /// `registry` is the gateway's admin listener; `token` its `[registry].token`.
    pub fn new(registry: SocketAddr, token: impl Into<String>) -> Self {
        Self {
            transport: Transport::new(registry),
            token: token.into(),
        }
    }

    /// The registry this client talks to.
    pub fn registry(&self) -> SocketAddr {
        self.transport.registry
    }

    async fn write(
        &self,
        what: String,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(), ClientError> {
        self.transport
            .call(&what, method, path, Some(&self.token), body, WRITE_TIMEOUT)
            .await
            .map(drop)
    }

    /// Registers once (no heartbeat); re-registering the same id replaces it.
    pub async fn register_once(
        &self,
        service: &str,
        instance: &Instance,
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({
            "id": instance.id,
            "address": instance.address.to_string(),
            "port": instance.port,
            "metadata": instance.metadata,
        });
        self.write(
            format!("register {service}/{}", instance.id),
            Method::POST,
            &format!("/registry/services/{service}/instances"),
            Bytes::from(body.to_string()),
        )
        .await
    }

    /// Renews the lease once.
    pub async fn renew(&self, service: &str, id: &str) -> Result<(), ClientError> {
        self.write(
            format!("renew {service}/{id}"),
            Method::PUT,
            &format!("/registry/services/{service}/instances/{id}"),
            Bytes::new(),
        )
        .await
    }

    /// Deregisters.
    pub async fn deregister(&self, service: &str, id: &str) -> Result<(), ClientError> {
        self.write(
            format!("deregister {service}/{id}"),
            Method::DELETE,
            &format!("/registry/services/{service}/instances/{id}"),
            Bytes::new(),
        )
        .await
    }

    /// Registers, then renews every `heartbeat` in a background task, registering again when
    /// the registry has forgotten the instance (a 404: it restarted, or the lease lapsed), as
    /// Eureka clients do. Drop or [`Registration::deregister`] the result to leave.
    pub async fn register(
        &self,
        service: &str,
        instance: Instance,
        heartbeat: Duration,
    ) -> Result<Registration, ClientError> {
        self.register_once(service, &instance).await?;
        let (client, svc, beat) = (self.clone(), service.to_owned(), instance.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate; we just registered
            loop {
                tick.tick().await;
                match client.renew(&svc, &beat.id).await {
                    Ok(()) => {}
                    Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {
                        if let Err(e) = client.register_once(&svc, &beat).await {
                            tracing::warn!(error = %e, "re-registering failed; will retry");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed; will retry"),
                }
            }
        });
        Ok(Registration {
            client: self.clone(),
            service: service.to_owned(),
            id: instance.id,
            heartbeat: Some(task),
        })
    }
}

/// A live registration. Dropping it stops the heartbeat and deregisters in the background
/// (best effort); `deregister().await` does it and reports the outcome.
#[derive(Debug)]
pub struct Registration {
    client: RegistryClient,
    service: String,
    id: String,
    heartbeat: Option<JoinHandle<()>>,
}

impl Registration {
    /// The registered instance's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops heartbeats without deregistering: the lease then lapses on its own (what a
    /// crashed instance looks like).
    pub fn abandon(mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }

    /// Stops heartbeats and deregisters.
    pub async fn deregister(mut self) -> Result<(), ClientError> {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
        self.client.deregister(&self.service, &self.id).await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(task) = self.heartbeat.take() else {
            return;
        };
        task.abort();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (client, service, id) =
                (self.client.clone(), self.service.clone(), self.id.clone());
            rt.spawn(async move {
                if let Err(e) = client.deregister(&service, &id).await {
                    tracing::warn!(error = %e, "deregistering on drop failed; the lease will lapse");
                }
            });
        }
    }
}
