//! Ergonomic helpers over the raw bindings: config, headers, query parameters, JSON
//! responses (including the 401 and 500 answers the auth plugins share), logging.

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

/// A 401 with a JSON body and the `WWW-Authenticate` challenge `challenge` (e.g.
/// `Bearer realm="gatehouse"`), the answer every authentication plugin gives a request it
/// turns away.
pub fn unauthorized(challenge: &str, body: &serde_json::Value) -> FullResponse {
    let mut resp = json_response(401, body);
    resp.headers.push((
        "www-authenticate".to_string(),
        challenge.as_bytes().to_vec(),
    ));
    resp
}

/// The body of an error a plugin answers with, in the gateway's one error shape:
/// `{"error": code, "message": message}`. Add documented extra fields to the object if needed;
/// the host adds `request_id` to every JSON error a plugin returns, so leave it out.
pub fn error_body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": code, "message": message })
}

/// A JSON error response `{"error": code, "message": message}` with `status` (the host adds
/// `request_id`).
pub fn error_response(status: u16, code: &str, message: &str) -> FullResponse {
    json_response(status, &error_body(code, message))
}

/// The 500 for a config the plugin cannot use:
/// `{"error":"plugin_misconfigured","plugin":"<plugin>","message":"<message>"}`.
/// The message should name the key path and what would be accepted.
pub fn misconfigured(plugin: &str, message: &str) -> FullResponse {
    json_response(
        500,
        &serde_json::json!({ "error": "plugin_misconfigured", "plugin": plugin, "message": message }),
    )
}

/// Whether `name` is a valid HTTP header name (an RFC 9110 token).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The first value of query parameter `name` in `query` (without the `?`), decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `query` without any `name=...` pair; the other pairs are kept byte for byte.
pub fn query_without(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            let decoded: String = form_urlencoded::parse(key.as_bytes())
                .map(|(k, _)| k.into_owned())
                .next()
                .unwrap_or_default();
            !pair.is_empty() && decoded != name
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Remove every `name=...` pair from the request's query before it goes upstream, so a
/// credential passed in the URL does not reach the service. `Ok(false)` when there was none;
/// `Err` with the host's reason when the new target is refused.
pub fn strip_query_param(req: &Request, name: &str) -> Result<bool, String> {
    let Some(query) = req.query() else {
        return Ok(false);
    };
    let rest = query_without(&query, name);
    if rest == query {
        return Ok(false);
    }
    let target = if rest.is_empty() {
        req.path()
    } else {
        format!("{}?{rest}", req.path())
    };
    req.set_path_with_query(&target).map(|()| true)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_helpers() {
        assert_eq!(
            query_param("a=1&access_token=x%2By&b=2", "access_token").as_deref(),
            Some("x+y")
        );
        assert_eq!(query_param("a=1", "access_token"), None);
        assert_eq!(
            query_without("a=1&api_key=x&b=%2F&api%5Fkey=y", "api_key"),
            "a=1&b=%2F"
        );
        assert_eq!(query_without("api_key=x", "api_key"), "");
        assert_eq!(query_without("a=1&&b", "api_key"), "a=1&b");
    }

    #[test]
    fn header_names() {
        assert!(is_header_name("x-api-key"));
        assert!(is_header_name("Authorization"));
        assert!(!is_header_name(""));
        assert!(!is_header_name("bad name"));
        assert!(!is_header_name("a:b"));
    }

    #[test]
    fn responses() {
        let r = unauthorized(
            "Bearer realm=\"x\"",
            &serde_json::json!({ "error": "unauthorized" }),
        );
        assert_eq!(r.status, 401);
        assert_eq!(
            r.headers,
            vec![
                ("content-type".to_string(), b"application/json".to_vec()),
                (
                    "www-authenticate".to_string(),
                    b"Bearer realm=\"x\"".to_vec()
                ),
            ]
        );
        let r = misconfigured("p", "keys: at least one");
        assert_eq!(r.status, 500);
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(
            body,
            serde_json::json!({ "error": "plugin_misconfigured", "plugin": "p", "message": "keys: at least one" })
        );
    }
}
