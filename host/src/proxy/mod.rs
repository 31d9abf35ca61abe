//! The public listener and the request path through the gateway.

pub mod headers;
mod limits;
pub mod pipeline;
pub mod server;
pub mod workers;

pub use limits::Limits;
