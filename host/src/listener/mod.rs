//! The public listener: worker threads accepting connections, each served by hyper
//! (HTTP/1.1 + h2c) under the `[limits]` the request path also enforces.

mod limits;
pub mod server;
pub mod shedding;
mod upgrade;
pub mod workers;

pub use limits::Limits;
pub use upgrade::UpgradeLease;
