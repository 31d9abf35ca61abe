//! `/metrics` read with a real Prometheus text-format parser while requests flow: upstream
//! tries, plugin hooks, API metering by consumer (bounded), requests in flight, plugin file
//! loads, open connections by protocol.

use serde_json::json;

use crate::shipped_plugins::kit::{self, api_key_sha256, plugin, url, PluginsDir};
use crate::support::{self, origin, scrape};

/// Through the api-key plugin (which sets `x-consumer`): upstream tries by service, endpoint
/// and status class; plugin hooks by outcome; consumers up to `top_consumers`, the rest as
/// `other`; no raw path anywhere in a label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_move_as_requests_flow() {
    let upstream = origin::echo("api").await;
    let dir = PluginsDir::new();
    let keys = json!({
        "keys": [
            { "sha256": api_key_sha256("mobile-key"), "consumer": "mobile-app" },
            { "sha256": api_key_sha256("web-key"), "consumer": "web" },
        ],
    });
    let toml = format!(
        r#"
[metrics]
top_consumers = 1

[[services]]
name = "api"
endpoints = ["{}"]

[[routes]]
name = "api"
service = "api"
match = {{ prefix = "/" }}
plugins = [{}]
"#,
        upstream.addr,
        plugin("api-key", keys, &[], None)
    );
    let gw = kit::gateway(&dir, &toml).await;
    let before = scrape::scrape(gw.admin_addr).await;
    assert_eq!(
        scrape::value(
            &before,
            "gatehouse_upstream_requests_total",
            &[("service", "api")]
        ),
        0.0
    );
    for key in [
        "mobile-key",
        "mobile-key",
        "mobile-key",
        "web-key",
        "web-key",
    ] {
        let got = support::get(&url(&gw, "/items/42?x=1"), &[("x-api-key", key)]).await;
        assert_eq!(got.status, 200, "{}", got.text());
    }
    let refused = support::get(&url(&gw, "/items/42"), &[("x-api-key", "wrong")]).await;
    assert_eq!(refused.status, 401, "{}", refused.text());

    let after = scrape::scrape(gw.admin_addr).await;
    let endpoint = upstream.addr.to_string();
    assert_eq!(
        scrape::value(
            &after,
            "gatehouse_upstream_requests_total",
            &[
                ("service", "api"),
                ("endpoint", &endpoint),
                ("class", "2xx")
            ]
        ),
        5.0
    );
    let observed = scrape::value(
        &after,
        "gatehouse_upstream_duration_seconds",
        &[("service", "api")],
    ) + scrape::value(
        &after,
        "gatehouse_upstream_duration_seconds_count",
        &[("service", "api")],
    );
    assert!(observed >= 5.0, "try latencies observed: {observed}");
    let hook = |outcome| {
        scrape::value(
            &after,
            "gatehouse_plugin_invocations_total",
            &[
                ("plugin", "api-key"),
                ("hook", "request"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(hook("continue"), 5.0);
    assert_eq!(hook("respond"), 1.0, "the 401 is the plugin's own answer");
    let versions = scrape::label_values(&after, "gatehouse_plugin_invocations_total", "version");
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(versions[0].len(), 12, "a hash prefix: {versions:?}");
    let consumer = |name| {
        scrape::value(
            &after,
            "gatehouse_consumer_requests_total",
            &[("route", "api"), ("consumer", name)],
        )
    };
    assert_eq!(
        consumer("mobile-app"),
        3.0,
        "the first consumer has its own label"
    );
    assert_eq!(consumer("other"), 2.0, "past top_consumers = 1: other");
    assert_eq!(consumer("web"), 0.0);
    assert_eq!(
        scrape::value(&after, "gatehouse_requests_in_flight", &[]),
        0.0
    );
    for sample in &after.samples {
        for (name, value) in sample.labels.iter() {
            assert!(
                !value.contains("/items"),
                "a raw path as label {name}: {sample:?}"
            );
        }
    }
}

/// Upstream failures: a try that cannot connect counts as class `error`, each retry and the
/// registry's state show up.
#[tokio::test]
async fn failed_tries_and_retries_are_counted() {
    let up = origin::echo("up").await;
    let down = origin::closed_port().await;
    let gw = support::gateway(&format!(
        r#"
[[services]]
name = "flaky"
endpoints = ["{down}", "{}"]
[services.retry]
max_retries = 1
backoff = "1ms"
budget_min_per_sec = 1000

[[routes]]
name = "flaky"
service = "flaky"
match = {{ prefix = "/" }}
"#,
        up.addr
    ))
    .await;
    for _ in 0..4 {
        let got = support::get(&format!("http://{}/", gw.public_addr), &[]).await;
        assert_eq!(got.status, 200, "{}", got.text());
    }
    let metrics = scrape::scrape(gw.admin_addr).await;
    let down = down.to_string();
    assert!(
        scrape::value(
            &metrics,
            "gatehouse_upstream_requests_total",
            &[
                ("service", "flaky"),
                ("endpoint", &down),
                ("class", "error")
            ]
        ) >= 1.0
    );
    assert!(
        scrape::value(
            &metrics,
            "gatehouse_upstream_retries_total",
            &[("service", "flaky")]
        ) >= 1.0
    );
}

/// Health probes by result, breaker trips and state, registry instances and renewals: each
/// moves as the gateway works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_breaker_and_registry_series_move() {
    let failing = origin::start(|_req| async { origin::text(500, "down") }).await;
    let gw = support::gateway(&format!(
        r#"
[registry]
token = "t"

[[services]]
name = "bad"
endpoints = ["{}"]
[services.health]
path = "/health"
interval = "50ms"
[services.breaker]
min_requests = 4
failure_rate = 0.5
open_for = "10s"
half_open_probes = 1

[[services]]
name = "listed"
discovery = "registry"

[[routes]]
name = "bad"
service = "bad"
match = {{ prefix = "/" }}
"#,
        failing.addr
    ))
    .await;
    let registry = gatehouse::discovery::registry::RegistryClient::new(gw.admin_addr, "t");
    let _registration = registry
        .register(
            "listed",
            gatehouse::discovery::registry::InstanceSpec {
                id: "l1".into(),
                address: "127.0.0.1".parse().expect("ip"),
                port: 9,
                meta: Default::default(),
            },
            std::time::Duration::from_millis(100),
        )
        .await
        .expect("registers");
    let url = format!("http://{}/", gw.public_addr);
    support::eventually(
        "the breaker opens",
        std::time::Duration::from_secs(10),
        async || support::get(&url, &[]).await.status == 503,
    )
    .await;
    let endpoint = failing.addr.to_string();
    support::eventually(
        "the series moved",
        std::time::Duration::from_secs(10),
        async || {
            let m = scrape::scrape(gw.admin_addr).await;
            let health = scrape::value(
                &m,
                "gatehouse_upstream_health_checks_total",
                &[
                    ("service", "bad"),
                    ("endpoint", &endpoint),
                    ("result", "fail"),
                ],
            );
            let trips = scrape::value(
                &m,
                "gatehouse_upstream_breaker_trips_total",
                &[("service", "bad")],
            );
            let open = scrape::value(
                &m,
                "gatehouse_upstream_breaker_state",
                &[("service", "bad"), ("state", "open")],
            );
            let instances =
                scrape::value(&m, "gatehouse_registry_instances", &[("service", "listed")]);
            let renewals = scrape::value(&m, "gatehouse_registry_renewals_total", &[]);
            health >= 1.0 && trips >= 1.0 && open == 1.0 && instances == 1.0 && renewals >= 1.0
        },
    )
    .await;
}

/// Plugin file loads by result: the files found at start and a plugin dropped in later count
/// `loaded`, a corrupt `.wasm` counts `failed` (and serves nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_reloads_count_loaded_and_failed() {
    let upstream = origin::echo("api").await;
    let dir = PluginsDir::new();
    let cache = crate::plugins::guests::workspace().join("target/guests/artifact-cache");
    let toml = format!(
        r#"
[plugins]
dir = {}
cache_dir = {}
watch = true

[[services]]
name = "api"
endpoints = ["{}"]

[[routes]]
name = "keys"
service = "api"
match = {{ prefix = "/" }}
plugins = [{}]
"#,
        kit::toml_inline(&json!(dir.0.display().to_string())),
        kit::toml_inline(&json!(cache.display().to_string())),
        upstream.addr,
        plugin("api-key", json!({ "keys": [] }), &[], None)
    );
    let gw = support::gateway(&toml).await;
    let reloads = |m: &prometheus_parse::Scrape, plugin: &str, result: &str| {
        scrape::value(
            m,
            "gatehouse_plugin_reloads_total",
            &[("plugin", plugin), ("result", result)],
        )
    };
    let start = scrape::scrape(gw.admin_addr).await;
    assert_eq!(reloads(&start, "api-key", "loaded"), 1.0);
    assert_eq!(reloads(&start, "api-key", "failed"), 0.0);

    let api_key = std::fs::read(dir.0.join("api-key.wasm")).expect("api-key.wasm");
    std::fs::write(dir.0.join("dropped.wasm"), api_key).expect("drop a plugin in");
    std::fs::write(dir.0.join("corrupt.wasm"), b"\0asm not a component").expect("corrupt");
    support::eventually(
        "the watcher loaded one plugin and rejected the other",
        std::time::Duration::from_secs(30),
        async || {
            let m = scrape::scrape(gw.admin_addr).await;
            reloads(&m, "dropped", "loaded") == 1.0 && reloads(&m, "corrupt", "failed") == 1.0
        },
    )
    .await;
    let end = scrape::scrape(gw.admin_addr).await;
    assert_eq!(reloads(&end, "corrupt", "loaded"), 0.0);
    assert_eq!(reloads(&end, "dropped", "failed"), 0.0);
}

/// `gatehouse_open_connections` on the public listener by protocol: a keep-alive HTTP/1
/// connection counts 1 while open and 0 once closed; an h2c connection counts as `h2`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_by_protocol() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let upstream = origin::echo("api").await;
    let gw = support::gateway(&format!(
        r#"
[[services]]
name = "api"
endpoints = ["{}"]

[[routes]]
name = "api"
service = "api"
match = {{ prefix = "/" }}
"#,
        upstream.addr
    ))
    .await;
    let open = async |protocol: &str| {
        let m = scrape::scrape(gw.admin_addr).await;
        scrape::value(
            &m,
            "gatehouse_open_connections",
            &[
                ("listener", "public"),
                ("protocol", protocol),
                ("tls", "false"),
            ],
        )
    };
    let request = |uri: String| {
        http::Request::get(uri)
            .header(http::header::HOST, gw.public_addr.to_string())
            .body(Empty::<bytes::Bytes>::new())
            .expect("request")
    };
    let deadline = std::time::Duration::from_secs(10);

    let tcp = tokio::net::TcpStream::connect(gw.public_addr)
        .await
        .expect("connects");
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("http1 handshake");
    let h1_task = tokio::spawn(conn);
    let got = h1
        .send_request(request("/x".to_owned()))
        .await
        .expect("http1 response");
    assert_eq!(got.status(), 200, "{:?}", got.headers());
    drop(got);
    // The connection is kept alive after the answer: still counted.
    support::eventually("the http1 connection counts", deadline, async || {
        open("http1").await == 1.0
    })
    .await;
    assert_eq!(open("h2").await, 0.0);
    drop(h1);
    let _ = h1_task.await;
    support::eventually(
        "the closed http1 connection is gone",
        deadline,
        async || open("http1").await == 0.0,
    )
    .await;

    let tcp = tokio::net::TcpStream::connect(gw.public_addr)
        .await
        .expect("connects");
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    let h2_task = tokio::spawn(conn);
    let got = h2
        .send_request(request(format!("http://{}/x", gw.public_addr)))
        .await
        .expect("h2 response");
    assert_eq!(got.status(), 200);
    support::eventually("the h2 connection counts", deadline, async || {
        open("h2").await == 1.0
    })
    .await;
    assert_eq!(open("http1").await, 0.0);
    drop((got, h2));
    let _ = h2_task.await;
    support::eventually("the closed h2 connection is gone", deadline, async || {
        open("h2").await == 0.0 && open("pending").await == 0.0
    })
    .await;
}
