//! The request path through the gateway, from an accepted request to its response.

mod cached;
pub mod pipeline;
mod upgrade;
