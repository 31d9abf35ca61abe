//! The public listener and the request path through the gateway.

pub mod body;
pub mod forwarding;
pub mod header_policy;
pub mod body_idle;
pub mod body_limit;
pub mod headers;
pub mod pipeline;
pub mod refuse;
pub mod server;
pub mod shedding;
pub mod workers;
