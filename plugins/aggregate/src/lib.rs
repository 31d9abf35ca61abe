//! `aggregate`: declarative fan-out. The config lists named parts (service, method, path
//! template); on the request phase the plugin calls them all at once through the host
//! (`services::call_batch`, run concurrently), merges the JSON bodies into one document under
//! the part names and answers the client directly. A failed required part fails the whole
//! with 502; an optional one falls back to its last cached body (if configured) or its
//! `default`. Config reference: docs/shipped-plugins.md.

pub mod compose;
pub mod config;
pub mod template;

#[cfg(test)]
mod tests;

use std::time::{SystemTime, UNIX_EPOCH};

use gatehouse_sdk::prelude::*;
use gatehouse_sdk::services::{CallError, ServiceRequest, ServiceResponse};

use crate::compose::{Outcome, PartResult};
use crate::config::Settings;
use crate::template::Values;

/// The plugin.
pub struct Aggregate;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a call failed, for the error document.
pub fn describe(error: &CallError) -> String {
    match error {
        CallError::NotAllowed(s) => {
            format!("service {s} is not granted to the plugin (calls = [...])")
        }
        CallError::UnknownService(s) => format!("no service named {s}"),
        CallError::InvalidRequest(why) => format!("invalid request: {why}"),
        CallError::Timeout => "timed out".into(),
        CallError::TooLarge => "response too large".into(),
        CallError::Failed(why) => why.clone(),
    }
}

fn request_values(req: &Request, settings: &Settings) -> Result<Values, FullResponse> {
    let mut values = Values::default();
    if let Some(pattern) = &settings.path_pattern {
        match pattern.matches(&req.path()) {
            Some(found) => values.path = found,
            None => {
                return Err(json_response(
                    404,
                    &json!({ "error": "not_found", "message": "path does not match path_pattern" }),
                ))
            }
        }
    }
    if let Some(q) = req.query() {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            values
                .query
                .entry(k.into_owned())
                .or_insert_with(|| v.into_owned());
        }
    }
    for name in &settings.template_headers {
        if let Some(v) = req.header_str(name) {
            values.headers.insert(name.clone(), v);
        }
    }
    Ok(values)
}

fn cache_key(part: &str, path: &str) -> String {
    format!("aggregate|{part}|{path}")
}

/// Store `body` with its time: 8 bytes of big-endian milliseconds, then the body.
fn cache_store(key: &str, body: &[u8], max_age_ms: u64) {
    let mut value = now_ms().to_be_bytes().to_vec();
    value.extend_from_slice(body);
    if let Err(e) = cache::set(key, &value, max_age_ms) {
        log::warn(&format!(
            "aggregate: cannot cache {key}: {e:?} (is `cache = \"...\"` granted?)"
        ));
    }
}

fn cache_load(key: &str, max_age_ms: u64) -> Option<(serde_json::Value, u64)> {
    let value = cache::get(key).ok()??;
    let (stamp, body) = value.split_at_checked(8)?;
    let stored = u64::from_be_bytes(stamp.try_into().ok()?);
    let age = now_ms().saturating_sub(stored);
    if age > max_age_ms {
        return None;
    }
    serde_json::from_slice(body).ok().map(|v| (v, age / 1000))
}

/// How a part's call ended, before caches and defaults are consulted.
enum Judged {
    /// 2xx with JSON: the value and the raw body (for the cache).
    Good(serde_json::Value, Vec<u8>),
    /// A status listed in the part's `relay_statuses`, with the service's body.
    Relay(u16, Vec<u8>),
    /// Anything else; why.
    Bad(String),
}

fn judge(part: &config::Part, result: Result<ServiceResponse, CallError>) -> Judged {
    match result {
        Ok(resp) if part.relay_statuses.contains(&resp.status) => {
            Judged::Relay(resp.status, resp.body)
        }
        other => match judge_body(other) {
            Ok((value, raw)) => Judged::Good(value, raw),
            Err(why) => Judged::Bad(why),
        },
    }
}

fn judge_body(
    result: Result<ServiceResponse, CallError>,
) -> Result<(serde_json::Value, Vec<u8>), String> {
    let resp = result.map_err(|e| describe(&e))?;
    if !(200..300).contains(&resp.status) {
        return Err(format!("service answered {}", resp.status));
    }
    if resp.body.is_empty() {
        return Ok((serde_json::Value::Null, resp.body));
    }
    let value = serde_json::from_slice(&resp.body)
        .map_err(|e| format!("service answered invalid JSON: {e}"))?;
    Ok((value, resp.body))
}

/// The route's settings, parsed once: in `init` when the gateway pre-initialises the plugin,
/// else on the instance's first request. An unusable config is kept too, so each request
/// gets the plugin's own `plugin_misconfigured` answer.
static SETTINGS: Prepared<Settings> = Prepared::new();

fn load_settings() -> Result<Settings, String> {
    config::parse(&context::config())
}

impl Plugin for Aggregate {
    fn init() -> Result<bool, String> {
        if let Err(e) = SETTINGS.get(load_settings) {
            log::error(&format!("aggregate: {e}"));
        }
        Ok(true)
    }

    fn on_request(req: &Request) -> Decision {
        let settings = match SETTINGS.get(load_settings) {
            Ok(s) => s,
            Err(e) => {
                log::error(&format!("aggregate: {e}"));
                return Decision::Respond(misconfigured("aggregate", e));
            }
        };
        let values = match request_values(req, settings) {
            Ok(v) => v,
            Err(resp) => return Decision::Respond(resp),
        };
        let mut calls = Vec::with_capacity(settings.parts.len());
        let mut paths = Vec::with_capacity(settings.parts.len());
        for part in &settings.parts {
            let path = match part.path.render(&values) {
                Ok(p) => p,
                Err(why) => {
                    return Decision::Respond(json_response(
                        400,
                        &json!({ "error": "bad_request", "part": part.name, "message": why }),
                    ))
                }
            };
            let headers = settings
                .forward_headers
                .iter()
                .filter_map(|h| req.header(h).map(|v| (h.clone(), v)))
                .collect();
            calls.push((
                part.service.clone(),
                ServiceRequest {
                    method: part.method.clone(),
                    path_with_query: path.clone(),
                    headers,
                    body: Vec::new(),
                },
            ));
            paths.push(path);
        }

        // The host runs the calls concurrently: latency ≈ the slowest part.
        let results = services::call_batch(&calls);

        let mut results = results.into_iter();
        let mut outcomes = Vec::with_capacity(settings.parts.len());
        for (i, part) in settings.parts.iter().enumerate() {
            let result = results
                .next()
                .unwrap_or_else(|| Err(CallError::Failed("no result from the host".into())));
            let outcome = match judge(part, result) {
                Judged::Relay(status, body) => Outcome::Relayed { status, body },
                Judged::Good(value, raw) => {
                    if let Some(max_age) = part.cache_max_age_ms {
                        cache_store(&cache_key(&part.name, &paths[i]), &raw, max_age);
                    }
                    Outcome::Live(value)
                }
                Judged::Bad(why) => {
                    log::warn(&format!(
                        "aggregate: part {} ({}) failed: {why}",
                        part.name, part.service
                    ));
                    let cached = part
                        .cache_max_age_ms
                        .and_then(|max| cache_load(&cache_key(&part.name, &paths[i]), max));
                    match cached {
                        Some((value, age_secs)) => Outcome::Cached {
                            value,
                            age_secs,
                            why,
                        },
                        None => Outcome::Failed(why),
                    }
                }
            };
            outcomes.push(PartResult { part, outcome });
        }
        Decision::Respond(compose::compose(settings, outcomes))
    }
}

// Exported only for the wasm target: natively (unit tests) the component export names,
// which contain `:` and `/`, break the linker's version script for a cdylib.
#[cfg(target_arch = "wasm32")]
export_plugin!(Aggregate);
