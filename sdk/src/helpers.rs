//! Ergonomic helpers over the raw bindings: config, headers, JSON responses, logging.

use crate::bindings::gatehouse::plugin::context;
use crate::{FullResponse, HeaderError, Request, Response};

/// Why the plugin's config could not be read.
#[derive(Debug)]
pub struct ConfigError(serde_json::Error);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid plugin config: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The plugin's config table from the route, deserialized into `T`.
pub fn config<T: serde::de::DeserializeOwned>() -> Result<T, ConfigError> {
    serde_json::from_str(&context::config()).map_err(ConfigError)
}

/// The plugin's config table from the route as a JSON value (`{}` when none was given).
pub fn config_json() -> Result<serde_json::Value, ConfigError> {
    config()
}

/// A response with a JSON body and `content-type: application/json`.
pub fn json_response(status: u16, body: &serde_json::Value) -> FullResponse {
    FullResponse {
        status,
        headers: vec![("content-type".to_string(), b"application/json".to_vec())],
        body: body.to_string().into_bytes(),
    }
}

/// A response with a plain-text body and `content-type: text/plain; charset=utf-8`.
pub fn text_response(status: u16, body: &str) -> FullResponse {
    FullResponse {
        status,
        headers: vec![(
            "content-type".to_string(),
            b"text/plain; charset=utf-8".to_vec(),
        )],
        body: body.as_bytes().to_vec(),
    }
}

/// String-typed header access and JSON bodies for [`Request`] and [`Response`].
pub trait HeadersExt {
    /// The first value of header `name` as text, if present and valid UTF-8.
    fn header_str(&self, name: &str) -> Option<String>;
    /// Set header `name` to the text `value`, replacing existing values.
    fn set_header_str(&self, name: &str, value: &str) -> Result<(), HeaderError>;
    /// The body parsed as JSON, or `None` if it cannot be read or parsed.
    fn json_body<T: serde::de::DeserializeOwned>(&self) -> Option<T>;
}

macro_rules! headers_ext {
    ($ty:ty) => {
        impl HeadersExt for $ty {
            fn header_str(&self, name: &str) -> Option<String> {
                self.header(name).and_then(|v| String::from_utf8(v).ok())
            }
            fn set_header_str(&self, name: &str, value: &str) -> Result<(), HeaderError> {
                self.set_header(name, value.as_bytes())
            }
            fn json_body<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
                self.body()
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
            }
        }
    };
}

headers_ext!(Request);
headers_ext!(Response);

/// Logging into the gateway's log, tagged with the plugin name, route and request id.
pub mod log {
    use crate::bindings::gatehouse::plugin::context::{log, Level};

    /// Log at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    /// Log at info level.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    /// Log at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    /// Log at error level.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}
