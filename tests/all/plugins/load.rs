//! Loading plugins: malformed and foreign files are rejected with a clear reason, the
//! compiled-artifact cache makes restarts skip compilation, and the watcher hot-reloads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::plugins::{OnError, PluginManager, PluginName, PluginSettings, PluginStatus};
use serde_json::json;

use super::guests::{self, TempDir};
use super::runtime::{get, kit, plugin, test_limits, FakeServices};

fn status_of(manager: &PluginManager, name: &str) -> PluginStatus {
    manager
        .status()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no status for {name}: {:?}", manager.status()))
}

#[tokio::test]
async fn bad_files_are_rejected_with_the_reason() {
    let truncated = {
        let b = guests::bytes("test-kit");
        b[..b.len() / 2].to_vec()
    };
    let kit = kit(&[
        ("core", guests::core_module()),
        ("truncated", truncated),
        ("foreign", guests::other_world()),
        ("empty", guests::no_hooks()),
        ("shape", guests::wrong_hook_shape()),
        ("text", b"not wasm at all".to_vec()),
        ("good", guests::bytes("noop")),
    ])
    .await;
    let m = &kit.manager;
    let expect = |name: &str, needle: &str| {
        let s = status_of(m, name);
        assert_eq!(s.status, "failed", "{name}: {s:?}");
        assert!(s.hash.is_none(), "{name} must not be serving");
        let err = s.last_error.clone().unwrap_or_default();
        assert!(
            err.contains(needle),
            "{name}: expected `{needle}` in `{err}`"
        );
    };
    expect("core", "core WebAssembly module");
    expect("truncated", "compile failed");
    expect("foreign", "acme:billing/ledger@1.0.0");
    expect("empty", "exports no hook");
    expect("shape", "request-hook");
    expect("text", "not a WebAssembly component");
    let good = status_of(m, "good");
    assert_eq!(good.status, "loaded");
    assert_eq!(good.hooks, vec!["request", "response", "failure"]);

    // A route using a rejected plugin fails closed with a clear error; the good one works.
    let chain = kit.chain(&[plugin("foreign", json!({}))], OnError::FailClosed);
    let err = match chain.start(Default::default()).on_request(get("/")).await {
        Err(e) => e,
        Ok(_) => panic!("a rejected plugin must not run"),
    };
    assert_eq!(err.to_json()["kind"], "not_loaded");
    let chain = kit.chain(&[plugin("good", json!({}))], OnError::FailClosed);
    assert!(chain
        .start(Default::default())
        .on_request(get("/"))
        .await
        .is_ok());
}

/// Loads `bytes` as plugin `p` twice with the same artifact cache: the statuses of the cold
/// and the warm start, and the files the cache holds afterwards.
pub async fn load_twice_with_a_cache(bytes: Vec<u8>) -> (PluginStatus, PluginStatus, Vec<String>) {
    let dir = TempDir::new("cache-plugins");
    let cache = TempDir::new("cache-artifacts");
    std::fs::write(dir.join("p.wasm"), bytes).expect("write");
    let start = || {
        PluginManager::start(
            PluginSettings {
                dir: dir.0.clone(),
                cache_dir: Some(cache.0.clone()),
                watch: false,
                limits: test_limits(),
                // One compiler, one artifact: the tiered pair is tested in `live.rs`.
                tiered: false,
                ..PluginSettings::default()
            },
            Arc::new(gatehouse::plugins::NoServices),
        )
    };
    let cold = start().await.expect("starts");
    let cold_status = status_of(&cold, "p");
    drop(cold);
    let warm = start().await.expect("starts");
    let warm_status = status_of(&warm, "p");
    let artifacts = std::fs::read_dir(&cache.0)
        .expect("cache dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    (cold_status, warm_status, artifacts)
}

#[tokio::test]
async fn compiled_artifacts_are_cached_on_disk() {
    let (cold, warm, artifacts) = load_twice_with_a_cache(guests::bytes("test-kit")).await;
    assert_eq!(cold.from_cache, Some(false));
    assert_eq!(
        warm.from_cache,
        Some(true),
        "second start must use the cached artifact"
    );
    assert_eq!(warm.hash, cold.hash);
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    // A Rust SDK plugin needs no component-model async: the fast engine, both times.
    assert_eq!(cold.engine, Some("plain"));
    assert_eq!(warm.engine, Some("plain"));
}

/// Poll until `f` holds, or fail after `limit`.
async fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn watcher_loads_replaces_keeps_last_good_and_unloads() {
    let dir = TempDir::new("watch");
    let manager = PluginManager::start(
        PluginSettings {
            dir: dir.0.clone(),
            cache_dir: Some(guests::workspace().join("target/guests/artifact-cache")),
            watch: true,
            debounce: Duration::from_millis(100),
            limits: test_limits(),
            tiered: true,
            rollout: Default::default(),
            ..PluginSettings::default()
        },
        Arc::new(FakeServices {
            delay: Duration::ZERO,
            seen: Default::default(),
        }),
    )
    .await
    .expect("starts");
    let name = PluginName::new("p").expect("name");
    let hash = |m: &PluginManager| m.registry().get(&name).map(|p| p.hash.clone());

    // A new file is picked up within a second.
    std::fs::write(dir.join("p.wasm.tmp"), guests::bytes("noop")).expect("write");
    std::fs::rename(dir.join("p.wasm.tmp"), dir.join("p.wasm")).expect("rename");
    let took = eventually(Duration::from_secs(5), "p loaded", || {
        hash(&manager).is_some()
    })
    .await;
    assert!(took < Duration::from_secs(1), "new plugin took {took:?}");
    let first = hash(&manager).expect("loaded");

    // A changed file replaces it.
    std::fs::write(dir.join("p.wasm"), guests::bytes("header-rewrite")).expect("write");
    eventually(Duration::from_secs(5), "p replaced", || {
        hash(&manager).is_some_and(|h| h != first)
    })
    .await;
    let second = hash(&manager).expect("loaded");

    // A broken file keeps the previous version serving and reports why.
    std::fs::write(dir.join("p.wasm"), b"\0asm\x0d\0\x01\0garbage").expect("write");
    eventually(Duration::from_secs(5), "p rejected", || {
        status_of(&manager, "p").status == "failed"
    })
    .await;
    assert_eq!(
        hash(&manager),
        Some(second.clone()),
        "last good version keeps serving"
    );
    let s = status_of(&manager, "p");
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("compile failed"),
        "{s:?}"
    );
    assert_eq!(s.hash, Some(second));

    // Editor temp files are ignored.
    std::fs::write(dir.join(".p.wasm.swp"), b"junk").expect("write");
    std::fs::write(dir.join("p.wasm~"), b"junk").expect("write");

    // Removing the file unloads the plugin.
    std::fs::remove_file(dir.join("p.wasm")).expect("remove");
    eventually(Duration::from_secs(5), "p unloaded", || {
        hash(&manager).is_none()
    })
    .await;
    assert_eq!(status_of(&manager, "p").status, "removed");
    assert_eq!(
        manager.status().len(),
        1,
        "temp files must not become plugins"
    );
}
