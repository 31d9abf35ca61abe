//! Discovery, registry, balancing, health and resilience through the real gateway, with real
//! backends on 127.0.0.1:0 that the tests can fail, heal and kill.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gatehouse::discovery::registry::{InstanceSpec, RegistryClient};
use gatehouse::discovery::EndpointMeta;
use gatehouse::gateway::RunningGateway;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tracing::info;

use crate::support::load::{assert_all_ok, Load};
use crate::support::{self, eventually, get, http1, send};

const TOKEN: &str = "s3cret";
const DEADLINE: Duration = Duration::from_secs(10);

/// A backend whose answers the test controls: every request but `/health` counts as a hit
/// and gets `status` with the backend's name as body; `/health` gets `health`. `kill` closes
/// the listener and every open connection, like a crashed process.
struct Backend {
    name: &'static str,
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    status: Arc<AtomicU16>,
    health: Arc<AtomicU16>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Backend {
    async fn start(name: &'static str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let status = Arc::new(AtomicU16::new(200));
        let health = Arc::new(AtomicU16::new(200));
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = {
            let (hits, status, health, tasks) =
                (hits.clone(), status.clone(), health.clone(), tasks.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (hits, status, health) = (hits.clone(), status.clone(), health.clone());
                    let conn = tokio::spawn(async move {
                        let service =
                            service_fn(move |req: http::Request<hyper::body::Incoming>| {
                                let code = if req.uri().path() == "/health" {
                                    health.load(Ordering::SeqCst)
                                } else {
                                    hits.fetch_add(1, Ordering::SeqCst);
                                    status.load(Ordering::SeqCst)
                                };
                                async move {
                                    let mut r = Response::new(Full::new(Bytes::from(name)));
                                    *r.status_mut() =
                                        http::StatusCode::from_u16(code).expect("valid status");
                                    Ok::<_, Infallible>(r)
                                }
                            });
                        // A connection error ends only this connection.
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                    tasks.lock().expect("tasks lock").push(conn.abort_handle());
                }
            })
        };
        tasks
            .lock()
            .expect("tasks lock")
            .push(accept.abort_handle());
        Backend {
            name,
            addr,
            hits,
            status,
            health,
            tasks,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    fn set_health(&self, code: u16) {
        self.health.store(code, Ordering::SeqCst);
    }

    fn kill(&self) {
        for t in self.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
    }

    fn spec(&self) -> InstanceSpec {
        InstanceSpec {
            id: self.name.to_owned(),
            address: self.addr.ip(),
            port: self.addr.port(),
            meta: EndpointMeta::default(),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn endpoints(backends: &[&Backend]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!("[{}]", list.join(", "))
}

fn route(service: &str) -> String {
    format!("[[routes]]\nname = \"all\"\nservice = \"{service}\"\nmatch = {{ prefix = \"/\" }}\n")
}

fn url(gw: &RunningGateway, path: &str) -> String {
    format!("http://{}{}", gw.public_addr, path)
}

/// How many endpoints the service's balancer currently spreads over.
fn balancer_size(gw: &RunningGateway, service: &str) -> usize {
    let snapshot = gw.state.load_full();
    let svc = snapshot.upstreams.service(service).expect("service exists");
    svc.upstream.pool().balancer().backends().len()
}

async fn registry_list(gw: &RunningGateway, service: &str) -> serde_json::Value {
    let got = get(
        &format!("http://{}/registry/services/{service}", gw.admin_addr),
        &[],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    got.json()
}

async fn instance_ids(gw: &RunningGateway, service: &str) -> Vec<String> {
    let v = registry_list(gw, service).await;
    let mut ids: Vec<String> = v["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_mid_traffic_costs_no_client_error() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let gw = support::gateway(&format!(
        "[[services]]\nname = \"api\"\nendpoints = {}\n\
         [services.retry]\nmax_retries = 2\nbudget_min_per_sec = 1000\n\
         [services.outlier]\nconsecutive_failures = 1\nbase_ejection = \"30s\"\n{}",
        endpoints(&[&a, &b, &c]),
        route("api")
    ))
    .await;
    let load = Load::start(url(&gw, "/work"), &[], 4);
    load.wait_for(200).await;
    info!("killing b mid-traffic");
    b.kill();
    let b_hits = b.hits();
    load.wait_for(400).await;
    let statuses = load.finish().await;
    assert_all_ok(&statuses);
    assert_eq!(b.hits(), b_hits, "a killed backend answers nothing");
    assert!(
        a.hits() > 100 && c.hits() > 100,
        "a={} c={}",
        a.hits(),
        c.hits()
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_register_and_deregister_under_load() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let gw = support::gateway(&format!(
        "[registry]\ntoken = \"{TOKEN}\"\n\
         [[services]]\nname = \"api\"\ndiscovery = \"registry\"\nbalance = \"least-request\"\n{}",
        route("api")
    ))
    .await;
    let registry = RegistryClient::new(gw.admin_addr, TOKEN);
    registry
        .register_once("api", &a.spec())
        .await
        .expect("register a");
    registry
        .register_once("api", &b.spec())
        .await
        .expect("register b");
    let load = Load::start(url(&gw, "/work"), &[], 4);
    load.wait_for(100).await;

    info!("registering c under load");
    registry
        .register_once("api", &c.spec())
        .await
        .expect("register c");
    eventually("c takes traffic", DEADLINE, async || c.hits() > 20).await;

    info!("deregistering a under load");
    registry.deregister("api", "a").await.expect("deregister a");
    // Requests already sent to a finish there; after that it gets nothing.
    load.wait_for(50).await;
    let settled = a.hits();
    load.wait_for(300).await;
    let statuses = load.finish().await;
    assert_eq!(a.hits(), settled, "no traffic to a deregistered instance");
    assert_all_ok(&statuses);
    assert_eq!(instance_ids(&gw, "api").await, ["b", "c"]);
    gw.shutdown().await;
}

const SHORT_LEASES: &str =
    "[registry]\ntoken = \"s3cret\"\nlease = \"600ms\"\nheartbeat = \"100ms\"\n\
    eviction_interval = \"100ms\"\nself_preservation = 0.5\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_removes_the_instance() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let gw = support::gateway(&format!(
        "{SHORT_LEASES}[[services]]\nname = \"api\"\ndiscovery = \"registry\"\n{}",
        route("api")
    ))
    .await;
    let registry = RegistryClient::new(gw.admin_addr, TOKEN);
    let beat = Duration::from_millis(100);
    let _a = registry
        .register("api", a.spec(), beat)
        .await
        .expect("register a");
    let _b = registry
        .register("api", b.spec(), beat)
        .await
        .expect("register b");
    // c registers and then goes silent, as a crashed instance would.
    registry
        .register_once("api", &c.spec())
        .await
        .expect("register c");
    assert_eq!(instance_ids(&gw, "api").await, ["a", "b", "c"]);
    eventually("c's lease lapses", DEADLINE, async || {
        instance_ids(&gw, "api").await == ["a", "b"]
    })
    .await;
    let c_hits = c.hits();
    for _ in 0..30 {
        assert_eq!(get(&url(&gw, "/x"), &[]).await.status, 200);
    }
    assert_eq!(c.hits(), c_hits, "no traffic to an evicted instance");
    // The heartbeating ones are still there well past one lease.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(instance_ids(&gw, "api").await, ["a", "b"]);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_expiry_triggers_self_preservation() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let gw = support::gateway(&format!(
        "{SHORT_LEASES}[[services]]\nname = \"api\"\ndiscovery = \"registry\"\n{}",
        route("api")
    ))
    .await;
    let registry = RegistryClient::new(gw.admin_addr, TOKEN);
    for backend in [&a, &b, &c] {
        registry
            .register_once("api", &backend.spec())
            .await
            .expect("register");
    }
    // Nobody heartbeats: all three leases lapse in the same sweep (3/3 > 0.5).
    eventually("self-preservation engages", DEADLINE, async || {
        let v = get(&format!("http://{}/registry/services", gw.admin_addr), &[])
            .await
            .json();
        v["services"][0]["self_preservation"] == true
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let v = registry_list(&gw, "api").await;
    let ages: Vec<f64> = v["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["last_renewal_age_secs"].as_f64().expect("age"))
        .collect();
    assert_eq!(ages.len(), 3, "all instances kept: {v}");
    assert!(
        ages.iter().all(|&age| age > 0.6),
        "kept past their lease: {ages:?}"
    );
    for _ in 0..9 {
        assert_eq!(get(&url(&gw, "/x"), &[]).await.status, 200);
    }
    assert!(
        a.hits() > 0 && b.hits() > 0 && c.hits() > 0,
        "all still take traffic"
    );

    // Once two renew, the last one alone is an ordinary expiry.
    registry.renew("api", "a").await.expect("renew a");
    registry.renew("api", "b").await.expect("renew b");
    eventually("c is evicted", DEADLINE, async || {
        registry.renew("api", "a").await.is_ok()
            && registry.renew("api", "b").await.is_ok()
            && instance_ids(&gw, "api").await == ["a", "b"]
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_balancing_is_sticky_and_remaps_only_the_leavers_keys() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
        Backend::start("d").await,
    ];
    let gw = support::gateway(&format!(
        "[registry]\ntoken = \"{TOKEN}\"\n\
         [[services]]\nname = \"api\"\ndiscovery = \"registry\"\nbalance = \"hash\"\nhash_key = \"header:x-user\"\n{}",
        route("api")
    ))
    .await;
    let registry = RegistryClient::new(gw.admin_addr, TOKEN);
    for b in &backends {
        registry
            .register_once("api", &b.spec())
            .await
            .expect("register");
    }
    // Registrations reach the balancer asynchronously: measure only once all four are in.
    eventually(
        "all four instances reach the balancer",
        DEADLINE,
        async || balancer_size(&gw, "api") == 4,
    )
    .await;
    let users: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let owners = async || {
        let mut out = Vec::new();
        for u in &users {
            let got = get(&url(&gw, "/x"), &[("x-user", u)]).await;
            assert_eq!(got.status, 200);
            out.push(got.text());
        }
        out
    };
    let before = owners().await;
    assert_eq!(
        owners().await,
        before,
        "the same key goes to the same instance"
    );
    let d_share = before.iter().filter(|o| *o == "d").count();
    assert!(d_share > 10, "d owns a fair share: {d_share}");

    registry.deregister("api", "d").await.expect("deregister d");
    eventually("d leaves the balancer", DEADLINE, async || {
        balancer_size(&gw, "api") == 3
    })
    .await;
    let after = owners().await;
    let mut moved = 0;
    for (old, new) in before.iter().zip(&after) {
        if old != new {
            assert_eq!(old, "d", "a key of a remaining instance moved");
            moved += 1;
        }
    }
    assert_eq!(moved, d_share, "every key of d moved, nothing else");
    let share = moved as f64 / users.len() as f64;
    assert!(
        (0.1..0.4).contains(&share),
        "remapped share {share} (ideal 0.25)"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outlier_is_ejected_and_returns_when_healthy() {
    let (good, bad) = (Backend::start("good").await, Backend::start("bad").await);
    bad.set_status(500);
    let gw = support::gateway(&format!(
        "[[services]]\nname = \"api\"\nendpoints = {}\n\
         [services.outlier]\nconsecutive_failures = 3\nbase_ejection = \"1s\"\n{}",
        endpoints(&[&good, &bad]),
        route("api")
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(get(&url(&gw, "/x"), &[]).await.status);
    }
    assert_eq!(
        bad.hits(),
        3,
        "ejected after three consecutive 5xx: {statuses:?}"
    );
    for _ in 0..10 {
        assert_eq!(
            get(&url(&gw, "/x"), &[]).await.status,
            200,
            "only the good one serves"
        );
    }
    assert_eq!(bad.hits(), 3);

    info!("bad recovers; it returns after its one-second ejection");
    bad.set_status(200);
    eventually("bad serves again", DEADLINE, async || {
        get(&url(&gw, "/x"), &[]).await.status == 200 && bad.hits() > 3
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_take_an_instance_out_and_back() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let gw = support::gateway(&format!(
        "[[services]]\nname = \"api\"\nendpoints = {}\n\
         [services.health]\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"1s\"\n\
         healthy_threshold = 1\nunhealthy_threshold = 2\n{}",
        endpoints(&[&a, &b]),
        route("api")
    ))
    .await;
    a.set_health(503);
    eventually("a leaves the rotation", DEADLINE, async || {
        let before = a.hits();
        for _ in 0..6 {
            get(&url(&gw, "/x"), &[]).await;
        }
        a.hits() == before
    })
    .await;
    a.set_health(200);
    eventually("a returns", DEADLINE, async || {
        let before = a.hits();
        get(&url(&gw, "/x"), &[]).await;
        get(&url(&gw, "/x"), &[]).await;
        a.hits() > before
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_unhealthy_is_panic_mode_not_an_outage() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    a.set_health(503);
    b.set_health(503);
    let gw = support::gateway(&format!(
        "[[services]]\nname = \"api\"\nendpoints = {}\n\
         [services.health]\npath = \"/health\"\ninterval = \"50ms\"\nunhealthy_threshold = 1\n{}",
        endpoints(&[&a, &b]),
        route("api")
    ))
    .await;
    let svc = gw.state.load_full();
    let pool = svc
        .upstreams
        .service("api")
        .expect("service")
        .upstream
        .pool()
        .clone();
    eventually("both marked unhealthy", DEADLINE, async || {
        pool.balancer().is_panic()
    })
    .await;
    for _ in 0..4 {
        assert_eq!(get(&url(&gw, "/x"), &[]).await.status, 200);
    }
    assert!(a.hits() > 0 && b.hits() > 0, "panic mode spreads over all");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_fast_and_closes_after_a_half_open_probe() {
    let a = Backend::start("a").await;
    a.set_status(500);
    let gw = support::gateway(&format!(
        "[[services]]\nname = \"api\"\nendpoints = {}\n\
         [services.breaker]\nmin_requests = 4\nfailure_rate = 0.5\nopen_for = \"500ms\"\nhalf_open_probes = 1\n{}",
        endpoints(&[&a]),
        route("api")
    ))
    .await;
    for _ in 0..4 {
        assert_eq!(
            get(&url(&gw, "/x"), &[]).await.status,
            500,
            "the upstream's own 500"
        );
    }
    let open = get(&url(&gw, "/x"), &[]).await;
    assert_eq!(open.status, 503);
    assert_eq!(open.headers["x-gatehouse-failure"], "circuit-open");
    assert_eq!(open.json()["error"], "circuit_open");
    assert_eq!(a.hits(), 4, "an open circuit sends nothing upstream");

    a.set_status(200);
    eventually(
        "a half-open probe closes the circuit",
        DEADLINE,
        async || get(&url(&gw, "/x"), &[]).await.status == 200,
    )
    .await;
    for _ in 0..5 {
        assert_eq!(get(&url(&gw, "/x"), &[]).await.status, 200, "closed again");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_extra_load() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    a.set_status(502);
    b.set_status(502);
    let gw = support::gateway(&format!(
        "[[services]]\nname = \"api\"\nendpoints = {}\n\
         [services.retry]\nmax_retries = 2\nbackoff = \"1ms\"\nbudget_ratio = 0.2\nbudget_min_per_sec = 0\n{}",
        endpoints(&[&a, &b]),
        route("api")
    ))
    .await;
    for _ in 0..100 {
        assert_eq!(get(&url(&gw, "/x"), &[]).await.status, 502);
    }
    let load = a.hits() + b.hits();
    // Without a budget: 300 tries. With 20 %: 100 first tries + at most 20 retries.
    assert!(
        (115..=120).contains(&load),
        "upstream saw {load} tries for 100 requests"
    );

    info!("non-idempotent methods are not retried on a 5xx");
    let before = a.hits() + b.hits();
    let got = send(
        &http1(),
        "POST",
        &url(&gw, "/x"),
        &[],
        Bytes::from_static(b"x"),
    )
    .await;
    assert_eq!(got.status, 502);
    assert_eq!(a.hits() + b.hits(), before + 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_go_to_another_instance() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    a.set_status(503);
    let gw = support::gateway(&format!(
        "[[services]]\nname = \"api\"\nendpoints = {}\n\
         [services.retry]\nmax_retries = 1\nbackoff = \"1ms\"\n{}",
        endpoints(&[&a, &b]),
        route("api")
    ))
    .await;
    for _ in 0..10 {
        let got = get(&url(&gw, "/x"), &[]).await;
        assert_eq!((got.status, got.text().as_str()), (200, "b"));
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_discovery_resolves_localhost() {
    let a = Backend::start("a").await;
    let gw = support::gateway(&format!(
        "[[services]]\nname = \"api\"\ndiscovery = \"dns\"\ndns_name = \"localhost\"\n\
         dns_port = {}\ndns_interval = \"1s\"\n\
         [services.retry]\nmax_retries = 2\n{}",
        a.addr.port(),
        route("api")
    ))
    .await;
    eventually("DNS endpoints arrive", DEADLINE, async || {
        get(&url(&gw, "/x"), &[]).await.status == 200
    })
    .await;
    assert!(a.hits() > 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_api_checks_tokens_and_input() {
    let gw = support::gateway(&format!(
        "[registry]\ntoken = \"{TOKEN}\"\n[[services]]\nname = \"api\"\ndiscovery = \"registry\"\n{}",
        route("api")
    ))
    .await;
    let base = format!("http://{}/registry/services/api/instances", gw.admin_addr);
    let body = Bytes::from_static(br#"{"id":"x","address":"127.0.0.1","port":99999}"#);
    let auth = format!("Bearer {TOKEN}");
    let got = send(&http1(), "POST", &base, &[], body.clone()).await;
    assert_eq!(got.status, 401);
    let got = send(&http1(), "POST", &base, &[("authorization", &auth)], body).await;
    assert_eq!(got.status, 400);
    assert!(
        got.json()["message"]
            .as_str()
            .unwrap_or("")
            .contains("port 99999"),
        "{}",
        got.text()
    );
    let got = send(
        &http1(),
        "PUT",
        &format!("{base}/nobody"),
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        (got.status, got.json()["error"].as_str()),
        (404, Some("unknown_instance"))
    );
    let config = get(&format!("http://{}/admin/config", gw.admin_addr), &[])
        .await
        .json();
    assert_eq!(config["services"][0]["discovery"], "registry");
    assert_eq!(config["services"][0]["balance"], "round-robin");
    // No instance yet: the service answers 503 marked no-endpoints.
    let got = get(&url(&gw, "/x"), &[]).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.headers["x-gatehouse-failure"], "no-endpoints");
    gw.shutdown().await;
}
