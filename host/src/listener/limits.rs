//! Request limits on the public listener (`[limits]`).

use std::time::Duration;

use serde::Serialize;

use crate::serialize::as_humantime;

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    pub max_uri_length: usize,
    #[serde(serialize_with = "as_humantime")]
    pub default_timeout: Duration,
}
