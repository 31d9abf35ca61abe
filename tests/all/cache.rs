//! The HTTP response cache (docs/cache.md) through the real gateway, against real origins on
//! 127.0.0.1 that count what reaches them. Freshness on a paused clock is covered by the
//! unit tests in host/src/cache/tests.rs; here expiry is driven by real one-second max-ages,
//! polled with a deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gatehouse::body;
use gatehouse::gateway::RunningGateway;
use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::json;

use crate::support::{self, origin, Got};

/// Requests an origin saw, by path, and how many of them were conditional.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<String, (usize, usize)>>>);

impl Seen {
    fn hits(&self, path: &str) -> usize {
        self.0.lock().expect("seen").get(path).map_or(0, |s| s.0)
    }
    fn conditional(&self, path: &str) -> usize {
        self.0.lock().expect("seen").get(path).map_or(0, |s| s.1)
    }
    fn record(&self, path: &str, conditional: bool) -> usize {
        let mut map = self.0.lock().expect("seen");
        let entry = map.entry(path.to_owned()).or_default();
        entry.0 += 1;
        entry.1 += usize::from(conditional);
        entry.0
    }
}

/// An origin whose answer depends on the path's first segment (see `answer`); the body says
/// which request of that path it is (`/fresh #1`).
async fn counting_origin() -> (origin::Origin, Seen) {
    let seen = Seen::default();
    let record = seen.clone();
    let o = origin::start(move |req: Request<Incoming>| {
        let path = req.uri().path().to_owned();
        let inm = req.headers().get("if-none-match").cloned();
        let lang = req
            .headers()
            .get("accept-language")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        let n = record.record(&path, inm.is_some());
        async move { answer(&path, n, inm, &lang).await }
    })
    .await;
    (o, seen)
}

fn respond(body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Response<body::Body> {
    let mut r = Response::new(body::full(body.into()));
    for (k, v) in headers {
        r.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    r
}

async fn answer(
    path: &str,
    n: usize,
    if_none_match: Option<http::HeaderValue>,
    lang: &str,
) -> Response<body::Body> {
    let text = format!("{path} #{n}");
    let first = path.split('/').nth(1).unwrap_or("");
    match first {
        "fresh" => respond(text, &[("cache-control", "max-age=60"), ("etag", "\"f1\"")]),
        "short" => {
            if if_none_match.is_some_and(|v| v == "\"s1\"") {
                let mut r = respond(
                    Bytes::new(),
                    &[("cache-control", "max-age=1"), ("etag", "\"s1\"")],
                );
                *r.status_mut() = http::StatusCode::NOT_MODIFIED;
                return r;
            }
            respond(text, &[("cache-control", "max-age=1"), ("etag", "\"s1\"")])
        }
        "vary" => respond(
            format!("{text} {lang}"),
            &[("cache-control", "max-age=60"), ("vary", "accept-language")],
        ),
        "slow" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            respond(text, &[("cache-control", "max-age=60")])
        }
        "swr" => respond(
            text,
            &[("cache-control", "max-age=1, stale-while-revalidate=60")],
        ),
        "cookie" => respond(
            text,
            &[("cache-control", "max-age=60"), ("set-cookie", "s=1")],
        ),
        "big" => respond(vec![b'x'; 4096], &[("cache-control", "max-age=60")]),
        "chunked" => {
            // No Content-Length: the cache learns the size only as the body streams.
            let chunks = (0..8).map(|_| {
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(vec![
                    b'c';
                    512
                ])))
            });
            let mut r = Response::new(body::streaming(http_body_util::StreamBody::new(
                futures::stream::iter(chunks),
            )));
            r.headers_mut()
                .insert("cache-control", "max-age=60".parse().expect("value"));
            r
        }
        "plain" => respond(text, &[]),
        _ => respond(text, &[("cache-control", "max-age=60")]),
    }
}

fn gateway_toml(origin: &origin::Origin, cache: &str, extra: &str) -> String {
    format!(
        r#"
{extra}
[[services]]
name = "api"
endpoints = ["{}"]

[[routes]]
name = "api"
service = "api"
match = {{ prefix = "/" }}

[routes.cache]
{cache}
"#,
        origin.addr
    )
}

fn url(gw: &RunningGateway, path: &str) -> String {
    format!("http://{}{path}", gw.public_addr)
}

fn cache_status(got: &Got) -> String {
    got.headers
        .get("cache-status")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_responses_are_served_from_the_cache_with_age_and_status() {
    let (origin, seen) = counting_origin().await;
    let gw = support::gateway(&gateway_toml(&origin, "", "")).await;

    let first = support::get(&url(&gw, "/fresh?a=1"), &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "/fresh #1");
    assert_eq!(
        cache_status(&first),
        "gatehouse; fwd=miss; fwd-status=200; stored"
    );
    support::eventually("the entry is stored", Duration::from_secs(5), async || {
        let got = support::get(&url(&gw, "/fresh?a=1"), &[]).await;
        cache_status(&got).starts_with("gatehouse; hit")
    })
    .await;
    let hit = support::get(&url(&gw, "/fresh?a=1"), &[]).await;
    assert_eq!(hit.text(), "/fresh #1", "served from the cache");
    assert!(hit.headers.contains_key("age"), "a hit carries Age");
    assert!(
        cache_status(&hit).contains("ttl="),
        "{}",
        cache_status(&hit)
    );
    assert_eq!(seen.hits("/fresh"), 1, "the origin saw one request");

    // Another query is another key.
    let other = support::get(&url(&gw, "/fresh?a=2"), &[]).await;
    assert!(cache_status(&other).contains("fwd=miss"));
    assert_eq!(seen.hits("/fresh"), 2);

    // A client's If-None-Match against a fresh entry: 304 from the cache.
    let not_modified = support::get(&url(&gw, "/fresh?a=1"), &[("if-none-match", "\"f1\"")]).await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.headers["etag"], "\"f1\"");
    assert_eq!(seen.hits("/fresh"), 2, "the 304 came from the cache");

    // The route's cache policy, with its defaults, in the config dump.
    let config = support::get(&format!("http://{}/admin/config", gw.admin_addr), &[]).await;
    let cache = &config.json()["routes"][0]["cache"];
    assert_eq!(cache["lock_timeout"], "5s", "{cache}");
    assert_eq!(cache["max_body_bytes"], 1048576);
    assert_eq!(config.json()["cache"]["max_bytes"], 67108864);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_entry_is_revalidated_with_its_etag() {
    let (origin, seen) = counting_origin().await;
    let gw = support::gateway(&gateway_toml(&origin, "", "")).await;

    let first = support::get(&url(&gw, "/short"), &[]).await;
    assert_eq!(first.text(), "/short #1");
    // max-age=1: within a few seconds the entry is stale and revalidated; the origin answers
    // the conditional request 304 and the stored body is served.
    support::eventually("a revalidation", Duration::from_secs(10), async || {
        let got = support::get(&url(&gw, "/short"), &[]).await;
        assert_eq!(
            got.text(),
            "/short #1",
            "the stored body, whatever happened"
        );
        cache_status(&got) == "gatehouse; fwd=stale; fwd-status=304; ttl=1"
    })
    .await;
    assert!(
        seen.conditional("/short") >= 1,
        "the origin saw If-None-Match"
    );
    assert_eq!(
        seen.hits("/short") - seen.conditional("/short"),
        1,
        "one full fetch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_one_variant_per_header_value() {
    let (origin, seen) = counting_origin().await;
    let gw = support::gateway(&gateway_toml(&origin, "", "")).await;
    let en = support::get(&url(&gw, "/vary"), &[("accept-language", "en")]).await;
    assert_eq!(en.text(), "/vary #1 en");
    let de = support::get(&url(&gw, "/vary"), &[("accept-language", "de")]).await;
    assert_eq!(de.text(), "/vary #2 de");
    assert!(
        cache_status(&de).contains("fwd=vary-miss"),
        "{}",
        cache_status(&de)
    );
    support::eventually(
        "both variants are served",
        Duration::from_secs(5),
        async || {
            let en = support::get(&url(&gw, "/vary"), &[("accept-language", "en")]).await;
            let de = support::get(&url(&gw, "/vary"), &[("accept-language", "de")]).await;
            en.text() == "/vary #1 en"
                && de.text() == "/vary #2 de"
                && cache_status(&de).contains("hit")
        },
    )
    .await;
    assert_eq!(seen.hits("/vary"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_misses_make_one_upstream_request() {
    let (origin, seen) = counting_origin().await;
    let gw = support::gateway(&gateway_toml(&origin, "", "")).await;
    let target = url(&gw, "/slow");
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move { support::get(&target, &[]).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        let got = request.await.expect("request task");
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "/slow #1");
        statuses.push(cache_status(&got));
    }
    assert_eq!(seen.hits("/slow"), 1, "one request reached the origin");
    let leaders = statuses.iter().filter(|s| s.contains("stored")).count();
    assert_eq!(leaders, 1, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_and_refreshes_in_the_background() {
    let (origin, seen) = counting_origin().await;
    let gw = support::gateway(&gateway_toml(&origin, "", "")).await;
    assert_eq!(support::get(&url(&gw, "/swr"), &[]).await.text(), "/swr #1");
    support::eventually("a stale answer", Duration::from_secs(10), async || {
        let got = support::get(&url(&gw, "/swr"), &[]).await;
        if cache_status(&got).contains("detail=stale-while-revalidate") {
            assert_eq!(got.text(), "/swr #1", "stale, at once");
            return true;
        }
        false
    })
    .await;
    support::eventually(
        "the background refresh",
        Duration::from_secs(5),
        async || seen.hits("/swr") == 2,
    )
    .await;
    support::eventually(
        "the refreshed entry is served",
        Duration::from_secs(5),
        async || support::get(&url(&gw, "/swr"), &[]).await.text() == "/swr #2",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_the_stale_entry_when_the_origin_dies() {
    let (origin, _seen) = counting_origin().await;
    let toml = gateway_toml(&origin, "stale_if_error = \"1m\"", "");
    let gw = support::gateway(&toml).await;
    let first = support::get(&url(&gw, "/short/x"), &[]).await;
    assert_eq!(first.text(), "/short/x #1");
    support::eventually("stored", Duration::from_secs(5), async || {
        cache_status(&support::get(&url(&gw, "/short/x"), &[]).await).contains("hit")
    })
    .await;
    origin.kill();
    support::eventually(
        "a stale answer on error",
        Duration::from_secs(10),
        async || {
            let got = support::get(&url(&gw, "/short/x"), &[]).await;
            assert_ne!(
                got.status,
                502,
                "the error must not reach the client: {}",
                cache_status(&got)
            );
            cache_status(&got).contains("detail=stale-if-error") && got.text() == "/short/x #1"
        },
    )
    .await;
    // A path never stored has nothing to fall back on.
    assert_eq!(
        support::get(&url(&gw, "/fresh/never"), &[]).await.status,
        502
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_needs_the_admin_token_and_removes_what_it_names() {
    let (origin, seen) = counting_origin().await;
    let toml = gateway_toml(&origin, "", "[admin]\ntoken = \"secret\"\n");
    let gw = support::gateway(&toml).await;
    for path in ["/fresh/a?x=1", "/fresh/a?x=2", "/fresh/b", "/other"] {
        support::get(&url(&gw, path), &[]).await;
    }
    let admin = |query: &str| format!("http://{}/admin/cache{query}", gw.admin_addr);
    let client = support::http1();
    let auth = [("authorization", "Bearer secret")];
    support::eventually("four entries", Duration::from_secs(5), async || {
        let stats = support::get(&admin(""), &auth).await;
        stats.json()["entries"] == 4
    })
    .await;

    let refused = support::send(&client, "DELETE", &admin(""), &[], Bytes::new()).await;
    assert_eq!(refused.status, 401);
    let bad = support::send(
        &client,
        "DELETE",
        &admin("?route=api&path=x"),
        &auth,
        Bytes::new(),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("must start with '/'"), "{}", bad.text());
    let unknown = support::send(
        &client,
        "DELETE",
        &admin("?route=nope"),
        &auth,
        Bytes::new(),
    )
    .await;
    assert_eq!(unknown.status, 400);

    // An exact path purges every query of it.
    let purged = support::send(
        &client,
        "DELETE",
        &admin("?route=api&path=/fresh/a"),
        &auth,
        Bytes::new(),
    )
    .await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    assert_eq!(purged.json(), json!({ "purged": 2 }));
    let again = support::get(&url(&gw, "/fresh/a?x=1"), &[]).await;
    assert!(cache_status(&again).contains("fwd=miss"));
    assert_eq!(seen.hits("/fresh/a"), 3);

    let prefix = support::send(
        &client,
        "DELETE",
        &admin("?route=api&prefix=/fresh"),
        &auth,
        Bytes::new(),
    )
    .await;
    assert_eq!(
        prefix.json()["purged"],
        2,
        "/fresh/a?x=1 again and /fresh/b"
    );
    let all = support::send(&client, "DELETE", &admin(""), &auth, Bytes::new()).await;
    assert_eq!(all.json()["purged"], 1, "/other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_responses_stays_within_the_byte_budget() {
    let (origin, _seen) = counting_origin().await;
    let toml = gateway_toml(
        &origin,
        "max_body_bytes = 8192",
        "[cache]\nmax_bytes = 65536\n",
    );
    let gw = support::gateway(&toml).await;
    let client = support::http1();
    for i in 0..200 {
        let got = support::send(
            &client,
            "GET",
            &url(&gw, &format!("/big/{i}")),
            &[],
            Bytes::new(),
        )
        .await;
        assert_eq!(got.body.len(), 4096);
    }
    let stats = support::get(&format!("http://{}/admin/cache", gw.admin_addr), &[])
        .await
        .json();
    let bytes = stats["bytes"].as_u64().expect("bytes");
    assert!(bytes <= 65536, "over budget: {stats}");
    assert!(stats["entries"].as_u64().expect("entries") < 200, "{stats}");
    let metrics = support::get(&format!("http://{}/metrics", gw.admin_addr), &[])
        .await
        .text();
    assert!(
        metrics.contains("gatehouse_cache_stored_bytes "),
        "{metrics}"
    );
    assert!(metrics.contains("gatehouse_cache_responses_total{route=\"api\",status=\"miss\"} 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_authorization_and_large_bodies_are_not_stored() {
    let (origin, seen) = counting_origin().await;
    let gw = support::gateway(&gateway_toml(&origin, "max_body_bytes = 1024", "")).await;
    for _ in 0..2 {
        let got = support::get(&url(&gw, "/cookie"), &[]).await;
        assert!(
            cache_status(&got).contains("detail=set-cookie"),
            "{}",
            cache_status(&got)
        );
    }
    assert_eq!(seen.hits("/cookie"), 2);
    for _ in 0..2 {
        let got = support::get(&url(&gw, "/fresh/auth"), &[("authorization", "Bearer a")]).await;
        assert_eq!(cache_status(&got), "gatehouse; fwd=bypass; fwd-status=200");
    }
    assert_eq!(seen.hits("/fresh/auth"), 2);
    // An unauthenticated request is not answered from an authenticated one either.
    let plain = support::get(&url(&gw, "/fresh/auth"), &[]).await;
    assert!(cache_status(&plain).contains("fwd=miss"));
    for _ in 0..2 {
        let got = support::get(&url(&gw, "/big"), &[]).await;
        assert_eq!(got.body.len(), 4096, "streamed whole");
        assert!(
            cache_status(&got).contains("detail=too-large"),
            "{}",
            cache_status(&got)
        );
    }
    assert_eq!(seen.hits("/big"), 2);
    // A streamed body crossing the limit: sent whole, the copy given up.
    for _ in 0..2 {
        let got = support::get(&url(&gw, "/chunked"), &[]).await;
        assert_eq!(got.body.len(), 4096, "streamed whole");
    }
    assert_eq!(seen.hits("/chunked"), 2, "never stored");
    let stats = support::get(&format!("http://{}/admin/cache", gw.admin_addr), &[]).await;
    assert_eq!(
        stats.json()["entries"],
        1,
        "only /fresh/auth's plain answer: {}",
        stats.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_answered_from_a_stored_get_and_never_stored() {
    let (origin, seen) = counting_origin().await;
    let gw = support::gateway(&gateway_toml(&origin, "", "")).await;
    let client = support::http1();
    let head = support::send(&client, "HEAD", &url(&gw, "/fresh/h"), &[], Bytes::new()).await;
    assert_eq!(head.status, 200);
    assert!(cache_status(&head).contains("fwd=miss"));
    let get = support::get(&url(&gw, "/fresh/h"), &[]).await;
    assert_eq!(get.text(), "/fresh/h #2", "the HEAD stored nothing");
    support::eventually("a HEAD hit", Duration::from_secs(5), async || {
        let head = support::send(&client, "HEAD", &url(&gw, "/fresh/h"), &[], Bytes::new()).await;
        head.body.is_empty() && cache_status(&head).starts_with("gatehouse; hit")
    })
    .await;
    assert_eq!(seen.hits("/fresh/h"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_ttl_covers_responses_without_freshness() {
    let (origin, seen) = counting_origin().await;
    let gw = support::gateway(&gateway_toml(&origin, "", "")).await;
    for _ in 0..2 {
        let got = support::get(&url(&gw, "/plain"), &[]).await;
        assert!(
            cache_status(&got).contains("detail=no-freshness"),
            "{}",
            cache_status(&got)
        );
    }
    assert_eq!(seen.hits("/plain"), 2);

    let (origin, seen) = counting_origin().await;
    let gw = support::gateway(&gateway_toml(&origin, "ttl = \"1m\"", "")).await;
    support::get(&url(&gw, "/plain"), &[]).await;
    support::eventually(
        "a hit under the route ttl",
        Duration::from_secs(5),
        async || {
            let got = support::get(&url(&gw, "/plain"), &[]).await;
            got.text() == "/plain #1" && cache_status(&got).starts_with("gatehouse; hit")
        },
    )
    .await;
    assert_eq!(seen.hits("/plain"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_plugin_runs_before_every_hit() {
    use crate::shipped_plugins::kit::{self, api_key_sha256, plugin, PluginsDir};
    let (origin, seen) = counting_origin().await;
    let dir = PluginsDir::new();
    let cfg = json!({ "keys": [{ "sha256": api_key_sha256("k1"), "consumer": "app" }] });
    let toml = format!(
        r#"
[[services]]
name = "api"
endpoints = ["{}"]

[[routes]]
name = "api"
service = "api"
match = {{ prefix = "/" }}
plugins = [{}]

[routes.cache]
key_headers = ["x-consumer"]
"#,
        origin.addr,
        plugin("api-key", cfg, &[], None)
    );
    let gw = kit::gateway(&dir, &toml).await;
    let with_key = [("x-api-key", "k1")];
    assert_eq!(
        support::get(&url(&gw, "/fresh/p"), &with_key).await.status,
        200
    );
    support::eventually("stored", Duration::from_secs(5), async || {
        let got = support::get(&url(&gw, "/fresh/p"), &with_key).await;
        cache_status(&got).starts_with("gatehouse; hit")
    })
    .await;
    let without = support::get(&url(&gw, "/fresh/p"), &[]).await;
    assert_eq!(
        without.status,
        401,
        "the plugin refused before the cache: {}",
        without.text()
    );
    let wrong = support::get(&url(&gw, "/fresh/p"), &[("x-api-key", "nope")]).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(seen.hits("/fresh/p"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_survive_a_reload_unless_the_route_cache_changed() {
    let (origin, seen) = counting_origin().await;
    let listen = "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n";
    let toml = |cache: &str| format!("{listen}{}", gateway_toml(&origin, cache, ""));
    let gw = support::gateway(&toml("")).await;
    support::get(&url(&gw, "/fresh/r"), &[]).await;
    support::eventually("stored", Duration::from_secs(5), async || {
        cache_status(&support::get(&url(&gw, "/fresh/r"), &[]).await).starts_with("gatehouse; hit")
    })
    .await;

    let same = gatehouse::config::load_str(&toml(""), "test.toml").expect("valid");
    gw.reloader.apply(same).expect("reload");
    let kept = support::get(&url(&gw, "/fresh/r"), &[]).await;
    assert!(
        cache_status(&kept).starts_with("gatehouse; hit"),
        "{}",
        cache_status(&kept)
    );
    assert_eq!(seen.hits("/fresh/r"), 1);

    let changed =
        gatehouse::config::load_str(&toml("lock_timeout = \"2s\""), "test.toml").expect("valid");
    gw.reloader.apply(changed).expect("reload");
    let fresh = support::get(&url(&gw, "/fresh/r"), &[]).await;
    assert!(
        cache_status(&fresh).contains("fwd=miss"),
        "{}",
        cache_status(&fresh)
    );
    assert_eq!(fresh.text(), "/fresh/r #2", "the old entry is not served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_unsafe_request_invalidates_the_stored_path() {
    let (origin, seen) = counting_origin().await;
    let gw = support::gateway(&gateway_toml(&origin, "", "")).await;
    support::get(&url(&gw, "/fresh/doc?v=1"), &[]).await;
    support::eventually("stored", Duration::from_secs(5), async || {
        let got = support::get(&url(&gw, "/fresh/doc?v=1"), &[]).await;
        cache_status(&got).starts_with("gatehouse; hit")
    })
    .await;
    let client = support::http1();
    let put = support::send(
        &client,
        "PUT",
        &url(&gw, "/fresh/doc"),
        &[],
        Bytes::from("new"),
    )
    .await;
    assert_eq!(put.status, 200);
    assert_eq!(cache_status(&put), "gatehouse; fwd=method; fwd-status=200");
    let after = support::get(&url(&gw, "/fresh/doc?v=1"), &[]).await;
    assert!(
        cache_status(&after).contains("fwd=miss"),
        "{}",
        cache_status(&after)
    );
    assert_eq!(seen.hits("/fresh/doc"), 3, "GET, PUT, GET again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_stripped_before_the_upstream_still_bypass_the_cache() {
    let (origin, seen) = counting_origin().await;
    // Like an auth plugin that strips the token it verified (jwt-auth `strip_token`).
    let toml = format!(
        r#"
[[services]]
name = "api"
endpoints = ["{}"]

[[routes]]
name = "api"
service = "api"
request_headers = {{ remove = ["authorization"] }}

[routes.cache]
"#,
        origin.addr
    );
    let gw = support::gateway(&toml).await;
    for _ in 0..2 {
        let got = support::get(&url(&gw, "/fresh/mine"), &[("authorization", "Bearer a")]).await;
        assert_eq!(cache_status(&got), "gatehouse; fwd=bypass; fwd-status=200");
    }
    assert_eq!(seen.hits("/fresh/mine"), 2);
}
