//! Rate limits shared through Redis (docs/scale-out.md): three in-process gateways, one real
//! `redis-server`. Together they allow the configured rate, not three times it; when Redis
//! dies, `on_error = "open"` keeps answering from local counters and `"closed"` answers 503;
//! when it comes back, the limits are shared again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::gateway::RunningGateway;

use crate::shipped_plugins::kit;
use crate::support::redis::RedisServer;
use crate::support::{self, origin::Origin};

/// Three gateways sharing `redis`, each with one route `/api` on `origin` limited by
/// `limit` (a TOML inline table), counters in Redis with `on_error`.
async fn three_gateways(
    redis: &RedisServer,
    origin: &Origin,
    limit: &str,
    on_error: &str,
) -> Vec<RunningGateway> {
    let toml = format!(
        r#"
[redis]
url = "{url}"
timeout = "100ms"
breaker_failures = 2
breaker_cooldown = "200ms"

[rate_limits]
store = "redis"
on_error = "{on_error}"

[[services]]
name = "api"
endpoints = ["{origin}"]

[[routes]]
name = "api"
service = "api"
match = {{ prefix = "/api" }}
rate_limits = [{limit}]
"#,
        url = redis.url(),
        origin = origin.addr,
    );
    let mut gateways = Vec::new();
    for _ in 0..3 {
        gateways.push(support::gateway(&toml).await);
    }
    gateways
}

fn url(gw: &RunningGateway, path: &str) -> String {
    format!("http://{}{path}", gw.public_addr)
}

/// Statuses of `n` requests spread round-robin over `gateways`, with header `x-user: user`.
async fn statuses(gateways: &[RunningGateway], n: usize, user: &str) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let gw = &gateways[i % gateways.len()];
        out.push(
            support::get(&url(gw, "/api/x"), &[("x-user", user)])
                .await
                .status,
        );
    }
    out
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_together_allow_the_configured_quota_not_three_times_it() {
    let redis = RedisServer::start();
    let (origin, hits) = kit::counting_echo().await;
    // Per hour: nothing refills while the test runs, so the count is exact.
    let gateways = three_gateways(
        &redis,
        &origin,
        r#"{ name = "per-user", requests = 10, per = "1h", key = "header:x-user" }"#,
        "closed",
    )
    .await;
    let got = statuses(&gateways, 30, "ann").await;
    assert_eq!(count(&got, 200), 10, "statuses: {got:?}");
    assert_eq!(count(&got, 429), 20, "statuses: {got:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 10);
    // Another key has its own quota, wherever it is charged.
    let got = statuses(&gateways[1..], 12, "bob").await;
    assert_eq!(count(&got, 200), 10, "statuses: {got:?}");
    // The refusal is the usual one: RateLimit fields and a JSON error.
    let refused = support::get(&url(&gateways[2], "/api/x"), &[("x-user", "ann")]).await;
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.json()["error"],
        "rate_limited",
        "{}",
        refused.text()
    );
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(
        refused.headers["ratelimit-policy"],
        "\"per-user\";q=10;w=3600"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_per_second_holds_across_three_gateways() {
    let redis = RedisServer::start();
    let (origin, _) = kit::counting_echo().await;
    const RATE: f64 = 20.0;
    // A second's worth of burst: a client stalled by a busy machine loses no quota it would
    // have had, so the lower bound holds under load too.
    const BURST: f64 = 20.0;
    let gateways = three_gateways(
        &redis,
        &origin,
        r#"{ name = "route", requests = 20, per = "1s", burst = 20, key = "route" }"#,
        "closed",
    )
    .await;
    // Three clients, one per gateway, as fast as they can for a while; the allowed count is
    // compared with the rate over the time actually taken (measured around all of it, so
    // the tolerance covers only the edges, not the machine's speed).
    let allowed = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let run_for = Duration::from_millis(1500);
    let mut clients = Vec::new();
    for gw in &gateways {
        let (allowed, sent, target) = (allowed.clone(), sent.clone(), url(gw, "/api/x"));
        clients.push(tokio::spawn(async move {
            let client = support::http1();
            while start.elapsed() < run_for {
                let got = support::send(&client, "GET", &target, &[], Default::default()).await;
                assert!(matches!(got.status, 200 | 429), "status {}", got.status);
                sent.fetch_add(1, Ordering::SeqCst);
                if got.status == 200 {
                    allowed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for c in clients {
        c.await.expect("client");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let allowed = allowed.load(Ordering::SeqCst) as f64;
    let sent = sent.load(Ordering::SeqCst) as f64;
    let most = BURST + RATE * elapsed;
    assert!(
        sent > 2.0 * most,
        "the clients must offer well over the rate for the test to mean anything ({sent} sent)"
    );
    assert!(
        allowed <= most * 1.1 + 1.0,
        "{allowed} allowed in {elapsed:.2} s; at most {most:.0} at {RATE}/s (one gateway's \
         share times three would be ~{:.0})",
        3.0 * most
    );
    assert!(
        allowed >= BURST + RATE * elapsed * 0.5,
        "{allowed} allowed in {elapsed:.2} s; expected about {most:.0}"
    );
}

/// Sends requests through every gateway until told to stop; counts statuses.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    unavailable: Arc<AtomicUsize>,
    other: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(gateways: &[RunningGateway]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let unavailable = Arc::new(AtomicUsize::new(0));
        let other = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = gateways
            .iter()
            .map(|gw| {
                let target = url(gw, "/api/x");
                let (stop, ok, unavailable, other) =
                    (stop.clone(), ok.clone(), unavailable.clone(), other.clone());
                tokio::spawn(async move {
                    let client = support::http1();
                    while !stop.load(Ordering::SeqCst) {
                        let got =
                            support::send(&client, "GET", &target, &[], Default::default()).await;
                        match got.status {
                            200 => ok.fetch_add(1, Ordering::SeqCst),
                            503 => {
                                assert_eq!(got.json()["error"], "rate_limit_unavailable");
                                unavailable.fetch_add(1, Ordering::SeqCst)
                            }
                            s => {
                                other
                                    .lock()
                                    .expect("lock")
                                    .push(format!("{s} {}", got.text()));
                                0
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            unavailable,
            other,
            tasks,
        }
    }

    async fn ok_after(&self, more: usize) {
        let target = self.ok.load(Ordering::SeqCst) + more;
        support::eventually(
            "requests keep being answered",
            Duration::from_secs(20),
            async || self.ok.load(Ordering::SeqCst) >= target,
        )
        .await;
    }

    async fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let other = self.other.lock().expect("lock").clone();
        (
            self.ok.load(Ordering::SeqCst),
            self.unavailable.load(Ordering::SeqCst),
            other,
        )
    }
}

/// With a strict per-user quota, how many of 9 requests (3 per gateway) are allowed.
async fn shared_quota_check(gateways: &[RunningGateway], user: &str) -> usize {
    count(&statuses(gateways, 9, user).await, 200)
}

const GENEROUS_AND_STRICT: &str = r#"{ name = "all", requests = 100000, per = "1s", key = "route" },
    { name = "per-user", requests = 3, per = "1h", key = "header:x-user", missing = "pass" }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_redis_dies_and_returns_under_load_without_a_failed_request() {
    let mut redis = RedisServer::start();
    let (origin, _) = kit::counting_echo().await;
    let gateways = three_gateways(&redis, &origin, GENEROUS_AND_STRICT, "open").await;
    assert_eq!(
        shared_quota_check(&gateways, "before").await,
        3,
        "shared while Redis is up"
    );

    let load = Load::start(&gateways);
    load.ok_after(30).await;
    redis.stop();
    // Requests go on, counted locally: each gateway now gives a user its own quota.
    load.ok_after(100).await;
    assert_eq!(
        shared_quota_check(&gateways, "during").await,
        9,
        "fail-open: each of the three gateways counts alone while Redis is down"
    );
    redis.restart();
    // Converges: once the breakers probe Redis again, a new user's quota is shared again.
    let mut n = 0;
    support::eventually(
        "limits are shared again after Redis returns",
        Duration::from_secs(20),
        async || {
            n += 1;
            shared_quota_check(&gateways, &format!("after-{n}")).await == 3
        },
    )
    .await;
    load.ok_after(30).await;
    let (ok, unavailable, other) = load.finish().await;
    assert!(ok > 0);
    assert_eq!(unavailable, 0, "fail-open never answers 503");
    assert!(other.is_empty(), "failed requests: {other:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_answers_503_while_redis_is_down_and_recovers_when_it_returns() {
    let mut redis = RedisServer::start();
    let (origin, _) = kit::counting_echo().await;
    let gateways = three_gateways(&redis, &origin, GENEROUS_AND_STRICT, "closed").await;
    let load = Load::start(&gateways);
    load.ok_after(30).await;
    redis.stop();
    support::eventually(
        "503s while Redis is down",
        Duration::from_secs(20),
        async || load.unavailable.load(Ordering::SeqCst) >= 30,
    )
    .await;
    let refused = support::get(&url(&gateways[0], "/api/x"), &[]).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"], "rate_limit_unavailable");
    redis.restart();
    load.ok_after(30).await;
    let mut n = 0;
    support::eventually(
        "limits are shared again after Redis returns",
        Duration::from_secs(20),
        async || {
            n += 1;
            shared_quota_check(&gateways, &format!("after-{n}")).await == 3
        },
    )
    .await;
    let (_, unavailable, other) = load.finish().await;
    assert!(unavailable > 0);
    assert!(other.is_empty(), "answers other than 200 or 503: {other:?}");
    // The breaker and call counts are exported.
    let metrics = support::get(&format!("http://{}/metrics", gateways[0].admin_addr), &[]).await;
    let text = metrics.text();
    assert!(
        text.contains("gatehouse_redis_calls_total{call=\"gcra\",outcome=\"ok\"}"),
        "{text}"
    );
    assert!(text.contains("gatehouse_redis_breaker_open "), "{text}");
    assert!(text.contains("gatehouse_redis_refused_total "), "{text}");
}
