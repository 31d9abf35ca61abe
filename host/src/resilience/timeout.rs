//! Timeouts of an upstream call: connect, each try, and the whole call including retries.

use std::time::Duration;

/// Establishing a TCP connection to an endpoint. Default 2 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectTimeout(pub Duration);

/// One try: from sending the request to receiving the response head. Default 15 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TryTimeout(pub Duration);

/// The whole call, all tries and back-offs included. Default 30 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotalTimeout(pub Duration);

/// The timeouts of one service (`connect_timeout`, `try_timeout`, `timeout` in config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: ConnectTimeout,
    pub per_try: TryTimeout,
    pub total: TotalTimeout,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: ConnectTimeout(Duration::from_secs(2)),
            per_try: TryTimeout(Duration::from_secs(15)),
            total: TotalTimeout(Duration::from_secs(30)),
        }
    }
}
