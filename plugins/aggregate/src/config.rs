//! The config table: raw serde types, then [`Settings`] with parsed templates.

use gatehouse_sdk::is_header_name;
use serde::Deserialize;

use crate::template::{PathPattern, Template, Var};

/// One part as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPart {
    /// The key of this part in the composed document.
    pub name: String,
    /// The service to call (must be granted in the route's `calls`).
    pub service: String,
    /// The method. Default `GET`.
    #[serde(default)]
    pub method: Option<String>,
    /// Path and query template, e.g. `/products/{query.productid}`.
    pub path: String,
    /// Whether the part's failure fails the whole. Default true.
    #[serde(default)]
    pub required: Option<bool>,
    /// The value used when an optional part fails. Default `null`.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// Serve the last good body, if younger than this, when the part fails. Default: off.
    #[serde(default)]
    pub cache_max_age_secs: Option<u64>,
    /// A key set in the part's object: `true` when it was served from the cache, `false`
    /// when live. Needs `cache_max_age_secs`. Default: none.
    #[serde(default)]
    pub cache_flag: Option<String>,
    /// 4xx statuses of a required part answered to the client as they are, with the
    /// part's body, instead of a 502. Default: none.
    #[serde(default)]
    pub relay_statuses: Vec<u16>,
}

/// The config table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The parts, in document order.
    pub parts: Vec<RawPart>,
    /// Names path segments for templates, e.g. `/productdetails/{id}`. Default: none.
    #[serde(default)]
    pub path_pattern: Option<String>,
    /// Client request headers copied onto every part call. Default: none.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// The key listing degraded parts in the document; `""` to leave it out.
    /// Default `_degraded`.
    #[serde(default)]
    pub degraded_key: Option<String>,
}

/// A validated part.
#[derive(Debug)]
pub struct Part {
    /// Key in the document.
    pub name: String,
    /// Service name.
    pub service: String,
    /// Method, upper-case.
    pub method: String,
    /// Parsed path template.
    pub path: Template,
    /// Required or optional.
    pub required: bool,
    /// Value for a failed optional part.
    pub default: serde_json::Value,
    /// Cache window for the last good body, if on.
    pub cache_max_age_ms: Option<u64>,
    /// Key marking the part's object as cached (`true`) or live (`false`), if on.
    pub cache_flag: Option<String>,
    /// 4xx statuses relayed to the client (required parts only).
    pub relay_statuses: Vec<u16>,
}

/// Validated settings.
#[derive(Debug)]
pub struct Settings {
    /// The parts.
    pub parts: Vec<Part>,
    /// The route pattern, if any.
    pub path_pattern: Option<PathPattern>,
    /// Headers copied to part calls, lower-case.
    pub forward_headers: Vec<String>,
    /// Headers any template reads, lower-case.
    pub template_headers: Vec<String>,
    /// Key of the degraded-parts object; `None` to leave it out.
    pub degraded_key: Option<String>,
}

/// Parse and validate the config JSON. The message names the key path.
pub fn parse(json: &str) -> Result<Settings, String> {
    let raw: RawConfig =
        serde_json::from_str(json).map_err(|e| format!("aggregate config: {e}"))?;
    validate(raw)
}

/// Validate a raw config.
pub fn validate(raw: RawConfig) -> Result<Settings, String> {
    let path_pattern = raw
        .path_pattern
        .as_deref()
        .map(PathPattern::parse)
        .transpose()?;
    let names: Vec<String> = path_pattern
        .as_ref()
        .map(|p| p.names().to_vec())
        .unwrap_or_default();
    if raw.parts.is_empty() {
        return Err("parts: at least one part is needed".into());
    }
    let degraded_key = match raw.degraded_key {
        None => Some("_degraded".to_string()),
        Some(k) if k.is_empty() => None,
        Some(k) => Some(k),
    };
    let mut parts: Vec<Part> = Vec::new();
    let mut template_headers = Vec::new();
    for (i, p) in raw.parts.into_iter().enumerate() {
        let at = format!("parts[{i}]");
        // Names also appear in the `x-gatehouse-degraded` header: keep them to header-safe
        // characters.
        if !is_header_name(&p.name) || p.name.contains(',') {
            return Err(format!(
                "{at}.name = {:?}: use letters, digits, `-`, `_` or `.`",
                p.name
            ));
        }
        if parts.iter().any(|q| q.name == p.name) || degraded_key.as_deref() == Some(&p.name) {
            return Err(format!("{at}.name = {:?}: used twice", p.name));
        }
        if p.service.is_empty() {
            return Err(format!("{at}.service: must not be empty"));
        }
        let method = p
            .method
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase();
        if !is_header_name(&method) {
            return Err(format!("{at}.method = {method:?}: not an HTTP method"));
        }
        let path = Template::parse(&p.path, &names).map_err(|e| format!("{at}.path = {e}"))?;
        for var in path.vars() {
            if let Var::Header(h) = var {
                if !template_headers.contains(h) {
                    template_headers.push(h.clone());
                }
            }
        }
        let required = p.required.unwrap_or(true);
        if required && p.default.is_some() {
            return Err(format!(
                "{at}: `default` and `required = true` cannot be set together (set required = false)"
            ));
        }
        match (&p.cache_flag, p.cache_max_age_secs) {
            (Some(flag), _) if flag.is_empty() => {
                return Err(format!("{at}.cache_flag: must not be empty"));
            }
            (Some(_), None) => {
                return Err(format!(
                    "{at}: `cache_flag` needs `cache_max_age_secs` (the part has no cache to serve from)"
                ));
            }
            _ => {}
        }
        if let Some(bad) = p.relay_statuses.iter().find(|s| !(400..500).contains(*s)) {
            return Err(format!(
                "{at}.relay_statuses: {bad} is not a 4xx status (a failing service is a 502)"
            ));
        }
        if !required && !p.relay_statuses.is_empty() {
            return Err(format!(
                "{at}: `relay_statuses` needs `required = true` (an optional part falls back instead)"
            ));
        }
        parts.push(Part {
            name: p.name,
            service: p.service,
            method,
            path,
            required,
            default: p.default.unwrap_or(serde_json::Value::Null),
            cache_max_age_ms: p.cache_max_age_secs.map(|s| s.saturating_mul(1000)),
            cache_flag: p.cache_flag,
            relay_statuses: p.relay_statuses,
        });
    }
    let mut forward_headers = Vec::new();
    for (i, h) in raw.forward_headers.into_iter().enumerate() {
        if !is_header_name(&h) {
            return Err(format!("forward_headers[{i}] = {h:?}: not a header name"));
        }
        forward_headers.push(h.to_ascii_lowercase());
    }
    Ok(Settings {
        parts,
        path_pattern,
        forward_headers,
        template_headers,
        degraded_key,
    })
}
