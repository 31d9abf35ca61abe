//! Plugins through the real gateway: real origins on 127.0.0.1:0, config in TOML, the admin
//! API, failures isolated to their request, and hot reload under load without a failed request.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse::gateway::RunningGateway;

use super::guests::{self, TempDir};
use crate::support::{self, origin};

/// A plugins directory holding `files` (name → guest crate), and a `[plugins]` table for it.
fn plugins_dir(files: &[(&str, &str)]) -> (TempDir, String) {
    let dir = TempDir::new("gw-plugins");
    for (name, guest) in files {
        std::fs::write(dir.join(&format!("{name}.wasm")), guests::bytes(guest)).expect("write");
    }
    let cache = guests::workspace().join("target/guests/artifact-cache");
    let table = format!(
        "[plugins]\ndir = {:?}\ncache_dir = {:?}\ndeadline = \"500ms\"\nmemory_limit_mib = 32\nbody_limit_kib = 64\nmax_instances = 64\n",
        dir.0.display().to_string(),
        cache.display().to_string()
    );
    (dir, table)
}

async fn start(files: &[(&str, &str)], rest: &str) -> (RunningGateway, TempDir) {
    let (dir, table) = plugins_dir(files);
    let gw = support::gateway(&format!("{table}\n{rest}")).await;
    (gw, dir)
}

fn url(gw: &RunningGateway, path: &str) -> String {
    format!("http://{}{path}", gw.public_addr)
}

/// An origin that counts requests and answers 200 "origin".
async fn counting() -> (origin::Origin, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let o = origin::start(move |_req| {
        c.fetch_add(1, Ordering::SeqCst);
        async { origin::text(200, "origin") }
    })
    .await;
    (o, count)
}

#[tokio::test]
async fn request_and_response_phases_run_around_the_upstream() {
    let echo = origin::echo("echo").await;
    let (gw, _dir) = start(
        &[("rewrite", "header-rewrite")],
        &format!(
            r#"
[[services]]
name = "echo"
endpoints = ["{}"]

[[routes]]
name = "echo"
service = "echo"
match = {{ prefix = "/echo" }}
plugins = [{{ name = "rewrite", config = {{ request = {{ x-added = "yes" }}, response = {{ x-resp = "done" }} }} }}]
"#,
            echo.addr
        ),
    )
    .await;
    let got = support::get(&url(&gw, "/echo/a"), &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        got.json()["headers"]["x-added"],
        "yes",
        "request phase ran before the upstream"
    );
    assert_eq!(got.headers["x-resp"], "done", "response phase ran after it");
    assert!(got.headers.contains_key("x-request-id"));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_plugin_answer_skips_the_upstream() {
    let (o, count) = counting().await;
    let (gw, _dir) = start(
        &[("kit", "test-kit")],
        &format!(
            r#"
[[services]]
name = "o"
endpoints = ["{}"]

[[routes]]
name = "deny"
service = "o"
match = {{ prefix = "/" }}
plugins = [{{ name = "kit", config = {{ mode = "deny" }} }}]
"#,
            o.addr
        ),
    )
    .await;
    let got = support::get(&url(&gw, "/x"), &[]).await;
    assert_eq!(got.status, 403);
    assert_eq!(got.json()["error"], "denied");
    assert!(got.headers.contains_key("x-request-id"));
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "the upstream must not be called"
    );
    gw.shutdown().await;
}

fn failing_routes(origin: std::net::SocketAddr) -> String {
    let mut toml = format!("[[services]]\nname = \"o\"\nendpoints = [\"{origin}\"]\n");
    for (name, mode, policy) in [
        ("loop", "loop", "fail-closed"),
        ("trap", "trap", "fail-closed"),
        ("oom", "oom", "fail-closed"),
        ("huge", "huge-response", "fail-closed"),
        ("badheader", "bad-response-header", "fail-closed"),
        ("open", "trap", "fail-open"),
    ] {
        toml.push_str(&format!(
            "\n[[routes]]\nname = \"{name}\"\nservice = \"o\"\nmatch = {{ prefix = \"/{name}\" }}\non_error = \"{policy}\"\nplugins = [{{ name = \"kit\", config = {{ mode = \"{mode}\", size = 1000000 }} }}]\n"
        ));
    }
    toml.push_str("\n[[routes]]\nname = \"ok\"\nservice = \"o\"\nmatch = { prefix = \"/ok\" }\n");
    toml
}

#[tokio::test]
async fn plugin_failures_fail_only_their_request() {
    let (o, _count) = counting().await;
    let (gw, _dir) = start(&[("kit", "test-kit")], &failing_routes(o.addr)).await;

    // A looping plugin is in flight while other requests are served.
    let loop_url = url(&gw, "/loop");
    let looping = tokio::spawn(async move { support::get(&loop_url, &[]).await });
    let started = Instant::now();
    let mut served = 0;
    while !looping.is_finished() && started.elapsed() < Duration::from_secs(10) {
        let ok = support::get(&url(&gw, "/ok"), &[]).await;
        assert_eq!(
            ok.status, 200,
            "other routes keep working during a runaway plugin"
        );
        served += 1;
    }
    let got = looping.await.expect("task");
    assert!(served > 0);
    assert_eq!(got.status, 503, "{}", got.text());
    let body = got.json();
    assert_eq!(body["error"], "plugin_failed");
    assert_eq!(body["kind"], "deadline");
    assert_eq!(body["plugin"], "kit");
    assert_eq!(body["phase"], "request");
    assert!(body["request_id"].as_str().is_some_and(|s| !s.is_empty()));

    for (path, status, kind) in [
        ("/trap", 500, "trap"),
        ("/oom", 503, "out_of_memory"),
        ("/huge", 500, "bad_output"),
        ("/badheader", 500, "bad_output"),
    ] {
        let got = support::get(&url(&gw, path), &[]).await;
        assert_eq!(got.status, status, "{path}: {}", got.text());
        assert_eq!(got.json()["kind"], kind, "{path}");
    }
    let open = support::get(&url(&gw, "/open"), &[]).await;
    assert_eq!(open.status, 200, "fail-open skips the trapping plugin");
    assert_eq!(open.text(), "origin");
    assert_eq!(support::get(&url(&gw, "/ok"), &[]).await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn failure_phase_turns_an_upstream_error_into_a_fallback() {
    let closed = origin::closed_port().await;
    let (gw, _dir) = start(
        &[("kit", "test-kit")],
        &format!(
            r#"
[[services]]
name = "down"
endpoints = ["{closed}"]

[[routes]]
name = "fallback"
service = "down"
match = {{ prefix = "/fallback" }}
plugins = [{{ name = "kit", config = {{ fallback = true }} }}]

[[routes]]
name = "plain"
service = "down"
match = {{ prefix = "/plain" }}
plugins = [{{ name = "kit", config = {{ fallback = false }} }}]
"#
        ),
    )
    .await;
    let got = support::get(&url(&gw, "/fallback"), &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["fallback"], true);
    assert_eq!(got.json()["kind"], "connect");
    let got = support::get(&url(&gw, "/plain"), &[]).await;
    assert_eq!(got.status, 502, "no fallback: the host's upstream error");
    gw.shutdown().await;
}

#[tokio::test]
async fn plugins_call_granted_services_through_the_upstreams() {
    let users = origin::echo("users").await;
    let orders = origin::echo("orders").await;
    let (secret, secret_count) = counting().await;
    let (gw, _dir) = start(
        &[("kit", "test-kit")],
        &format!(
            r#"
[[services]]
name = "users"
endpoints = ["{}"]

[[services]]
name = "orders"
endpoints = ["{}"]

[[services]]
name = "secret"
endpoints = ["{}"]

[[routes]]
name = "aggregate"
service = "users"
match = {{ prefix = "/agg" }}
plugins = [{{ name = "kit", config = {{ mode = "call", services = ["users", "orders", "secret"] }}, calls = ["users", "orders"] }}]
"#,
            users.addr, orders.addr, secret.addr
        ),
    )
    .await;
    let got = support::get(&url(&gw, "/agg"), &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let parts = got.json()["parts"].clone();
    let part = |i: usize| -> serde_json::Value {
        serde_json::from_str(parts[i]["body"].as_str().expect("body")).expect("echo JSON")
    };
    assert_eq!(part(0)["origin"], "users");
    assert_eq!(part(0)["path"], "/part/users");
    assert_eq!(part(1)["origin"], "orders");
    assert_eq!(parts[2]["error"], "CallError::NotAllowed(\"secret\")");
    assert_eq!(
        secret_count.load(Ordering::SeqCst),
        0,
        "an ungranted call never reaches the network"
    );
    gw.shutdown().await;
}

async fn admin_plugins(gw: &RunningGateway) -> serde_json::Value {
    let got = support::get(&format!("http://{}/admin/plugins", gw.admin_addr), &[]).await;
    assert_eq!(got.status, 200);
    got.json()
}

fn plugin_status(admin: &serde_json::Value, name: &str) -> serde_json::Value {
    admin["plugins"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name).cloned())
        .unwrap_or(serde_json::Value::Null)
}

#[tokio::test]
async fn admin_lists_plugins_with_hash_status_and_errors() {
    let (o, _) = counting().await;
    let (gw, dir) = start(
        &[("kit", "test-kit")],
        &format!(
            "[[services]]\nname = \"o\"\nendpoints = [\"{}\"]\n\n[[routes]]\nname = \"r\"\nservice = \"o\"\nmatch = {{ prefix = \"/\" }}\nplugins = [{{ name = \"kit\" }}]\n",
            o.addr
        ),
    )
    .await;
    std::fs::write(dir.join("broken.wasm"), guests::core_module()).expect("write");
    support::eventually("broken.wasm reported", Duration::from_secs(5), async || {
        plugin_status(&admin_plugins(&gw).await, "broken")["status"] == "failed"
    })
    .await;
    let admin = admin_plugins(&gw).await;
    assert_eq!(admin["enabled"], true);
    let kit = plugin_status(&admin, "kit");
    assert_eq!(kit["status"], "loaded");
    assert_eq!(kit["hash"].as_str().map(str::len), Some(64));
    assert!(kit["loaded_at"].as_str().is_some());
    assert_eq!(
        kit["hooks"],
        serde_json::json!(["request", "response", "failure"])
    );
    let broken = plugin_status(&admin, "broken");
    assert!(
        broken["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("core WebAssembly module"),
        "{broken}"
    );
    gw.shutdown().await;
}

/// Replace `path` with `bytes`: atomically (write + rename), or slowly in two halves with a
/// pause in between (a half-written file the watcher must not serve).
fn replace(path: &std::path::Path, bytes: &[u8], atomic: bool) {
    if atomic {
        let tmp = path.with_extension("wasm.tmp");
        std::fs::write(&tmp, bytes).expect("write tmp");
        std::fs::rename(&tmp, path).expect("rename");
    } else {
        let mut f = std::fs::File::create(path).expect("create");
        let (a, b) = bytes.split_at(bytes.len() / 2);
        f.write_all(a).expect("write half");
        f.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(30));
        f.write_all(b).expect("write rest");
    }
}

#[tokio::test]
async fn hot_reload_under_load_fails_no_request() {
    let echo = origin::echo("echo").await;
    let (gw, dir) = start(
        &[("ver", "header-rewrite")],
        &format!(
            r#"
[[services]]
name = "echo"
endpoints = ["{}"]

[[routes]]
name = "echo"
service = "echo"
match = {{ prefix = "/" }}
plugins = [{{ name = "ver", config = {{ mode = "tag", request = {{ x-version = "rewrite" }} }} }}]
"#,
            echo.addr
        ),
    )
    .await;
    let versions = [guests::bytes("test-kit"), guests::bytes("header-rewrite")];
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = url(&gw, "/v");
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, url) = (stop.clone(), url.clone());
            tokio::spawn(async move {
                let client = support::http1();
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let got = support::send(&client, "GET", &url, &[], Bytes::new()).await;
                    assert_eq!(
                        got.status,
                        200,
                        "a request failed during reload: {}",
                        got.text()
                    );
                    let v = got.json()["headers"]["x-version"]
                        .as_str()
                        .map(str::to_owned);
                    seen.push(v.expect("every response carries a plugin version"));
                }
                seen
            })
        })
        .collect();

    let mut hash = plugin_status(&admin_plugins(&gw).await, "ver")["hash"].clone();
    for round in 0..6 {
        let path = dir.join("ver.wasm");
        let bytes = versions[round % 2].clone();
        let atomic = round % 3 != 2;
        tokio::task::spawn_blocking(move || replace(&path, &bytes, atomic))
            .await
            .expect("writer");
        let before = hash.clone();
        support::eventually(
            "the new version is serving",
            Duration::from_secs(10),
            async || {
                let now = plugin_status(&admin_plugins(&gw).await, "ver");
                now["status"] == "loaded" && now["hash"] != before
            },
        )
        .await;
        hash = plugin_status(&admin_plugins(&gw).await, "ver")["hash"].clone();
    }
    stop.store(true, Ordering::SeqCst);
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.expect("no client saw a failed request"));
    }
    assert!(
        all.len() > 20,
        "the clients kept sending ({} requests)",
        all.len()
    );
    assert!(all.iter().all(|v| v == "kit" || v == "rewrite"), "{all:?}");
    assert!(all.iter().any(|v| v == "kit") && all.iter().any(|v| v == "rewrite"));
    gw.shutdown().await;
}
