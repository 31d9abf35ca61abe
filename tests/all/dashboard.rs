//! The dashboard over plain HTTP: the page and its files (embedded, strict CSP, open), and
//! `GET /admin/dashboard/state` (token rules, routes → services, instances with health,
//! breaker, weight and lease age, plugins, and live per-route figures fed by real traffic and
//! kept across a reload).
//! `dashboard_browser.rs` drives the same page in Chromium.

use std::time::Duration;

use bytes::Bytes;
use gatehouse::{config, gateway};
use serde_json::Value;

use crate::plugins::guests::TempDir;
use crate::support::{self, get, http1, origin, send};

const TOKEN: &str = "dash-s3cret";

/// The sum of a route's live series `key` (`requests`, `errors`).
fn live_sum(state: &Value, route: &str, key: &str) -> u64 {
    state["live"]["routes"]
        .as_array()
        .and_then(|routes| routes.iter().find(|r| r["route"] == route))
        .and_then(|r| r[key].as_array())
        .map_or(0, |points| points.iter().filter_map(Value::as_u64).sum())
}

fn service<'a>(state: &'a Value, name: &str) -> &'a Value {
    state["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no service {name} in {state:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_open_and_strict_and_its_state_needs_the_token() {
    let ok = origin::echo("ok").await;
    let failing = origin::start(|_req| async { origin::text(503, "down") }).await;
    let gw = support::gateway(&format!(
        r#"
[admin]
token = "{TOKEN}"

[registry]
token = "{TOKEN}"

[[services]]
name = "ok"
endpoints = ["{ok}"]

[[services]]
name = "flaky"
endpoints = ["{failing}"]
[services.breaker]
failure_rate = 0.5
min_requests = 4
window = "30s"
open_for = "60s"

[[services]]
name = "api"
discovery = "registry"

[[routes]]
name = "ok"
service = "ok"
match = {{ prefix = "/ok" }}

[[routes]]
name = "flaky"
service = "flaky"
match = {{ prefix = "/flaky" }}

[[routes]]
name = "api"
service = "api"
match = {{ prefix = "/api" }}
"#,
        ok = ok.addr,
        failing = failing.addr,
    ))
    .await;
    let admin = format!("http://{}", gw.admin_addr);
    let public = format!("http://{}", gw.public_addr);
    let auth = format!("Bearer {TOKEN}");

    // The page: open (it holds no data), embedded, no inline script, own origin only.
    let page = get(&format!("{admin}/admin/dashboard"), &[]).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let csp = page.headers["content-security-policy"]
        .to_str()
        .expect("ascii");
    assert!(csp.starts_with("default-src 'self';"), "{csp}");
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    let html = page.text();
    assert!(
        html.contains(r#"<script src="/admin/dashboard/app.js" defer></script>"#),
        "{html}"
    );
    assert_eq!(html.matches("<script").count(), 1, "no inline script");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let got = get(&format!("{admin}/admin/dashboard/{file}"), &[]).await;
        assert_eq!(got.status, 200, "{file}");
        assert!(got.headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with(kind));
        assert!(
            !got.text().contains("https://"),
            "{file} fetches nothing elsewhere"
        );
    }
    let post = send(
        &http1(),
        "POST",
        &format!("{admin}/admin/dashboard"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(post.status, 405);

    // The data: the admin token, as for every /admin call.
    let state_url = format!("{admin}/admin/dashboard/state");
    let denied = get(&state_url, &[]).await;
    assert_eq!(denied.status, 401);
    assert_eq!(denied.json()["error"], "unauthorized");
    let wrong = get(&state_url, &[("authorization", "Bearer nope")]).await;
    assert_eq!(wrong.status, 401);

    // A registry instance, registered through the registry API.
    let register = send(
        &http1(),
        "POST",
        &format!("{admin}/registry/services/api/instances"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Bytes::from(format!(
            r#"{{"id":"api-1","address":"127.0.0.1","port":{},"metadata":{{"weight":7}}}}"#,
            ok.addr.port()
        )),
    )
    .await;
    assert!(register.status < 300, "{}", register.text());

    // Traffic: 200s on `ok`, 503s on `flaky` until its breaker opens.
    for _ in 0..5 {
        assert_eq!(get(&format!("{public}/ok/x"), &[]).await.status, 200);
        assert_eq!(get(&format!("{public}/flaky/x"), &[]).await.status, 503);
    }
    let mut state = Value::Null;
    support::eventually(
        "the live figures count the traffic and the instance appears",
        Duration::from_secs(10),
        async || {
            let got = get(&state_url, &[("authorization", &auth)]).await;
            assert_eq!(got.status, 200, "{}", got.text());
            state = got.json();
            live_sum(&state, "ok", "requests") >= 5
                && live_sum(&state, "flaky", "errors") >= 5
                && service(&state, "api")["instances"]
                    .as_array()
                    .is_some_and(|i| !i.is_empty())
        },
    )
    .await;
    assert_eq!(live_sum(&state, "ok", "errors"), 0);
    assert_eq!(live_sum(&state, "api", "requests"), 0);
    let ok_series = state["live"]["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["route"] == "ok"))
        .expect("ok's series")
        .clone();
    assert!(
        ok_series["p99_ms"]
            .as_array()
            .expect("p99 points")
            .iter()
            .any(|p| p.as_f64().is_some_and(|ms| ms > 0.0)),
        "a p99 where there was traffic: {ok_series}"
    );

    // Routes and their services.
    let routes = state["routes"].as_array().expect("routes");
    let names: Vec<&str> = routes.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["ok", "flaky", "api"]);
    assert_eq!(routes[0]["services"][0]["name"], "ok");
    assert_eq!(routes[0]["match"]["prefix"], "/ok");

    // Instances: static with its health and weight; the breaker that tripped; the registry
    // instance with its weight and a lease age.
    let ok_instance = &service(&state, "ok")["instances"][0];
    assert_eq!(ok_instance["address"], ok.addr.to_string());
    assert_eq!(ok_instance["healthy"], true);
    assert_eq!(ok_instance["ejected"], false);
    assert_eq!(ok_instance["weight"], 1);
    assert_eq!(ok_instance["lease_age_seconds"], Value::Null);
    assert_eq!(service(&state, "ok")["breaker"], Value::Null);
    assert_eq!(service(&state, "ok")["discovery"], "static");
    assert_eq!(service(&state, "flaky")["breaker"], "open");
    let api = service(&state, "api");
    assert_eq!(api["discovery"], "registry");
    assert_eq!(api["instances"][0]["id"], "api-1");
    assert_eq!(api["instances"][0]["weight"], 7);
    let lease_age = api["instances"][0]["lease_age_seconds"]
        .as_f64()
        .expect("a registry instance has a lease age");
    assert!((0.0..90.0).contains(&lease_age), "{lease_age}");

    // No plugins configured: said so, not an error.
    assert_eq!(state["plugins"]["enabled"], false);
    assert_eq!(state["live"]["step_seconds"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_loopback_admin_serves_the_state() {
    let ok = origin::echo("ok").await;
    let gw = support::gateway(&format!(
        "[[services]]\nname = \"ok\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"ok\"\nservice = \"ok\"\nmatch = {{ prefix = \"/\" }}\n",
        ok.addr
    ))
    .await;
    let state = get(
        &format!("http://{}/admin/dashboard/state", gw.admin_addr),
        &[],
    )
    .await;
    assert_eq!(state.status, 200, "{}", state.text());
    assert_eq!(state.headers["cache-control"], "no-store");
    assert_eq!(state.json()["routes"][0]["name"], "ok");
    let head = send(
        &http1(),
        "HEAD",
        &format!("http://{}/admin/dashboard", gw.admin_addr),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_ne!(head.headers["content-length"], "0", "the page's length");
    let missing = get(
        &format!("http://{}/admin/dashboard/nothing", gw.admin_addr),
        &[],
    )
    .await;
    assert_eq!(missing.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_figures_of_the_routes_it_keeps() {
    let ok = origin::echo("ok").await;
    let dir = TempDir::new("dashboard-reload");
    let path = dir.join("gatehouse.toml");
    let text = |routes: &[&str]| {
        let mut text = format!(
            "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[[services]]\nname = \"ok\"\nendpoints = [\"{}\"]\n",
            ok.addr
        );
        for name in routes {
            text.push_str(&format!(
                "[[routes]]\nname = \"{name}\"\nservice = \"ok\"\nmatch = {{ prefix = \"/{name}\" }}\n"
            ));
        }
        text
    };
    std::fs::write(&path, text(&["kept", "dropped"])).expect("write config");
    let gw = gateway::start(config::load_file(&path).expect("valid config"))
        .await
        .expect("gateway starts");
    let public = format!("http://{}", gw.public_addr);
    let state_url = format!("http://{}/admin/dashboard/state", gw.admin_addr);
    for _ in 0..4 {
        assert_eq!(get(&format!("{public}/kept/x"), &[]).await.status, 200);
    }
    support::eventually(
        "the kept route's requests are counted",
        Duration::from_secs(10),
        async || live_sum(&get(&state_url, &[]).await.json(), "kept", "requests") >= 4,
    )
    .await;

    // The new order puts `kept` at another index: its figures follow its name.
    std::fs::write(&path, text(&["added", "kept"])).expect("write config");
    let reloaded = send(
        &http1(),
        "POST",
        &format!("http://{}/admin/reload", gw.admin_addr),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    let state = get(&state_url, &[]).await.json();
    let routes: Vec<&str> = state["live"]["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(|r| r["route"].as_str())
        .collect();
    assert_eq!(routes, ["added", "kept"]);
    assert!(live_sum(&state, "kept", "requests") >= 4, "{state:#}");
    assert_eq!(live_sum(&state, "added", "requests"), 0);
}
