//! Going live: a new plugin serves from a quick baseline (Winch) build while the optimized
//! (Cranelift) one compiles, both cached; a failed status clears when the serving bytes come
//! back; each route entry runs under its own deadline, memory limit and body cap.

use std::sync::Arc;
use std::time::Duration;

use gatehouse::plugins::{OnError, PluginManager, PluginName, PluginRef, PluginSettings};
use serde_json::json;

use super::guests::{self, TempDir};
use super::runtime::{failed, get, kit, plugin, test_limits, FakeServices};
use crate::support::eventually;

fn tier(manager: &PluginManager, name: &str) -> Option<&'static str> {
    manager
        .status()
        .into_iter()
        .find(|s| s.name == name)
        .and_then(|s| s.tier)
}

async fn start(dir: &TempDir, cache: &TempDir, watch: bool) -> PluginManager {
    PluginManager::start(
        PluginSettings {
            dir: dir.0.clone(),
            cache_dir: Some(cache.0.clone()),
            watch,
            debounce: Duration::from_millis(50),
            limits: test_limits(),
            tiered: true,
        },
        Arc::new(FakeServices {
            delay: Duration::ZERO,
            seen: Default::default(),
        }),
    )
    .await
    .expect("starts")
}

/// A request through `name` goes through (header-rewrite adds its header).
async fn serves(manager: &PluginManager, name: &str) -> bool {
    let chain = manager.chain(
        "live",
        &[plugin(name, json!({ "request": { "x-live": "yes" } }))],
        OnError::FailClosed,
    );
    match chain.start(Default::default()).on_request(get("/")).await {
        Ok(gatehouse::plugins::RequestOutcome::Continue(req)) => {
            req.headers().get("x-live").is_some_and(|v| v == "yes")
        }
        _ => false,
    }
}

#[tokio::test]
async fn a_new_plugin_serves_from_the_baseline_build_until_the_optimized_one_replaces_it() {
    let dir = TempDir::new("live-plugins");
    let cache = TempDir::new("live-cache");
    let manager = start(&dir, &cache, true).await;
    std::fs::write(dir.join("rw.wasm"), guests::bytes("header-rewrite")).expect("write");

    eventually("the plugin goes live", Duration::from_secs(30), async || {
        tier(&manager, "rw").is_some()
    })
    .await;
    assert!(serves(&manager, "rw").await, "serves as soon as it is live");
    eventually(
        "the optimized build replaces the baseline one",
        Duration::from_secs(120),
        async || tier(&manager, "rw") == Some("optimized"),
    )
    .await;
    assert!(serves(&manager, "rw").await, "serves after the swap");

    // Both builds are cached; a restart takes the optimized one straight from the cache.
    let mut artifacts: Vec<String> = std::fs::read_dir(&cache.0)
        .expect("cache dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    artifacts.sort();
    assert_eq!(artifacts.len(), 2, "{artifacts:?}");
    assert!(artifacts.iter().any(|a| a.ends_with(".winch.cwasm")), "{artifacts:?}");
    drop(manager);
    let again = start(&dir, &cache, false).await;
    let status = again
        .status()
        .into_iter()
        .find(|s| s.name == "rw")
        .expect("status");
    assert_eq!(status.tier, Some("optimized"), "{status:?}");
    assert_eq!(status.from_cache, Some(true), "{status:?}");
}

#[tokio::test]
async fn a_failed_status_clears_when_the_serving_bytes_come_back() {
    let dir = TempDir::new("live-clear");
    let cache = TempDir::new("live-clear-cache");
    let manager = start(&dir, &cache, true).await;
    let name = PluginName::new("p").expect("name");
    let status = |m: &PluginManager| m.status().into_iter().find(|s| s.name == "p");

    std::fs::write(dir.join("p.wasm"), guests::bytes("noop")).expect("write");
    eventually("p loaded", Duration::from_secs(30), async || {
        manager.registry().get(&name).is_some()
    })
    .await;
    let good = manager.registry().get(&name).expect("loaded").hash.clone();

    std::fs::write(dir.join("p.wasm"), b"\0asm\x0d\0\x01\0garbage").expect("write");
    eventually("p rejected", Duration::from_secs(30), async || {
        status(&manager).is_some_and(|s| s.status == "failed")
    })
    .await;

    std::fs::write(dir.join("p.wasm"), guests::bytes("noop")).expect("write");
    eventually("the failure clears", Duration::from_secs(30), async || {
        status(&manager).is_some_and(|s| s.status == "loaded")
    })
    .await;
    let s = status(&manager).expect("status");
    assert_eq!(s.last_error, None, "{s:?}");
    assert_eq!(s.failed_hash, None, "{s:?}");
    assert_eq!(s.hash, Some(good));
}

fn with_limits(
    p: PluginRef,
    deadline: Option<Duration>,
    memory: Option<usize>,
    body_cap: Option<usize>,
) -> PluginRef {
    PluginRef {
        deadline,
        memory,
        body_cap,
        ..p
    }
}

#[tokio::test]
async fn each_route_entry_runs_under_its_own_limits() {
    // Globally: 1 s deadline, 32 MiB, 64 KiB bodies (test_limits).
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;

    let looping = kit.chain(
        &[with_limits(
            plugin("kit", json!({ "mode": "loop" })),
            Some(Duration::from_millis(20)),
            None,
            None,
        )],
        OnError::FailClosed,
    );
    let (status, body) = failed(&looping).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["kind"], "deadline", "{body}");
    assert!(
        body["message"].as_str().unwrap_or_default().contains("20 ms"),
        "the entry's deadline is the one reported: {body}"
    );

    let hoarding = kit.chain(
        &[with_limits(
            plugin("kit", json!({ "mode": "oom" })),
            None,
            Some(4 << 20),
            None,
        )],
        OnError::FailClosed,
    );
    let (status, body) = failed(&hoarding).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["kind"], "out_of_memory", "{body}");
    assert!(
        body["message"].as_str().unwrap_or_default().contains(&(4u64 << 20).to_string()),
        "the entry's memory limit is the one reported: {body}"
    );

    // 10 KiB fits the global 64 KiB cap but not this entry's 1 KiB one.
    let capped = kit.chain(
        &[with_limits(
            plugin("kit", json!({ "mode": "huge-response", "size": 10 << 10 })),
            None,
            None,
            Some(1 << 10),
        )],
        OnError::FailClosed,
    );
    let (status, body) = failed(&capped).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["kind"], "bad_output", "{body}");
    let uncapped = kit.chain(
        &[plugin("kit", json!({ "mode": "huge-response", "size": 10 << 10 }))],
        OnError::FailClosed,
    );
    assert!(
        uncapped.start(Default::default()).on_request(get("/")).await.is_ok(),
        "the global cap lets 10 KiB through"
    );
}
