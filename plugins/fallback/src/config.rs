//! The config table: raw serde types, then [`Settings`].

use std::collections::BTreeMap;

use gatehouse_sdk::FullResponse;
use serde::Deserialize;

/// The configured default response.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefault {
    /// Status. Default 200.
    #[serde(default)]
    pub status: Option<u16>,
    /// A JSON body (any JSON value), sent as `application/json`.
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// A text body, sent as `text/plain; charset=utf-8`.
    #[serde(default)]
    pub text: Option<String>,
    /// Extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The config table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// How old a cached response may be when served. Default 300.
    #[serde(default)]
    pub max_age_secs: Option<u64>,
    /// Methods the plugin acts on. Default `["GET"]`.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Upstream statuses that refresh the cache. Default `[200]`.
    #[serde(default)]
    pub statuses: Option<Vec<u16>>,
    /// Upstream statuses treated like a failure. Default none.
    #[serde(default)]
    pub on_status: Option<Vec<u16>>,
    /// Failure kinds that trigger the fallback. Default all.
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    /// Response headers kept with the cached body.
    #[serde(default)]
    pub keep_headers: Option<Vec<String>>,
    /// Request headers added to the cache key. Default none.
    #[serde(default)]
    pub key_headers: Vec<String>,
    /// The response served when nothing young enough is cached. Default none.
    #[serde(default)]
    pub default: Option<RawDefault>,
}

/// Validated settings.
#[derive(Debug)]
pub struct Settings {
    /// Max age of a served cached response, ms.
    pub max_age_ms: u64,
    /// Methods, upper-case.
    pub methods: Vec<String>,
    /// Statuses that refresh the cache.
    pub statuses: Vec<u16>,
    /// Statuses treated as failure.
    pub on_status: Vec<u16>,
    /// Failure kinds that trigger.
    pub kinds: Vec<String>,
    /// Headers kept, lower-case.
    pub keep_headers: Vec<String>,
    /// Request headers in the key, lower-case.
    pub key_headers: Vec<String>,
    /// The default response.
    pub default: Option<FullResponse>,
}

/// The default max age in seconds.
pub const DEFAULT_MAX_AGE_SECS: u64 = 300;
/// The failure kinds the host reports.
pub const KINDS: [&str; 5] = ["timeout", "connect", "unavailable", "protocol", "other"];

fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header_names(at: &str, names: Vec<String>) -> Result<Vec<String>, String> {
    names
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            if valid_token(&n) {
                Ok(n.to_ascii_lowercase())
            } else {
                Err(format!("{at}[{i}] = {n:?}: not a header name"))
            }
        })
        .collect()
}

/// Parse and validate the config JSON; the message names the key path.
pub fn parse(json: &str) -> Result<Settings, String> {
    let raw: RawConfig = serde_json::from_str(json).map_err(|e| format!("fallback config: {e}"))?;
    let methods: Vec<String> = raw
        .methods
        .unwrap_or_else(|| vec!["GET".into()])
        .into_iter()
        .map(|m| m.to_ascii_uppercase())
        .collect();
    if let Some(m) = methods.iter().find(|m| !valid_token(m)) {
        return Err(format!("methods: {m:?} is not an HTTP method"));
    }
    let statuses = raw.statuses.unwrap_or_else(|| vec![200]);
    let on_status = raw.on_status.unwrap_or_default();
    for (key, list) in [("statuses", &statuses), ("on_status", &on_status)] {
        if let Some(s) = list.iter().find(|s| !(100..=999).contains(*s)) {
            return Err(format!("{key}: {s} is not an HTTP status"));
        }
    }
    if let Some(s) = statuses.iter().find(|s| on_status.contains(s)) {
        return Err(format!("statuses and on_status both list {s}; a status either refreshes the cache or triggers the fallback"));
    }
    let kinds = raw
        .kinds
        .unwrap_or_else(|| KINDS.iter().map(|k| k.to_string()).collect());
    if let Some(k) = kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(format!(
            "kinds: {k:?} is not a failure kind (known: {})",
            KINDS.join(", ")
        ));
    }
    let keep_headers = header_names(
        "keep_headers",
        raw.keep_headers.unwrap_or_else(|| {
            [
                "content-type",
                "content-encoding",
                "content-language",
                "etag",
                "last-modified",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        }),
    )?;
    let key_headers = header_names("key_headers", raw.key_headers)?;
    let default = match raw.default {
        None => None,
        Some(d) => {
            let status = d.status.unwrap_or(200);
            if !(100..=999).contains(&status) {
                return Err(format!("default.status: {status} is not an HTTP status"));
            }
            let mut resp = match (d.json, d.text) {
                (Some(v), None) => gatehouse_sdk::json_response(status, &v),
                (None, Some(t)) => gatehouse_sdk::text_response(status, &t),
                _ => return Err("default: set exactly one of `json` and `text`".into()),
            };
            for (n, v) in d.headers {
                if !valid_token(&n) || v.bytes().any(|b| b < 0x20 && b != b'\t') {
                    return Err(format!("default.headers.{n}: not a valid header"));
                }
                resp.headers.push((n.to_ascii_lowercase(), v.into_bytes()));
            }
            Some(resp)
        }
    };
    Ok(Settings {
        max_age_ms: raw
            .max_age_secs
            .unwrap_or(DEFAULT_MAX_AGE_SECS)
            .saturating_mul(1000),
        methods,
        statuses,
        on_status,
        kinds,
        keep_headers,
        key_headers,
        default,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let s = parse("{}").expect("empty config is valid");
        assert_eq!(s.max_age_ms, 300_000);
        assert_eq!(s.methods, vec!["GET"]);
        assert_eq!(s.statuses, vec![200]);
        assert!(s.on_status.is_empty());
        assert_eq!(s.kinds.len(), 5);
        assert!(s.default.is_none());
        assert!(s.keep_headers.contains(&"content-type".to_string()));
    }

    #[test]
    fn default_response() {
        let s = parse(
            &json!({ "default": { "json": { "items": [] }, "headers": { "X-Why": "down" } } })
                .to_string(),
        )
        .expect("valid");
        let d = s.default.expect("default");
        assert_eq!(d.status, 200);
        assert_eq!(d.body, b"{\"items\":[]}");
        assert!(d.headers.iter().any(|(n, v)| n == "x-why" && v == b"down"));
        let s = parse(&json!({ "default": { "status": 503, "text": "later" } }).to_string())
            .expect("valid");
        assert_eq!(s.default.map(|d| d.status), Some(503));
    }

    #[test]
    fn errors() {
        let err = |v: serde_json::Value| parse(&v.to_string()).expect_err("rejected");
        assert!(err(json!({ "kinds": ["boom"] })).contains("kinds"));
        assert!(err(json!({ "statuses": [200], "on_status": [200] })).contains("both list 200"));
        assert!(err(json!({ "on_status": [1000] })).contains("on_status"));
        assert!(err(json!({ "default": {} })).contains("exactly one"));
        assert!(err(json!({ "default": { "json": 1, "text": "x" } })).contains("exactly one"));
        assert!(err(json!({ "keep_headers": ["a b"] })).contains("keep_headers[0]"));
        assert!(err(json!({ "max_age": 1 })).contains("unknown field"));
    }

    #[test]
    fn keys() {
        assert_eq!(
            crate::cache_key("GET", "/a", Some("x=1"), &[]),
            "fallback|GET /a?x=1"
        );
        assert_eq!(
            crate::cache_key("GET", "/a", None, &[("accept".into(), "json".into())]),
            "fallback|GET /a|accept=json"
        );
    }
}
