//! Route table tests: precedence, predicates, rewrites, conflicts.

use super::*;
use crate::config::load_str;

fn table(routes: &str) -> RouteTable {
    let text = format!("[[services]]\nname = \"s\"\nendpoints = [\"127.0.0.1:1\"]\n{routes}");
    let config = load_str(&text, "test.toml").expect("valid config");
    RouteTable::new(&config.routes).expect("table")
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("request").into_parts().0
}

fn route_name(t: &RouteTable, r: &Parts) -> Option<String> {
    t.find(r).map(|m| m.route.config.name.0.clone())
}

#[test]
fn exact_beats_template_beats_prefix() {
    let t = table(
        r#"
[[routes]]
name = "prefix"
service = "s"
match = { prefix = "/users" }
[[routes]]
name = "template"
service = "s"
match = { path = "/users/{id}" }
[[routes]]
name = "exact"
service = "s"
match = { path = "/users/me" }
"#,
    );
    assert_eq!(
        route_name(&t, &req("GET", "/users/me", &[])).as_deref(),
        Some("exact")
    );
    assert_eq!(
        route_name(&t, &req("GET", "/users/42", &[])).as_deref(),
        Some("template")
    );
    assert_eq!(
        route_name(&t, &req("GET", "/users/42/orders", &[])).as_deref(),
        Some("prefix")
    );
    assert_eq!(
        route_name(&t, &req("GET", "/users", &[])).as_deref(),
        Some("prefix")
    );
    assert_eq!(route_name(&t, &req("GET", "/usersx", &[])), None);
}

#[test]
fn longest_prefix_wins_and_root_catches_all() {
    let t = table(
        r#"
[[routes]]
name = "root"
service = "s"
[[routes]]
name = "api"
service = "s"
match = { prefix = "/api/" }
[[routes]]
name = "api-v2"
service = "s"
match = { prefix = "/api/v2" }
"#,
    );
    assert_eq!(
        route_name(&t, &req("GET", "/api/v2/x", &[])).as_deref(),
        Some("api-v2")
    );
    assert_eq!(
        route_name(&t, &req("GET", "/api/v1/x", &[])).as_deref(),
        Some("api")
    );
    assert_eq!(
        route_name(&t, &req("GET", "/other", &[])).as_deref(),
        Some("root")
    );
    assert_eq!(
        route_name(&t, &req("GET", "/", &[])).as_deref(),
        Some("root")
    );
}

#[test]
fn host_exact_beats_wildcard_beats_any() {
    let t = table(
        r#"
[[routes]]
name = "any"
service = "s"
[[routes]]
name = "wild"
service = "s"
match = { host = "*.example.com" }
[[routes]]
name = "deep-wild"
service = "s"
match = { host = "*.eu.example.com" }
[[routes]]
name = "exact"
service = "s"
match = { host = "api.example.com" }
"#,
    );
    let host = |h: &str| req("GET", "/", &[("host", h)]);
    assert_eq!(
        route_name(&t, &host("api.example.com")).as_deref(),
        Some("exact")
    );
    assert_eq!(
        route_name(&t, &host("API.Example.com:8080")).as_deref(),
        Some("exact")
    );
    assert_eq!(
        route_name(&t, &host("shop.example.com")).as_deref(),
        Some("wild")
    );
    assert_eq!(
        route_name(&t, &host("a.eu.example.com")).as_deref(),
        Some("deep-wild")
    );
    assert_eq!(route_name(&t, &host("example.com")).as_deref(), Some("any"));
    assert_eq!(
        route_name(&t, &req("GET", "http://x.example.com/", &[])).as_deref(),
        Some("wild")
    );
}

#[test]
fn host_route_falls_back_when_its_paths_do_not_match() {
    let t = table(
        r#"
[[routes]]
name = "any"
service = "s"
[[routes]]
name = "exact"
service = "s"
match = { host = "api.example.com", path = "/only" }
"#,
    );
    assert_eq!(
        route_name(&t, &req("GET", "/other", &[("host", "api.example.com")])).as_deref(),
        Some("any")
    );
}

#[test]
fn more_predicates_win_then_file_order() {
    let t = table(
        r#"
[[routes]]
name = "plain"
service = "s"
match = { path = "/x" }
[[routes]]
name = "plain-later"
service = "s"
match = { path = "/x" }
[[routes]]
name = "get"
service = "s"
match = { path = "/x", methods = ["get"] }
[[routes]]
name = "get-beta"
service = "s"
match = { path = "/x", methods = ["GET"], headers = { x-beta = "1" } }
[[routes]]
name = "debug"
service = "s"
match = { path = "/x", methods = ["GET"], query = { debug = "*" } }
"#,
    );
    assert_eq!(
        route_name(&t, &req("POST", "/x", &[])).as_deref(),
        Some("plain")
    );
    assert_eq!(
        route_name(&t, &req("GET", "/x", &[])).as_deref(),
        Some("get")
    );
    assert_eq!(
        route_name(&t, &req("GET", "/x", &[("x-beta", "1")])).as_deref(),
        Some("get-beta")
    );
    assert_eq!(
        route_name(&t, &req("GET", "/x", &[("x-beta", "2")])).as_deref(),
        Some("get")
    );
    // Same specificity: file order decides.
    assert_eq!(
        route_name(&t, &req("GET", "/x?debug=yes", &[("x-beta", "1")])).as_deref(),
        Some("get-beta")
    );
    assert_eq!(
        route_name(&t, &req("GET", "/x?a=1&debug", &[])).as_deref(),
        Some("debug")
    );
}

#[test]
fn rewrite_and_strip_prefix() {
    let t = table(
        r#"
[[routes]]
name = "strip"
service = "s"
match = { prefix = "/api" }
strip_prefix = true
[[routes]]
name = "rewrite"
service = "s"
match = { path = "/users/{id}/posts/{*rest}" }
rewrite = "/v2/people/{id}/{rest}"
"#,
    );
    let upstream = |uri: &str| {
        let r = req("GET", uri, &[]);
        let m = t.find(&r).expect("route");
        m.route
            .upstream_path_and_query(r.uri.path(), r.uri.query(), &m.params)
    };
    assert_eq!(upstream("/api/items?x=1"), "/items?x=1");
    assert_eq!(upstream("/api"), "/");
    assert_eq!(upstream("/users/7/posts/a/b"), "/v2/people/7/a/b");
}

#[test]
fn conflicting_templates_are_rejected_with_both_names() {
    let text = r#"
[[services]]
name = "s"
endpoints = ["127.0.0.1:1"]
[[routes]]
name = "by-id"
service = "s"
match = { path = "/users/{id}" }
[[routes]]
name = "by-name"
service = "s"
match = { path = "/users/{name}" }
"#;
    let err = load_str(text, "t.toml").expect_err("conflict").to_string();
    assert!(err.contains("routes[1].match"), "{err}");
    assert!(err.contains("\"by-id\""), "{err}");
}

#[test]
fn cookie_predicates_count_like_header_predicates() {
    let t = table(
        r#"
[[routes]]
name = "a"
service = "s"
match = { prefix = "/shop" }
[[routes]]
name = "b"
service = "s"
match = { prefix = "/shop", cookies = { ab = "b" } }
[[routes]]
name = "b-tester"
service = "s"
match = { prefix = "/shop", cookies = { ab = "b", tester = "*" } }
[[routes]]
name = "header-first"
service = "s"
match = { prefix = "/tie", headers = { x-b = "1" } }
[[routes]]
name = "cookie-second"
service = "s"
match = { prefix = "/tie", cookies = { b = "1" } }
"#,
    );
    let at = |uri: &str, headers: &[(&str, &str)]| route_name(&t, &req("GET", uri, headers));
    assert_eq!(at("/shop", &[]).as_deref(), Some("a"));
    assert_eq!(at("/shop", &[("cookie", "ab=b")]).as_deref(), Some("b"));
    assert_eq!(at("/shop", &[("cookie", "ab=bb")]).as_deref(), Some("a"));
    assert_eq!(
        at("/shop", &[("cookie", "ab=b; tester=")]).as_deref(),
        Some("b-tester")
    );
    assert_eq!(
        at("/shop", &[("cookie", "tester=1"), ("cookie", "ab=b")]).as_deref(),
        Some("b-tester"),
        "cookies from every Cookie header"
    );
    // One predicate each: the file order breaks the tie.
    assert_eq!(
        at("/tie", &[("x-b", "1"), ("cookie", "b=1")]).as_deref(),
        Some("header-first")
    );
    assert_eq!(
        at("/tie", &[("cookie", "b=1")]).as_deref(),
        Some("cookie-second")
    );
}

#[test]
fn a_preflight_is_matched_by_the_method_it_asks_about() {
    let t = table(
        r#"
[[routes]]
name = "writes"
service = "s"
match = { prefix = "/api", methods = ["PUT", "DELETE"] }
[[routes]]
name = "reads"
service = "s"
match = { prefix = "/api", methods = ["GET"] }
"#,
    );
    let preflight = req("OPTIONS", "/api/x", &[("origin", "https://a.test")]);
    let name = |method| {
        t.find_for_method(&preflight, &method)
            .map(|m| m.route.config.name.0.clone())
    };
    assert_eq!(name(http::Method::PUT).as_deref(), Some("writes"));
    assert_eq!(name(http::Method::GET).as_deref(), Some("reads"));
    assert_eq!(name(http::Method::PATCH), None);
    // As itself, the OPTIONS request takes neither route.
    assert_eq!(route_name(&t, &preflight), None);
}
