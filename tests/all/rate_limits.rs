//! Rate limits and the in-flight cap through the real gateway: 429s with `Retry-After`, the
//! `RateLimit-Policy` / `RateLimit` fields and the JSON error; a header set by an auth plugin
//! as the key; `max_in_flight` against a slow origin; plugins charging limits with keys they
//! compute. Exact counts on an injected clock are the unit tests' (host/src/ratelimit/).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse::gateway::RunningGateway;
use http_body_util::StreamBody;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::plugins::guests::{self, TempDir};
use crate::shipped_plugins::kit::{self, api_key_sha256, plugin, url};
use crate::support::{self, origin};

/// A gateway whose plugins directory holds `files` (gateway name → guest crate).
async fn gateway_with(files: &[(&str, &str)], rest: &str) -> (RunningGateway, TempDir) {
    let dir = TempDir::new("ratelimit-plugins");
    for (name, guest) in files {
        std::fs::write(dir.join(&format!("{name}.wasm")), guests::bytes(guest)).expect("write");
    }
    let cache = guests::workspace().join("target/guests/artifact-cache");
    let text = format!(
        "[plugins]\ndir = {}\ncache_dir = {}\nwatch = false\n\n{rest}",
        kit::toml_inline(&json!(dir.0.display().to_string())),
        kit::toml_inline(&json!(cache.display().to_string())),
    );
    (support::gateway(&text).await, dir)
}

/// `gatehouse_rate_limited_total{route,limit}` from the admin listener, 0 if absent.
async fn refused(gw: &RunningGateway, route: &str, limit: &str) -> u64 {
    let metrics = support::get(&format!("http://{}/metrics", gw.admin_addr), &[]).await;
    let series = format!("gatehouse_rate_limited_total{{route=\"{route}\",limit=\"{limit}\"}} ");
    metrics
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_is_429_with_retry_after_ratelimit_fields_and_a_json_error() {
    let (origin, hits) = kit::counting_echo().await;
    // Three per hour: nothing refills while the test runs, so the counts are exact.
    let gw = support::gateway(&format!(
        r#"
[[services]]
name = "api"
endpoints = ["{}"]

[[routes]]
name = "limited"
service = "api"
match = {{ prefix = "/limited" }}
rate_limits = [{{ name = "per-client", requests = 3, per = "1h", key = "client-address" }}]

[[routes]]
name = "plain"
service = "api"
match = {{ prefix = "/plain" }}
"#,
        origin.addr
    ))
    .await;

    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(support::get(&url(&gw, "/limited"), &[]).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429, 429, 429]);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "refused requests never reach the origin"
    );

    let got = support::get(&url(&gw, "/limited"), &[("x-request-id", "rl-1")]).await;
    assert_eq!(got.status, 429);
    // 3 per hour: the next request's worth of quota is back in 20 minutes.
    assert_eq!(got.headers["retry-after"], "1200");
    assert_eq!(got.headers["ratelimit-policy"], "\"per-client\";q=3;w=3600");
    let state = got.headers["ratelimit"].to_str().expect("ascii");
    assert!(state.starts_with("\"per-client\";r=0;t="), "{state}");
    assert_eq!(got.headers["content-type"], "application/json");
    let body = got.json();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["limit"], "per-client");
    assert_eq!(body["request_id"], "rl-1");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("3 requests per 1h"),
        "{body}"
    );

    // Another route on the same gateway has no limit.
    for _ in 0..10 {
        assert_eq!(support::get(&url(&gw, "/plain"), &[]).await.status, 200);
    }
    assert_eq!(refused(&gw, "limited", "per-client").await, 8);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_set_by_an_auth_plugin_is_the_key_not_what_the_client_sent() {
    let (origin, hits) = kit::counting_echo().await;
    let dir = kit::PluginsDir::new();
    let keys = json!({ "keys": [
        { "sha256": api_key_sha256("mobile-key"), "consumer": "mobile-app" },
        { "sha256": api_key_sha256("web-key"), "consumer": "web" },
    ] });
    let gw = kit::gateway(
        &dir,
        &format!(
            r#"
[[services]]
name = "api"
endpoints = ["{}"]

[[routes]]
name = "api"
service = "api"
match = {{ prefix = "/" }}
rate_limits = [{{ name = "per-consumer", requests = 2, per = "1h", key = "header:x-consumer" }}]
plugins = [{}]
"#,
            origin.addr,
            plugin("api-key", keys, &[], None)
        ),
    )
    .await;
    let call = |key: &'static str, claimed: &'static str| {
        let url = url(&gw, "/items");
        async move {
            support::get(&url, &[("x-api-key", key), ("x-consumer", claimed)])
                .await
                .status
        }
    };
    assert_eq!(call("mobile-key", "mobile-app").await, 200);
    assert_eq!(call("mobile-key", "mobile-app").await, 200);
    assert_eq!(call("mobile-key", "mobile-app").await, 429);
    // Claiming another consumer changes nothing: the plugin sets x-consumer from the key.
    assert_eq!(call("mobile-key", "web").await, 429);
    assert_eq!(call("web-key", "mobile-app").await, 200);
    assert_eq!(call("web-key", "web").await, 200);
    assert_eq!(call("web-key", "web").await, 429);
    // No key: the plugin refuses it before the limit is checked.
    let got = support::get(&url(&gw, "/items"), &[]).await;
    assert_eq!(got.status, 401);
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_refuses_the_next_request_until_one_ends() {
    // Each request waits at the origin for a permit the test hands out.
    let gate = Arc::new(Semaphore::new(0));
    let waiting = Arc::new(AtomicUsize::new(0));
    let (g, w) = (gate.clone(), waiting.clone());
    let origin = origin::start(move |_req| {
        let (gate, waiting) = (g.clone(), w.clone());
        async move {
            waiting.fetch_add(1, Ordering::SeqCst);
            gate.acquire().await.expect("gate open").forget();
            origin::text(200, "slow")
        }
    })
    .await;
    let gw = support::gateway(&format!(
        r#"
[[services]]
name = "slow"
endpoints = ["{}"]

[[routes]]
name = "slow"
service = "slow"
max_in_flight = 2
"#,
        origin.addr
    ))
    .await;
    let held: Vec<_> = (0..2)
        .map(|_| {
            let url = url(&gw, "/");
            tokio::spawn(async move { support::get(&url, &[]).await })
        })
        .collect();
    support::eventually(
        "both requests wait at the origin",
        Duration::from_secs(5),
        async || waiting.load(Ordering::SeqCst) == 2,
    )
    .await;
    let got = support::get(&url(&gw, "/"), &[]).await;
    assert_eq!(got.status, 429, "{}", got.text());
    assert_eq!(got.headers["retry-after"], "1");
    assert_eq!(got.json()["error"], "concurrency_limited");
    assert_eq!(got.json()["limit"], "max_in_flight");
    assert_eq!(
        waiting.load(Ordering::SeqCst),
        2,
        "the third never reached the origin"
    );

    gate.add_permits(2);
    for h in held {
        assert_eq!(h.await.expect("request task").status, 200);
    }
    // The places came back when the bodies ended: requests flow again.
    gate.add_permits(10);
    support::eventually(
        "a request gets through",
        Duration::from_secs(5),
        async || support::get(&url(&gw, "/"), &[]).await.status == 200,
    )
    .await;
    for _ in 0..3 {
        assert_eq!(support::get(&url(&gw, "/"), &[]).await.status, 200);
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_body_frees_its_place() {
    // The origin sends a head and then a body that never ends.
    let origin = origin::start(|_req| async {
        let never = futures::stream::pending::<
            Result<http_body::Frame<Bytes>, gatehouse::body::BoxError>,
        >();
        http::Response::new(gatehouse::body::streaming(StreamBody::new(never)))
    })
    .await;
    let gw = support::gateway(&format!(
        r#"
[[services]]
name = "stream"
endpoints = ["{}"]

[[routes]]
name = "stream"
service = "stream"
max_in_flight = 1
"#,
        origin.addr
    ))
    .await;
    let client = support::http1();
    let req = http::Request::get(url(&gw, "/"))
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("request");
    let response = client.request(req).await.expect("the head arrives");
    assert_eq!(response.status(), 200);
    assert_eq!(
        support::get(&url(&gw, "/"), &[]).await.status,
        429,
        "the stream holds the place"
    );
    // The client goes away without reading the body.
    drop(response);
    drop(client);
    support::eventually("the place comes back", Duration::from_secs(5), async || {
        let client = support::http1();
        let req = http::Request::get(url(&gw, "/"))
            .body(http_body_util::Full::new(Bytes::new()))
            .expect("request");
        let status = client.request(req).await.expect("head").status();
        status == 200
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_charges_a_limit_with_a_key_it_computes() {
    let (origin, hits) = kit::counting_echo().await;
    let (gw, _dir) = gateway_with(
        &[("kit", "test-kit")],
        &format!(
            r#"
[[services]]
name = "api"
endpoints = ["{}"]

[[routes]]
name = "tenants"
service = "api"
match = {{ prefix = "/tenants" }}
rate_limits = [{{ name = "per-tenant", requests = 2, per = "1h", key = "plugin" }}]
plugins = [{{ name = "kit", config = {{ mode = "limits" }}, limits = ["per-tenant"] }}]

[[routes]]
name = "ungranted"
service = "api"
match = {{ prefix = "/ungranted" }}
rate_limits = [{{ name = "per-tenant", requests = 2, per = "1h", key = "plugin" }}]
plugins = [{{ name = "kit", config = {{ mode = "limits" }} }}]
"#,
            origin.addr
        ),
    )
    .await;
    let call = |tenant: &'static str, cost: &'static str| {
        let url = url(&gw, "/tenants");
        async move { support::get(&url, &[("x-tenant", tenant), ("x-cost", cost)]).await }
    };
    let first = call("acme", "1").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["headers"]["x-remaining"], "1");
    assert_eq!(
        call("acme", "1").await.json()["headers"]["x-remaining"],
        "0"
    );
    let refused = call("acme", "1").await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(
        refused.headers["retry-after"], "1800",
        "2 per hour: 30 minutes"
    );
    let body = refused.json();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["limit"], "per-tenant");
    assert!(
        body["request_id"].is_string(),
        "the host adds the request id: {body}"
    );
    // Another tenant has its own quota; a cost over the burst can never pass.
    assert_eq!(call("globex", "2").await.status, 200);
    let too_big = call("initech", "3").await;
    assert_eq!(too_big.status, 500);
    assert_eq!(too_big.json()["message"], "LimitError::BadCost(2)");
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    // Without the grant the call fails with a clear error, not a trap.
    let got = support::get(&url(&gw, "/ungranted"), &[("x-tenant", "acme")]).await;
    assert_eq!(got.status, 500, "{}", got.text());
    assert_eq!(got.json()["error"], "limit_error");
    assert_eq!(
        got.json()["message"],
        "LimitError::NotAllowed(\"per-tenant\")"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_counters_of_unchanged_limits() {
    let origin = origin::echo("echo").await;
    let text = |key: &str| {
        format!(
            r#"[listen]
public = "127.0.0.1:0"
admin = "127.0.0.1:0"

[[services]]
name = "api"
endpoints = ["{}"]

[[routes]]
name = "api"
service = "api"
rate_limits = [{{ name = "per-client", requests = 2, per = "1h", key = "{key}" }}]
"#,
            origin.addr
        )
    };
    let gw = support::gateway(&text("client-address")).await;
    let status = || {
        let url = url(&gw, "/");
        async move { support::get(&url, &[]).await.status }
    };
    assert_eq!(status().await, 200);
    assert_eq!(status().await, 200);
    assert_eq!(status().await, 429);
    let apply = |key: &str| {
        let config = gatehouse::config::load_str(&text(key), "test.toml").expect("valid");
        gw.reloader.apply(config).expect("reload applies");
    };
    // The same limit: a reload does not hand out a fresh quota.
    apply("client-address");
    assert_eq!(status().await, 429);
    // Another key kind is another limit: it starts afresh.
    apply("route");
    assert_eq!(status().await, 200);
    gw.shutdown().await;
}
