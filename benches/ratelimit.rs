//! Rate limiter cost per request: ns per check of the in-memory store (GCRA, sharded,
//! bounded key space), and of a route's first stage as the pipeline calls it.
//!
//! - `hit`: one key charged again and again (allowed): a lookup and an update.
//! - `refused`: one key over its limit: a lookup, no update.
//! - `miss`: a new key each time, below capacity: a lookup and an insert (one allocation).
//! - `flood`: 1 000 000 distinct keys into a store capped at 100 000: inserts plus the
//!   amortised sweeps and evictions that keep it at its cap.
//! - `admit`: `RouteLimiters::admit` for a client-address limit, what a limited route pays
//!   right after routing (the clock read included).
//! - `admit (redis)`: the same limit with its counters in Redis (`[rate_limits] store =
//!   "redis"`, docs/scale-out.md): one EVALSHA round trip to a `redis-server` on loopback,
//!   which this bench starts itself (skipped, with a note, when the binary is missing).

use std::hint::black_box;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::FutureExt;
use gatehouse::ratelimit::{
    LimitKey, LimitSpec, Limits, MemoryStore, MissingKey, Rate, RouteLimitsSpec, StorePolicy,
};
use gatehouse::redis_store::{OnError, RedisSettings};

fn rate(requests: u32, per: Duration) -> Rate {
    Rate {
        requests: NonZeroU32::new(requests).expect("positive"),
        per,
        burst: NonZeroU32::new(requests).expect("positive"),
    }
}

fn store(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit");
    let generous = rate(u32::MAX, Duration::from_secs(1));
    let now = Instant::now();

    let hit = MemoryStore::new(100_000);
    group.bench_function("hit", |b| {
        b.iter(|| black_box(hit.charge(black_box(b"203.0.113.7"), 1, &generous, now)))
    });

    let refused = MemoryStore::new(100_000);
    let tight = rate(1, Duration::from_secs(3600));
    refused.charge(b"203.0.113.7", 1, &tight, now);
    group.bench_function("refused", |b| {
        b.iter(|| black_box(refused.charge(black_box(b"203.0.113.7"), 1, &tight, now)))
    });

    // Below capacity for the whole run (criterion's iterations stay well under 10M here).
    let miss = MemoryStore::new(50_000_000);
    let mut key = 0u64;
    group.bench_function("miss", |b| {
        b.iter(|| {
            key += 1;
            black_box(miss.charge(&key.to_be_bytes(), 1, &generous, now))
        })
    });

    group.throughput(Throughput::Elements(1_000_000));
    group.sample_size(10);
    group.bench_function("flood 1M keys, cap 100k", |b| {
        b.iter(|| {
            let flood = MemoryStore::new(100_000);
            let hourly = rate(100, Duration::from_secs(3600));
            for key in 0..1_000_000u32 {
                black_box(flood.charge(&key.to_be_bytes(), 1, &hourly, now));
            }
            assert!(flood.len() <= flood.capacity());
        })
    });
    group.finish();

    let mut group = c.benchmark_group("ratelimit-route");
    let spec = RouteLimitsSpec {
        rate_limits: vec![LimitSpec {
            name: Arc::new("per-client".to_owned()),
            rate: generous,
            key: LimitKey::ClientAddress,
            missing: MissingKey::Shared,
            max_keys: NonZeroUsize::new(100_000).expect("positive"),
        }],
        max_in_flight: None,
    };
    let limits = Limits::build([("api", &spec)], &Limits::default(), &StorePolicy::Memory);
    let route = limits.route(0).expect("limited");
    let client = "203.0.113.7".parse().expect("ip");
    group.bench_function("admit (client-address)", |b| {
        b.iter(|| {
            let admitted = route
                .admit(black_box(client), Instant::now())
                .now_or_never();
            black_box(admitted.expect("in memory: at once").is_ok())
        })
    });

    // The same limit in Redis, awaited on a current-thread runtime (block_on adds well under
    // a microsecond to a loopback round trip of tens).
    let Some(redis) = RedisChild::start() else {
        eprintln!(
            "redis-server not found (apt-get install -y redis-server): skipping admit (redis)"
        );
        group.finish();
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let policy = StorePolicy::Redis {
        settings: RedisSettings {
            url: format!("redis://127.0.0.1:{}", redis.port),
            timeout: Duration::from_millis(50),
            key_prefix: "bench:".to_owned(),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(2),
        },
        on_error: OnError::Closed,
    };
    let limits = {
        let _in_runtime = runtime.enter();
        Limits::build([("api", &spec)], &Limits::default(), &policy)
    };
    let route = limits.route(0).expect("limited");
    // Connect and load the script outside the measurement.
    runtime
        .block_on(route.admit(client, Instant::now()))
        .expect("redis answers");
    group.bench_function("admit (redis)", |b| {
        b.iter(|| {
            black_box(
                runtime
                    .block_on(route.admit(black_box(client), Instant::now()))
                    .is_ok(),
            )
        })
    });
    group.finish();
}

/// A `redis-server` on a free loopback port, no persistence, killed on drop.
struct RedisChild {
    port: u16,
    child: std::process::Child,
}

impl RedisChild {
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--port",
            ])
            .arg(port.to_string())
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let redis = RedisChild { port, child };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

criterion_group!(benches, store);
criterion_main!(benches);
