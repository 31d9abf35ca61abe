//! Every way a transcoded call can fail, each with the HTTP status and JSON body the client gets.

use serde_json::{json, Value};

use crate::grpc;

/// Why a request could not be answered with the method's reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    /// The route's plugin config (or its descriptor file) is unusable: the operator's mistake.
    #[error("grpc-transcode config: {0}")]
    Config(String),
    /// The request path maps to no method in `methods`.
    #[error("no gRPC method is mapped to {0}")]
    NoMethod(String),
    /// The client's JSON body or query does not fit the method's input message.
    #[error("{0}")]
    BadRequest(String),
    /// The gRPC service did not answer within the host's timeout.
    #[error("the gRPC service did not answer in time")]
    Timeout,
    /// The call did not get a reply (connect refused, no healthy endpoint, reset...).
    #[error("calling the gRPC service failed: {0}")]
    CallFailed(String),
    /// The service replied with something that is not a valid unary gRPC reply.
    #[error("bad gRPC reply: {0}")]
    BadReply(String),
    /// The service replied with a non-OK `grpc-status`.
    #[error("gRPC status {code} ({}): {message}", grpc::code_name(*code))]
    Status {
        /// The `grpc-status` code.
        code: u32,
        /// The percent-decoded `grpc-message`.
        message: String,
    },
}

impl TranscodeError {
    /// The HTTP status sent to the client.
    pub fn http_status(&self) -> u16 {
        match self {
            TranscodeError::Config(_) => 500,
            TranscodeError::NoMethod(_) => 404,
            TranscodeError::BadRequest(_) => 400,
            TranscodeError::Timeout => 504,
            TranscodeError::CallFailed(_) | TranscodeError::BadReply(_) => 502,
            TranscodeError::Status { code, .. } => grpc::http_status(*code),
        }
    }

    /// The JSON body sent to the client: `{"error", "message"}`, plus `grpc_status` for a
    /// status the service returned, and `plugin` for a config error (as every shipped plugin
    /// reports one).
    pub fn body(&self) -> Value {
        let code = match self {
            TranscodeError::Config(m) => {
                return json!({
                    "error": "plugin_misconfigured",
                    "plugin": "grpc-transcode",
                    "message": m,
                })
            }
            TranscodeError::NoMethod(_) => "no_method",
            TranscodeError::BadRequest(_) => "bad_request",
            TranscodeError::Timeout => "upstream_timeout",
            TranscodeError::CallFailed(_) => "upstream_failed",
            TranscodeError::BadReply(_) => "bad_upstream_reply",
            TranscodeError::Status { code, message } => {
                return json!({
                    "error": grpc::code_name(*code),
                    "grpc_status": code,
                    "message": message,
                })
            }
        };
        json!({ "error": code, "message": self.to_string() })
    }
}
