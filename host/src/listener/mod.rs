//! The public listener: worker threads accepting connections, each served by hyper
//! (HTTP/1.1 + h2c, or HTTP/1.1 + HTTP/2 over TLS) under the `[limits]` the request path also
//! enforces; and the optional plaintext listener beside a TLS one (`redirect`).

mod counted;
mod limits;
pub mod redirect;
pub mod server;
pub mod shedding;
pub mod timer;
pub mod tls;
mod upgrade;
pub mod workers;

pub use limits::Limits;
pub use upgrade::UpgradeLease;
