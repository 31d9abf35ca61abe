//! Why a registry call failed, naming the registry and what was asked.

use std::net::SocketAddr;

use http::StatusCode;

/// A failed registry call. `what` names the call and its target, e.g. `register b/b-1`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("registry at {registry}: {what} failed: {source}")]
    Transport {
        registry: SocketAddr,
        what: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("registry at {registry}: {what} got no answer within {timeout:?}")]
    Timeout {
        registry: SocketAddr,
        what: String,
        timeout: std::time::Duration,
    },
    #[error("registry at {registry}: {what} answered {status}: {body}")]
    Rejected {
        registry: SocketAddr,
        what: String,
        status: StatusCode,
        body: String,
    },
    #[error("registry at {registry}: {what}: the answer is not a registry listing: {reason}")]
    BadAnswer {
        registry: SocketAddr,
        what: String,
        reason: String,
    },
    #[error("registry at {registry}: building the {what} request failed: {source}")]
    Request {
        registry: SocketAddr,
        what: String,
        #[source]
        source: http::Error,
    },
    #[error("discovery of {service:?} has no instance list yet (last error: {last_error})")]
    NotReady { service: String, last_error: String },
}

impl ClientError {
    /// The HTTP status the registry answered with, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }
}
