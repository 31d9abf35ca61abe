//! Merging the parts' results into one document, or the 502 naming the failed required
//! parts.

use gatehouse_sdk::FullResponse;
use serde_json::{json, Map, Value};

use crate::config::{Part, Settings};

/// What became of one part.
#[derive(Debug)]
pub enum Outcome {
    /// The service answered 2xx with JSON.
    Live(Value),
    /// The service failed; its last good body was served from the cache.
    Cached {
        /// The cached body.
        value: Value,
        /// Its age in seconds.
        age_secs: u64,
        /// Why the live call failed.
        why: String,
    },
    /// The service failed and nothing was cached; why.
    Failed(String),
    /// The service answered a status listed in `relay_statuses` (e.g. 404 for an unknown
    /// product): the whole answers with it.
    Relayed {
        /// The service's status.
        status: u16,
        /// The service's body.
        body: Vec<u8>,
    },
}

/// A part and its outcome.
pub struct PartResult<'a> {
    /// The part.
    pub part: &'a Part,
    /// What happened.
    pub outcome: Outcome,
}

/// The header listing degraded parts, e.g. `price=cache, recommendations=default`.
pub const DEGRADED_HEADER: &str = "x-gatehouse-degraded";

/// The relayed answer: the service's status and JSON body; a body that is not JSON becomes
/// `{"error":"part_status","part":…,"status":…}` so the client still gets JSON.
fn relayed(part: &str, status: u16, body: &[u8]) -> FullResponse {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => gatehouse_sdk::json_response(status, &value),
        Err(_) => gatehouse_sdk::json_response(
            status,
            &json!({
                "error": "part_status",
                "part": part,
                "status": status,
                "message": format!("part {part} answered {status}"),
            }),
        ),
    }
}

/// Set the part's `cache_flag` key (if configured) to `cached` in its object. A body that is
/// not an object is left as it is: adding a key would change its type, and `_degraded`
/// still tells.
fn flag_cached(part: &Part, mut value: Value, cached: bool) -> Value {
    if let (Some(flag), Value::Object(map)) = (&part.cache_flag, &mut value) {
        map.insert(flag.clone(), Value::Bool(cached));
    }
    value
}

/// Build the response: 200 with the composed document, or 502 when a required part failed
/// without a cached body.
pub fn compose(settings: &Settings, results: Vec<PartResult<'_>>) -> FullResponse {
    // The client's own mistake (an unknown id) outranks any other failure.
    for r in &results {
        if let Outcome::Relayed { status, body } = &r.outcome {
            return relayed(&r.part.name, *status, body);
        }
    }
    let failed_required: Vec<Value> = results
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Failed(why) if r.part.required => Some(json!({
                "part": r.part.name, "service": r.part.service, "message": why
            })),
            _ => None,
        })
        .collect();
    if let Some(first) = failed_required.first() {
        let part = first["part"].clone();
        let body = json!({
            "error": "aggregate_part_failed",
            "message": format!("required part {} failed: {}",
                part.as_str().unwrap_or_default(), first["message"].as_str().unwrap_or_default()),
            "part": part,
            "failed": failed_required,
        });
        return gatehouse_sdk::json_response(502, &body);
    }
    let mut doc = Map::new();
    let mut degraded = Map::new();
    for r in results {
        let value = match r.outcome {
            Outcome::Live(v) => flag_cached(r.part, v, false),
            Outcome::Cached {
                value,
                age_secs,
                why,
            } => {
                degraded.insert(
                    r.part.name.clone(),
                    json!({ "source": "cache", "age_secs": age_secs, "reason": why }),
                );
                flag_cached(r.part, value, true)
            }
            // Unreachable: relayed outcomes returned above.
            Outcome::Relayed { .. } => continue,
            Outcome::Failed(why) => {
                degraded.insert(
                    r.part.name.clone(),
                    json!({ "source": "default", "reason": why }),
                );
                r.part.default.clone()
            }
        };
        doc.insert(r.part.name.clone(), value);
    }
    let header: Vec<String> = degraded
        .iter()
        .map(|(name, d)| format!("{name}={}", d["source"].as_str().unwrap_or_default()))
        .collect();
    if let Some(key) = &settings.degraded_key {
        if !degraded.is_empty() {
            doc.insert(key.clone(), Value::Object(degraded));
        }
    }
    let mut resp = gatehouse_sdk::json_response(200, &Value::Object(doc));
    if !header.is_empty() {
        resp.headers
            .push((DEGRADED_HEADER.to_string(), header.join(", ").into_bytes()));
    }
    resp
}
