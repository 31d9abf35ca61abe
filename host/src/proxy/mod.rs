//! The request path through the gateway, from an accepted request to its response.

pub mod pipeline;
mod upgrade;
