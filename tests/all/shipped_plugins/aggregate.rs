//! `aggregate` through the gateway: parts called concurrently and merged; optional parts
//! degrade to their cached body or default; a failed required part is a 502 naming it.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::kit::{self, header, json_origin, plugin, url, PluginsDir, Switch};
use crate::support;

fn services(list: &[(&str, std::net::SocketAddr)]) -> String {
    list.iter()
        .map(|(name, addr)| {
            format!("[[services]]\nname = \"{name}\"\nendpoints = [\"{addr}\"]\n\n")
        })
        .collect()
}

fn route(entry: &str) -> String {
    format!(
        r#"
[[routes]]
name = "product-details"
service = "product-info"
match = {{ path = "/productdetails", methods = ["GET"] }}
plugins = [{entry}]
"#
    )
}

fn parts_config() -> Value {
    json!({
        "forward_headers": ["x-user-id"],
        "parts": [
            { "name": "product", "service": "product-info", "path": "/products/{query.productid}" },
            { "name": "recommendations", "service": "recommendations",
              "path": "/recommendations/{query.productid}?top=10", "required": false, "default": [] },
            { "name": "reviews", "service": "reviews", "path": "/reviews/{query.productid}",
              "required": false, "default": { "items": [] } },
            { "name": "price", "service": "price", "path": "/prices/{query.productid}",
              "required": false, "cache_max_age_secs": 600 },
        ],
    })
}

const ALL: [&str; 4] = ["product-info", "recommendations", "reviews", "price"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_are_called_concurrently_and_merged_under_their_names() {
    let (product, _) = kit::counting_echo().await;
    let slow = Duration::from_millis(300);
    let recs = json_origin(json!([7, 8, 9]), slow, Switch::default(), 503).await;
    let reviews = json_origin(
        json!({ "items": [{ "stars": 5 }] }),
        slow,
        Switch::default(),
        503,
    )
    .await;
    let price = json_origin(
        json!({ "amount": 19.99, "currency": "EUR" }),
        slow,
        Switch::default(),
        503,
    )
    .await;
    let dir = PluginsDir::new();
    let toml = services(&[
        ("product-info", product.addr),
        ("recommendations", recs.addr),
        ("reviews", reviews.addr),
        ("price", price.addr),
    ]) + &route(&plugin(
        "aggregate",
        parts_config(),
        &ALL,
        Some("productdetails"),
    ));
    let gw = kit::gateway(&dir, &toml).await;

    let u42 = url(&gw, "/productdetails?productid=42");
    let call = || support::get(&u42, &[("x-user-id", "u-1")]);
    let warm = call().await; // first request pays for connection set-up
    assert_eq!(warm.status, 200, "{}", warm.text());

    let started = Instant::now();
    let got = call().await;
    let took = started.elapsed();
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        header(&got, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(header(&got, "x-gatehouse-degraded"), None);
    let doc = got.json();
    assert_eq!(
        doc["product"]["path"], "/products/42",
        "template filled from the query"
    );
    assert_eq!(
        doc["product"]["headers"]["x-user-id"], "u-1",
        "header forwarded to parts"
    );
    assert_eq!(doc["recommendations"], json!([7, 8, 9]));
    assert_eq!(doc["reviews"]["items"][0]["stars"], 5);
    assert_eq!(doc["price"]["amount"], 19.99);
    assert!(doc.get("_degraded").is_none(), "{doc}");
    // Three parts take 300 ms each: one after another would be 900 ms.
    assert!(
        took < Duration::from_millis(700),
        "parts ran one after another? {took:?}"
    );
    assert!(took >= slow, "{took:?}");

    // A value that would change the part's path is encoded, not interpreted.
    let got = support::get(
        &url(&gw, "/productdetails?productid=..%2F..%2Fadmin%3Fx"),
        &[],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        got.json()["product"]["path"],
        "/products/..%2F..%2Fadmin%3Fx"
    );

    // A missing template value is the client's mistake.
    let got = support::get(&url(&gw, "/productdetails"), &[]).await;
    assert_eq!(got.status, 400);
    assert_eq!(got.json()["message"], "missing query parameter `productid`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_parts_degrade_to_cache_or_default_and_a_failed_required_part_is_502() {
    let quick = Duration::from_millis(1);
    let (product_down, recs_down, price_down) =
        (Switch::default(), Switch::default(), Switch::default());
    let product = json_origin(
        json!({ "id": 42, "name": "Kettle" }),
        quick,
        product_down.clone(),
        503,
    )
    .await;
    let recs = json_origin(json!([1, 2]), quick, recs_down.clone(), 503).await;
    let reviews_gone = crate::support::origin::closed_port().await;
    let price = json_origin(json!({ "amount": 20 }), quick, price_down.clone(), 503).await;
    let dir = PluginsDir::new();
    let toml = services(&[
        ("product-info", product.addr),
        ("recommendations", recs.addr),
        ("reviews", reviews_gone),
        ("price", price.addr),
    ]) + &route(&plugin(
        "aggregate",
        parts_config(),
        &ALL,
        Some("productdetails"),
    ));
    let gw = kit::gateway(&dir, &toml).await;
    let u42 = url(&gw, "/productdetails?productid=42");
    let call = || support::get(&u42, &[]);

    // Reviews is down from the start: its default, marked.
    let got = call().await;
    assert_eq!(got.status, 200, "{}", got.text());
    let doc = got.json();
    assert_eq!(doc["reviews"], json!({ "items": [] }));
    assert_eq!(doc["_degraded"]["reviews"]["source"], "default");
    assert_eq!(
        doc["price"]["amount"], 20,
        "the price is live (and now cached)"
    );
    assert_eq!(
        header(&got, "x-gatehouse-degraded").as_deref(),
        Some("reviews=default")
    );

    // Recommendations and price go down: an empty list, and the last cached price, marked.
    recs_down.set(true);
    price_down.set(true);
    let got = call().await;
    assert_eq!(got.status, 200, "{}", got.text());
    let doc = got.json();
    assert_eq!(doc["product"]["name"], "Kettle");
    assert_eq!(doc["recommendations"], json!([]));
    assert_eq!(doc["price"]["amount"], 20, "served from the cache");
    assert_eq!(doc["_degraded"]["price"]["source"], "cache");
    assert_eq!(doc["_degraded"]["price"]["reason"], "service answered 503");
    assert_eq!(doc["_degraded"]["recommendations"]["source"], "default");
    assert_eq!(
        header(&got, "x-gatehouse-degraded").as_deref(),
        Some("price=cache, recommendations=default, reviews=default")
    );

    // A price never seen before has nothing cached: null, marked as default.
    let got = support::get(&url(&gw, "/productdetails?productid=43"), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["price"], Value::Null);
    assert_eq!(got.json()["_degraded"]["price"]["source"], "default");

    // Product info is required: its failure fails the whole, naming it.
    product_down.set(true);
    let got = call().await;
    let body = kit::assert_part_failed(&got, "product", "product-info");
    assert_eq!(body["failed"][0]["message"], "service answered 503");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_calling_an_ungranted_service_fails_without_reaching_it() {
    let (product, hits) = kit::counting_echo().await;
    let dir = PluginsDir::new();
    let cfg = json!({ "parts": [
        { "name": "product", "service": "product-info", "path": "/products/{query.productid}" },
    ]});
    // `calls` does not grant product-info.
    let toml = services(&[("product-info", product.addr), ("other", product.addr)])
        + &route(&plugin("aggregate", cfg, &["other"], None));
    let gw = kit::gateway(&dir, &toml).await;
    let got = support::get(&url(&gw, "/productdetails?productid=1"), &[]).await;
    assert_eq!(got.status, 502, "{}", got.text());
    let body = got.json();
    assert_eq!(body["part"], "product");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("not granted")),
        "{body}"
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}
