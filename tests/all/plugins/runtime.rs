//! The plugin runtime driven directly through route chains: hooks, isolation, limits,
//! capabilities and failure handling, with real components.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use gatehouse::plugins::{
    Body, ChainRun, OnError, PluginChain, PluginLimits, PluginManager, PluginRef, PluginSettings,
    RequestMeta, RequestOutcome, ServiceCallError, ServiceCaller, UpstreamFailure,
};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use super::guests::{self, TempDir};
use crate::support::eventually;

/// A service caller standing in for the gateway's upstreams: answers after `delay` and
/// records every call that reached it.
pub struct FakeServices {
    pub delay: Duration,
    pub seen: Mutex<Vec<String>>,
}

impl ServiceCaller for FakeServices {
    fn call(
        &self,
        service: &str,
        req: http::Request<Body>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, ServiceCallError>> {
        self.seen
            .lock()
            .expect("not poisoned")
            .push(service.to_string());
        let (delay, body) = (self.delay, format!("{service} says hi to {}", req.uri()));
        let known = service != "ghost";
        let name = service.to_string();
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if !known {
                return Err(ServiceCallError::UnknownService(name));
            }
            Ok(http::Response::new(body_of(body)))
        })
    }
}

pub fn body_of(s: impl Into<Bytes>) -> Body {
    Full::new(s.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Limits small enough for many engines in one test process. The deadline is generous
/// because it is wall time in wasm and tests run many plugins at once on few cores.
pub fn test_limits() -> PluginLimits {
    PluginLimits {
        deadline: Duration::from_millis(1000),
        memory: 32 << 20,
        body_cap: 64 << 10,
        max_instances: 32,
        ..PluginLimits::default()
    }
}

/// A plugin manager over a fresh directory holding `plugins`.
pub struct Kit {
    pub manager: PluginManager,
    /// Kept alive (and removed on drop) with the manager.
    pub _dir: TempDir,
    pub services: Arc<FakeServices>,
}

pub async fn kit(plugins: &[(&str, Vec<u8>)]) -> Kit {
    kit_with(plugins, test_limits(), Duration::from_millis(1)).await
}

pub async fn kit_with(plugins: &[(&str, Vec<u8>)], limits: PluginLimits, delay: Duration) -> Kit {
    kit_tiered(plugins, limits, delay, true).await
}

/// A kit whose plugins load in one compile tier: the loaded version never changes on its own
/// (with tiers, the optimized build replacing the baseline is a new version, with a new
/// pre-init snapshot), for tests that follow one version's snapshot.
pub async fn kit_single_tier(plugins: &[(&str, Vec<u8>)]) -> Kit {
    kit_tiered(plugins, test_limits(), Duration::from_millis(1), false).await
}

async fn kit_tiered(
    plugins: &[(&str, Vec<u8>)],
    limits: PluginLimits,
    delay: Duration,
    tiered: bool,
) -> Kit {
    let dir = TempDir::new("plugins");
    for (name, bytes) in plugins {
        std::fs::write(dir.join(&format!("{name}.wasm")), bytes).expect("write plugin");
    }
    let services = Arc::new(FakeServices {
        delay,
        seen: Mutex::new(Vec::new()),
    });
    let settings = PluginSettings {
        dir: dir.0.clone(),
        // Shared across tests and runs so each guest compiles once.
        cache_dir: Some(guests::workspace().join("target/guests/artifact-cache")),
        watch: false,
        limits,
        tiered,
        ..PluginSettings::default()
    };
    let manager = PluginManager::start(settings, services.clone())
        .await
        .expect("plugin manager starts");
    Kit {
        manager,
        _dir: dir,
        services,
    }
}

pub fn plugin(name: &str, config: Value) -> PluginRef {
    PluginRef {
        name: gatehouse::plugins::PluginName::new(name).expect("valid name"),
        config_json: config.to_string(),
        calls: Vec::new(),
        cache: None,
        reuse_instances: false,
        files: Default::default(),
        limits: Default::default(),
        deadline: None,
        memory: None,
        body_cap: None,
    }
}

/// [`plugin`] with its instances kept between requests (`reuse_instances = true`).
pub fn reused(name: &str, config: Value) -> PluginRef {
    PluginRef {
        reuse_instances: true,
        ..plugin(name, config)
    }
}

impl Kit {
    pub fn chain(&self, plugins: &[PluginRef], on_error: OnError) -> Arc<PluginChain> {
        self.manager.chain("test-route", plugins, on_error)
    }
}

pub fn get(uri: &str) -> http::Request<Body> {
    http::Request::builder()
        .uri(uri)
        .header("x-original", "1")
        .body(body_of(""))
        .expect("valid request")
}

pub fn meta() -> RequestMeta {
    RequestMeta {
        client_addr: Some("127.0.0.1:4242".parse().unwrap()),
        request_id: "req-1".into(),
        client_certificate: None,
        trace: None,
    }
}

async fn json_body(body: Body) -> Value {
    let bytes = body.collect().await.expect("body").to_bytes();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("body is JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// Run the request phase and expect the plugin to answer.
pub async fn answered(chain: &Arc<PluginChain>, req: http::Request<Body>) -> (u16, Value) {
    match chain.start(meta()).on_request(req).await {
        Ok(RequestOutcome::Respond(resp)) => {
            let status = resp.status().as_u16();
            (status, json_body(resp.into_body()).await)
        }
        Ok(RequestOutcome::Continue(_)) => panic!("expected the plugin to answer"),
        Err(f) => panic!("plugin failed: {f}"),
    }
}

/// Run the request phase and expect it to fail; the status and JSON error.
pub async fn failed(chain: &Arc<PluginChain>) -> (u16, Value) {
    match chain.start(meta()).on_request(get("/")).await {
        Err(f) => (f.status().as_u16(), f.to_json()),
        Ok(_) => panic!("expected the plugin to fail"),
    }
}

#[tokio::test]
async fn header_rewrite_changes_request_and_response() {
    let kit = kit(&[("rewrite", guests::bytes("header-rewrite"))]).await;
    let chain = kit.chain(
        &[plugin(
            "rewrite",
            json!({ "request": { "x-added": "yes" }, "response": { "x-resp": "done" } }),
        )],
        OnError::FailClosed,
    );
    let mut run = chain.start(meta());
    let req = match run.on_request(get("/a")).await.expect("no failure") {
        RequestOutcome::Continue(req) => req,
        RequestOutcome::Respond(_) => panic!("header-rewrite never answers"),
    };
    assert_eq!(req.headers()["x-added"], "yes");
    assert_eq!(req.headers()["x-original"], "1");
    let resp = run
        .on_response(http::Response::new(body_of("up")))
        .await
        .expect("no failure");
    assert_eq!(resp.headers()["x-resp"], "done");
}

#[tokio::test]
async fn a_plugin_that_answers_stops_the_chain() {
    let kit = kit(&[
        ("kit", guests::bytes("test-kit")),
        ("rewrite", guests::bytes("header-rewrite")),
    ])
    .await;
    let chain = kit.chain(
        &[
            plugin("kit", json!({ "mode": "deny" })),
            plugin("rewrite", json!({ "request": { "x-never": "1" } })),
        ],
        OnError::FailClosed,
    );
    let (status, body) = answered(&chain, get("/")).await;
    assert_eq!(status, 403);
    // The host adds the request id to a plugin's JSON error.
    assert_eq!(body, json!({ "error": "denied", "request_id": "req-1" }));
}

#[tokio::test]
async fn every_request_gets_a_fresh_instance() {
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let chain = kit.chain(
        &[plugin("kit", json!({ "mode": "tag" }))],
        OnError::FailClosed,
    );
    for _ in 0..20 {
        match chain.start(meta()).on_request(get("/")).await.expect("ok") {
            RequestOutcome::Continue(req) => assert_eq!(
                req.headers()["x-seen"],
                "1",
                "a static counter in the plugin must start from zero on every request"
            ),
            RequestOutcome::Respond(_) => panic!("tag mode continues"),
        }
    }
}

#[tokio::test]
async fn fresh_instances_are_prepared_off_the_request_path_and_used_once() {
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let chain = kit.chain(
        &[plugin("kit", json!({ "mode": "tag" }))],
        OnError::FailClosed,
    );
    assert_eq!(
        chain.shelved(),
        0,
        "nothing is prepared before the first request"
    );
    for _ in 0..5 {
        // After each request the recycler tears its instance down and prepares one fresh
        // instance for the next request.
        assert_eq!(seen_count(&chain, get("/")).await, Ok("1".into()));
        eventually("a prepared instance", Duration::from_secs(5), async || {
            chain.shelved() == 1
        })
        .await;
    }
    // A prepared instance is made before its request: it must still see that request's
    // metadata, not the defaults it was made with.
    let meta_chain = kit.chain(
        &[plugin("kit", json!({ "mode": "meta" }))],
        OnError::FailClosed,
    );
    answered(&meta_chain, get("/")).await;
    eventually("a prepared instance", Duration::from_secs(5), async || {
        meta_chain.shelved() == 1
    })
    .await;
    let (status, body) = answered(&meta_chain, get("/")).await;
    assert_eq!(status, 200);
    assert_eq!(body["request_id"], "req-1");
    assert_eq!(body["client"], "127.0.0.1:4242");
}

/// The `x-seen` counter the test-kit plugin (tag mode) sets: how many requests its
/// instance has served.
async fn seen_count(chain: &Arc<PluginChain>, req: http::Request<Body>) -> Result<String, String> {
    seen_by(&mut chain.start(meta()), req).await
}

/// [`seen_count`] within `run`, which keeps its instance until it is dropped.
async fn seen_by(run: &mut ChainRun, req: http::Request<Body>) -> Result<String, String> {
    match run.on_request(req).await {
        Ok(RequestOutcome::Continue(req)) => {
            Ok(req.headers()["x-seen"].to_str().expect("ascii").to_owned())
        }
        Ok(RequestOutcome::Respond(_)) => panic!("tag mode continues"),
        Err(failure) => Err(failure.to_string()),
    }
}

#[tokio::test]
async fn reuse_instances_keeps_an_instance_until_it_fails() {
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let chain = kit.chain(
        &[reused("kit", json!({ "mode": "tag" }))],
        OnError::FailClosed,
    );
    // Opted in: the same instance serves one request after another, state and all.
    for n in 1..=3 {
        assert_eq!(seen_count(&chain, get("/")).await, Ok(n.to_string()));
    }
    let mut trapping = get("/");
    trapping
        .headers_mut()
        .insert("x-trap", http::HeaderValue::from_static("1"));
    let failure = seen_count(&chain, trapping)
        .await
        .expect_err("the plugin traps");
    assert!(failure.contains("trap"), "{failure}");
    // The instance that trapped is gone; the next request starts a fresh one.
    assert_eq!(seen_count(&chain, get("/")).await, Ok("1".into()));
    assert_eq!(seen_count(&chain, get("/")).await, Ok("2".into()));

    // Another route entry for the same plugin keeps its own instances.
    let other = kit.chain(
        &[reused("kit", json!({ "mode": "tag" }))],
        OnError::FailClosed,
    );
    assert_eq!(seen_count(&other, get("/")).await, Ok("1".into()));
}

#[tokio::test]
async fn reused_instances_are_all_kept_at_a_route_s_concurrency() {
    // Fifty requests in flight at once, then fifty more: every instance of the first round
    // serves the second. (A shelf smaller than the route's concurrency used to tear the
    // surplus down and make it again on every round.)
    const IN_FLIGHT: usize = 50;
    let limits = PluginLimits {
        max_instances: 400,
        ..test_limits()
    };
    let kit = kit_with(
        &[("kit", guests::bytes("test-kit"))],
        limits,
        Duration::ZERO,
    )
    .await;
    let chain = kit.chain(
        &[reused("kit", json!({ "mode": "tag" }))],
        OnError::FailClosed,
    );
    for round in 1..=2 {
        // Each run holds its instance until it is dropped, after the whole round.
        let mut runs = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..IN_FLIGHT {
            let mut run = chain.start(meta());
            seen.push(
                seen_by(&mut run, get("/"))
                    .await
                    .expect("tag mode continues"),
            );
            runs.push(run);
        }
        drop(runs);
        let expected = vec![round.to_string(); IN_FLIGHT];
        assert_eq!(
            seen, expected,
            "round {round}: requests each instance has served"
        );
    }
}

#[tokio::test]
async fn hooks_left_to_the_sdk_defaults_are_skipped_after_their_first_call() {
    // `noop` implements only on_request; `test-kit` implements all three hooks.
    let kit = kit(&[
        ("noop", guests::bytes("noop")),
        ("kit", guests::bytes("test-kit")),
    ])
    .await;
    let skipped = |name: &str| {
        let status = kit.manager.registry().status();
        let status = status.into_iter().find(|s| s.name == name).expect("loaded");
        status.skipped_hooks
    };
    assert!(skipped("noop").is_empty(), "nothing is known before a call");
    for (name, config) in [("noop", json!({})), ("kit", json!({ "mode": "tag" }))] {
        let chain = kit.chain(&[plugin(name, config)], OnError::FailClosed);
        for _ in 0..2 {
            let mut run = chain.start(meta());
            let outcome = run.on_request(get("/")).await.expect("request phase");
            assert!(matches!(outcome, RequestOutcome::Continue(_)));
            let response = http::Response::new(body_of("upstream"));
            let response = run.on_response(response).await.expect("response phase");
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            assert_eq!(
                body, "upstream",
                "a skipped hook leaves the response as it is"
            );
        }
    }
    assert_eq!(
        skipped("noop"),
        ["response"],
        "its default response hook said so"
    );
    assert!(skipped("kit").is_empty(), "implemented hooks never say so");
}

/// The skip holds for an instance that already ran an earlier phase of the same request
/// (the common case: a plugin that implements only `on_request`).
#[tokio::test]
async fn a_default_response_hook_is_not_called_on_an_instance_from_the_request_phase() {
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let chain = kit.chain(
        // One instance serves every request, so its counter sees every call.
        &[reused("kit", json!({ "mode": "request-only" }))],
        OnError::FailClosed,
    );
    let mut calls_before = Vec::new();
    for _ in 0..3 {
        let mut run = chain.start(meta());
        let Ok(RequestOutcome::Continue(req)) = run.on_request(get("/")).await else {
            panic!("request-only mode continues");
        };
        calls_before.push(
            req.headers()["x-response-calls"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        run.on_response(http::Response::new(body_of("upstream")))
            .await
            .expect("response phase");
    }
    assert_eq!(
        calls_before,
        ["0", "1", "1"],
        "on_response said it is a default on its first call and is not called again"
    );
}

#[tokio::test]
async fn context_exposes_route_meta_and_config() {
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let chain = kit.chain(
        &[plugin("kit", json!({ "mode": "meta", "answer": 42 }))],
        OnError::FailClosed,
    );
    let (status, body) = answered(&chain, get("/p/q?x=1")).await;
    assert_eq!(status, 200);
    assert_eq!(body["route"], "test-route");
    assert_eq!(body["client"], "127.0.0.1:4242");
    assert_eq!(body["request_id"], "req-1");
    assert_eq!(body["config"]["answer"], 42);
    assert_eq!(body["path"], "/p/q");
    assert_eq!(body["query"], "x=1");
    assert_eq!(body["method"], "GET");
}

#[tokio::test]
async fn infinite_loop_hits_the_deadline_and_others_keep_working() {
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let looping = kit.chain(
        &[plugin("kit", json!({ "mode": "loop" }))],
        OnError::FailClosed,
    );
    let started = Instant::now();
    let (status, body) = failed(&looping).await;
    assert_eq!(status, 503);
    assert_eq!(body["kind"], "deadline");
    assert_eq!(body["plugin"], "kit");
    assert_eq!(body["phase"], "request");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the deadline (1 s) must stop the loop, took {:?}",
        started.elapsed()
    );
    let fine = kit.chain(
        &[plugin("kit", json!({ "mode": "deny" }))],
        OnError::FailClosed,
    );
    assert_eq!(answered(&fine, get("/")).await.0, 403);
}

/// After a second without calls the epoch ticker slows down (ticker.rs); a plugin that
/// loops must still be stopped at its deadline.
#[tokio::test]
async fn the_deadline_holds_after_the_ticker_went_idle() {
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let ticker = kit.manager.engine().ticker();
    eventually(
        "the ticker slows down",
        Duration::from_secs(20),
        async || ticker.is_idle(),
    )
    .await;
    let looping = kit.chain(
        &[plugin("kit", json!({ "mode": "loop" }))],
        OnError::FailClosed,
    );
    let (status, body) = failed(&looping).await;
    assert_eq!(status, 503);
    assert_eq!(body["kind"], "deadline");
}

#[tokio::test]
async fn memory_bomb_is_out_of_memory() {
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let chain = kit.chain(
        &[plugin("kit", json!({ "mode": "oom" }))],
        OnError::FailClosed,
    );
    let (status, body) = failed(&chain).await;
    assert_eq!(status, 503);
    assert_eq!(body["kind"], "out_of_memory", "{body}");
}

#[tokio::test]
async fn trap_is_500_with_the_panic_message() {
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let chain = kit.chain(
        &[plugin("kit", json!({ "mode": "trap" }))],
        OnError::FailClosed,
    );
    let (status, body) = failed(&chain).await;
    assert_eq!(status, 500);
    assert_eq!(body["kind"], "trap");
    let message = body["message"].as_str().expect("message");
    assert!(message.contains("test-kit asked to trap"), "{message}");
}

#[tokio::test]
async fn a_prepared_instance_reports_only_its_own_stderr() {
    // The recycler makes each prepared instance in the host state its torn-down predecessor
    // left: what that one wrote to stderr must not show up in a later failure's message.
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let chain = kit.chain(
        &[plugin("kit", json!({ "mode": "stderr" }))],
        OnError::FailClosed,
    );
    let mut noted = get("/");
    noted
        .headers_mut()
        .insert("x-note", "from-the-first-request".parse().unwrap());
    match chain.start(meta()).on_request(noted).await {
        Ok(RequestOutcome::Continue(_)) => {}
        Ok(RequestOutcome::Respond(_)) => panic!("stderr mode continues"),
        Err(f) => panic!("plugin failed: {f}"),
    }
    eventually("a prepared instance", Duration::from_secs(5), async || {
        chain.shelved() == 1
    })
    .await;
    let mut trapping = get("/");
    let headers = trapping.headers_mut();
    headers.insert("x-note", "from-the-second-request".parse().unwrap());
    headers.insert("x-trap", "1".parse().unwrap());
    let failure = match chain.start(meta()).on_request(trapping).await {
        Err(f) => f.to_json(),
        Ok(_) => panic!("expected the plugin to trap"),
    };
    let message = failure["message"].as_str().expect("message");
    assert!(message.contains("from-the-second-request"), "{message}");
    assert!(!message.contains("from-the-first-request"), "{message}");
}

#[tokio::test]
async fn prepared_instances_of_two_route_entries_each_see_only_their_own_entry() {
    // Prepared instances are made in the host state a torn-down instance left; requests
    // alternating between two entries of one plugin must each see their own entry's config
    // and a fresh instance (the plugin's counter at one), never the other entry's.
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let first = kit.chain(
        &[plugin("kit", json!({ "mode": "meta", "answer": 1 }))],
        OnError::FailClosed,
    );
    let second = kit.chain(
        &[plugin("kit", json!({ "mode": "meta", "answer": 2 }))],
        OnError::FailClosed,
    );
    for round in 0..4 {
        for (chain, answer) in [(&first, 1), (&second, 2)] {
            let (status, body) = answered(chain, get("/")).await;
            assert_eq!(status, 200);
            assert_eq!(body["config"]["answer"], answer, "round {round}: {body}");
            assert_eq!(body["seen"], 1, "round {round}: {body}");
            eventually("a prepared instance", Duration::from_secs(5), async || {
                chain.shelved() == 1
            })
            .await;
        }
    }
}

#[tokio::test]
async fn huge_response_is_rejected() {
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let chain = kit.chain(
        &[plugin(
            "kit",
            json!({ "mode": "huge-response", "size": 4 << 20 }),
        )],
        OnError::FailClosed,
    );
    let (status, body) = failed(&chain).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["kind"], "bad_output");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("exceeds"),
        "{body}"
    );
}

#[tokio::test]
async fn invalid_header_bytes_are_refused() {
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let chain = kit.chain(
        &[plugin("kit", json!({ "mode": "bad-response-header" }))],
        OnError::FailClosed,
    );
    let (status, body) = failed(&chain).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["kind"], "bad_output");

    let chain = kit.chain(
        &[plugin("kit", json!({ "mode": "bad-set-header" }))],
        OnError::FailClosed,
    );
    let (_, body) = answered(&chain, get("/")).await;
    assert_eq!(
        body,
        json!({ "value": "Err(HeaderError::InvalidValue)", "name": "Err(HeaderError::InvalidName)", "hop": "Err(HeaderError::Forbidden)" })
    );
}

#[tokio::test]
async fn fail_open_skips_the_failing_plugin() {
    let kit = kit(&[
        ("kit", guests::bytes("test-kit")),
        ("rewrite", guests::bytes("header-rewrite")),
    ])
    .await;
    let chain = kit.chain(
        &[
            plugin("kit", json!({ "mode": "trap" })),
            plugin("rewrite", json!({ "request": { "x-after": "ran" } })),
        ],
        OnError::FailOpen,
    );
    match chain
        .start(meta())
        .on_request(get("/"))
        .await
        .expect("fail-open")
    {
        RequestOutcome::Continue(req) => assert_eq!(req.headers()["x-after"], "ran"),
        RequestOutcome::Respond(_) => panic!("should continue"),
    }
}

#[tokio::test]
async fn missing_plugin_fails_closed_with_503() {
    let kit = kit(&[]).await;
    let chain = kit.chain(&[plugin("nowhere", json!({}))], OnError::FailClosed);
    let (status, body) = failed(&chain).await;
    assert_eq!(status, 503);
    assert_eq!(body["kind"], "not_loaded");
}

#[tokio::test]
async fn call_batch_runs_concurrently_and_grants_are_enforced() {
    let delay = Duration::from_millis(300);
    let kit = kit_with(&[("kit", guests::bytes("test-kit"))], test_limits(), delay).await;
    let mut p = plugin(
        "kit",
        json!({ "mode": "call", "services": ["a", "b", "secret"] }),
    );
    p.calls = vec!["a".into(), "b".into()];
    let chain = kit.chain(&[p], OnError::FailClosed);
    let started = Instant::now();
    let (status, body) = answered(&chain, get("/")).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(body["parts"][0]["body"], "a says hi to /part/a");
    assert_eq!(body["parts"][1]["body"], "b says hi to /part/b");
    assert_eq!(
        body["parts"][2]["error"],
        "CallError::NotAllowed(\"secret\")"
    );
    assert!(
        took < delay * 2,
        "two 300 ms calls in a batch must overlap, took {took:?}"
    );
    assert!(
        took >= delay,
        "the call must wait for the service, took {took:?}"
    );
    let seen = kit.services.seen.lock().expect("not poisoned").clone();
    assert!(
        !seen.contains(&"secret".to_string()),
        "an ungranted call reached the caller: {seen:?}"
    );
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn waiting_on_services_does_not_count_against_the_deadline() {
    // 300 ms of service latency against a 100 ms deadline.
    let limits = PluginLimits {
        deadline: Duration::from_millis(100),
        ..test_limits()
    };
    let kit = kit_with(
        &[("kit", guests::bytes("test-kit"))],
        limits,
        Duration::from_millis(300),
    )
    .await;
    let mut p = plugin("kit", json!({ "mode": "call", "services": ["a"] }));
    p.calls = vec!["a".into()];
    let chain = kit.chain(&[p], OnError::FailClosed);
    let (status, body) = answered(&chain, get("/")).await;
    assert_eq!(status, 200);
    assert_eq!(body["parts"][0]["status"], 200);
}

#[tokio::test]
async fn cache_is_shared_across_requests_within_a_namespace() {
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let with_ns = |ns: Option<&str>| {
        let mut p = plugin("kit", json!({ "mode": "cache" }));
        p.cache = ns.map(str::to_string);
        kit.chain(&[p], OnError::FailClosed)
    };
    let a = with_ns(Some("alpha"));
    assert_eq!(answered(&a, get("/")).await.1["hits"], 1);
    assert_eq!(answered(&a, get("/")).await.1["hits"], 2);
    let b = with_ns(Some("beta"));
    assert_eq!(
        answered(&b, get("/")).await.1["hits"],
        1,
        "namespaces are separate"
    );
    let none = with_ns(None);
    let (status, body) = answered(&none, get("/")).await;
    assert_eq!(status, 500);
    assert_eq!(body["error"], "CacheError::NotAllowed");
}

#[tokio::test]
async fn response_phase_edits_status_headers_and_body() {
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let chain = kit.chain(
        &[plugin("kit", json!({ "mode": "response-edit" }))],
        OnError::FailClosed,
    );
    let mut run = chain.start(meta());
    let resp = run
        .on_response(http::Response::new(body_of("upstream")))
        .await
        .expect("no failure");
    assert_eq!(resp.status().as_u16(), 299);
    assert_eq!(resp.headers()["x-edited"], "yes");
    assert_eq!(resp.headers()["content-length"], "15");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"upstream+edited");
}

#[tokio::test]
async fn failure_phase_can_return_a_fallback() {
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let failure = UpstreamFailure {
        kind: "connect".into(),
        message: "connection refused".into(),
    };
    let with = kit.chain(
        &[plugin("kit", json!({ "mode": "tag", "fallback": true }))],
        OnError::FailClosed,
    );
    let resp = with
        .start(meta())
        .on_failure(failure.clone())
        .await
        .expect("no failure")
        .expect("a fallback");
    assert_eq!(resp.status().as_u16(), 200);
    let body = json_body(resp.into_body()).await;
    assert_eq!(body["kind"], "connect");
    let without = kit.chain(
        &[plugin("kit", json!({ "mode": "tag" }))],
        OnError::FailClosed,
    );
    assert!(without
        .start(meta())
        .on_failure(failure)
        .await
        .expect("no failure")
        .is_none());
}

#[tokio::test]
async fn request_body_is_read_and_replaced_within_the_cap() {
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let chain = kit.chain(
        &[plugin("kit", json!({ "mode": "body" }))],
        OnError::FailClosed,
    );
    let req = http::Request::builder()
        .method("POST")
        .uri("/")
        .header("content-length", "5")
        .body(body_of("hello"))
        .expect("request");
    match chain.start(meta()).on_request(req).await.expect("ok") {
        RequestOutcome::Continue(req) => {
            assert_eq!(req.headers()["content-length"], "12");
            let body = req.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(&body[..], b"plugin:hello");
        }
        RequestOutcome::Respond(_) => panic!("should continue"),
    }
    let big = http::Request::builder()
        .method("POST")
        .uri("/")
        .body(body_of(vec![b'x'; 100 << 10]))
        .expect("request");
    let (status, body) = answered(&chain, big).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"], format!("BodyError::TooLarge({})", 64 << 10));
}
