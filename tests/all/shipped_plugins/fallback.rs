//! `fallback` through the gateway: good responses are cached; on an upstream timeout,
//! connect failure or a listed status the last good response is served (marked), else the
//! default, else the host's error goes through.

use std::time::Duration;

use serde_json::{json, Value};

use super::kit::{self, header, json_origin, plugin, url, PluginsDir, Switch};
use crate::support;

fn config(service: std::net::SocketAddr, timeout: &str, entry: &str) -> String {
    format!(
        r#"
[[services]]
name = "prices"
endpoints = ["{service}"]

[[routes]]
name = "prices"
service = "prices"
timeout = "{timeout}"
match = {{ prefix = "/prices" }}
plugins = [{entry}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_answered_from_the_cache_then_the_default_once_too_old() {
    let down = Switch::default();
    // While down, the origin hangs longer than the route's timeout.
    let origin = json_origin(
        json!({ "amount": 20 }),
        Duration::from_millis(1),
        down.clone(),
        0,
    )
    .await;
    let dir = PluginsDir::new();
    let cfg = json!({ "max_age_secs": 1, "default": { "json": { "amount": "unavailable" } } });
    let gw = kit::gateway(
        &dir,
        &config(
            origin.addr,
            "300ms",
            &plugin("fallback", cfg, &[], Some("prices")),
        ),
    )
    .await;

    let got = support::get(&url(&gw, "/prices/1?currency=EUR"), &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(header(&got, "x-gatehouse-fallback"), None, "live response");
    assert_eq!(got.json(), json!({ "amount": 20 }));

    down.set(true);
    let got = support::get(&url(&gw, "/prices/1?currency=EUR"), &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        header(&got, "x-gatehouse-fallback").as_deref(),
        Some("cache")
    );
    assert_eq!(
        header(&got, "content-type").as_deref(),
        Some("application/json")
    );
    assert!(header(&got, "age").is_some_and(|a| a.parse::<u64>().is_ok_and(|a| a <= 1)));
    assert_eq!(got.json(), json!({ "amount": 20 }), "the last good body");

    // Another query is another key: nothing cached, so the default.
    let got = support::get(&url(&gw, "/prices/1?currency=USD"), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        header(&got, "x-gatehouse-fallback").as_deref(),
        Some("default")
    );
    assert_eq!(got.json(), json!({ "amount": "unavailable" }));

    // After max_age the cached response is no longer served.
    support::eventually(
        "the cached price to age out",
        Duration::from_secs(5),
        async || {
            let got = support::get(&url(&gw, "/prices/1?currency=EUR"), &[]).await;
            header(&got, "x-gatehouse-fallback").as_deref() == Some("default")
        },
    )
    .await;

    // Back up: live again, and the cache is refreshed.
    down.set(false);
    let got = support::get(&url(&gw, "/prices/1?currency=EUR"), &[]).await;
    assert_eq!(header(&got, "x-gatehouse-fallback"), None);
    down.set(true);
    let got = support::get(&url(&gw, "/prices/1?currency=EUR"), &[]).await;
    assert_eq!(
        header(&got, "x-gatehouse-fallback").as_deref(),
        Some("cache")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_statuses_are_replaced_and_unknown_failures_pass_through() {
    let down = Switch::default();
    let origin = json_origin(
        json!({ "amount": 7 }),
        Duration::from_millis(1),
        down.clone(),
        503,
    )
    .await;
    let dir = PluginsDir::new();
    let cfg = json!({ "on_status": [503] });
    let gw = kit::gateway(
        &dir,
        &config(
            origin.addr,
            "2s",
            &plugin("fallback", cfg, &[], Some("prices")),
        ),
    )
    .await;

    assert_eq!(support::get(&url(&gw, "/prices/7"), &[]).await.status, 200);
    down.set(true);
    let got = support::get(&url(&gw, "/prices/7"), &[]).await;
    assert_eq!(got.status, 200, "the 503 was replaced: {}", got.text());
    assert_eq!(
        header(&got, "x-gatehouse-fallback").as_deref(),
        Some("cache")
    );
    assert_eq!(got.json(), json!({ "amount": 7 }));

    // Nothing cached and no default: the upstream's 503 goes through untouched.
    let got = support::get(&url(&gw, "/prices/8"), &[]).await;
    assert_eq!(got.status, 503);
    assert_eq!(header(&got, "x-gatehouse-fallback"), None);
    assert_eq!(got.text(), "origin is down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_get_the_default_or_the_hosts_error() {
    let gone = crate::support::origin::closed_port().await;

    // With a default.
    let dir = PluginsDir::new();
    let cfg = json!({ "default": { "status": 200, "json": { "amount": "n/a" },
                                   "headers": { "cache-control": "no-store" } } });
    let gw = kit::gateway(
        &dir,
        &config(gone, "2s", &plugin("fallback", cfg, &[], Some("prices"))),
    )
    .await;
    let got = support::get(&url(&gw, "/prices/1"), &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        header(&got, "x-gatehouse-fallback").as_deref(),
        Some("default")
    );
    assert_eq!(header(&got, "cache-control").as_deref(), Some("no-store"));
    assert_eq!(got.json(), json!({ "amount": "n/a" }));
    // Other methods are not the plugin's business.
    let got = support::send(
        &support::http1(),
        "POST",
        &url(&gw, "/prices/1"),
        &[],
        "x".into(),
    )
    .await;
    assert!(got.status >= 500, "{}", got.status);
    assert_eq!(header(&got, "x-gatehouse-fallback"), None);

    // Without a default: the host's own error response.
    let dir2 = PluginsDir::new();
    let gw2 = kit::gateway(
        &dir2,
        &config(
            gone,
            "2s",
            &plugin("fallback", json!({}), &[], Some("prices")),
        ),
    )
    .await;
    let got = support::get(&url(&gw2, "/prices/1"), &[]).await;
    assert!(got.status >= 500, "{}", got.status);
    assert_eq!(header(&got, "x-gatehouse-fallback"), None);
    let _: Value = got.json(); // the host's JSON error
}
