//! Plugin tests: real components (Rust guests built for wasm32-wasip2, WAT for the hostile
//! and malformed ones), driven through the runtime directly and through the gateway.

mod fairness;
mod gateway;
pub mod guests;
mod js;
mod live;
mod load;
mod preinit;
mod runtime;
mod versions;
