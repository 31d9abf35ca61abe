//! The plugin `cache` import in Redis (`[plugins.cache] store = "redis"`,
//! docs/scale-out.md): what the `fallback` plugin caches through gateway A, gateway B serves
//! when the origin is down; with Redis down too, the cache misses (fails open) and the
//! request still ends.

use std::time::Duration;

use serde_json::json;

use crate::shipped_plugins::kit::{self, header, json_origin, plugin, url, PluginsDir, Switch};
use crate::support;
use crate::support::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_cached_through_one_gateway_is_served_by_another() {
    let mut redis = RedisServer::start();
    let down = Switch::default();
    let origin = json_origin(
        json!({ "amount": 42 }),
        Duration::from_millis(1),
        down.clone(),
        503,
    )
    .await;
    let toml = format!(
        r#"
[plugins.cache]
store = "redis"

[redis]
url = "{url}"
timeout = "100ms"
breaker_cooldown = "200ms"

[[services]]
name = "prices"
endpoints = ["{origin}"]

[[routes]]
name = "prices"
service = "prices"
match = {{ prefix = "/prices" }}
plugins = [{entry}]
"#,
        url = redis.url(),
        origin = origin.addr,
        entry = plugin(
            "fallback",
            json!({ "on_status": [503] }),
            &[],
            Some("prices")
        ),
    );
    let dir = PluginsDir::new();
    let a = kit::gateway(&dir, &toml).await;
    let b = kit::gateway(&dir, &toml).await;

    let got = support::get(&url(&a, "/prices/1"), &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(header(&got, "x-gatehouse-fallback"), None, "live through A");

    down.set(true);
    let got = support::get(&url(&b, "/prices/1"), &[]).await;
    assert_eq!(got.status, 200, "B serves what A cached: {}", got.text());
    assert_eq!(
        header(&got, "x-gatehouse-fallback").as_deref(),
        Some("cache")
    );
    assert_eq!(got.json(), json!({ "amount": 42 }));
    // The entry sits under the key prefix and the plugin's namespace.
    let keys = redis
        .command(&["KEYS", "gatehouse:cache:prices:*"])
        .expect("redis answers");
    assert!(keys.starts_with("*1\r\n"), "one entry: {keys:?}");

    // Redis down as well: the cache misses (fails open), so the origin's 503 goes through;
    // the request ends all the same.
    redis.stop();
    for _ in 0..5 {
        let got = support::get(&url(&b, "/prices/1"), &[]).await;
        assert_eq!(got.status, 503, "{}", got.text());
        assert_eq!(header(&got, "x-gatehouse-fallback"), None);
    }

    // Redis back (empty): A's live answer fills it again, and B serves it.
    redis.restart();
    down.set(false);
    support::eventually(
        "A caches through Redis again",
        Duration::from_secs(20),
        async || {
            let got = support::get(&url(&a, "/prices/1"), &[]).await;
            got.status == 200
                && redis
                    .command(&["KEYS", "gatehouse:cache:prices:*"])
                    .is_some_and(|k| k.starts_with("*1\r\n"))
        },
    )
    .await;
    down.set(true);
    // B's breaker may still be cooling down from the outage: it converges within a probe.
    support::eventually(
        "B serves the entry A cached after Redis returned",
        Duration::from_secs(20),
        async || {
            let got = support::get(&url(&b, "/prices/1"), &[]).await;
            header(&got, "x-gatehouse-fallback").as_deref() == Some("cache")
        },
    )
    .await;
}
