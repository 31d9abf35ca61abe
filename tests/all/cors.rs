//! CORS at the gateway (docs/cors.md): preflights answered without the origin, the CORS
//! headers on every response of an allowed origin, none for the others.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::Response;

use crate::support::{self, origin, Got};

/// An origin that counts its requests, answers 200 with its own (wrong) CORS headers, and
/// says which method it saw.
async fn counting_origin() -> (origin::Origin, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let origin = origin::start({
        let hits = Arc::clone(&hits);
        move |req| {
            hits.fetch_add(1, Ordering::SeqCst);
            let method = req.method().to_string();
            async move {
                let mut r = Response::new(gatehouse::body::full(format!(
                    "{{\"method\":\"{method}\"}}"
                )));
                let h = r.headers_mut();
                h.insert("content-type", "application/json".parse().expect("v"));
                h.insert("access-control-allow-origin", "*".parse().expect("v"));
                h.insert("access-control-allow-methods", "DELETE".parse().expect("v"));
                h.insert("x-total", "3".parse().expect("v"));
                r
            }
        }
    })
    .await;
    (origin, hits)
}

const POLICY: &str = r#"
[routes.cors]
allow_origins = ["https://app.example.com", "https://*.example.org"]
allow_methods = ["GET", "PUT"]
allow_headers = ["x-api-key", "content-type"]
expose_headers = ["x-total"]
allow_credentials = true
max_age = "10m"
"#;

async fn gateway(
    service: std::net::SocketAddr,
    routes: &str,
) -> gatehouse::gateway::RunningGateway {
    support::gateway(&format!(
        "[[services]]\nname = \"s\"\nendpoints = [\"{service}\"]\n{routes}"
    ))
    .await
}

/// The routes of these tests take GET, PUT and DELETE; `POLICY` allows GET and PUT.
fn route(name: &str, prefix: &str, extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nservice = \"s\"\nmatch = {{ prefix = \"{prefix}\", methods = [\"GET\", \"PUT\", \"DELETE\"] }}\n{extra}\n"
    )
}

async fn send(
    gw: &gatehouse::gateway::RunningGateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Got {
    support::send(
        &support::http1(),
        method,
        &format!("http://{}{path}", gw.public_addr),
        headers,
        Bytes::new(),
    )
    .await
}

fn header<'a>(got: &'a Got, name: &str) -> Option<&'a str> {
    got.headers.get(name).map(|v| v.to_str().expect("ascii"))
}

fn no_cors_headers(got: &Got, what: &str) {
    let found: Vec<_> = got
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .collect();
    assert!(found.is_empty(), "{what}: {found:?}");
}

#[tokio::test]
async fn preflights_are_answered_by_the_gateway() {
    let (origin, hits) = counting_origin().await;
    // The route's methods exclude OPTIONS: its preflights still reach it.
    let gw = gateway(origin.addr, &route("api", "/api", POLICY)).await;
    let got = send(
        &gw,
        "OPTIONS",
        "/api/items",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-api-key, content-type"),
        ],
    )
    .await;
    assert_eq!(got.status, 204, "{}", got.text());
    assert_eq!(
        header(&got, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&got, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        header(&got, "access-control-allow-methods"),
        Some("GET, PUT")
    );
    assert_eq!(
        header(&got, "access-control-allow-headers"),
        Some("x-api-key, content-type")
    );
    assert_eq!(header(&got, "access-control-max-age"), Some("600"));
    assert_eq!(header(&got, "vary"), Some("origin"));
    assert!(got.headers.contains_key("x-request-id"));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the origin never sees a preflight"
    );
}

#[tokio::test]
async fn refused_preflights_get_a_json_403_and_no_cors_headers() {
    let (origin, hits) = counting_origin().await;
    let gw = gateway(origin.addr, &route("api", "/api", POLICY)).await;
    let cases: [(&str, &[(&str, &str)]); 4] = [
        (
            "origin",
            &[
                ("origin", "https://evil.example.net"),
                ("access-control-request-method", "GET"),
            ],
        ),
        (
            "method",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "DELETE"),
            ],
        ),
        (
            "header",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-api-key, x-secret"),
            ],
        ),
        (
            "lookalike origin",
            &[
                ("origin", "https://evil-example.org"),
                ("access-control-request-method", "GET"),
            ],
        ),
    ];
    for (what, headers) in cases {
        let got = send(&gw, "OPTIONS", "/api/items", headers).await;
        assert_eq!(got.status, 403, "{what}");
        assert_eq!(got.json()["error"], "cors_preflight_refused", "{what}");
        no_cors_headers(&got, what);
    }
    // A preflight for a method no route takes finds no route, like that request would.
    let got = send(
        &gw,
        "OPTIONS",
        "/api/items",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PATCH"),
        ],
    )
    .await;
    assert_eq!(got.status, 404);
    no_cors_headers(&got, "no route");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn actual_requests_get_the_gateways_cors_headers() {
    let (origin, hits) = counting_origin().await;
    let gw = gateway(origin.addr, &route("api", "/api", POLICY)).await;
    let got = send(
        &gw,
        "GET",
        "/api/items",
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        header(&got, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&got, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        header(&got, "access-control-expose-headers"),
        Some("x-total")
    );
    // The upstream's own CORS headers are gone: the gateway owns CORS on this route.
    assert_eq!(header(&got, "access-control-allow-methods"), None);
    assert_eq!(header(&got, "vary"), Some("origin"));

    // Served, but without CORS headers: the browser keeps the response from the page.
    for origin in [
        "https://evil.example.net",
        "https://example.org.evil.net",
        "null",
    ] {
        let got = send(&gw, "GET", "/api/items", &[("origin", origin)]).await;
        assert_eq!(got.status, 200, "{origin}");
        no_cors_headers(&got, origin);
        assert_eq!(header(&got, "vary"), Some("origin"), "{origin}");
    }
    // Same-origin or not a browser: no Origin, no CORS headers.
    let got = send(&gw, "GET", "/api/items", &[]).await;
    no_cors_headers(&got, "no origin");
    assert_eq!(hits.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn wildcard_subdomains() {
    let (origin, _) = counting_origin().await;
    let gw = gateway(origin.addr, &route("api", "/api", POLICY)).await;
    for (origin, allowed) in [
        ("https://a.example.org", true),
        ("https://a.b.example.org", true),
        ("https://example.org", false),
        ("https://evil-example.org", false),
        ("https://example.org.evil.net", false),
        ("http://a.example.org", false),
    ] {
        let got = send(&gw, "GET", "/api/x", &[("origin", origin)]).await;
        let expected = allowed.then_some(origin);
        assert_eq!(
            header(&got, "access-control-allow-origin"),
            expected,
            "{origin}"
        );
        let preflight = send(
            &gw,
            "OPTIONS",
            "/api/x",
            &[("origin", origin), ("access-control-request-method", "GET")],
        )
        .await;
        assert_eq!(
            preflight.status,
            if allowed { 204 } else { 403 },
            "{origin}"
        );
    }
}

#[tokio::test]
async fn any_origin_without_credentials_is_a_star() {
    let (origin, _) = counting_origin().await;
    let gw = gateway(
        origin.addr,
        &route(
            "open",
            "/open",
            "[routes.cors]\nallow_origins = [\"*\"]\nallow_headers = [\"*\"]\n",
        ),
    )
    .await;
    let got = send(&gw, "GET", "/open", &[("origin", "https://anyone.test")]).await;
    assert_eq!(header(&got, "access-control-allow-origin"), Some("*"));
    assert_eq!(
        header(&got, "vary"),
        None,
        "a bare * does not vary by origin"
    );
    assert_eq!(header(&got, "access-control-allow-credentials"), None);
    let got = send(
        &gw,
        "OPTIONS",
        "/open",
        &[
            ("origin", "https://anyone.test"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "x-anything"),
        ],
    )
    .await;
    assert_eq!(got.status, 204);
    assert_eq!(
        header(&got, "access-control-allow-headers"),
        Some("x-anything")
    );
}

#[tokio::test]
async fn gateway_errors_carry_cors_headers() {
    let closed = origin::closed_port().await;
    let gw = support::gateway(&format!(
        "[[services]]\nname = \"down\"\nendpoints = [\"{closed}\"]\n\
         [[routes]]\nname = \"down\"\nservice = \"down\"\nmatch = {{ prefix = \"/down\" }}\n{POLICY}\n\
         [[routes]]\nname = \"limited\"\nservice = \"down\"\nmatch = {{ prefix = \"/limited\" }}\n\
         rate_limits = [{{ name = \"one\", requests = 1, per = \"1h\", key = \"client-address\" }}]\n\
         deny = 401\n{POLICY}\n"
    ))
    .await;
    let from_app = [("origin", "https://app.example.com")];
    let got = send(&gw, "GET", "/down", &from_app).await;
    assert_eq!(got.status, 502);
    assert_eq!(
        header(&got, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let got = send(&gw, "GET", "/limited", &from_app).await;
    assert_eq!(got.status, 401);
    assert_eq!(
        header(&got, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&got, "access-control-allow-credentials"),
        Some("true")
    );
}

#[tokio::test]
async fn a_rate_limit_answer_carries_cors_headers() {
    let (origin, _) = counting_origin().await;
    let gw = gateway(
        origin.addr,
        &route(
            "limited",
            "/limited",
            &format!(
                "rate_limits = [{{ name = \"one\", requests = 1, per = \"1h\", key = \"client-address\" }}]\n{POLICY}"
            ),
        ),
    )
    .await;
    let from_app = [("origin", "https://app.example.com")];
    assert_eq!(send(&gw, "GET", "/limited", &from_app).await.status, 200);
    let got = send(&gw, "GET", "/limited", &from_app).await;
    assert_eq!(got.status, 429);
    assert_eq!(
        header(&got, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
}

#[tokio::test]
async fn preflights_on_routes_without_cors_go_upstream() {
    let (origin, hits) = counting_origin().await;
    let gw = gateway(
        origin.addr,
        &format!(
            "{}[[routes]]\nname = \"plain\"\nservice = \"s\"\nmatch = {{ prefix = \"/plain\" }}\n",
            route("api", "/api", POLICY)
        ),
    )
    .await;
    let got = send(
        &gw,
        "OPTIONS",
        "/plain",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["method"], "OPTIONS");
    // The service's own CORS answer passes untouched.
    assert_eq!(header(&got, "access-control-allow-origin"), Some("*"));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // A plain OPTIONS (no preflight) to a CORS route whose methods exclude OPTIONS is no match.
    let got = send(&gw, "OPTIONS", "/api", &[]).await;
    assert_eq!(got.status, 404);
}

/// A browser sends a preflight without credentials: answered by the gateway, it never meets
/// the auth plugin; the plugin's 401 to the actual request carries the CORS headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_skip_an_auth_plugin_whose_401_a_page_can_read() {
    use crate::shipped_plugins::kit::{self, api_key_sha256, plugin};
    let (origin, hits) = kit::counting_echo().await;
    let dir = kit::PluginsDir::new();
    let keys = serde_json::json!({ "keys": [
        { "sha256": api_key_sha256("web-key"), "consumer": "web" },
    ] });
    let gw = kit::gateway(
        &dir,
        &format!(
            r#"
[[services]]
name = "api"
endpoints = ["{}"]

[[routes]]
name = "api"
service = "api"
match = {{ prefix = "/", methods = ["GET", "PUT"] }}
plugins = [{}]
[routes.cors]
allow_origins = ["https://app.example.com"]
allow_methods = ["GET", "PUT"]
allow_headers = ["x-api-key"]
"#,
            origin.addr,
            plugin("api-key", keys, &[], None)
        ),
    )
    .await;
    let app = ("origin", "https://app.example.com");
    let got = send(
        &gw,
        "OPTIONS",
        "/items",
        &[
            app,
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-api-key"),
        ],
    )
    .await;
    assert_eq!(got.status, 204, "{}", got.text());
    let got = send(&gw, "PUT", "/items", &[app]).await;
    assert_eq!(got.status, 401);
    assert_eq!(
        header(&got, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let got = send(&gw, "PUT", "/items", &[app, ("x-api-key", "web-key")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        header(&got, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    gw.shutdown().await;
}
