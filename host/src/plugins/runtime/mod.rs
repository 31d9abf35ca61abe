//! The wasm side of plugins: engine, bindings, host functions, instances, errors.

pub mod bindings;
pub mod cache;
pub mod capabilities;
pub mod clock;
pub mod engine;
pub mod error;
pub mod host_impl;
pub mod instance;
pub mod message;
pub mod preinit;
pub mod shelf;
pub mod ticker;
