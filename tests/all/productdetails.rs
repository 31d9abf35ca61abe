//! The product-details demo end to end: the gateway started from the demo's own
//! `examples/productdetails/gatehouse.toml` (only ports and the plugins directory are
//! overridden), the demo's four mock services in-process, registering themselves in that
//! gateway's registry, and JWTs minted by the demo. A service "goes down" for real: its
//! server is stopped (and deregistered, or left to look crashed).

use std::collections::HashMap;
use std::time::Duration;

use gatehouse::discovery::registry::RegistryClient;
use gatehouse::gateway::RunningGateway;
use productdetails::{token, MockService, ServiceKind};
use serde_json::{json, Value};
use tracing::info;

use crate::plugins::guests;
use crate::shipped_plugins::kit::{self, header, PluginsDir};
use crate::support::{self, Got};

const DEADLINE: Duration = Duration::from_secs(15);

/// The running demo: gateway, services, and a valid token for user `alice`.
pub(crate) struct Demo {
    pub(crate) gw: RunningGateway,
    pub(crate) services: HashMap<&'static str, MockService>,
    pub(crate) token: String,
    _plugins: PluginsDir,
}

/// The demo's config, with ephemeral loopback ports and the test's plugins directory.
fn demo_config(plugins: &PluginsDir, tweak: impl FnOnce(&mut toml::Table)) -> String {
    let file = guests::workspace().join("examples/productdetails/gatehouse.toml");
    let text = std::fs::read_to_string(&file).expect("the demo's gatehouse.toml is readable");
    let mut config: toml::Table = text.parse().expect("the demo's gatehouse.toml is TOML");
    config.insert(
        "listen".into(),
        toml::toml! { public = "127.0.0.1:0" admin = "127.0.0.1:0" }.into(),
    );
    let cache = guests::workspace().join("target/guests/artifact-cache");
    let section = config
        .get_mut("plugins")
        .and_then(toml::Value::as_table_mut)
        .expect("the demo config has a [plugins] table");
    section.insert("dir".into(), plugins.0.display().to_string().into());
    section.insert("cache_dir".into(), cache.display().to_string().into());
    section.insert("watch".into(), false.into());
    tweak(&mut config);
    config.to_string()
}

impl Demo {
    async fn start() -> Demo {
        Demo::start_with(|_| {}).await
    }

    /// The demo with `tweak` applied to its config (e.g. a `[tracing]` table).
    pub(crate) async fn start_with(tweak: impl FnOnce(&mut toml::Table)) -> Demo {
        let plugins = PluginsDir::new();
        let gw = support::gateway(&demo_config(&plugins, tweak)).await;
        let registry = RegistryClient::new(gw.admin_addr, productdetails::REGISTRY_TOKEN);
        let mut services = HashMap::new();
        for kind in ServiceKind::ALL {
            let service = MockService::start(
                kind,
                "127.0.0.1:0".parse().expect("address"),
                &registry,
                Duration::from_secs(1),
            )
            .await
            .expect("a mock service starts and registers");
            services.insert(kind.name(), service);
        }
        let demo = Demo {
            gw,
            services,
            token: token::demo_token("alice", Duration::from_secs(600)),
            _plugins: plugins,
        };
        // Registration reaches the balancer through the registry's watch: wait for it.
        eventually_got(&demo, "all four parts live", |got| {
            got.status == 200 && header(got, "x-gatehouse-degraded").is_none()
        })
        .await;
        demo
    }

    pub(crate) fn url(&self, productid: &str) -> String {
        kit::url(&self.gw, &format!("/productdetails?productid={productid}"))
    }

    async fn get_with(&self, productid: &str, authorization: Option<&str>) -> Got {
        let headers: Vec<(&str, &str)> = authorization
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        support::get(&self.url(productid), &headers).await
    }

    /// `GET /productdetails?productid=42` with alice's token.
    async fn get(&self) -> Got {
        self.get_with("42", Some(&format!("Bearer {}", self.token)))
            .await
    }

    fn take(&mut self, kind: ServiceKind) -> MockService {
        self.services
            .remove(kind.name())
            .expect("the service is running")
    }
}

/// Polls the demo's request until `ok` holds for its answer; that answer.
async fn eventually_got(demo: &Demo, what: &str, ok: impl Fn(&Got) -> bool) -> Got {
    let mut last = None;
    support::eventually(what, DEADLINE, async || {
        let got = demo.get().await;
        let done = ok(&got);
        last = Some(got);
        done
    })
    .await;
    last.expect("polled at least once")
}

/// Polls until the answer is degraded; asserts it is a 200 degraded exactly as `expected`
/// says (the `x-gatehouse-degraded` header); its document.
async fn degraded(demo: &Demo, expected: &str) -> Value {
    let got = eventually_got(demo, expected, |got| {
        header(got, "x-gatehouse-degraded").is_some()
    })
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        header(&got, "x-gatehouse-degraded").as_deref(),
        Some(expected)
    );
    got.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn productdetails_composes_all_four_parts_for_a_valid_jwt() {
    let demo = Demo::start().await;
    let got = demo.get().await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        header(&got, "content-type").as_deref(),
        Some("application/json")
    );
    let doc = got.json();
    assert_eq!(doc["product"]["id"], 42);
    assert_eq!(doc["product"]["name"], "Aeropress Go Travel Coffee Press");
    let recs = doc["recommendations"]["items"]
        .as_array()
        .expect("recommendations.items is a list");
    assert_eq!(recs.len(), 10, "a top-10 list: {doc}");
    assert_eq!(
        doc["recommendations"]["for_user"], "alice",
        "the JWT's sub reaches the services as x-user-id"
    );
    assert!(
        doc["reviews"]["count"].as_u64().is_some_and(|n| n > 0),
        "{doc}"
    );
    assert_eq!(doc["price"]["amount"], 39.95);
    assert_eq!(doc["price"]["currency"], "EUR");
    assert_eq!(doc["price"]["cached"], false, "a live price is marked live");
    assert!(doc.get("_degraded").is_none(), "{doc}");

    info!("an unknown product is product-info's 404, passed on as JSON");
    let got = demo
        .get_with("99", Some(&format!("Bearer {}", demo.token)))
        .await;
    assert_eq!(got.status, 404, "{}", got.text());
    assert_eq!(got.json()["error"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn productdetails_without_a_valid_jwt_is_401() {
    let demo = Demo::start().await;

    let got = demo.get_with("42", None).await;
    assert_eq!(got.status, 401, "{}", got.text());
    assert_eq!(
        header(&got, "www-authenticate").as_deref(),
        Some("Bearer realm=\"gatehouse\"")
    );

    let wrong_key = token::sign_hs256(
        b"another-secret-of-at-least-32-bytes!!",
        &json!({ "sub": "mallory", "iss": productdetails::JWT_ISSUER,
                 "aud": productdetails::JWT_AUDIENCE, "exp": u64::MAX / 2 }),
    );
    let expired = token::sign_hs256(
        productdetails::JWT_SECRET.as_bytes(),
        &json!({ "sub": "alice", "iss": productdetails::JWT_ISSUER,
                 "aud": productdetails::JWT_AUDIENCE, "exp": 1_000_000 }),
    );
    for (token, why) in [
        ("not.a.token".to_string(), "malformed token"),
        (wrong_key, "signature verification failed"),
        (expired, "token expired"),
    ] {
        let got = demo.get_with("42", Some(&format!("Bearer {token}"))).await;
        assert_eq!(got.status, 401, "{why}: {}", got.text());
        let body = got.json();
        assert_eq!(body["error"], "invalid_token");
        assert!(
            body["message"].as_str().is_some_and(|d| d.starts_with(why)),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn productdetails_with_recommendations_down_has_an_empty_list() {
    let mut demo = Demo::start().await;
    info!("recommendations stops: deregisters, closes its listener and connections");
    demo.take(ServiceKind::Recommendations)
        .stop()
        .await
        .expect("recommendations deregisters");

    let doc = degraded(&demo, "recommendations=default").await;
    assert_eq!(doc["recommendations"], json!({ "items": [] }));
    assert_eq!(doc["_degraded"]["recommendations"]["source"], "default");
    assert_eq!(doc["product"]["id"], 42, "the rest is still there");
    assert_eq!(doc["price"]["cached"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn productdetails_with_price_down_serves_the_cached_price_marked_cached() {
    let mut demo = Demo::start().await;
    // Demo::start's last request got a live price, which filled the cache.
    let live = demo.get().await.json();
    assert_eq!(live["price"]["cached"], false, "{live}");

    info!("price crashes: no deregistration, connections refused");
    demo.take(ServiceKind::Price).crash().await;

    let doc = degraded(&demo, "price=cache").await;
    assert_eq!(doc["price"]["cached"], true, "{doc}");
    assert_eq!(doc["price"]["amount"], live["price"]["amount"]);
    assert_eq!(
        doc["price"]["as_of"], live["price"]["as_of"],
        "the price last read, not a new one"
    );
    assert_eq!(doc["_degraded"]["price"]["source"], "cache");
    assert!(doc["_degraded"]["price"]["age_secs"].is_u64(), "{doc}");

    info!("a product whose price was never read has nothing cached: null, marked default");
    let got = demo
        .get_with("7", Some(&format!("Bearer {}", demo.token)))
        .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let doc = got.json();
    assert_eq!(doc["price"], Value::Null);
    assert_eq!(doc["_degraded"]["price"]["source"], "default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn productdetails_with_product_info_down_is_a_502_json_error() {
    let mut demo = Demo::start().await;
    info!("product-info stops: deregisters, closes its listener and connections");
    demo.take(ServiceKind::ProductInfo)
        .stop()
        .await
        .expect("product-info deregisters");

    let got = eventually_got(&demo, "product-info fails the whole", |got| {
        got.status != 200
    })
    .await;
    kit::assert_part_failed(&got, "product", "product-info");
}
