//! The admin listener: health, readiness, config dump, token protection.

use crate::support::{self, get};

const CONFIG: &str = r#"
[[services]]
name = "s"
endpoints = ["127.0.0.1:9"]
[[routes]]
name = "r"
service = "s"
"#;

#[tokio::test]
async fn health_ready_and_config() {
    let gw = support::gateway(CONFIG).await;
    let base = format!("http://{}", gw.admin_addr);
    assert_eq!(get(&format!("{base}/healthz"), &[]).await.status, 200);
    assert_eq!(get(&format!("{base}/readyz"), &[]).await.status, 200);
    let config = get(&format!("{base}/admin/config"), &[]).await;
    assert_eq!(config.status, 200);
    let json = config.json();
    assert_eq!(json["routes"][0]["name"], "r");
    assert_eq!(json["services"][0]["endpoints"][0], "127.0.0.1:9");
    assert_eq!(json["limits"]["default_timeout"], "30s");
    assert_eq!(get(&format!("{base}/nope"), &[]).await.status, 404);
    gw.shutdown().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let gw = support::gateway(CONFIG).await;
    for _ in 0..3 {
        get(&format!("http://{}/anything", gw.public_addr), &[]).await;
    }
    let metrics = get(&format!("http://{}/metrics", gw.admin_addr), &[]).await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    // The only endpoint is closed (port 9): three 502s on route "r".
    assert!(
        text.contains(r#"gatehouse_requests_total{route="r",status="502"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gatehouse_request_duration_seconds_count{route="r"} 3"#),
        "{text}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn token_guards_admin_endpoints_and_is_never_shown() {
    let gw = support::gateway(&format!("[admin]\ntoken = \"s3cret\"\n{CONFIG}")).await;
    let base = format!("http://{}", gw.admin_addr);
    assert_eq!(
        get(&format!("{base}/healthz"), &[]).await.status,
        200,
        "probes stay open"
    );
    let denied = get(&format!("{base}/admin/config"), &[]).await;
    assert_eq!(denied.status, 401);
    assert_eq!(denied.json()["error"], "unauthorized");
    let wrong = get(
        &format!("{base}/admin/config"),
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    let ok = get(
        &format!("{base}/admin/config"),
        &[("authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(ok.status, 200);
    assert!(
        !ok.text().contains("s3cret"),
        "the token never appears in the dump"
    );
    assert_eq!(ok.json()["admin"]["token_set"], true);
    let registry = format!("{base}/registry/services");
    assert_eq!(
        get(&registry, &[]).await.status,
        401,
        "registry reads need the token too"
    );
    let listed = get(&registry, &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    gw.shutdown().await;
}
