//! The public listener and the request path through the gateway.

pub mod headers;
pub mod pipeline;
pub mod server;
pub mod workers;
