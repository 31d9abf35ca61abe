//! Cost of the shipped plugins, as figures rather than a pass/fail:
//!
//! 1. JWT verification inside the `jwt-auth` plugin, per request: the request phase driven
//!    in-process through a route chain (fresh instance + hook call), for HS256, RS256 and
//!    ES256 tokens and a forged one, against the `noop` plugin as the baseline.
//! 2. Aggregation latency through the real gateway: `aggregate` with four parts whose
//!    origins answer after 5, 10, 20 and 40 ms. p50 should sit near the slowest part
//!    (40 ms), not the sum (75 ms).
//!
//! Run: `cargo bench -p gatehouse --bench shipped_plugins` (builds the guests for
//! wasm32-wasip2 first). Figures from this machine are in benches/README.md.
//!
//! `PHASE_LOOP="<case> <n>"` instead runs only the request phase of one case `n` times, with
//! no timing, for counting instructions under callgrind: run it twice (two `n`) and divide
//! the difference of the totals by the difference of the `n`, which cancels start-up,
//! compilation and warm-up. Cases: `noop-fresh`, `noop-reused`, `jwt-fresh`, `jwt-reused`
//! (jwt-auth with the `/jwt/` route config and token of `PLUGINS=1 proxy-instructions.sh`).
//! `PHASE_LOOP_DIR=DIR` loads the guests from DIR (`noop.wasm`, `jwt-auth.wasm`) instead of
//! building them, to compare guest builds with one host binary; compiled code and snapshots
//! are cached in DIR/.cache. Under valgrind the engine sees other CPU features than natively,
//! so fill that cache with a first run under `valgrind --tool=none` (fast) and
//! `PHASE_LOOP_WARMUP_SECS=60` (time for the snapshot to be made), not under callgrind.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use gatehouse::plugins::{
    Body, NoServices, OnError, PluginManager, PluginName, PluginRef, PluginSettings, RequestMeta,
    RequestOutcome,
};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use p256::pkcs8::DecodePrivateKey as _;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use serde_json::{json, Value};

const RSA_PRIVATE: &str = include_str!("../plugins/jwt-auth/testdata/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../plugins/jwt-auth/testdata/rsa-public.pem");
const EC_PRIVATE: &str = include_str!("../plugins/jwt-auth/testdata/ec-private.pem");
const EC_PUBLIC: &str = include_str!("../plugins/jwt-auth/testdata/ec-public.pem");
const SECRET: &str = "bench-secret-that-is-at-least-32-bytes";

#[allow(dead_code)]
#[path = "../tests/all/plugins/guests.rs"]
mod guests;

fn plugins_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-shipped-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("plugins dir");
    for name in ["noop", "jwt-auth", "aggregate"] {
        std::fs::copy(guests::path(name), dir.join(format!("{name}.wasm"))).expect("copy guest");
    }
    dir
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn token(alg: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let claims = json!({ "sub": "alice", "iss": "shop", "aud": "mobile", "exp": now + 3600 });
    let input = format!(
        "{}.{}",
        b64(
            json!({ "alg": alg.trim_end_matches("-forged"), "typ": "JWT" })
                .to_string()
                .as_bytes()
        ),
        b64(claims.to_string().as_bytes())
    );
    let sig = match alg {
        "HS256" | "HS256-forged" => {
            use hmac::Mac as _;
            let secret: &[u8] = if alg == "HS256" {
                SECRET.as_bytes()
            } else {
                b"not-the-secret"
            };
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any length");
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        "RS256" => {
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_PRIVATE).expect("RSA key");
            rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key)
                .sign(input.as_bytes())
                .to_vec()
        }
        _ => {
            let key = p256::ecdsa::SigningKey::from_pkcs8_pem(EC_PRIVATE).expect("EC key");
            let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
            sig.to_bytes().to_vec()
        }
    };
    format!("{input}.{}", b64(&sig))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median time of the request phase of `plugin` over `n` requests carrying `auth`.
async fn request_phase(
    manager: &PluginManager,
    plugin: &str,
    config: &Value,
    auth: Option<&str>,
    n: usize,
) -> (Duration, Duration, u16) {
    let chain = bench_chain(manager, plugin, config, false);
    let mut times = Vec::with_capacity(n);
    let mut status = 0;
    for _ in 0..n {
        let (req, meta) = bench_request(http::Request::get("/orders"), auth);
        let started = Instant::now();
        let outcome = chain.start(meta).on_request(req).await;
        times.push(started.elapsed());
        status = match outcome {
            Ok(RequestOutcome::Continue(_)) => 200,
            Ok(RequestOutcome::Respond(r)) => r.status().as_u16(),
            Err(e) => panic!("plugin failed: {e}"),
        };
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.9), status)
}

async fn jwt_costs(dir: &Path) {
    let settings = PluginSettings {
        dir: dir.to_path_buf(),
        cache_dir: Some(guests::workspace().join("target/guests/artifact-cache")),
        watch: false,
        // Measure the optimized (Cranelift) code, not the baseline build.
        tiered: false,
        ..PluginSettings::default()
    };
    let manager = PluginManager::start(settings, Arc::new(NoServices))
        .await
        .expect("plugins load");
    let jwt_config = json!({
        "issuer": "shop", "audience": "mobile",
        "keys": [ { "secret": SECRET }, { "pem": RSA_PUBLIC }, { "pem": EC_PUBLIC } ],
        "forward_claims": { "sub": "x-user-id" },
    });
    let n = 2000;
    // Warm up: the first instances pay for page faults of fresh pool slots.
    request_phase(&manager, "noop", &json!({}), None, 200).await;
    request_phase(
        &manager,
        "jwt-auth",
        &jwt_config,
        Some(&token("HS256")),
        200,
    )
    .await;

    let (base50, base90, _) = request_phase(&manager, "noop", &json!({}), None, n).await;
    println!("\n## jwt-auth: request phase per request, in-process ({n} requests each)\n");
    println!("| case | p50 µs | p90 µs | p50 minus noop µs | status |");
    println!("|------|-------:|-------:|------------------:|-------:|");
    println!(
        "| noop plugin (baseline) | {:.1} | {:.1} | – | 200 |",
        us(base50),
        us(base90)
    );
    for alg in ["HS256", "RS256", "ES256", "HS256-forged"] {
        let t = token(alg);
        let (p50, p90, status) =
            request_phase(&manager, "jwt-auth", &jwt_config, Some(&t), n).await;
        println!(
            "| jwt-auth {alg} | {:.1} | {:.1} | {:.1} | {status} |",
            us(p50),
            us(p90),
            us(p50.saturating_sub(base50))
        );
    }
    let (p50, p90, status) = request_phase(&manager, "jwt-auth", &jwt_config, None, n).await;
    println!(
        "| jwt-auth, no token | {:.1} | {:.1} | {:.1} | {status} |",
        us(p50),
        us(p90),
        us(p50.saturating_sub(base50))
    );
}

/// An origin answering `{"ok":true}` after `delay`.
async fn delayed_origin(delay: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |_req| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"{\"ok\":true}",
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn aggregation_latency(dir: &Path) {
    let delays = [5u64, 10, 20, 40];
    let mut services = String::new();
    let mut parts = Vec::new();
    for d in delays {
        let addr = delayed_origin(Duration::from_millis(d)).await;
        services.push_str(&format!(
            "[[services]]\nname = \"part{d}\"\nendpoints = [\"{addr}\"]\n\n"
        ));
        parts.push(json!({ "name": format!("p{d}"), "service": format!("part{d}"), "path": "/x/{query.id}" }));
    }
    let calls: Vec<String> = delays.iter().map(|d| format!("\"part{d}\"")).collect();
    let config = toml::Value::try_from(json!({ "parts": parts }))
        .expect("toml")
        .to_string();
    let text = format!(
        "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n[plugins]\ndir = {:?}\ncache_dir = {:?}\nwatch = false\n\n{services}\
         [[routes]]\nname = \"agg\"\nservice = \"part5\"\nmatch = {{ path = \"/agg\" }}\n\
         plugins = [{{ name = \"aggregate\", calls = [{}], config = {config} }}]\n",
        dir.display().to_string(),
        guests::workspace().join("target/guests/artifact-cache").display().to_string(),
        calls.join(", ")
    );
    let cfg = gatehouse::config::load_str(&text, "bench.toml").expect("valid config");
    let gw = gatehouse::gateway::start(cfg)
        .await
        .expect("gateway starts");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let url: hyper::Uri = format!("http://{}/agg?id=1", gw.public_addr)
        .parse()
        .expect("uri");
    let n = 300;
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let started = Instant::now();
        let resp = client.get(url.clone()).await.expect("gateway answers");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        if i >= 20 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    println!("\n## aggregate: four parts of 5, 10, 20, 40 ms through the gateway ({n} sequential requests)\n");
    println!("| p50 ms | p90 ms | p99 ms | slowest part ms | sum of parts ms |");
    println!("|-------:|-------:|-------:|----------------:|----------------:|");
    println!(
        "| {:.1} | {:.1} | {:.1} | 40 | 75 |",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.9)),
        ms(percentile(&times, 0.99))
    );
    gw.shutdown().await;
}

/// One chain of `plugin` with `config`, fresh or reused instances.
fn bench_chain(
    manager: &PluginManager,
    plugin: &str,
    config: &Value,
    reuse: bool,
) -> Arc<gatehouse::plugins::PluginChain> {
    manager.chain(
        "bench",
        &[PluginRef {
            name: PluginName::new(plugin).expect("name"),
            config_json: config.to_string(),
            calls: Vec::new(),
            cache: None,
            reuse_instances: reuse,
            files: Default::default(),
            limits: Default::default(),
            deadline: None,
            memory: None,
            body_cap: None,
        }],
        OnError::FailClosed,
    )
}

/// A bodyless request from `head`, with `auth` as a bearer token, and its metadata.
fn bench_request(
    mut head: http::request::Builder,
    auth: Option<&str>,
) -> (http::Request<Body>, RequestMeta) {
    if let Some(a) = auth {
        head = head.header("authorization", format!("Bearer {a}"));
    }
    let req = head.body(gatehouse::body::empty()).expect("request");
    let meta = RequestMeta {
        client_addr: Some("127.0.0.1:1".parse().expect("address")),
        request_id: "bench".into(),
        client_certificate: None,
        trace: None,
    };
    (req, meta)
}

/// The request phase of one chain, `n` times, as the gateway would run it for a wrk request.
async fn run_phase(chain: &Arc<gatehouse::plugins::PluginChain>, auth: Option<&str>, n: usize) {
    for _ in 0..n {
        let head = http::Request::get("/jwt/").header("host", "127.0.0.1:18180");
        let (req, meta) = bench_request(head, auth);
        match chain.start(meta).on_request(req).await {
            Ok(RequestOutcome::Continue(_)) => {}
            Ok(RequestOutcome::Respond(r)) => panic!("plugin answered {}", r.status()),
            Err(e) => panic!("plugin failed: {e}"),
        }
        // Let the recycler tear the instance down and prepare the next one, as a gateway
        // worker does between requests (it is part of the per-request cost).
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }
}

/// `PHASE_LOOP` mode (see the top of this file).
fn phase_loop(spec: &str) {
    let (case, n) = spec.split_once(' ').expect("PHASE_LOOP=\"<case> <n>\"");
    let n: usize = n.trim().parse().expect("n");
    let dir = match std::env::var_os("PHASE_LOOP_DIR") {
        Some(d) => PathBuf::from(d),
        None => plugins_dir(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut settings = PluginSettings {
            dir: dir.clone(),
            cache_dir: Some(dir.join(".cache")),
            watch: false,
            tiered: false,
            ..PluginSettings::default()
        };
        // Valgrind cannot reserve the default pool's address space.
        settings.limits.max_instances = 64;
        // No epoch ticks inside the loop: under valgrind the guest runs ~50× slower, so the
        // 2 ms tick would interrupt it far more often than natively (and callgrind 3.19 dies
        // on the tick's first `clock_gettime` from a wasm fiber stack).
        settings.limits.epoch_tick = Duration::from_secs(30);
        settings.limits.deadline = Duration::from_secs(300);
        let manager = PluginManager::start(settings, Arc::new(NoServices))
            .await
            .expect("plugins load");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let signed = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64(format!(r#"{{"sub":"bench","exp":{}}}"#, now + 86400).as_bytes())
        );
        let sig = {
            use hmac::Mac as _;
            let mut mac =
                hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any length");
            mac.update(signed.as_bytes());
            mac.finalize().into_bytes().to_vec()
        };
        let token = format!("{signed}.{}", b64(&sig));
        let (plugin, config, auth, reuse) = match case {
            "noop-fresh" => ("noop", json!({}), None, false),
            "noop-reused" => ("noop", json!({}), None, true),
            "jwt-fresh" | "jwt-reused" => (
                "jwt-auth",
                json!({ "keys": [ { "secret": SECRET } ] }),
                Some(token.as_str()),
                case == "jwt-reused",
            ),
            other => panic!("unknown case {other}"),
        };
        let chain = bench_chain(&manager, plugin, &config, reuse);
        // Warm-up: the pool's slots, and the pre-initialised snapshot, which is built (or
        // read from the cache) in the background after the first request.
        // `PHASE_LOOP_WARMUP_SECS` (default 3) for a first run that must compile it.
        let warmup: u64 = std::env::var("PHASE_LOOP_WARMUP_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3);
        for _ in 0..warmup * 4 {
            run_phase(&chain, auth, 2).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        run_phase(&chain, auth, n).await;
    });
}

fn main() {
    if let Ok(spec) = std::env::var("PHASE_LOOP") {
        phase_loop(&spec);
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run only when benching.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = plugins_dir();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        jwt_costs(&dir).await;
        aggregation_latency(&dir).await;
    });
    let _ = std::fs::remove_dir_all(&dir); // best effort
}
