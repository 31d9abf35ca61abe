//! A small registry client: register, heartbeat in the background, deregister on shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;

use super::InstanceSpec;

/// Why a registry call failed, naming the registry and the instance.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("registry at {registry}: {op} {service}/{id} failed: {source}")]
    Transport {
        registry: SocketAddr,
        op: &'static str,
        service: String,
        id: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("registry at {registry}: {op} {service}/{id} answered {status}: {body}")]
    Rejected {
        registry: SocketAddr,
        op: &'static str,
        service: String,
        id: String,
        status: StatusCode,
        body: String,
    },
    #[error("registry at {registry}: building the {op} request failed: {source}")]
    Request {
        registry: SocketAddr,
        op: &'static str,
        #[source]
        source: http::Error,
    },
}

/// Talks to a gatehouse admin listener's `/registry` API.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    admin: SocketAddr,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl RegistryClient {
    /// `admin` is the gateway's admin listener; `token` its `[registry].token`.
    pub fn new(admin: SocketAddr, token: impl Into<String>) -> Self {
        Self {
            admin,
            token: token.into(),
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    async fn send(
        &self,
        op: &'static str,
        method: Method,
        service: &str,
        id: &str,
        path: String,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.admin, path))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|source| ClientError::Request {
                registry: self.admin,
                op,
                source,
            })?;
        let transport = |source| ClientError::Transport {
            registry: self.admin,
            op,
            service: service.to_owned(),
            id: id.to_owned(),
            source,
        };
        let resp = self.client.request(req).await.map_err(transport)?;
        let status = resp.status();
        // A body that fails mid-read is reported as empty: the status already says enough.
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            Ok((status, body))
        } else {
            Err(ClientError::Rejected {
                registry: self.admin,
                op,
                service: service.to_owned(),
                id: id.to_owned(),
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        }
    }

    /// Registers once (no heartbeat).
    pub async fn register_once(
        &self,
        service: &str,
        spec: &InstanceSpec,
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({
            "id": spec.id,
            "address": spec.address.to_string(),
            "port": spec.port,
            "metadata": {
                "weight": spec.meta.weight,
                "zone": spec.meta.zone,
                "version": spec.meta.version,
                "tags": spec.meta.tags,
            },
        });
        let path = format!("/registry/services/{service}/instances");
        self.send(
            "register",
            Method::POST,
            service,
            &spec.id,
            path,
            Bytes::from(body.to_string()),
        )
        .await
        .map(drop)
    }

    /// Renews the lease once.
    pub async fn renew(&self, service: &str, id: &str) -> Result<(), ClientError> {
        let path = format!("/registry/services/{service}/instances/{id}");
        self.send("renew", Method::PUT, service, id, path, Bytes::new())
            .await
            .map(drop)
    }

    /// Deregisters.
    pub async fn deregister(&self, service: &str, id: &str) -> Result<(), ClientError> {
        let path = format!("/registry/services/{service}/instances/{id}");
        self.send(
            "deregister",
            Method::DELETE,
            service,
            id,
            path,
            Bytes::new(),
        )
        .await
        .map(drop)
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
        self.register_once(service, &spec).await?;
        let client = self.clone();
        let svc = service.to_owned();
        let beat_spec = spec.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(heartbeat);
            tick.tick().await; // the first tick is immediate; we just registered
            loop {
                tick.tick().await;
                match client.renew(&svc, &beat_spec.id).await {
                    Ok(()) => {}
                    Err(ClientError::Rejected {
                        status: StatusCode::NOT_FOUND,
                        ..
                    }) => {
                        if let Err(e) = client.register_once(&svc, &beat_spec).await {
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
            id: spec.id,
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
