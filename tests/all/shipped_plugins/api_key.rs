//! `api-key` through the gateway: a key from the header or the query parameter is checked
//! against hashed keys, its metadata is forwarded, the key itself is stripped; a missing or
//! unknown key gets 401 and never reaches the origin.

use std::sync::atomic::Ordering;

use serde_json::json;

use super::kit::{self, api_key_sha256, header, plugin, url, PluginsDir};
use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_from_header_or_query_are_checked_forwarded_and_stripped() {
    let (origin, hits) = kit::counting_echo().await;
    let dir = PluginsDir::new();
    let cfg = json!({
        "query": "api_key",
        "keys": [
            { "sha256": api_key_sha256("mobile-key-1"), "consumer": "mobile-app",
              "headers": { "x-plan": "gold", "x-tenant": "acme" } },
            { "sha256": api_key_sha256("web-key-2"), "consumer": "web" },
        ],
    });
    let toml = format!(
        r#"
[[services]]
name = "api"
endpoints = ["{}"]

[[routes]]
name = "api"
service = "api"
match = {{ prefix = "/" }}
plugins = [{}]
"#,
        origin.addr,
        plugin("api-key", cfg, &[], None)
    );
    let gw = kit::gateway(&dir, &toml).await;

    // From the header, with spoofed metadata headers that must not survive.
    let got = support::get(
        &url(&gw, "/items"),
        &[
            ("x-api-key", "mobile-key-1"),
            ("x-consumer", "admin"),
            ("x-plan", "platinum"),
        ],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let h = &got.json()["headers"];
    assert_eq!(h["x-consumer"], "mobile-app");
    assert_eq!(h["x-plan"], "gold");
    assert_eq!(h["x-tenant"], "acme");
    assert!(h.get("x-api-key").is_none(), "key stripped: {h}");

    // From the query; the other parameters are kept as sent. A key without metadata gets no
    // metadata headers, even spoofed ones.
    let got = support::get(
        &url(&gw, "/items?a=1&api_key=web-key-2&b=x%2By"),
        &[("x-plan", "gold")],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = got.json();
    assert_eq!(seen["query"], "a=1&b=x%2By");
    assert_eq!(seen["headers"]["x-consumer"], "web");
    assert!(
        seen["headers"].get("x-plan").is_none(),
        "spoofed metadata removed"
    );

    // A key in the header wins; a second copy in the query is stripped too.
    let got = support::get(
        &url(&gw, "/items?api_key=leaked&z=1"),
        &[("x-api-key", "web-key-2")],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["query"], "z=1");
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    // Missing and unknown keys.
    for (path, headers, error) in [
        ("/items", vec![], "missing_api_key"),
        ("/items", vec![("x-api-key", "guess")], "invalid_api_key"),
        ("/items?api_key=guess", vec![], "invalid_api_key"),
        ("/items?api_key=", vec![], "missing_api_key"),
    ] {
        let got = support::get(&url(&gw, path), &headers).await;
        assert_eq!(got.status, 401, "{path} {headers:?}");
        let body = crate::first_hour::assert_error_schema(&got);
        assert_eq!(body["error"], error, "{path} {headers:?}");
        assert_eq!(
            header(&got, "www-authenticate").as_deref(),
            Some("ApiKey realm=\"gatehouse\"")
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "rejected requests never reached the origin"
    );
}

/// A static answer stands where the upstream's would: the route's request plugins run first,
/// so an auth plugin guards it like any other route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_guards_a_route_that_answers_by_itself() {
    let dir = PluginsDir::new();
    let cfg = json!({ "keys": [{ "sha256": api_key_sha256("ops-key"), "consumer": "ops" }] });
    let toml = format!(
        r#"
[[routes]]
name = "status"
match = {{ path = "/internal/status" }}
plugins = [{}]
respond = {{ body = "all systems go" }}
"#,
        plugin("api-key", cfg, &[], None)
    );
    let gw = kit::gateway(&dir, &toml).await;
    let got = support::get(&url(&gw, "/internal/status"), &[]).await;
    assert_eq!(got.status, 401, "{}", got.text());
    assert!(!got.text().contains("all systems go"));
    let got = support::get(&url(&gw, "/internal/status"), &[("x-api-key", "ops-key")]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.text(), "all systems go");
}
