//! Route matching cost with 10, 1 000 and 10 000 routes: it must stay flat, because the table
//! is a radix tree plus hash maps, never a scan; and what a route's target (one service or a
//! weighted split) costs once matched. Run: `cargo bench -p gatehouse --bench routing`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gatehouse::config::load_str;
use gatehouse::routing::{Pick, RouteTable};

/// A realistic mix: exact paths, templates, prefixes, some host-bound, some with methods.
fn config_with(routes: usize) -> String {
    let mut text = String::from("[[services]]\nname = \"s\"\nendpoints = [\"127.0.0.1:1\"]\n");
    for i in 0..routes {
        let matcher = match i % 4 {
            0 => format!("{{ path = \"/svc{i}/items\" }}"),
            1 => format!("{{ path = \"/svc{i}/users/{{id}}\", methods = [\"GET\"] }}"),
            2 => format!("{{ prefix = \"/svc{i}/static\" }}"),
            _ => format!("{{ host = \"tenant{i}.example.com\", prefix = \"/svc{i}\" }}"),
        };
        text.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\nservice = \"s\"\nmatch = {matcher}\n"
        ));
    }
    text
}

fn request(uri: &str, host: &str) -> http::request::Parts {
    http::Request::get(uri)
        .header("host", host)
        .body(())
        .expect("request")
        .into_parts()
        .0
}

fn bench_routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_match");
    for n in [10usize, 1_000, 10_000] {
        let config = load_str(&config_with(n), "bench.toml").expect("valid config");
        let table = RouteTable::new(&config.routes).expect("table");
        // Routes near the end of the file: a scan would pay for all the others first.
        let last = n - 1 - (n - 1) % 4;
        let cases = [
            (
                "exact",
                request(&format!("/svc{last}/items"), "api.example.com"),
            ),
            (
                "template",
                request(&format!("/svc{}/users/42", last - 3), "api.example.com"),
            ),
            (
                "prefix",
                request(
                    &format!("/svc{}/static/css/app.css", last - 2),
                    "api.example.com",
                ),
            ),
            ("miss", request("/nothing/here", "api.example.com")),
        ];
        for (name, req) in &cases {
            group.bench_with_input(BenchmarkId::new(*name, n), req, |b, req| {
                b.iter(|| table.find(req))
            });
        }
    }
    group.finish();
}

/// What a route's target costs per request once it matched: a one-service route (the branch
/// every plain route pays), a 95/5 split picked at random, and one sticky by cookie.
fn bench_split(c: &mut Criterion) {
    let text = "[[services]]\nname = \"blue\"\nendpoints = [\"127.0.0.1:1\"]\n\
        [[services]]\nname = \"green\"\nendpoints = [\"127.0.0.1:2\"]\n\
        [[routes]]\nname = \"plain\"\nservice = \"blue\"\nmatch = { prefix = \"/plain\" }\n\
        [[routes]]\nname = \"split\"\nmatch = { prefix = \"/split\" }\n\
        split = [{ service = \"blue\", weight = 95 }, { service = \"green\", weight = 5 }]\n\
        [[routes]]\nname = \"sticky\"\nsticky = \"cookie:user\"\nmatch = { prefix = \"/sticky\" }\n\
        split = [{ service = \"blue\", weight = 95 }, { service = \"green\", weight = 5 }]\n";
    let config = load_str(text, "bench.toml").expect("valid config");
    let mut group = c.benchmark_group("route_target");
    let mut headers = http::HeaderMap::new();
    headers.insert("cookie", "theme=dark; user=u-1234".parse().expect("cookie"));
    let client = std::net::IpAddr::from([192, 0, 2, 1]);
    for route in &config.routes {
        group.bench_function(route.name.0.as_str(), |b| {
            b.iter(|| match route.target.service_for(&headers, client) {
                Pick::Service(service, _) => service.0.len(),
                Pick::Static(_) => 0,
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_routing, bench_split);
criterion_main!(benches);
