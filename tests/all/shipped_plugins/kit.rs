//! What the shipped-plugin tests share: the built guests (from `plugins::guests`), a plugins
//! directory holding them, TOML for a plugin entry, and origins that count or switch.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gatehouse::body;
use gatehouse::gateway::RunningGateway;
use http::Response;

use crate::plugins::guests;
use crate::support::{self, origin};

/// The shipped plugins, by their name in the gateway (= crate name without `-plugin`).
const SHIPPED: [&str; 4] = ["jwt-auth", "api-key", "aggregate", "fallback"];

/// A plugins directory holding every shipped plugin under its gateway name; removed on drop.
pub struct PluginsDir(pub PathBuf);

impl PluginsDir {
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-shipped-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        // A leftover from an earlier run with the same pid is stale; start clean.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("plugins dir");
        for name in SHIPPED {
            let file = guests::path(name);
            std::fs::copy(&file, dir.join(format!("{name}.wasm")))
                .unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
        }
        PluginsDir(dir)
    }
}

impl Drop for PluginsDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir is harmless.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A JSON value as inline TOML.
pub fn toml_inline(value: &serde_json::Value) -> String {
    toml::Value::try_from(value)
        .expect("config is representable in TOML (no nulls)")
        .to_string()
}

/// One entry of a route's `plugins = [...]`.
pub fn plugin(
    name: &str,
    config: serde_json::Value,
    calls: &[&str],
    cache: Option<&str>,
) -> String {
    let mut entry = format!("{{ name = \"{name}\", config = {}", toml_inline(&config));
    if !calls.is_empty() {
        entry.push_str(&format!(
            ", calls = {}",
            toml_inline(&serde_json::json!(calls))
        ));
    }
    if let Some(ns) = cache {
        entry.push_str(&format!(", cache = \"{ns}\""));
    }
    entry.push_str(" }");
    entry
}

/// How the `api-key` plugin's config names a key: the lowercase hex SHA-256 of it.
pub fn api_key_sha256(key: &str) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A gateway over `dir` with the rest of the config in `toml`.
pub async fn gateway(dir: &PluginsDir, toml: &str) -> RunningGateway {
    // Compiled artifacts are cached across tests and runs (keyed by content hash), so each
    // plugin compiles once.
    let cache = guests::workspace().join("target/guests/artifact-cache");
    let text = format!(
        "[plugins]\ndir = {}\ncache_dir = {}\nwatch = false\n\n{toml}",
        toml_inline(&serde_json::json!(dir.0.display().to_string())),
        toml_inline(&serde_json::json!(cache.display().to_string())),
    );
    support::gateway(&text).await
}

/// `http://<public addr><path>`.
pub fn url(gw: &RunningGateway, path: &str) -> String {
    format!("http://{}{path}", gw.public_addr)
}

/// An origin answering with JSON describing each request (method, path, query, headers)
/// and counting the requests that reach it.
pub async fn counting_echo() -> (origin::Origin, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let o = origin::start(move |req: http::Request<hyper::body::Incoming>| {
        seen.fetch_add(1, Ordering::SeqCst);
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        let doc = serde_json::json!({
            "method": req.method().as_str(),
            "path": req.uri().path(),
            "query": req.uri().query(),
            "headers": headers,
        });
        async move {
            let mut r = Response::new(body::full(doc.to_string()));
            r.headers_mut()
                .insert("content-type", "application/json".parse().expect("header"));
            r
        }
    })
    .await;
    (o, hits)
}

/// A switch shared between a test and an origin.
#[derive(Clone, Default)]
pub struct Switch(Arc<AtomicBool>);

impl Switch {
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::SeqCst);
    }
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// An origin answering `200` JSON `body` after `delay`; while `down` is on it answers
/// `down_status` (or, with `down_status = 0`, hangs for 10 s — longer than any test timeout).
pub async fn json_origin(
    body: serde_json::Value,
    delay: Duration,
    down: Switch,
    down_status: u16,
) -> origin::Origin {
    origin::start(move |_req| {
        let (body, down) = (body.to_string(), down.is_on());
        async move {
            tokio::time::sleep(delay).await;
            if down {
                if down_status == 0 {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
                return origin::text(down_status.max(500), "origin is down");
            }
            let mut r = Response::new(body::full(body));
            r.headers_mut()
                .insert("content-type", "application/json".parse().expect("header"));
            r
        }
    })
    .await
}

/// The value of header `name` as text.
pub fn header(got: &support::Got, name: &str) -> Option<String> {
    got.headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Asserts `got` is the aggregate plugin's 502 JSON naming the failed required `part` and its
/// `service`; the body, for more checks.
pub fn assert_part_failed(got: &support::Got, part: &str, service: &str) -> serde_json::Value {
    assert_eq!(got.status, 502, "{}", got.text());
    assert_eq!(
        header(got, "content-type").as_deref(),
        Some("application/json")
    );
    let body = crate::first_hour::assert_error_schema(got);
    assert_eq!(body["error"], "aggregate_part_failed", "{body}");
    assert_eq!(body["part"], part, "{body}");
    assert_eq!(body["failed"][0]["service"], service, "{body}");
    body
}
