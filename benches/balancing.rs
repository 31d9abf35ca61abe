//! Balancer pick cost: ns per pick for each algorithm with 10 and 1 000 backends, and what a
//! gray subset adds (docs/traffic.md): choosing the subset from the request, then the pick.
//!
//! Measures `Balancer::pick`, what a request pays: the algorithm's choice plus the in-flight
//! guard (one atomic increment, one decrement on drop, one `Arc` clone).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gatehouse::balancing::{
    Algorithm, Backend, Balancer, GrayPolicy, GraySubset, MetadataSelector, PickContext,
};
use gatehouse::conn::ConnSettings;
use gatehouse::discovery::{Endpoint, EndpointMeta};
use gatehouse::matching::{RequestMatch, ValueMatch};

fn backends(n: usize) -> Vec<Arc<Backend>> {
    (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 80));
            Arc::new(Backend::new(
                Endpoint {
                    id: Arc::from(format!("instance-{i}")),
                    addr,
                    meta: EndpointMeta {
                        weight: 1 + (i % 5) as u32,
                        ..EndpointMeta::default()
                    },
                },
                ConnSettings::default(),
            ))
        })
        .collect()
}

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for algorithm in [
        Algorithm::RoundRobin,
        Algorithm::Weighted,
        Algorithm::Random,
        Algorithm::LeastRequest,
        Algorithm::Hash,
    ] {
        for n in [10usize, 1000] {
            let balancer = Balancer::new(algorithm, backends(n), false);
            let mut key = 0u64;
            group.bench_with_input(BenchmarkId::new(format!("{algorithm:?}"), n), &n, |b, _| {
                b.iter(|| {
                    // A different key each time, so the hash ring lookup is not cached.
                    key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let ctx = PickContext {
                        hash: Some(key),
                        attempt: 0,
                    };
                    black_box(balancer.pick(&ctx, &[]))
                })
            });
        }
    }
    group.finish();
}

/// Per request on a gray service: `GrayPolicy::select` (one header predicate that does not
/// match, then a 5 % weight roll) and the pick in the chosen group, against the plain pick.
fn gray(c: &mut Criterion) {
    let mut group = c.benchmark_group("gray");
    let policy = GrayPolicy::new(vec![GraySubset {
        metadata: MetadataSelector {
            version: Some("v2".into()),
            ..MetadataSelector::default()
        },
        weight: 5,
        matcher: Some(RequestMatch {
            headers: vec![(
                http::HeaderName::from_static("x-canary"),
                ValueMatch::Present,
            )],
            ..RequestMatch::default()
        }),
    }]);
    let mut headers = http::HeaderMap::new();
    headers.insert("x-user", http::HeaderValue::from_static("ann"));
    let balancer = Balancer::new(Algorithm::RoundRobin, backends(10), false).with_subsets(vec![
        Balancer::new(Algorithm::RoundRobin, backends(2), false),
    ]);
    let ctx = PickContext::default();
    group.bench_function("plain pick", |b| {
        b.iter(|| black_box(balancer.subset(None).pick(&ctx, &[])))
    });
    group.bench_function("select + pick", |b| {
        b.iter(|| {
            let subset = policy.select(black_box(&headers), Some("a=1"), None);
            black_box(balancer.subset(subset).pick(&ctx, &[]))
        })
    });
    group.finish();
}

criterion_group!(benches, picks, gray);
criterion_main!(benches);
