//! The product-details demo: four mock services (product-info, recommendations, reviews,
//! price) that a gatehouse route composes into one document with the `aggregate` plugin.
//!
//! Each service is a small hyper server on 127.0.0.1 that registers itself with the
//! gateway's built-in registry, heartbeats, and deregisters when stopped
//! ([`server::MockService`]). [`catalog`] holds the data and the answers; [`token`] mints the
//! HS256 JWT the route's `jwt-auth` plugin accepts. The binary (`src/main.rs`) starts one
//! service or all of them and prints tokens; `run.sh` starts the whole demo; the gateway's
//! integration tests (`tests/all/productdetails.rs`) use this library in-process.

pub mod catalog;
pub mod server;
pub mod token;

pub use server::{MockService, ServiceKind};

/// The registry write token in `gatehouse.toml` (`[registry] token`).
pub const REGISTRY_TOKEN: &str = "demo-registry-token";

/// The HS256 secret the route's `jwt-auth` accepts (`gatehouse.toml`); at least 32 bytes.
pub const JWT_SECRET: &str = "gatehouse-demo-secret-change-me-0123456789";

/// The `iss` the route's `jwt-auth` accepts.
pub const JWT_ISSUER: &str = "gatehouse-demo";

/// The `aud` the route's `jwt-auth` accepts.
pub const JWT_AUDIENCE: &str = "mobile";

/// Why a mock service could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The listening socket could not be opened.
    #[error("{service}: cannot listen on {addr}: {source}")]
    Bind {
        service: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The gateway's registry refused or could not be reached.
    #[error("{service}: {source}")]
    Registry {
        service: &'static str,
        #[source]
        source: gatehouse::discovery::registry::ClientError,
    },
}
