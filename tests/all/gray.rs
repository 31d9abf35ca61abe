//! Gray release by instance metadata and zone-aware balancing, through the real gateway with
//! registry instances (metadata: version, zone) on 127.0.0.1 (docs/traffic.md).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse::discovery::registry::{InstanceSpec, RegistryClient};
use gatehouse::discovery::EndpointMeta;
use gatehouse::gateway::RunningGateway;
use http::Request;
use hyper::body::Incoming;
use tracing::info;

use crate::support::load::Load;
use crate::support::origin::{self, Origin};
use crate::support::{self, eventually, http1, send};

const TOKEN: &str = "s3cret";
const DEADLINE: Duration = Duration::from_secs(10);

/// A registry instance: counts the requests it answers (all but `/health`, which answers
/// `health`).
struct Instance {
    id: &'static str,
    meta: EndpointMeta,
    hits: Arc<AtomicUsize>,
    health: Arc<AtomicU16>,
    origin: Origin,
}

impl Instance {
    async fn start(id: &'static str, version: &str, zone: &str) -> Instance {
        let hits = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(AtomicU16::new(200));
        let origin = {
            let (hits, health) = (hits.clone(), health.clone());
            origin::start(move |req: Request<Incoming>| {
                let code = if req.uri().path() == "/health" {
                    health.load(Ordering::SeqCst)
                } else {
                    hits.fetch_add(1, Ordering::SeqCst);
                    200
                };
                async move { origin::text(code, id) }
            })
            .await
        };
        Instance {
            id,
            meta: EndpointMeta {
                version: Some(version.to_owned()),
                zone: Some(zone.to_owned()),
                ..EndpointMeta::default()
            },
            hits,
            health,
            origin,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn addr(&self) -> SocketAddr {
        self.origin.addr
    }

    fn spec(&self) -> InstanceSpec {
        InstanceSpec {
            id: self.id.to_owned(),
            address: self.addr().ip(),
            port: self.addr().port(),
            meta: self.meta.clone(),
        }
    }

    fn set_health(&self, code: u16) {
        self.health.store(code, Ordering::SeqCst);
    }
}

async fn gateway(service_keys: &str) -> (RunningGateway, RegistryClient) {
    let gw = support::gateway(&format!(
        "[gateway]\nzone = \"eu-1\"\n[registry]\ntoken = \"{TOKEN}\"\n\
         [[services]]\nname = \"api\"\ndiscovery = \"registry\"\n{service_keys}\n\
         [[routes]]\nname = \"all\"\nservice = \"api\"\nmatch = {{ prefix = \"/\" }}\n"
    ))
    .await;
    let registry = RegistryClient::new(gw.admin_addr, TOKEN);
    (gw, registry)
}

async fn register(registry: &RegistryClient, instances: &[&Instance]) {
    for i in instances {
        registry
            .register_once("api", &i.spec())
            .await
            .expect("register");
    }
}

/// Waits until the service's balancer holds `n` backends (a registration reached it).
async fn pool_size(gw: &RunningGateway, n: usize) {
    eventually("the pool sees the registrations", DEADLINE, async || {
        let snapshot = gw.state.load_full();
        let svc = snapshot.upstreams.service("api").expect("service api");
        svc.upstream.pool().all_backends().len() == n
    })
    .await;
}

/// The URL every test here sends its traffic to.
fn work_url(gw: &RunningGateway) -> String {
    format!("http://{}/work", gw.public_addr)
}

/// Sends `n` GETs with `headers`; returns how many got 200.
async fn requests(gw: &RunningGateway, n: usize, headers: &[(&str, &str)]) -> usize {
    let client = http1();
    let url = work_url(gw);
    let mut ok = 0;
    for _ in 0..n {
        let got = send(&client, "GET", &url, headers, Bytes::new()).await;
        ok += usize::from(got.status == 200);
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gray_instances_get_no_traffic_until_a_rule_sends_it() {
    let v1a = Instance::start("v1a", "v1", "eu-1").await;
    let v1b = Instance::start("v1b", "v1", "eu-1").await;
    let v2 = Instance::start("v2", "v2", "eu-1").await;
    let v3 = Instance::start("v3", "v3", "eu-1").await;
    let (gw, registry) = gateway(
        "[[services.gray]]\nmetadata = { version = \"v2\" }\nmatch = { headers = { x-canary = \"*\" } }\n\
         [[services.gray]]\nmetadata = { version = \"v3\" }\nmatch = { cookies = { beta = \"on\" } }\n",
    )
    .await;
    register(&registry, &[&v1a, &v1b, &v2, &v3]).await;
    pool_size(&gw, 4).await;

    info!("plain requests: only the base set (v1)");
    assert_eq!(requests(&gw, 200, &[]).await, 200);
    assert_eq!(
        (v2.hits(), v3.hits()),
        (0, 0),
        "registered gray instances leak no traffic"
    );
    assert_eq!(v1a.hits() + v1b.hits(), 200);
    assert!(
        v1a.hits() > 50 && v1b.hits() > 50,
        "spread over the base set"
    );

    info!("a header sends to v2, a cookie to v3");
    assert_eq!(requests(&gw, 50, &[("x-canary", "1")]).await, 50);
    assert_eq!(v2.hits(), 50);
    assert_eq!(requests(&gw, 50, &[("cookie", "a=b; beta=on")]).await, 50);
    assert_eq!(v3.hits(), 50);
    assert_eq!(requests(&gw, 20, &[("cookie", "beta=off")]).await, 20);
    assert_eq!(
        (v2.hits(), v3.hits()),
        (50, 50),
        "a cookie with another value"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gray_weight_holds_its_share() {
    let v1 = Instance::start("v1", "v1", "eu-1").await;
    let v2 = Instance::start("v2", "v2", "eu-1").await;
    let (gw, registry) =
        gateway("[[services.gray]]\nmetadata = { version = \"v2\" }\nweight = 20\n").await;
    register(&registry, &[&v1, &v2]).await;
    pool_size(&gw, 2).await;
    assert_eq!(requests(&gw, 2000, &[]).await, 2000);
    let share = v2.hits() as f64 / 2000.0;
    info!(share, "v2's share");
    // 20 % of 2000: the standard deviation is about 0.9 %, so ±4 % is over 4 sigma.
    assert!((0.16..0.24).contains(&share), "v2 got {share}");
    assert_eq!(v1.hits() + v2.hits(), 2000);
    let config = support::get(&format!("http://{}/admin/config", gw.admin_addr), &[]).await;
    let gray = &config.json()["services"][0]["gray"][0];
    assert_eq!(
        (
            gray["metadata"]["version"].as_str(),
            gray["weight"].as_u64()
        ),
        (Some("v2"), Some(20))
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gray_traffic_falls_back_to_the_base_set_when_v2_dies() {
    let v1 = Instance::start("v1", "v1", "eu-1").await;
    let v2a = Instance::start("v2a", "v2", "eu-1").await;
    let v2b = Instance::start("v2b", "v2", "eu-1").await;
    let (gw, registry) = gateway(
        "[[services.gray]]\nmetadata = { version = \"v2\" }\nmatch = { headers = { x-canary = \"1\" } }\n\
         [services.health]\npath = \"/health\"\ninterval = \"50ms\"\nunhealthy_threshold = 1\nhealthy_threshold = 1\n",
    )
    .await;
    register(&registry, &[&v1, &v2a, &v2b]).await;
    pool_size(&gw, 3).await;
    let load = Load::start(work_url(&gw), &[("x-canary", "1")], 3);
    load.wait_for(100).await;
    assert_eq!(v1.hits(), 0, "canary traffic stays on v2");

    info!("v2a fails its health check: v2b takes the canary traffic");
    v2a.set_health(503);
    eventually("v2a out of rotation", DEADLINE, async || {
        let before = v2a.hits();
        load.wait_for(30).await;
        v2a.hits() == before
    })
    .await;
    assert_eq!(v1.hits(), 0, "v2b is still there");

    info!("v2b deregisters: canary traffic falls back to v1");
    registry
        .deregister("api", "v2b")
        .await
        .expect("deregister v2b");
    eventually("v1 takes the canary traffic", DEADLINE, async || {
        v1.hits() > 30
    })
    .await;
    let served = load.finish_all_ok().await;
    info!(served, "no request failed");

    info!("v2a heals: canary traffic goes back to it");
    v2a.set_health(200);
    let before = v2a.hits();
    eventually("v2a back", DEADLINE, async || {
        requests(&gw, 5, &[("x-canary", "1")]).await == 5 && v2a.hits() > before
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gray_subset_whose_lease_lapses_falls_back_without_errors() {
    let v1 = Instance::start("v1", "v1", "eu-1").await;
    let v2 = Instance::start("v2", "v2", "eu-1").await;
    let gw = support::gateway(&format!(
        "[registry]\ntoken = \"{TOKEN}\"\nlease = \"600ms\"\nheartbeat = \"100ms\"\n\
         eviction_interval = \"100ms\"\nself_preservation = 1.0\n\
         [[services]]\nname = \"api\"\ndiscovery = \"registry\"\n\
         [[services.gray]]\nmetadata = {{ version = \"v2\" }}\nweight = 50\n\
         [[routes]]\nname = \"all\"\nservice = \"api\"\nmatch = {{ prefix = \"/\" }}\n"
    ))
    .await;
    let registry = RegistryClient::new(gw.admin_addr, TOKEN);
    // v1 keeps its lease by heartbeat; v2 registers once and goes silent.
    let _v1 = registry
        .register("api", v1.spec(), Duration::from_millis(100))
        .await
        .expect("register v1");
    registry
        .register_once("api", &v2.spec())
        .await
        .expect("register v2");
    pool_size(&gw, 2).await;
    let load = Load::start(work_url(&gw), &[], 3);
    eventually("v2 takes its share", DEADLINE, async || v2.hits() > 20).await;
    pool_size(&gw, 1).await;
    let settled = v2.hits();
    load.wait_for(200).await;
    load.finish_all_ok().await;
    assert_eq!(v2.hits(), settled, "an evicted gray instance gets nothing");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_aware_prefers_the_local_zone_and_spills_over() {
    let eu_a = Instance::start("eu-a", "v1", "eu-1").await;
    let eu_b = Instance::start("eu-b", "v1", "eu-1").await;
    let us = Instance::start("us", "v1", "us-1").await;
    let (gw, registry) = gateway(
        "zone_aware = true\nzone_min_healthy = 2\nbalance = \"least-request\"\n\
         [services.health]\npath = \"/health\"\ninterval = \"50ms\"\nunhealthy_threshold = 1\nhealthy_threshold = 1\n",
    )
    .await;
    register(&registry, &[&eu_a, &eu_b, &us]).await;
    pool_size(&gw, 3).await;
    assert_eq!(requests(&gw, 100, &[]).await, 100);
    assert_eq!(
        us.hits(),
        0,
        "two healthy local instances keep traffic in eu-1"
    );

    info!("eu-a fails: one local instance is below the minimum of 2, spill over");
    let load = Load::start(work_url(&gw), &[], 3);
    load.wait_for(50).await;
    eu_a.set_health(503);
    eventually("us takes traffic", DEADLINE, async || us.hits() > 20).await;
    assert!(eu_b.hits() > 50, "the healthy local instance still serves");

    info!("eu-a heals: traffic returns to eu-1");
    eu_a.set_health(200);
    eventually("back in eu-1", DEADLINE, async || {
        let before = us.hits();
        load.wait_for(50).await;
        us.hits() == before
    })
    .await;

    info!("both local instances die: all traffic to us-1");
    eu_a.set_health(503);
    eu_b.set_health(503);
    eventually("only us serves", DEADLINE, async || {
        let before = (eu_a.hits(), eu_b.hits());
        load.wait_for(30).await;
        (eu_a.hits(), eu_b.hits()) == before
    })
    .await;
    load.finish_all_ok().await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_apply_inside_a_gray_subset() {
    let v1 = Instance::start("v1", "v1", "eu-1").await;
    let v2_eu = Instance::start("v2-eu", "v2", "eu-1").await;
    let v2_us = Instance::start("v2-us", "v2", "us-1").await;
    let (gw, registry) = gateway(
        "zone_aware = true\n\
         [[services.gray]]\nmetadata = { version = \"v2\" }\nmatch = { query = { gray = \"1\" } }\n",
    )
    .await;
    register(&registry, &[&v1, &v2_eu, &v2_us]).await;
    pool_size(&gw, 3).await;
    let client = http1();
    for _ in 0..40 {
        let url = format!("http://{}/work?gray=1", gw.public_addr);
        assert_eq!(
            send(&client, "GET", &url, &[], Bytes::new()).await.status,
            200
        );
    }
    assert_eq!((v2_eu.hits(), v2_us.hits(), v1.hits()), (40, 0, 0));
    info!("the local v2 leaves: the subset spills over to us-1, not to v1");
    registry
        .deregister("api", "v2-eu")
        .await
        .expect("deregister");
    pool_size(&gw, 2).await;
    for _ in 0..20 {
        let url = format!("http://{}/work?gray=1", gw.public_addr);
        assert_eq!(
            send(&client, "GET", &url, &[], Bytes::new()).await.status,
            200
        );
    }
    assert_eq!((v2_us.hits(), v1.hits()), (20, 0));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_by_reload_moves_traffic_to_v2_without_a_failed_request() {
    let v1 = Instance::start("v1", "v1", "eu-1").await;
    let v2 = Instance::start("v2", "v2", "eu-1").await;
    let dir = crate::plugins::guests::TempDir::new("gray-rollout");
    let text = |weight: u8| {
        format!(
            "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[admin]\ntoken = \"{TOKEN}\"\n\
             [registry]\ntoken = \"{TOKEN}\"\n\
             [[services]]\nname = \"api\"\ndiscovery = \"registry\"\n\
             [[services.gray]]\nmetadata = {{ version = \"v2\" }}\nweight = {weight}\n\
             [[routes]]\nname = \"all\"\nservice = \"api\"\nmatch = {{ prefix = \"/\" }}\n"
        )
    };
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, text(0)).expect("write config");
    let config = gatehouse::config::load_file(&path).expect("valid config");
    let gw = gatehouse::gateway::start(config)
        .await
        .expect("gateway starts");
    let registry = RegistryClient::new(gw.admin_addr, TOKEN);
    register(&registry, &[&v1, &v2]).await;
    pool_size(&gw, 2).await;
    let reload = async |weight: u8| {
        std::fs::write(&path, text(weight)).expect("rewrite config");
        let got = send(
            &http1(),
            "POST",
            &format!("http://{}/admin/reload", gw.admin_addr),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            Bytes::new(),
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.text());
    };

    let load = Load::start(work_url(&gw), &[], 3);
    load.wait_for(100).await;
    assert_eq!(v2.hits(), 0, "weight 0: v2 is registered but idle");
    info!("weight 50");
    reload(50).await;
    eventually("v2 takes traffic", DEADLINE, async || v2.hits() > 50).await;
    info!("weight 100");
    reload(100).await;
    eventually("v1 gets nothing new", DEADLINE, async || {
        let before = v1.hits();
        load.wait_for(50).await;
        v1.hits() == before
    })
    .await;
    let served = load.finish_all_ok().await;
    info!(served, "rollout without a failed request");
    gw.shutdown().await;
}
