//! Plugin overhead: per-request cost of a no-op and a header-rewriting plugin vs. none, through
//! the chain alone (criterion) and through the whole gateway (throughput and p50 under load);
//! and start-up time with 10 plugins, cold vs. warm artifact cache.
//!
//! `cargo bench -p gatehouse --bench plugins` (builds the guest plugins first).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use gatehouse::body;
use gatehouse::plugins::runtime::cache::PluginCache;
use gatehouse::plugins::runtime::capabilities::{Grants, PluginEnv};
use gatehouse::plugins::runtime::host_impl::PluginCtx;
use gatehouse::plugins::{
    NoServices, OnError, PluginLimits, PluginManager, PluginName, PluginRef, PluginSettings,
    RequestMeta, RequestOutcome,
};
use http_body_util::{BodyExt, Full};

// The gateway binary's allocator (see host/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(dead_code)]
#[path = "../tests/all/plugins/guests.rs"]
mod guests;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn plugin(name: &str, config: serde_json::Value) -> PluginRef {
    PluginRef {
        name: PluginName::new(name).expect("name"),
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

fn request() -> http::Request<body::Body> {
    let mut b = http::Request::builder().uri("/bench?x=1");
    for i in 0..10 {
        b = b.header(format!("x-header-{i}"), "some value of moderate length");
    }
    b.body(body::full("")).expect("request")
}

/// One request through `chain`: request phase + response phase, as the pipeline runs them.
async fn run_chain(chain: &Arc<gatehouse::plugins::PluginChain>) -> body::Body {
    let req = request();
    if chain.is_empty() {
        return std::hint::black_box(req).into_body();
    }
    let mut run = chain.start(RequestMeta::default());
    let req = match run.on_request(req).await.expect("ok") {
        RequestOutcome::Continue(r) => r,
        RequestOutcome::Respond(_) => unreachable!("no plugin answers here"),
    };
    let resp = run
        .on_response(http::Response::new(body::full("ok")))
        .await
        .expect("ok");
    std::hint::black_box(req);
    resp.into_body()
}

/// Lets tasks the last request spawned (the recycler's) run to completion, as an idle worker
/// would before its next request.
async fn between_requests() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

/// The chain alone: request phase + response phase, as the pipeline runs them.
fn chain_overhead(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let dir = guests::TempDir::new("bench-chain");
    std::fs::write(dir.join("noop.wasm"), guests::bytes("noop")).expect("write");
    std::fs::write(dir.join("rewrite.wasm"), guests::bytes("header-rewrite")).expect("write");
    let manager = rt.block_on(async {
        PluginManager::start(
            PluginSettings {
                dir: dir.0.clone(),
                cache_dir: Some(guests::workspace().join("target/guests/artifact-cache")),
                watch: false,
                // Measure the optimized (Cranelift) code, not the baseline build.
                tiered: false,
                ..PluginSettings::default()
            },
            Arc::new(NoServices),
        )
        .await
        .expect("manager")
    });
    let chains = [
        ("none", manager.chain("r", &[], OnError::FailClosed)),
        (
            "noop",
            manager.chain(
                "r",
                &[plugin("noop", serde_json::json!({}))],
                OnError::FailClosed,
            ),
        ),
        (
            "header-rewrite",
            manager.chain(
                "r",
                &[plugin(
                    "rewrite",
                    serde_json::json!({ "request": { "x-a": "1" }, "response": { "x-b": "2" } }),
                )],
                OnError::FailClosed,
            ),
        ),
    ];
    // The same plugins with instances kept between requests (`reuse_instances = true`).
    let reused = |name: &str, config: serde_json::Value| PluginRef {
        reuse_instances: true,
        ..plugin(name, config)
    };
    let chains: Vec<_> = chains
        .into_iter()
        .chain([
            (
                "noop (reuse)",
                manager.chain(
                    "r",
                    &[reused("noop", serde_json::json!({}))],
                    OnError::FailClosed,
                ),
            ),
            (
                "header-rewrite (reuse)",
                manager.chain(
                    "r",
                    &[reused(
                        "rewrite",
                        serde_json::json!({ "request": { "x-a": "1" }, "response": { "x-b": "2" } }),
                    )],
                    OnError::FailClosed,
                ),
            ),
        ])
        .collect();
    let mut group = c.benchmark_group("plugin-chain");
    group
        .measurement_time(Duration::from_secs(4))
        .sample_size(30);
    // As on a gateway worker at light load: the chain runs on a single-threaded runtime, and
    // the recycler's work (tearing the used instance down, preparing the next) runs on that
    // same thread between requests, outside the timed part.
    let worker = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (name, chain) in &chains {
        group.bench_function(*name, |b| {
            b.iter_custom(|iterations| {
                let mut timed = Duration::ZERO;
                for _ in 0..iterations {
                    let started = Instant::now();
                    let body = worker.block_on(run_chain(chain));
                    timed += started.elapsed();
                    drop(body);
                    worker.block_on(between_requests());
                }
                timed
            })
        });
    }
    group.finish();

    // Where the time goes: the per-request store state alone, and a fresh instance alone.
    let mut parts = c.benchmark_group("plugin-parts");
    parts
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    let env = Arc::new(PluginEnv {
        name: PluginName::new("noop").expect("name"),
        route: "r".into(),
        config: "{}".into(),
        grants: Grants::default(),
        services: Arc::new(NoServices),
        cache: Arc::new(PluginCache::new(1)),
        shelf: Default::default(),
        snapshots: Default::default(),
        limits: manager.engine().limits().entry(None, None, None),
    });
    let meta = Arc::new(RequestMeta::default());
    let limits = manager.engine().limits().clone();
    let ticker = manager.engine().ticker();
    parts.bench_function("store-state", |b| {
        b.iter(|| {
            PluginCtx::new(
                env.clone(),
                meta.clone(),
                "bench".into(),
                limits.memory,
                limits.deadline,
                ticker.clone(),
                limits.body_cap,
            )
        })
    });
    let noop = manager
        .registry()
        .get(&PluginName::new("noop").expect("name"))
        .expect("noop loaded");
    parts.bench_function("instantiate-noop", |b| {
        b.iter(|| {
            rt.block_on(async {
                noop.pre
                    .instantiate(manager.engine(), env.clone(), meta.clone())
                    .await
                    .map(drop)
                    .expect("instantiates")
            })
        })
    });
    parts.finish();
}

/// A tiny origin answering 200 with 64 bytes.
async fn origin() -> std::net::SocketAddr {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(&[b'x'; 64]),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Closed-loop load on one route: `clients` keep-alive clients for `secs`; (req/s, p50 µs).
async fn load(url: &str, clients: usize, secs: u64) -> (f64, f64) {
    let until = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<Full<Bytes>>();
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    let req = http::Request::get(&url)
                        .body(Full::new(Bytes::new()))
                        .expect("req");
                    let resp = client.request(req).await.expect("response");
                    assert_eq!(resp.status(), 200);
                    resp.into_body().collect().await.expect("body");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    all.sort();
    let p50 = all.get(all.len() / 2).copied().unwrap_or_default();
    (all.len() as f64 / secs as f64, p50.as_secs_f64() * 1e6)
}

/// The whole gateway over loopback: no plugin vs. no-op (fresh instances, and reused) vs.
/// header-rewrite.
fn gateway_overhead(rt: &tokio::runtime::Runtime) {
    let dir = guests::TempDir::new("bench-gw");
    std::fs::write(dir.join("noop.wasm"), guests::bytes("noop")).expect("write");
    std::fs::write(dir.join("rewrite.wasm"), guests::bytes("header-rewrite")).expect("write");
    rt.block_on(async {
        let origin = origin().await;
        let cache = guests::workspace().join("target/guests/artifact-cache");
        let toml = format!(
            r#"
[listen]
public = "127.0.0.1:0"
admin = "127.0.0.1:0"
[log]
level = "warn"
[plugins]
dir = {dir:?}
cache_dir = {cache:?}
[[services]]
name = "o"
endpoints = ["{origin}"]
[[routes]]
name = "none"
service = "o"
match = {{ prefix = "/none" }}
[[routes]]
name = "noop"
service = "o"
match = {{ prefix = "/noop" }}
plugins = [{{ name = "noop" }}]
[[routes]]
name = "noop-reuse"
service = "o"
match = {{ prefix = "/noop-reuse" }}
plugins = [{{ name = "noop", reuse_instances = true }}]
[[routes]]
name = "rewrite"
service = "o"
match = {{ prefix = "/rewrite" }}
plugins = [{{ name = "rewrite", config = {{ request = {{ x-a = "1" }}, response = {{ x-b = "2" }} }} }}]
"#,
            dir = dir.0.display().to_string(),
            cache = cache.display().to_string(),
        );
        let config = gatehouse::config::load_str(&toml, "bench.toml").expect("config");
        let gw = gatehouse::gateway::start(config).await.expect("gateway");
        let base = format!("http://{}", gw.public_addr);
        // Warm up connections and code paths.
        let paths = ["/none", "/noop", "/noop-reuse", "/rewrite"];
        for path in paths {
            load(&format!("{base}{path}"), 8, 1).await;
        }
        let mut rows = Vec::new();
        // Interleave the variants (machine noise hits them alike), twice each.
        for _ in 0..2 {
            for path in paths {
                rows.push((path, load(&format!("{base}{path}"), 16, 3).await));
            }
        }
        let avg = |p: &str| {
            let v: Vec<_> = rows.iter().filter(|r| r.0 == p).map(|r| r.1).collect();
            let n = v.len() as f64;
            (v.iter().map(|x| x.0).sum::<f64>() / n, v.iter().map(|x| x.1).sum::<f64>() / n)
        };
        let (base_rps, base_p50) = avg("/none");
        println!("\ngateway over loopback, HTTP/1.1 keep-alive, 16 clients, 64-byte responses:");
        for path in paths {
            let (rps, p50) = avg(path);
            println!(
                "  {path:<12} {rps:>9.0} req/s ({:>5.1}% of none)   p50 {p50:>7.1} us ({:+.1} us)",
                100.0 * rps / base_rps,
                p50 - base_p50
            );
        }
        gw.shutdown().await;
    });
}

/// Start-up with 10 plugins: cold (compile all) vs. warm (artifact cache).
fn startup(rt: &tokio::runtime::Runtime) {
    let dir = guests::TempDir::new("bench-startup");
    let cache = guests::TempDir::new("bench-startup-cache");
    let kit = guests::bytes("test-kit");
    for i in 0..10u8 {
        // A custom section makes each file distinct, so each compiles on its own when cold.
        let mut bytes = kit.clone();
        let name = format!("bench-{i}");
        let payload_len = 1 + name.len() + 1;
        bytes.extend_from_slice(&[0, payload_len as u8, name.len() as u8]);
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(i);
        std::fs::write(dir.join(&format!("p{i}.wasm")), bytes).expect("write");
    }
    let start = || {
        rt.block_on(async {
            let t = Instant::now();
            let m = PluginManager::start(
                PluginSettings {
                    dir: dir.0.clone(),
                    cache_dir: Some(cache.0.clone()),
                    watch: false,
                    limits: PluginLimits::default(),
                    // Measure the optimized (Cranelift) code, not the baseline build.
                    tiered: false,
                    ..PluginSettings::default()
                },
                Arc::new(NoServices),
            )
            .await
            .expect("manager");
            let loaded = m.status().iter().filter(|s| s.status == "loaded").count();
            assert_eq!(loaded, 10, "{:?}", m.status());
            t.elapsed()
        })
    };
    let cold = start();
    let warm = start();
    println!(
        "\nstart-up with 10 plugins ({} KiB component each): cold {:.0} ms, warm {:.0} ms ({:.1}x)",
        kit.len() / 1024,
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
        cold.as_secs_f64() / warm.as_secs_f64()
    );
}

fn main() {
    let rt = rt();
    let mut c = Criterion::default().configure_from_args();
    chain_overhead(&mut c, &rt);
    c.final_summary();
    if std::env::var_os("BENCH_CHAIN_ONLY").is_none() {
        startup(&rt);
        gateway_overhead(&rt);
    }
}
