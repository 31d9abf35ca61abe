//! Request limits on the public listener (`[limits]`).

use std::time::Duration;

use serde::Serialize;

use crate::body::limit::MaxBodyBytes;
use crate::headers::refuse::UnderscoreHeaders;
use crate::serialize::as_humantime;

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    pub max_uri_length: usize,
    #[serde(serialize_with = "as_humantime")]
    pub default_timeout: Duration,
    /// Largest upstream response head (HTTP/1.1 read buffer, HTTP/2 header list).
    pub max_response_header_bytes: usize,
    /// HTTP/2 streams open at once per client connection.
    pub max_concurrent_streams: u32,
    /// No request-body byte for this long: 408.
    #[serde(serialize_with = "as_humantime")]
    pub body_idle_timeout: Duration,
    /// Requests awaiting their response head per listener; `None`: derived from the
    /// descriptor limit at start (`listener::shedding`).
    pub max_requests_in_flight: Option<usize>,
    /// Open client connections per listener; `None`: derived from the descriptor limit.
    pub max_connections: Option<usize>,
    /// The request-body limit of routes that set none.
    pub max_body_bytes: MaxBodyBytes,
    /// What happens to request headers whose name holds `_`.
    pub underscore_headers: UnderscoreHeaders,
}
