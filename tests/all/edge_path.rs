//! One canonical path (issue 12, section 1), black-box: raw request targets over TCP (hyper's
//! client would not send most of them), real origins that record what reached them, and the
//! real gateway in between. Routing, plugins and the upstream must all see one canonical path,
//! and the paths with no canonical form get 400 `bad_path` and reach no origin.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse::body;
use gatehouse::gateway::RunningGateway;
use http::Response;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::shipped_plugins::kit::{self, api_key_sha256, plugin, PluginsDir};
use crate::support::{self, origin};

/// An origin that records the path and query of every request it gets, and answers with
/// JSON naming itself and that path.
struct Recording {
    origin: origin::Origin,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Recording {
    async fn start(name: &'static str) -> Recording {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let origin = origin::start(move |req: http::Request<hyper::body::Incoming>| {
            let target = req
                .uri()
                .path_and_query()
                .map_or("", |pq| pq.as_str())
                .to_owned();
            log.lock().expect("seen lock").push(target.clone());
            async move {
                let doc = json!({ "origin": name, "target": target });
                let mut r = Response::new(body::full(doc.to_string()));
                r.headers_mut()
                    .insert("content-type", "application/json".parse().expect("header"));
                r
            }
        })
        .await;
        Recording { origin, seen }
    }

    /// Every request target received so far, then forgets them.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().expect("seen lock"))
    }
}

/// A raw response: status and body (chunked bodies decoded).
#[derive(Debug)]
struct Raw {
    status: u16,
    body: String,
}

impl Raw {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends `GET <target> HTTP/1.1` as exact bytes and reads the whole response.
async fn raw_get(gw: &RunningGateway, target: &str, extra_headers: &str) -> Raw {
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: gateway.test\r\n{extra_headers}Connection: close\r\n\r\n"
    );
    raw(gw, request.as_bytes()).await
}

async fn raw(gw: &RunningGateway, request: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(gw.public_addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("the gateway answers and closes within 10 s")
        .expect("read response");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Raw { status, body }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// Two services behind prefix routes, plus a catch-all: which origin a request reaches shows
/// which route the gateway chose, and the origin's record shows the path it was sent.
async fn two_services(extra: &str) -> (RunningGateway, Recording, Recording, Recording) {
    let public = Recording::start("public").await;
    let admin = Recording::start("admin").await;
    let other = Recording::start("other").await;
    let gw = support::gateway(&format!(
        r#"
{extra}
[[services]]
name = "public"
endpoints = ["{}"]

[[services]]
name = "admin"
endpoints = ["{}"]

[[services]]
name = "other"
endpoints = ["{}"]

[[routes]]
name = "public"
service = "public"
match = {{ prefix = "/public" }}

[[routes]]
name = "admin"
service = "admin"
match = {{ prefix = "/admin" }}

[[routes]]
name = "files"
service = "public"
match = {{ prefix = "/files" }}
allow_encoded_slash = true

[[routes]]
name = "stripped"
service = "other"
match = {{ prefix = "/api" }}
strip_prefix = true

[[routes]]
name = "catch-all"
service = "other"
match = {{ prefix = "/" }}
"#,
        public.origin.addr, admin.origin.addr, other.origin.addr
    ))
    .await;
    (gw, public, admin, other)
}

#[tokio::test]
async fn dot_segments_and_their_encodings_route_by_the_canonical_path() {
    let (gw, public, admin, other) = two_services("").await;
    // (target sent, origin that must get it, target that origin must see)
    let cases = [
        ("/public/../admin", "admin", "/admin"),
        ("/public/%2e%2e/admin", "admin", "/admin"),
        ("/public/%2E%2e/admin/x", "admin", "/admin/x"),
        ("/public/.%2E/admin", "admin", "/admin"),
        ("/public/./x/../../admin/%7eme", "admin", "/admin/~me"),
        ("//admin", "admin", "/admin"),
        ("/public//x///y", "public", "/public/x/y"),
        ("/admin/../public/ok", "public", "/public/ok"),
        ("/%61dmin", "admin", "/admin"),
        ("/public/a%2a%3f", "public", "/public/a%2A%3F"),
        // The query is kept exactly as sent, dots and escapes included.
        (
            "/public/../admin?next=/a/../b&x=%2e%2F",
            "admin",
            "/admin?next=/a/../b&x=%2e%2F",
        ),
        // strip_prefix works on the canonical path.
        ("/api/./v1/%75sers", "other", "/v1/users"),
        ("/public/../api/v1", "other", "/v1"),
    ];
    for (target, want_origin, want_target) in cases {
        let got = raw_get(&gw, target, "").await;
        assert_eq!(got.status, 200, "{target}: {}", got.body);
        let body = got.json();
        assert_eq!(
            body["origin"], want_origin,
            "{target} routed by its canonical path"
        );
        assert_eq!(body["target"], want_target, "{target}");
        let (reached, untouched) = match want_origin {
            "admin" => (&admin, [&public, &other]),
            "public" => (&public, [&admin, &other]),
            _ => (&other, [&public, &admin]),
        };
        assert_eq!(reached.take(), vec![want_target.to_owned()], "{target}");
        for o in untouched {
            assert!(o.take().is_empty(), "{target} reached one origin only");
        }
    }
}

#[tokio::test]
async fn paths_with_no_canonical_form_get_400_and_reach_no_origin() {
    let (gw, public, admin, other) = two_services("").await;
    // (target, words the JSON message must hold)
    let cases = [
        ("/public/a%2fb", "encoded '/'"),
        ("/public/a%2Fb", "encoded '/'"),
        ("/public/a%5Cb", "encoded '\\'"),
        ("/public/a%5cb/../../admin", "encoded '\\'"),
        ("/public/a\\b", "raw '\\'"),
        ("/public/a%00b", "control character 0x00"),
        ("/public/%0d%0aX-Injected:%20yes", "control character 0x0D"),
        ("/public/%C0%AE%C0%AE/admin", "overlong UTF-8"),
        ("/public/%C0%AE/admin", "overlong UTF-8"),
        ("/public/%FF", "invalid or overlong UTF-8"),
        ("/public/..;/admin", "';' parameter"),
        ("/public/..;x=y/admin", "';' parameter"),
        ("/public/%2e%2e;/admin", "';' parameter"),
        ("/public/.;/admin", "';' parameter"),
        ("/;/admin", "';' parameter"),
        ("/..", "above the root"),
        ("/public/../../admin", "above the root"),
        ("/%2e%2e/admin", "above the root"),
        ("/public/%zz", "malformed percent-escape"),
        ("/public/%2", "malformed percent-escape"),
    ];
    for (target, reason) in cases {
        let got = raw_get(&gw, target, "").await;
        assert_eq!(got.status, 400, "{target}: {}", got.body);
        let body = got.json();
        assert_eq!(body["error"], "bad_path", "{target}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(reason),
            "{target}: {message:?} names {reason:?}"
        );
        assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    }
    for o in [&public, &admin, &other] {
        assert!(o.take().is_empty(), "no refused path reached an origin");
    }
}

#[tokio::test]
async fn absolute_form_targets_are_canonicalised_too() {
    let (gw, public, admin, _other) = two_services("").await;
    let got = raw_get(&gw, "http://gateway.test/public/%2e%2e/admin?q=1", "").await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json()["origin"], "admin");
    assert_eq!(admin.take(), vec!["/admin?q=1".to_owned()]);
    let got = raw_get(&gw, "http://gateway.test/public/..;/admin", "").await;
    assert_eq!(got.status, 400, "{}", got.body);
    assert_eq!(got.json()["error"], "bad_path");
    assert!(public.take().is_empty() && admin.take().is_empty());
}

#[tokio::test]
async fn http2_paths_with_a_query_are_canonicalised_the_same_way() {
    let (gw, public, admin, _other) = two_services("").await;
    let h2 = support::h2c();
    let base = format!("http://{}", gw.public_addr);
    let got = support::send(
        &h2,
        "GET",
        &format!("{base}/public/%2E%2e/admin/x?next=/a/../b&y=%2e"),
        &[],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["origin"], "admin");
    assert_eq!(admin.take(), vec!["/admin/x?next=/a/../b&y=%2e".to_owned()]);
    for target in ["/public/a%2Fb", "/public/..;/admin", "/public/%C0%AE"] {
        let got = support::send(
            &h2,
            "GET",
            &format!("{base}{target}"),
            &[],
            bytes::Bytes::new(),
        )
        .await;
        assert_eq!(got.status, 400, "{target}: {}", got.text());
        assert_eq!(got.json()["error"], "bad_path", "{target}");
    }
    assert!(public.take().is_empty() && admin.take().is_empty());
}

#[tokio::test]
async fn merge_slashes_is_on_by_default_and_can_be_turned_off() {
    let (gw, _public, admin, _other) = two_services("").await;
    let got = raw_get(&gw, "//admin//x", "").await;
    assert_eq!(got.json()["origin"], "admin");
    assert_eq!(admin.take(), vec!["/admin/x".to_owned()]);

    // Off: `//admin` is not under the `/admin` prefix, so the catch-all gets it as sent.
    let (gw, _public, admin, other) = two_services("[paths]\nmerge_slashes = false\n").await;
    let got = raw_get(&gw, "//admin//x", "").await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json()["origin"], "other");
    assert_eq!(other.take(), vec!["//admin//x".to_owned()]);
    assert!(admin.take().is_empty());
    // Dot segments are still removed.
    let got = raw_get(&gw, "/public/../admin", "").await;
    assert_eq!(got.json()["origin"], "admin");
}

#[tokio::test]
async fn allow_encoded_slash_lets_encoded_separators_through_only_to_that_route() {
    let (gw, public, admin, other) = two_services("").await;
    // The opted-in route gets them, still encoded (never decoded into a separator).
    for (target, want) in [
        ("/files/a%2fb", "/files/a%2Fb"),
        ("/files/a%5Cb/c?x=%2F", "/files/a%5Cb/c?x=%2F"),
        ("/public/../files/a%2Fb", "/files/a%2Fb"),
    ] {
        let got = raw_get(&gw, target, "").await;
        assert_eq!(got.status, 200, "{target}: {}", got.body);
        assert_eq!(public.take(), vec![want.to_owned()], "{target}");
    }
    // Refused: a route that did not opt in (including the catch-all the lenient form would
    // reach), and dot segments hidden between encoded separators.
    for target in [
        "/public/a%2Fb",
        "/admin%2F",
        "/files/..%2F..%2Fadmin",
        "/files/x%2F%2e%2e%2Fadmin",
        "/files%2F..%2Fadmin",
    ] {
        let got = raw_get(&gw, target, "").await;
        assert_eq!(got.status, 400, "{target}: {}", got.body);
        assert_eq!(got.json()["error"], "bad_path", "{target}");
    }
    for o in [&public, &admin, &other] {
        assert!(o.take().is_empty(), "no refused path reached an origin");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_plugin_on_a_guarded_route_cannot_be_bypassed() {
    let app = Recording::start("app").await;
    let dir = PluginsDir::new();
    let auth = plugin(
        "api-key",
        json!({ "keys": [{ "sha256": api_key_sha256("s3cret"), "consumer": "ops" }] }),
        &[],
        None,
    );
    // One application behind two routes: /public is open, /admin needs an API key.
    let gw = kit::gateway(
        &dir,
        &format!(
            r#"
[[services]]
name = "app"
endpoints = ["{}"]

[[routes]]
name = "public"
service = "app"
match = {{ prefix = "/public" }}

[[routes]]
name = "admin"
service = "app"
match = {{ prefix = "/admin" }}
plugins = [{auth}]
"#,
            app.origin.addr
        ),
    )
    .await;

    for target in [
        "/admin/users",
        "/public/../admin/users",
        "/public/%2e%2e/admin/users",
        "/public/%2E%2e/admin/users",
        "/public/./%2e./admin/users",
        "//admin/users",
        "/public//..//admin/users",
        "/%61dmin/users",
        "/public/x/..%2F..%2Fadmin/users",
        "/public/..;/admin/users",
        "/public/%C0%AE%C0%AE/admin/users",
        "/public/..%5Cadmin/users",
        "http://gateway.test/public/../admin/users",
    ] {
        let got = raw_get(&gw, target, "").await;
        assert!(
            matches!(got.status, 400 | 401),
            "{target}: the guard ran or the path was refused, got {} {}",
            got.status,
            got.body
        );
        assert!(app.take().is_empty(), "{target} never reached the app");
    }
    // With the key, the same hostile spelling reaches the guarded path, canonical.
    let got = raw_get(&gw, "/public/%2e%2e/admin/users", "x-api-key: s3cret\r\n").await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(app.take(), vec!["/admin/users".to_owned()]);
    // The open route stays open.
    let got = raw_get(&gw, "/public/./docs", "").await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(app.take(), vec!["/public/docs".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_sees_the_path_the_upstream_gets() {
    let app = Recording::start("app").await;
    let dir = PluginsDir::new();
    // test-kit is not a shipped plugin: put it beside them.
    let kit_file = crate::plugins::guests::path("test-kit");
    std::fs::copy(&kit_file, dir.0.join("test-kit.wasm")).expect("copy test-kit");
    let meta = plugin("test-kit", json!({ "mode": "meta" }), &[], None);
    let gw = kit::gateway(
        &dir,
        &format!(
            r#"
[[services]]
name = "app"
endpoints = ["{}"]

[[routes]]
name = "meta"
service = "app"
match = {{ prefix = "/meta" }}
plugins = [{meta}]

[[routes]]
name = "plain"
service = "app"
match = {{ prefix = "/plain" }}
"#,
            app.origin.addr
        ),
    )
    .await;
    for suffix in [
        "/a/../b/./c",
        "/%2e%2E/x/%7Euser//file%2a?q=%2e%2e/&r=1",
        "/x/%c3%a9/",
        "//y",
    ] {
        // The plugin answers from `request.path()` / `request.query()` on /meta ...
        let seen_by_plugin = raw_get(&gw, &format!("/meta/m{suffix}"), "").await;
        assert_eq!(
            seen_by_plugin.status, 200,
            "{suffix}: {}",
            seen_by_plugin.body
        );
        let plugin = seen_by_plugin.json();
        let plugin_path = plugin["path"].as_str().expect("path").to_owned();
        // ... and the same suffix on /plain goes upstream.
        let got = raw_get(&gw, &format!("/plain/m{suffix}"), "").await;
        assert_eq!(got.status, 200, "{suffix}: {}", got.body);
        let upstream = app.take();
        assert_eq!(upstream.len(), 1, "{suffix}");
        let upstream_path = upstream[0].split('?').next().unwrap_or_default();
        assert_eq!(
            plugin_path.strip_prefix("/meta"),
            upstream_path.strip_prefix("/plain"),
            "{suffix}: the plugin's request.path() is the canonical path sent upstream"
        );
        if let Some((_, query)) = upstream[0].split_once('?') {
            assert_eq!(plugin["query"], query, "{suffix}: query as sent");
        }
    }
}
