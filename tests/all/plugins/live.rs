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
            rollout: Default::default(),
            ..PluginSettings::default()
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

    eventually(
        "the plugin goes live",
        Duration::from_secs(30),
        async || tier(&manager, "rw").is_some(),
    )
    .await;
    assert!(serves(&manager, "rw").await, "serves as soon as it is live");
    let name = PluginName::new("rw").expect("name");
    let first = manager.registry().get(&name).expect("live");
    let baseline = (first.tier == gatehouse::plugins::runtime::engine::Tier::Baseline)
        .then(|| Arc::downgrade(&first));
    drop(first);
    eventually(
        "the optimized build replaces the baseline one",
        Duration::from_secs(120),
        async || tier(&manager, "rw") == Some("optimized"),
    )
    .await;
    assert!(serves(&manager, "rw").await, "serves after the swap");
    // The baseline build (its code, metadata and prepared instances) is freed, not kept
    // beside the optimized one.
    if let Some(baseline) = baseline {
        eventually(
            "the baseline build is freed",
            Duration::from_secs(30),
            async || serves(&manager, "rw").await && baseline.strong_count() == 0,
        )
        .await;
    }

    // Both builds are cached; a restart takes the optimized one straight from the cache.
    let mut artifacts: Vec<String> = std::fs::read_dir(&cache.0)
        .expect("cache dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    artifacts.sort();
    assert_eq!(artifacts.len(), 2, "{artifacts:?}");
    assert!(
        artifacts.iter().any(|a| a.ends_with(".winch.cwasm")),
        "{artifacts:?}"
    );
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
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("20 ms"),
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
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&(4u64 << 20).to_string()),
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
        &[plugin(
            "kit",
            json!({ "mode": "huge-response", "size": 10 << 10 }),
        )],
        OnError::FailClosed,
    );
    assert!(
        uncapped
            .start(Default::default())
            .on_request(get("/"))
            .await
            .is_ok(),
        "the global cap lets 10 KiB through"
    );
}

/// Drop → live per language, with and without the baseline tier: printed, not asserted
/// (speed is measured, not tested). Run it in the build you want figures for:
/// `cargo test -p gatehouse --test all drop_to_live -- --ignored --nocapture`; a Python
/// component is included when `GATEHOUSE_PY_PLUGIN` names one (componentize-py output).
#[tokio::test]
#[ignore = "a measurement; run by hand"]
async fn drop_to_live() {
    let mut plugins = vec![
        ("rust", guests::bytes("header-rewrite")),
        ("js", super::js::js_plugin()),
    ];
    if let Some(py) = std::env::var_os("GATEHOUSE_PY_PLUGIN") {
        plugins.push((
            "python",
            std::fs::read(py).expect("GATEHOUSE_PY_PLUGIN readable"),
        ));
    }
    for (language, bytes) in plugins {
        for tiered in [true, false] {
            let dir = TempDir::new("drop");
            let cache = TempDir::new("drop-cache");
            let mut manager = start(&dir, &cache, true).await;
            if !tiered {
                drop(manager);
                manager = PluginManager::start(
                    PluginSettings {
                        dir: dir.0.clone(),
                        cache_dir: Some(cache.0.clone()),
                        debounce: Duration::from_millis(50),
                        limits: test_limits(),
                        tiered: false,
                        ..PluginSettings::default()
                    },
                    Arc::new(gatehouse::plugins::NoServices),
                )
                .await
                .expect("starts");
            }
            let started = std::time::Instant::now();
            std::fs::write(dir.join("p.wasm.tmp"), &bytes).expect("write");
            std::fs::rename(dir.join("p.wasm.tmp"), dir.join("p.wasm")).expect("rename");
            eventually("live", Duration::from_secs(300), async || {
                tier(&manager, "p").is_some()
            })
            .await;
            let live = started.elapsed();
            let first = tier(&manager, "p");
            eventually("optimized", Duration::from_secs(300), async || {
                tier(&manager, "p") == Some("optimized")
            })
            .await;
            eprintln!(
                "drop-to-live {language} ({} KiB) tiered={tiered}: live after {live:?} ({}), optimized after {:?}",
                bytes.len() >> 10,
                first.unwrap_or("?"),
                started.elapsed()
            );
        }
    }
}

/// A config in its own directory naming `plugins` relatively, with one entry's own limits.
fn config_beside_its_plugins(dir: &TempDir, plugin: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("plugins")).expect("plugins dir");
    std::fs::write(dir.join("plugins/rw.wasm"), guests::bytes("header-rewrite")).expect("write");
    let path = dir.join("gatehouse.toml");
    let text = format!(
        "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n\
         [plugins]\ndir = \"plugins\"\nmax_instances = 64\nmemory_limit_mib = 32\n\n\
         [[services]]\nname = \"o\"\nendpoints = [\"127.0.0.1:9\"]\n\n\
         [[routes]]\nname = \"r\"\nservice = \"o\"\nmatch = {{ prefix = \"/\" }}\n\
         plugins = [{{ name = \"{plugin}\", deadline = \"20ms\", memory_limit_mib = 8, body_limit_kib = 16 }}]\n"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

#[tokio::test]
async fn plugins_dir_resolves_beside_the_config_and_admin_shows_entry_limits() {
    let dir = TempDir::new("relative-config");
    let path = config_beside_its_plugins(&dir, "rw");
    // The test runs from host/, not from the config's directory.
    let config = gatehouse::config::load_file(&path).expect("valid config");
    assert_eq!(config.plugins.dir, dir.join("plugins"));
    let gw = gatehouse::gateway::start(config).await.expect("starts");
    let url = format!("http://{}/admin/plugins", gw.admin_addr);
    eventually(
        "rw is loaded from the config's plugins/",
        Duration::from_secs(30),
        async || crate::support::get(&url, &[]).await.json()["plugins"][0]["status"] == "loaded",
    )
    .await;
    let admin = crate::support::get(&url, &[]).await.json();
    let entry = &admin["routes"][0];
    assert_eq!(entry["route"], "r", "{admin}");
    assert_eq!(entry["plugin"], "rw", "{admin}");
    assert_eq!(entry["deadline"], "20ms", "{admin}");
    assert_eq!(entry["memory_limit_mib"], 8, "{admin}");
    assert_eq!(entry["body_limit_kib"], 16, "{admin}");
    assert_eq!(admin["defaults"]["memory_limit_mib"], 32, "{admin}");
    gw.shutdown().await;
}

/// What `gatehouse check` runs after the config validates (in-process: the `gatehouse`
/// binary in the shared target dir may be another tree's build).
async fn check(path: &std::path::Path) -> Result<(), String> {
    let config = gatehouse::config::load_file(path).expect("valid config");
    gatehouse::state::plugins::check(&config).await
}

#[tokio::test]
async fn check_loads_every_plugin_the_config_names() {
    let dir = TempDir::new("check-plugins");
    let good = config_beside_its_plugins(&dir, "rw");
    check(&good).await.expect("rw loads");

    let typo = config_beside_its_plugins(&dir, "rw-typo");
    let error = check(&typo)
        .await
        .expect_err("a missing plugin file fails check");
    assert!(
        error.contains("plugin \"rw-typo\" (route r)") && error.contains("rw-typo.wasm"),
        "{error}"
    );

    // A component of another world is caught too.
    std::fs::write(dir.join("plugins/rw-typo.wasm"), guests::other_world()).expect("write");
    let error = check(&typo).await.expect_err("a foreign world fails check");
    assert!(error.contains("acme:billing/ledger@1.0.0"), "{error}");
}

// --- staged rollout ---

async fn start_rolling(dir: &TempDir, policy: gatehouse::plugins::RolloutPolicy) -> PluginManager {
    let cache = guests::workspace().join("target/guests/artifact-cache");
    PluginManager::start(
        PluginSettings {
            dir: dir.0.clone(),
            cache_dir: Some(cache),
            watch: true,
            debounce: Duration::from_millis(50),
            limits: test_limits(),
            tiered: true,
            rollout: policy,
            ..PluginSettings::default()
        },
        Arc::new(gatehouse::plugins::NoServices),
    )
    .await
    .expect("starts")
}

fn status_of(manager: &PluginManager, name: &str) -> gatehouse::plugins::PluginStatus {
    manager
        .status()
        .into_iter()
        .find(|s| s.name == name)
        .expect("status")
}

/// Requests through plugin `p` with `config`, one after another with distinct request ids,
/// until `stop`: (failed, answered by a version that set `x-live`).
fn steady_stream(
    chain: Arc<gatehouse::plugins::PluginChain>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64, u64)> {
    tokio::spawn(async move {
        let (mut total, mut failed, mut new) = (0u64, 0u64, 0u64);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            total += 1;
            let meta = gatehouse::plugins::RequestMeta {
                request_id: format!("req-{total}"),
                ..Default::default()
            };
            match chain.start(meta).on_request(get("/")).await {
                Ok(gatehouse::plugins::RequestOutcome::Continue(req)) => {
                    if req.headers().contains_key("x-live") {
                        new += 1;
                    }
                }
                Ok(_) => {}
                Err(_) => failed += 1,
            }
            tokio::task::yield_now().await;
        }
        (total, failed, new)
    })
}

#[tokio::test]
async fn a_good_new_version_rolls_out_under_load_and_is_promoted() {
    let dir = TempDir::new("rollout-good");
    std::fs::write(dir.join("p.wasm"), guests::bytes("noop")).expect("write");
    let manager = start_rolling(
        &dir,
        gatehouse::plugins::RolloutPolicy {
            steps: vec![30, 100],
            step_interval: Duration::from_millis(300),
            max_failure_ratio: 0.0,
            min_invocations: 5,
        },
    )
    .await;
    let old = status_of(&manager, "p").hash.expect("noop serves");
    let chain = manager.chain(
        "r",
        &[plugin("p", json!({ "request": { "x-live": "yes" } }))],
        OnError::FailClosed,
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = steady_stream(chain, stop.clone());

    std::fs::write(dir.join("p.wasm.tmp"), guests::bytes("header-rewrite")).expect("write");
    std::fs::rename(dir.join("p.wasm.tmp"), dir.join("p.wasm")).expect("rename");
    eventually("the rollout starts", Duration::from_secs(30), async || {
        status_of(&manager, "p").rollout.is_some()
    })
    .await;
    assert_eq!(
        status_of(&manager, "p").hash,
        Some(old.clone()),
        "the old version still serves"
    );
    eventually(
        "the new version is promoted",
        Duration::from_secs(60),
        async || {
            let s = status_of(&manager, "p");
            s.rollout.is_none() && s.hash.as_ref() != Some(&old)
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (total, failed, new) = client.await.expect("client");
    assert_eq!(
        failed, 0,
        "no request failed during the rollout ({total} sent)"
    );
    assert!(new > 0, "some requests ran the new version ({total} sent)");
    assert_eq!(status_of(&manager, "p").status, "loaded");
}

#[tokio::test]
async fn a_failing_new_version_is_rolled_back_and_the_old_keeps_serving() {
    let dir = TempDir::new("rollout-bad");
    std::fs::write(dir.join("p.wasm"), guests::bytes("noop")).expect("write");
    let manager = start_rolling(
        &dir,
        gatehouse::plugins::RolloutPolicy {
            steps: vec![50, 100],
            step_interval: Duration::from_secs(3600),
            max_failure_ratio: 0.1,
            min_invocations: 5,
        },
    )
    .await;
    let old = status_of(&manager, "p").hash.expect("noop serves");
    // noop ignores its config; the new version (test-kit) traps on it.
    let chain = manager.chain(
        "r",
        &[plugin("p", json!({ "mode": "trap" }))],
        OnError::FailClosed,
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = steady_stream(chain.clone(), stop.clone());

    std::fs::write(dir.join("p.wasm.tmp"), guests::bytes("test-kit")).expect("write");
    std::fs::rename(dir.join("p.wasm.tmp"), dir.join("p.wasm")).expect("rename");
    eventually(
        "the new version is rolled back",
        Duration::from_secs(60),
        async || {
            let s = status_of(&manager, "p");
            s.status == "failed" && s.rollout.is_none()
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (total, failed, _) = client.await.expect("client");
    assert!(
        failed > 0 && failed < total,
        "only the candidate's share failed: {failed} of {total}"
    );
    let s = status_of(&manager, "p");
    assert_eq!(s.hash, Some(old), "the old version keeps serving");
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("rolled back"),
        "{s:?}"
    );
    for i in 0..20 {
        let meta = gatehouse::plugins::RequestMeta {
            request_id: format!("after-{i}"),
            ..Default::default()
        };
        assert!(
            chain.start(meta).on_request(get("/")).await.is_ok(),
            "request {i} after rollback"
        );
    }
}

#[tokio::test]
async fn a_rollout_is_promoted_or_rolled_back_by_hand() {
    let dir = TempDir::new("rollout-manual");
    std::fs::write(dir.join("p.wasm"), guests::bytes("noop")).expect("write");
    let manager = start_rolling(
        &dir,
        gatehouse::plugins::RolloutPolicy {
            steps: vec![10, 100],
            step_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .await;
    let name = PluginName::new("p").expect("name");
    let old = status_of(&manager, "p").hash.expect("noop serves");
    assert!(manager.promote(&name).is_err(), "nothing to promote yet");

    std::fs::write(dir.join("p.wasm"), guests::bytes("header-rewrite")).expect("write");
    eventually("the rollout starts", Duration::from_secs(30), async || {
        status_of(&manager, "p").rollout.is_some()
    })
    .await;
    let new = manager.rollback(&name).expect("rolled back");
    let s = status_of(&manager, "p");
    assert_eq!((s.hash.as_ref(), s.status), (Some(&old), "failed"), "{s:?}");
    assert_eq!(s.failed_hash.as_ref(), Some(&new));

    // The same file written again starts a new rollout; promoting it makes it serve.
    std::fs::write(dir.join("p.wasm"), guests::bytes("header-rewrite")).expect("write");
    eventually(
        "the rollout starts again",
        Duration::from_secs(30),
        async || status_of(&manager, "p").rollout.is_some(),
    )
    .await;
    assert_eq!(manager.promote(&name).expect("promoted"), new);
    let s = status_of(&manager, "p");
    assert_eq!((s.hash.as_ref(), s.status), (Some(&new), "loaded"), "{s:?}");
    assert!(s.rollout.is_none());
}

#[tokio::test]
async fn admin_promote_and_rollback_answer_json() {
    let dir = TempDir::new("rollout-admin");
    let path = config_beside_its_plugins(&dir, "rw");
    let gw = gatehouse::gateway::start(gatehouse::config::load_file(&path).expect("valid"))
        .await
        .expect("starts");
    let client = crate::support::http1();
    let base = format!("http://{}/admin/plugins", gw.admin_addr);
    let post = async |p: &str| {
        let url = format!("{base}/{p}");
        crate::support::send(&client, "POST", &url, &[], bytes::Bytes::new()).await
    };
    let got = post("rw/promote").await;
    assert_eq!(got.status, 409, "no rollout in progress");
    assert_eq!(got.json()["error"], "no_rollout");
    assert_eq!(post("rw/rollback").await.status, 409);
    assert_eq!(post("rw/retire").await.status, 404);
    assert_eq!(post("bad%20name/promote").await.status, 400);
    let got = crate::support::get(&format!("{base}/rw/promote"), &[]).await;
    assert_eq!(got.status, 405);
    gw.shutdown().await;
}

/// Through the gateway: real HTTP clients keep sending while a new version is rolled out in
/// steps and promoted; no request fails and both versions answer along the way.
#[tokio::test]
async fn a_staged_rollout_through_the_gateway_fails_no_request() {
    let echo = crate::support::origin::echo("echo").await;
    let dir = TempDir::new("rollout-gw");
    std::fs::write(dir.join("ver.wasm"), guests::bytes("test-kit")).expect("write");
    let cache = guests::workspace().join("target/guests/artifact-cache");
    let gw = crate::support::gateway(&format!(
        r#"
[plugins]
dir = {dir:?}
cache_dir = {cache:?}
max_instances = 64
memory_limit_mib = 32

[plugins.rollout]
steps = [20, 60, 100]
step_interval = "300ms"
max_failure_ratio = 0.0
min_invocations = 5

[[services]]
name = "echo"
endpoints = ["{addr}"]

[[routes]]
name = "echo"
service = "echo"
match = {{ prefix = "/" }}
plugins = [{{ name = "ver", config = {{ mode = "tag", request = {{ x-version = "rewrite" }} }} }}]
"#,
        dir = dir.0.display().to_string(),
        cache = cache.display().to_string(),
        addr = echo.addr,
    ))
    .await;
    let admin = format!("http://{}/admin/plugins", gw.admin_addr);
    let ver = async || {
        let all = crate::support::get(&admin, &[]).await.json();
        all["plugins"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "ver").cloned())
            .unwrap_or_default()
    };
    let old = ver().await["hash"].clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = format!("http://{}/v", gw.public_addr);
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, url) = (stop.clone(), url.clone());
            tokio::spawn(async move {
                let client = crate::support::http1();
                let mut seen = std::collections::BTreeSet::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let got =
                        crate::support::send(&client, "GET", &url, &[], bytes::Bytes::new()).await;
                    assert_eq!(got.status, 200, "a request failed: {}", got.text());
                    let v = got.json()["headers"]["x-version"]
                        .as_str()
                        .map(str::to_owned);
                    seen.insert(v.expect("every response carries a plugin version"));
                }
                seen
            })
        })
        .collect();

    std::fs::write(dir.join("ver.wasm.tmp"), guests::bytes("header-rewrite")).expect("write");
    std::fs::rename(dir.join("ver.wasm.tmp"), dir.join("ver.wasm")).expect("rename");
    eventually(
        "the rollout shows in /admin/plugins",
        Duration::from_secs(30),
        async || ver().await["rollout"]["share"].is_u64(),
    )
    .await;
    eventually(
        "the new version is promoted",
        Duration::from_secs(60),
        async || {
            let v = ver().await;
            v["rollout"].is_null() && v["hash"] != old
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut seen = std::collections::BTreeSet::new();
    for c in clients {
        seen.extend(c.await.expect("client saw no failed request"));
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["kit", "rewrite"],
        "both versions answered during the rollout"
    );
    gw.shutdown().await;
}
