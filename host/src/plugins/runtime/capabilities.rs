//! What a plugin may reach: the services it may call, its cache namespace, its config, and
//! the host handles behind them.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::cache::PluginCache;
use super::engine::EntryLimits;
use super::shelf::InstanceShelf;
use crate::plugins::{Body, PluginName};
use crate::ratelimit::Limiter;

/// Why the host could not complete a service call for a plugin.
#[derive(Debug, thiserror::Error)]
pub enum ServiceCallError {
    /// No service with this name exists.
    #[error("no service named `{0}`")]
    UnknownService(String),
    /// The call timed out.
    #[error("service call timed out")]
    Timeout,
    /// Any other failure (connect, protocol, no healthy endpoint).
    #[error("{0}")]
    Failed(String),
}

/// Sends a request to a named service through the host's discovery, balancing and timeouts.
/// The gateway implements it over its upstreams; tests implement it with in-process origins.
pub trait ServiceCaller: Send + Sync + 'static {
    /// Send `req` to `service`; the URI carries only path and query.
    fn call(
        &self,
        service: &str,
        req: http::Request<Body>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, ServiceCallError>>;
}

/// A caller for gateways without services: every name is unknown.
pub struct NoServices;

impl ServiceCaller for NoServices {
    fn call(
        &self,
        service: &str,
        _req: http::Request<Body>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, ServiceCallError>> {
        let name = service.to_string();
        Box::pin(async move { Err(ServiceCallError::UnknownService(name)) })
    }
}

/// The capabilities granted to one plugin on one route.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Services the plugin may call (`calls = [...]`); empty means none.
    pub services: HashSet<String>,
    /// The plugin's cache namespace (`cache = "ns"`); `None` means no cache access.
    pub cache_namespace: Option<String>,
    /// Read-only data files by grant name (`files = { name = "path" }`), read at config load.
    /// Shared by every instance of the plugin on this route; empty means none.
    pub files: Arc<HashMap<String, Bytes>>,
    /// Rate limits the plugin may charge (`limits = [...]`), by name; empty means none.
    pub limits: Arc<HashMap<String, Arc<Limiter>>>,
}

/// Everything fixed for one plugin on one route: shared by all its per-request instances.
pub struct PluginEnv {
    /// The plugin's name.
    pub name: PluginName,
    /// The route the plugin is attached to.
    pub route: Arc<str>,
    /// Its config table from the route, as JSON text.
    pub config: Arc<str>,
    /// What it may reach.
    pub grants: Grants,
    /// How service calls leave the host.
    pub services: Arc<dyn ServiceCaller>,
    /// The shared cache.
    pub cache: Arc<PluginCache>,
    /// Instances made ahead of requests, or kept between them (`reuse_instances = true`).
    pub shelf: InstanceShelf,
    /// The pre-initialised snapshot of the plugin for this entry's config (`preinit`).
    pub snapshots: super::preinit::Snapshots,
    /// Deadline, memory and body cap of each invocation.
    pub limits: EntryLimits,
}

/// Per-request metadata visible to plugins through the `context` interface.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// The client's address, e.g. `127.0.0.1:51234`; formatted only if a plugin asks for it.
    pub client_addr: Option<SocketAddr>,
    /// The request id.
    pub request_id: String,
    /// The client certificate the listener verified (mTLS), if any.
    pub client_certificate: Option<std::sync::Arc<crate::tls::PeerIdentity>>,
    /// The request's span when tracing is on: hook and service-call spans are its children.
    pub trace: Option<crate::telemetry::trace::TraceScope>,
}
