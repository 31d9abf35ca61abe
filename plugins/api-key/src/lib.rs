//! `api-key`: authenticates a request by an API key from a header or a query parameter.
//! Keys are stored in config only as SHA-256 hashes, each with a consumer name and metadata
//! headers forwarded upstream; the key itself is stripped before forwarding.
//! Config reference: docs/shipped-plugins.md.

use std::collections::BTreeMap;

use gatehouse_sdk::prelude::*;
use gatehouse_sdk::{is_header_name, query_param, strip_query_param};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// The plugin.
pub struct ApiKey;

/// One configured key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// SHA-256 of the key, 64 hex digits (`printf %s "$KEY" | sha256sum`).
    pub sha256: String,
    /// Who the key belongs to; sent upstream in `consumer_header`. Default: none.
    #[serde(default)]
    pub consumer: Option<String>,
    /// Extra headers sent upstream for this key. Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The config table (see docs/shipped-plugins.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The header carrying the key. Default `x-api-key`.
    #[serde(default)]
    pub header: Option<String>,
    /// A query parameter that may carry the key instead. Default: none.
    #[serde(default)]
    pub query: Option<String>,
    /// The header naming the consumer upstream. Default `x-consumer`.
    #[serde(default)]
    pub consumer_header: Option<String>,
    /// Whether to remove the key from the request before forwarding. Default true.
    #[serde(default)]
    pub strip: Option<bool>,
    /// The accepted keys.
    pub keys: Vec<KeyEntry>,
}

/// Validated settings.
#[derive(Debug)]
pub struct Settings {
    /// Key header, lower-case.
    pub header: String,
    /// Key query parameter.
    pub query: Option<String>,
    /// Consumer header, lower-case.
    pub consumer_header: String,
    /// Strip the key before forwarding.
    pub strip: bool,
    /// Keys with their hash decoded.
    pub keys: Vec<(Vec<u8>, KeyEntry)>,
}

/// The config cannot be used; names the key path.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

fn valid_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// Parse and validate the config JSON.
pub fn parse(json: &str) -> Result<Settings, ConfigError> {
    let raw: RawConfig =
        serde_json::from_str(json).map_err(|e| ConfigError(format!("api-key config: {e}")))?;
    let header = raw
        .header
        .unwrap_or_else(|| "x-api-key".into())
        .to_ascii_lowercase();
    if !is_header_name(&header) {
        return Err(ConfigError(format!(
            "header = {header:?}: not a valid header name"
        )));
    }
    let consumer_header = raw
        .consumer_header
        .unwrap_or_else(|| "x-consumer".into())
        .to_ascii_lowercase();
    if !is_header_name(&consumer_header) {
        return Err(ConfigError(format!(
            "consumer_header = {consumer_header:?}: not a valid header name"
        )));
    }
    if raw.keys.is_empty() {
        return Err(ConfigError("keys: at least one key is needed".into()));
    }
    let mut keys = Vec::new();
    for (i, mut k) in raw.keys.into_iter().enumerate() {
        let hash = hex_decode(k.sha256.trim())
            .filter(|h| h.len() == 32)
            .ok_or_else(|| {
                ConfigError(format!(
                    "keys[{i}].sha256 = {:?}: expected 64 hex digits (the SHA-256 of the key)",
                    k.sha256
                ))
            })?;
        if let Some(c) = &k.consumer {
            if !valid_header_value(c) {
                return Err(ConfigError(format!(
                    "keys[{i}].consumer: not a valid header value"
                )));
            }
        }
        let mut headers = BTreeMap::new();
        for (name, value) in std::mem::take(&mut k.headers) {
            if !is_header_name(&name) || !valid_header_value(&value) {
                return Err(ConfigError(format!(
                    "keys[{i}].headers.{name}: not a valid header name and value"
                )));
            }
            headers.insert(name.to_ascii_lowercase(), value);
        }
        k.headers = headers;
        keys.push((hash, k));
    }
    Ok(Settings {
        header,
        query: raw.query,
        consumer_header,
        strip: raw.strip.unwrap_or(true),
        keys,
    })
}

impl Settings {
    /// The key whose hash matches `presented`, comparing every hash in constant time.
    pub fn lookup(&self, presented: &str) -> Option<&KeyEntry> {
        let digest = Sha256::digest(presented.as_bytes());
        let mut found = None;
        for (hash, entry) in &self.keys {
            let diff = hash
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(entry);
            }
        }
        found
    }

    /// Every header name this plugin sets upstream; a client must not be able to send them.
    pub fn vouched_headers(&self) -> Vec<&str> {
        let mut names: Vec<&str> = vec![self.consumer_header.as_str()];
        for (_, k) in &self.keys {
            names.extend(k.headers.keys().map(String::as_str));
        }
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// The 401 response: `error` code and `message` in the body, the `ApiKey` challenge.
pub fn reject(error: &str, message: &str) -> FullResponse {
    unauthorized(
        "ApiKey realm=\"gatehouse\"",
        &json!({ "error": error, "message": message }),
    )
}

/// The route's settings, parsed once: in `init` when the gateway pre-initialises the plugin,
/// else on the instance's first request. An unusable config is kept too, so each request
/// gets the plugin's own `plugin_misconfigured` answer.
static SETTINGS: Prepared<Settings> = Prepared::new();

fn load_settings() -> Result<Settings, String> {
    parse(&context::config()).map_err(|e| e.0)
}

impl Plugin for ApiKey {
    fn init() -> Result<bool, String> {
        if let Err(e) = SETTINGS.get(load_settings) {
            log::error(&format!("api-key: {e}"));
        }
        Ok(true)
    }

    fn on_request(req: &Request) -> Decision {
        let settings = match SETTINGS.get(load_settings) {
            Ok(s) => s,
            Err(e) => {
                log::error(&format!("api-key: {e}"));
                return Decision::Respond(misconfigured("api-key", e));
            }
        };
        for name in settings.vouched_headers() {
            req.remove_header(name);
        }
        let from_header = req
            .header_str(&settings.header)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        let found = match from_header {
            Some(k) => Some(k),
            None => match (&settings.query, req.query()) {
                (Some(name), Some(q)) => query_param(&q, name).filter(|v| !v.is_empty()),
                _ => None,
            },
        };
        let Some(presented) = found else {
            return Decision::Respond(reject("missing_api_key", "no API key in the request"));
        };
        let Some(entry) = settings.lookup(&presented) else {
            return Decision::Respond(reject("invalid_api_key", "API key not recognised"));
        };
        if let Some(consumer) = &entry.consumer {
            if req
                .set_header_str(&settings.consumer_header, consumer)
                .is_err()
            {
                log::warn("api-key: cannot set the consumer header");
            }
        }
        for (name, value) in &entry.headers {
            if req.set_header_str(name, value).is_err() {
                log::warn(&format!("api-key: cannot set header {name}"));
            }
        }
        if settings.strip {
            // Strip the key wherever it is: a copy left in the query would reach the upstream.
            req.remove_header(&settings.header);
            if let Some(name) = &settings.query {
                if let Err(e) = strip_query_param(req, name) {
                    log::warn(&format!("api-key: cannot strip the key: {e}"));
                }
            }
        }
        Decision::Continue
    }
}

// Exported only for the wasm target: natively (unit tests) the component export names,
// which contain `:` and `/`, break the linker's version script for a cdylib.
#[cfg(target_arch = "wasm32")]
export_plugin!(ApiKey);

#[cfg(test)]
mod tests {
    use super::*;

    // sha256("secret-key-1")
    fn hash(key: &str) -> String {
        Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn cfg() -> Settings {
        let json = json!({
            "query": "api_key",
            "keys": [
                { "sha256": hash("k1"), "consumer": "mobile", "headers": { "X-Plan": "gold" } },
                { "sha256": hash("k2").to_uppercase(), "consumer": "web" },
            ]
        });
        parse(&json.to_string()).expect("valid config")
    }

    #[test]
    fn lookup_by_hash() {
        let s = cfg();
        assert_eq!(
            s.lookup("k1").and_then(|k| k.consumer.as_deref()),
            Some("mobile")
        );
        assert_eq!(
            s.lookup("k2").and_then(|k| k.consumer.as_deref()),
            Some("web")
        );
        assert!(s.lookup("k3").is_none());
        assert!(s.lookup("").is_none());
        assert_eq!(
            s.keys[0].1.headers.get("x-plan").map(String::as_str),
            Some("gold")
        );
        assert_eq!(s.vouched_headers(), vec!["x-consumer", "x-plan"]);
        assert_eq!(s.header, "x-api-key");
        assert!(s.strip);
    }

    #[test]
    fn config_errors() {
        let err = |v: serde_json::Value| parse(&v.to_string()).expect_err("rejected").0;
        assert!(err(json!({ "keys": [] })).contains("at least one key"));
        assert!(err(json!({})).contains("missing field `keys`"));
        assert!(err(json!({ "keys": [{ "sha256": "abc" }] })).contains("keys[0].sha256"));
        assert!(err(json!({ "keys": [{ "sha256": "zz".repeat(32) }] })).contains("64 hex digits"));
        assert!(
            err(json!({ "keys": [{ "sha256": hash("a"), "headers": { "x": "a\nb" } }] }))
                .contains("keys[0].headers.x")
        );
        assert!(
            err(json!({ "header": "bad name", "keys": [{ "sha256": hash("a") }] }))
                .contains("header")
        );
        assert!(
            err(json!({ "keys": [{ "sha256": hash("a"), "typo": 1 }] })).contains("unknown field")
        );
    }
}
