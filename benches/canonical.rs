//! The path canonicaliser's cost per call (`gatehouse::path::canonicalize`), for the paths
//! clients send every day (already canonical: the no-allocation fast path) and for hostile
//! ones (dot segments, escapes, refused paths). Figures in benches/README.md.

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::path::{canonicalize, PathPolicy};
use std::hint::black_box;

fn canonical(c: &mut Criterion) {
    let policy = PathPolicy::default();
    let cases: [(&str, &str); 10] = [
        ("typical/short", "/api/users/42"),
        (
            "typical/long",
            "/api/v2/organisations/acme/projects/gatehouse/builds/12345/artifacts/report.json",
        ),
        ("typical/trailing-slash", "/static/css/"),
        ("typical/escape", "/search/caf%C3%A9%20bar"),
        ("hostile/dot-segments", "/public/../admin/./x/../users"),
        (
            "hostile/encoded-dots",
            "/public/%2e%2E/%2E%2e/admin/%2e/users",
        ),
        ("hostile/slashes", "//admin///users//42//"),
        (
            "hostile/unreserved-escapes",
            "/%61%64%6d%69%6e/%75%73%65%72%73",
        ),
        ("refused/encoded-slash", "/files/a%2Fb/c"),
        ("refused/overlong-utf8", "/public/%C0%AE%C0%AE/admin"),
    ];
    let mut group = c.benchmark_group("canonicalize");
    for (name, path) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                let _ = black_box(canonicalize(black_box(path), &policy));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, canonical);
criterion_main!(benches);
