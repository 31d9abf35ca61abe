//! gatehouse: a programmable API gateway.
//!
//! A request flows one way through the host:
//!
//! ```text
//! client → proxy::server (HTTP/1.1 + h2c) → proxy::pipeline
//!        → limits (414/431) → path (one canonical path, or 400)
//!        → routing (host, path, method, headers, query → route)
//!        → upstream (endpoint pick, pooled client, timeout) → response → telemetry (access log)
//! ```
//!
//! Every error becomes an HTTP response in one place, [`error::ProxyError::to_response`].
//! The active state is an immutable [`state::Snapshot`] behind an `ArcSwap`.

pub mod admin;
pub mod balancing;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod error;
pub mod gateway;
pub mod health;
pub mod path;
pub mod plugins;
pub mod proxy;
pub mod reload;
pub mod resilience;
pub mod routing;
pub mod state;
pub mod telemetry;
pub mod upstream;
