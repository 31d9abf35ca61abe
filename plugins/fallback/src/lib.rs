//! `fallback`: when the upstream fails (error, timeout, open circuit — the failure phase) or
//! answers a status listed in `on_status`, serve the last good response from the host cache
//! if it is younger than `max_age_secs`, else a configured default, else pass the error on.
//! Good responses (the response phase) refresh the cache, keyed by method, path and query.
//! Served fallbacks carry `x-gatehouse-fallback: cache|default`.
//! Config reference: docs/shipped-plugins.md.

pub mod config;
pub mod entry;

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use gatehouse_sdk::prelude::*;

use crate::config::Settings;
use crate::entry::Entry;

/// The plugin.
pub struct Fallback;

/// The header marking a response the plugin served.
pub const FALLBACK_HEADER: &str = "x-gatehouse-fallback";

thread_local! {
    // What the request phase learned, for the response or failure phase of the same request
    // (the host runs all three phases of one request in the same instance). `None`: the
    // plugin is not active for this request.
    static KEY: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The route's settings, parsed once: in `init` when the gateway pre-initialises the plugin,
/// else on the instance's first use.
static SETTINGS: Prepared<Settings> = Prepared::new();

fn settings() -> Option<&'static Settings> {
    match SETTINGS.get(|| config::parse(&context::config())) {
        Ok(s) => Some(s),
        Err(e) => {
            // Fail open: a fallback plugin must never be the reason a request fails.
            log::error(&format!("fallback: {e}"));
            None
        }
    }
}

/// The cache key of a request.
pub fn cache_key(
    method: &str,
    path: &str,
    query: Option<&str>,
    extra: &[(String, String)],
) -> String {
    let mut key = format!("fallback|{method} {path}");
    if let Some(q) = query {
        key.push('?');
        key.push_str(q);
    }
    for (name, value) in extra {
        key.push('|');
        key.push_str(name);
        key.push('=');
        key.push_str(value);
    }
    key
}

/// The fallback to serve now, if any: the cached entry if young enough, else the default.
fn choose(settings: &Settings, key: &str) -> Option<gatehouse_sdk::FullResponse> {
    let cached = match cache::get(key) {
        Ok(v) => v,
        Err(e) => {
            log::warn(&format!(
                "fallback: cache unavailable ({e:?}); is `cache = \"...\"` granted?"
            ));
            None
        }
    };
    if let Some(entry) = cached.as_deref().and_then(Entry::decode) {
        let age_ms = now_ms().saturating_sub(entry.stored_ms);
        if age_ms <= settings.max_age_ms {
            return Some(entry.into_response(age_ms / 1000));
        }
    }
    settings.default.as_ref().map(|d| {
        let mut r = d.clone();
        r.headers
            .push((FALLBACK_HEADER.to_string(), b"default".to_vec()));
        r
    })
}

impl Plugin for Fallback {
    fn init() -> Result<bool, String> {
        // Parsed (or its error kept, logged per use) once; never refuses: fail open.
        let _ = SETTINGS.get(|| config::parse(&context::config()));
        Ok(true)
    }

    fn on_request(req: &Request) -> Decision {
        let Some(s) = settings() else {
            return Decision::Continue;
        };
        let method = req.method();
        if s.methods.contains(&method) {
            let extra: Vec<(String, String)> = s
                .key_headers
                .iter()
                .map(|h| (h.clone(), req.header_str(h).unwrap_or_default()))
                .collect();
            let key = cache_key(&method, &req.path(), req.query().as_deref(), &extra);
            KEY.with(|k| *k.borrow_mut() = Some(key));
        }
        Decision::Continue
    }

    fn on_response(resp: &Response) {
        let Some(key) = KEY.with(|k| k.borrow().clone()) else {
            return;
        };
        let Some(s) = settings() else {
            return;
        };
        let status = resp.status();
        if s.on_status.contains(&status) {
            if let Some(fallback) = choose(s, &key) {
                log::info(&format!(
                    "fallback: upstream answered {status}; serving the fallback"
                ));
                replace(resp, fallback);
            }
            return;
        }
        if !s.statuses.contains(&status) {
            return;
        }
        let no_store = resp
            .header_str("cache-control")
            .map(|v| v.to_ascii_lowercase())
            .is_some_and(|v| v.contains("no-store") || v.contains("private"));
        if no_store {
            return;
        }
        let body = match resp.body() {
            Ok(b) => b,
            Err(e) => {
                log::debug(&format!("fallback: not caching: {e:?}"));
                return;
            }
        };
        let headers = s
            .keep_headers
            .iter()
            .flat_map(|h| resp.header_all(h).into_iter().map(move |v| (h.clone(), v)))
            .collect();
        let entry = Entry {
            stored_ms: now_ms(),
            status,
            headers,
            body,
        };
        if let Err(e) = cache::set(&key, &entry.encode(), s.max_age_ms) {
            log::warn(&format!("fallback: cannot cache the response: {e:?}"));
        }
    }

    fn on_failure(failure: UpstreamFailure) -> Option<FullResponse> {
        let key = KEY.with(|k| k.borrow().clone())?;
        let s = settings()?;
        if !s.kinds.contains(&failure.kind) {
            return None;
        }
        let fallback = choose(s, &key);
        if fallback.is_some() {
            log::info(&format!(
                "fallback: upstream failed ({}: {}); serving the fallback",
                failure.kind, failure.message
            ));
        }
        fallback
    }
}

/// Turn the upstream response into `fallback` in place.
fn replace(resp: &Response, fallback: FullResponse) {
    if resp.set_status(fallback.status).is_err() {
        return;
    }
    for name in resp.header_names() {
        resp.remove_header(&name);
    }
    for (name, value) in &fallback.headers {
        if resp.append_header(name, value).is_err() {
            log::warn(&format!("fallback: cannot set header {name}"));
        }
    }
    resp.set_body(&fallback.body);
}

// Exported only for the wasm target: natively (unit tests) the component export names,
// which contain `:` and `/`, break the linker's version script for a cdylib.
#[cfg(target_arch = "wasm32")]
export_plugin!(Fallback);
