//! A plugin for the gateway's own tests: its config's `mode` picks a behaviour, friendly or
//! hostile (loop forever, allocate without bound, trap, answer with a huge body...).
// A plugin only makes sense as a wasm component; on the host target the crate is empty so
// workspace-wide native builds (`cargo test --workspace`) do not try to link wasm imports.
#![cfg(target_family = "wasm")]

use std::sync::atomic::{AtomicU32, Ordering};

use gatehouse_sdk::prelude::*;
use gatehouse_sdk::services::{CallError, ServiceRequest};

/// Counts invocations in this instance; a fresh instance per request means it is always 1.
static SEEN: AtomicU32 = AtomicU32::new(0);
/// Counts `on_response` calls in this instance (mode `request-only`).
static RESPONSE_CALLS: AtomicU32 = AtomicU32::new(0);

/// Mode `preinit`: what `init` set up (the config's `label`, an id drawn at random, the
/// number of `init` calls so far in this memory).
struct Prepared_ {
    label: String,
    id: u64,
    inits: u32,
}

static PREPARED: Prepared<Prepared_> = Prepared::new();
/// Mode `preinit`: `init` calls seen by this memory (1 in every fresh instance, snapshot or
/// not: the snapshot holds the one call made before it).
static INITS: AtomicU32 = AtomicU32::new(0);
/// Mode `preinit`: bumped by each request; a fresh instance always starts it at 0.
static SCRATCH: AtomicU32 = AtomicU32::new(0);

fn prepare() -> Result<Prepared_, String> {
    let c = cfg();
    if let Some(why) = c["init_error"].as_str() {
        return Err(why.to_string());
    }
    use std::hash::{BuildHasher, Hasher};
    // Random per instance that draws it: instances sharing a snapshot share the id.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    Ok(Prepared_ {
        label: c["label"].as_str().unwrap_or_default().to_string(),
        id: h.finish(),
        inits: INITS.fetch_add(1, Ordering::SeqCst) + 1,
    })
}

/// The test plugin.
pub struct TestKit;

fn cfg() -> serde_json::Value {
    config_json().unwrap_or_default()
}

fn mode() -> String {
    cfg()["mode"].as_str().unwrap_or("tag").to_string()
}

fn call_error(e: &CallError) -> serde_json::Value {
    json!({ "error": format!("{e:?}") })
}

impl Plugin for TestKit {
    fn init() -> Result<bool, String> {
        if mode() != "preinit" {
            return Ok(false);
        }
        PREPARED.get(prepare).map(|_| true).map_err(str::to_string)
    }

    fn on_request(req: &Request) -> Decision {
        let seen = SEEN.fetch_add(1, Ordering::SeqCst) + 1;
        match mode().as_str() {
            "preinit" => match PREPARED.get(prepare) {
                Ok(p) => Decision::Respond(json_response(
                    200,
                    &json!({ "label": p.label, "id": p.id.to_string(), "inits": p.inits,
                             "all_inits": INITS.load(Ordering::SeqCst),
                             "scratch": SCRATCH.fetch_add(1, Ordering::SeqCst) + 1 }),
                )),
                Err(e) => Decision::Respond(misconfigured("test-kit", e)),
            },
            "tag" => {
                if req.header("x-trap").is_some() {
                    panic!("test-kit asked to trap by the x-trap header");
                }
                let _ = req.set_header_str("x-version", "kit");
                let _ = req.set_header_str("x-seen", &seen.to_string());
                Decision::Continue
            }
            "deny" => Decision::Respond(json_response(403, &json!({ "error": "denied" }))),
            "request-only" => {
                let calls = RESPONSE_CALLS.load(Ordering::SeqCst);
                let _ = req.set_header_str("x-response-calls", &calls.to_string());
                Decision::Continue
            }
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("test-kit asked to trap"),
            // Writes the `x-note` header to stderr, then traps if asked: what a failure reports
            // of stderr must be its own instance's only.
            "stderr" => {
                if let Some(note) = req.header_str("x-note") {
                    eprintln!("test-kit note: {note}");
                }
                if req.header("x-trap").is_some() {
                    panic!("test-kit asked to trap by the x-trap header");
                }
                Decision::Continue
            }
            "huge-response" => {
                let size = cfg()["size"].as_u64().unwrap_or(4 << 20) as usize;
                Decision::Respond(FullResponse {
                    status: 200,
                    headers: Vec::new(),
                    body: vec![b'x'; size],
                })
            }
            "bad-response-header" => Decision::Respond(FullResponse {
                status: 200,
                headers: vec![("x-bad".to_string(), b"line\r\nbreak".to_vec())],
                body: Vec::new(),
            }),
            "bad-set-header" => {
                let value = req.set_header("x-bad", b"line\nbreak");
                let name = req.set_header("bad name", b"ok");
                let hop = req.set_header("connection", b"close");
                Decision::Respond(json_response(
                    200,
                    &json!({ "value": format!("{value:?}"), "name": format!("{name:?}"),
                             "hop": format!("{hop:?}") }),
                ))
            }
            // Denies (403) unless the connection's verified client certificate has the
            // subject in `config.subject`; tags the request with it otherwise.
            "client-certificate" => {
                let want = cfg()["subject"].as_str().unwrap_or_default().to_string();
                match context::client_certificate() {
                    Some(cert) if cert.subject == want => {
                        let _ = req.set_header_str("x-plugin-saw-subject", &cert.subject);
                        let _ = req.set_header_str("x-plugin-saw-sha256", &cert.sha256);
                        Decision::Continue
                    }
                    seen => Decision::Respond(json_response(
                        403,
                        &json!({ "error": "forbidden",
                                 "subject": seen.map(|c| c.subject) }),
                    )),
                }
            }
            "meta" => Decision::Respond(json_response(
                200,
                &json!({
                    "route": context::route_name(),
                    "client": context::client_addr(),
                    "request_id": context::request_id(),
                    "config": cfg(),
                    "method": req.method(),
                    "path": req.path(),
                    "query": req.query(),
                    "seen": seen,
                }),
            )),
            "body" => match req.body() {
                Ok(body) => {
                    req.set_body(&[b"plugin:".as_slice(), &body].concat());
                    Decision::Continue
                }
                Err(e) => {
                    Decision::Respond(json_response(413, &json!({ "error": format!("{e:?}") })))
                }
            },
            "call" => {
                let names: Vec<String> = cfg()["services"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let calls: Vec<(String, ServiceRequest)> = names
                    .iter()
                    .map(|n| (n.clone(), services::get(&format!("/part/{n}"))))
                    .collect();
                let results = services::call_batch(&calls);
                let parts: Vec<serde_json::Value> = results
                    .iter()
                    .map(|r| match r {
                        Ok(resp) => json!({
                            "status": resp.status,
                            "body": String::from_utf8_lossy(&resp.body),
                        }),
                        Err(e) => call_error(e),
                    })
                    .collect();
                Decision::Respond(json_response(200, &json!({ "parts": parts })))
            }
            "cache" => {
                let hits = match cache::get("hits") {
                    Ok(Some(v)) => String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0),
                    Ok(None) => 0,
                    Err(e) => {
                        return Decision::Respond(json_response(
                            500,
                            &json!({ "error": format!("{e:?}") }),
                        ))
                    }
                } + 1;
                let ttl = cfg()["ttl_ms"].as_u64().unwrap_or(60_000);
                let _ = cache::set("hits", hits.to_string().as_bytes(), ttl);
                Decision::Respond(json_response(200, &json!({ "hits": hits })))
            }
            "log" => {
                log::info("hello from test-kit");
                Decision::Continue
            }
            // Charges the limit `limit` (config) with a key it computes: "tenant:" + the
            // x-tenant header, costing x-cost (default 1). Over the limit: the SDK's 429.
            "limits" => {
                let limit = cfg()["limit"].as_str().unwrap_or("per-tenant").to_string();
                let tenant = req.header_str("x-tenant").unwrap_or_default();
                let cost = req
                    .header_str("x-cost")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                match limits::take(&limit, &format!("tenant:{tenant}"), cost) {
                    Ok(limits::Charge::Allowed(quota)) => {
                        let _ = req.set_header_str("x-remaining", &quota.remaining.to_string());
                        Decision::Continue
                    }
                    Ok(limits::Charge::Limited(retry_ms)) => {
                        Decision::Respond(limits::too_many_requests(&limit, retry_ms))
                    }
                    Err(e) => Decision::Respond(json_response(
                        500,
                        &json!({ "error": "limit_error", "message": format!("{e:?}") }),
                    )),
                }
            }
            other => Decision::Respond(json_response(
                500,
                &json!({ "error": format!("unknown mode {other}") }),
            )),
        }
    }

    fn on_response(resp: &Response) {
        match mode().as_str() {
            "response-edit" => {
                let _ = resp.set_status(299);
                let _ = resp.set_header_str("x-edited", "yes");
                let body = resp.body().unwrap_or_default();
                resp.set_body(&[body.as_slice(), b"+edited"].concat());
            }
            "response-trap" => panic!("test-kit traps in on_response"),
            // Behaves as if on_response were left to the SDK's default, and counts the calls.
            "request-only" => {
                RESPONSE_CALLS.fetch_add(1, Ordering::SeqCst);
                context::default_hook(context::Hook::Response);
            }
            _ => {
                let _ = resp.set_header_str("x-kit-response", "seen");
            }
        }
    }

    fn on_failure(failure: UpstreamFailure) -> Option<FullResponse> {
        if cfg()["fallback"].as_bool().unwrap_or(false) {
            Some(json_response(
                200,
                &json!({ "fallback": true, "kind": failure.kind, "message": failure.message }),
            ))
        } else {
            None
        }
    }
}

export_plugin!(TestKit);
