//! The pooled HTTP client used to reach a service's endpoints (HTTP/1.1 or h2c).

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Protocol;
use crate::proxy::body::Body;

/// Keep-alive pool for one service. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    inner: Client<HttpConnector, Body>,
}

impl UpstreamClient {
    pub fn new(protocol: Protocol, connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            // The gateway forwards the client's Host; never overwrite it with the endpoint.
            .set_host(false);
        if protocol == Protocol::H2c {
            builder.http2_only(true);
        }
        UpstreamClient {
            inner: builder.build(connector),
        }
    }

    /// The underlying pooled client (cheap to clone; clones share the pool).
    pub fn hyper_client(&self) -> Client<HttpConnector, Body> {
        self.inner.clone()
    }
}
