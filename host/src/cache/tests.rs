//! The cache rules on a paused clock: freshness, the route ttl, stale windows, Vary, what is
//! refused.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};

use super::*;

fn policy() -> RouteCachePolicy {
    RouteCachePolicy {
        ttl: None,
        max_body_bytes: DEFAULT_MAX_ENTRY_BYTES,
        key_headers: Vec::new(),
        key_cookies: Vec::new(),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        lock_timeout: DEFAULT_LOCK_TIMEOUT,
        authorized: false,
        set_cookie: false,
        fingerprint: 0,
    }
    .fingerprinted()
}

fn request(path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = Request::get(path).header("host", "example.com");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(()).expect("request").into_parts().0
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    map
}

async fn store(
    cache: &ResponseCache,
    policy: &RouteCachePolicy,
    req: &http::request::Parts,
    response: &[(&str, &str)],
) -> CacheKey {
    let key = CacheKey::new(
        &Arc::new("r".to_owned()),
        policy,
        req.uri.path(),
        None,
        &req.headers,
    );
    let admission = admit(
        policy,
        req,
        StatusCode::OK,
        &headers(response),
        cache.clock.now(),
    )
    .expect("storable");
    cache
        .put(
            key.clone(),
            Arc::new(admission.into_response(Bytes::from("body"))),
        )
        .await;
    key
}

fn state(lookup: &Lookup) -> &'static str {
    match lookup {
        Lookup::Fresh(_) => "fresh",
        Lookup::Stale {
            serve_while_revalidating: true,
            ..
        } => "stale-while-revalidate",
        Lookup::Stale { .. } => "stale",
        Lookup::Miss { vary_miss: true } => "vary-miss",
        Lookup::Miss { .. } => "miss",
    }
}

#[tokio::test(start_paused = true)]
async fn max_age_is_fresh_until_the_clock_passes_it() {
    let cache = ResponseCache::in_memory(CacheBudget::default());
    let p = policy();
    let req = request("/a", &[]);
    let key = store(&cache, &p, &req, &[("cache-control", "max-age=10")]).await;
    assert_eq!(state(&cache.lookup(&key, &p, &req).await), "fresh");
    tokio::time::advance(Duration::from_secs(9)).await;
    let Lookup::Fresh(hit) = cache.lookup(&key, &p, &req).await else {
        panic!("fresh at 9s of 10");
    };
    assert_eq!(
        hit.to_response(cache.clock.now(), false).headers()["age"],
        "9"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        state(&cache.lookup(&key, &p, &req).await),
        "miss",
        "expired, no validator"
    );
    // With a validator it is kept past freshness, to be revalidated.
    let key = store(
        &cache,
        &p,
        &req,
        &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
    )
    .await;
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(state(&cache.lookup(&key, &p, &req).await), "stale");
}

#[tokio::test(start_paused = true)]
async fn the_route_ttl_applies_only_without_freshness_of_its_own() {
    let cache = ResponseCache::in_memory(CacheBudget::default());
    let mut p = policy();
    let req = request("/a", &[]);
    let now = cache.clock.now();
    // No ttl: a response without freshness is not stored, Last-Modified heuristics or not.
    let last_modified = [("last-modified", "Mon, 01 Jan 2001 00:00:00 GMT")];
    assert_eq!(
        admit(&p, &req, StatusCode::OK, &headers(&last_modified), now).err(),
        Some(NotStored::NoFreshness)
    );
    p.ttl = Some(Duration::from_secs(5));
    let key = store(&cache, &p, &req, &[]).await;
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(state(&cache.lookup(&key, &p, &req).await), "fresh");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        state(&cache.lookup(&key, &p, &req).await),
        "miss",
        "no validator: dropped"
    );
    // The response's own max-age wins over the route's ttl.
    let key = store(&cache, &p, &req, &[("cache-control", "max-age=60")]).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(state(&cache.lookup(&key, &p, &req).await), "fresh");
}

#[tokio::test(start_paused = true)]
async fn stale_windows_come_from_the_route_or_the_response() {
    let cache = ResponseCache::in_memory(CacheBudget::default());
    let p = policy();
    let req = request("/a", &[]);
    let key = store(
        &cache,
        &p,
        &req,
        &[(
            "cache-control",
            "max-age=1, stale-while-revalidate=10, stale-if-error=60",
        )],
    )
    .await;
    tokio::time::advance(Duration::from_secs(5)).await;
    let lookup = cache.lookup(&key, &p, &req).await;
    assert_eq!(state(&lookup), "stale-while-revalidate");
    tokio::time::advance(Duration::from_secs(10)).await;
    let Lookup::Stale { response, .. } = cache.lookup(&key, &p, &req).await else {
        panic!("still held for stale-if-error");
    };
    assert!(response.usable_on_error(cache.clock.now()));
    // must-revalidate forbids serving stale, whatever the route says.
    let mut generous = policy();
    generous.stale_while_revalidate = Duration::from_secs(100);
    let key = store(
        &cache,
        &generous,
        &req,
        &[
            ("cache-control", "max-age=1, must-revalidate"),
            ("etag", "\"v1\""),
        ],
    )
    .await;
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(state(&cache.lookup(&key, &generous, &req).await), "stale");
}

#[tokio::test(start_paused = true)]
async fn vary_selects_the_variant() {
    let cache = ResponseCache::in_memory(CacheBudget::default());
    let p = policy();
    let en = request("/a", &[("accept-language", "en")]);
    let de = request("/a", &[("accept-language", "de")]);
    let vary = [("cache-control", "max-age=60"), ("vary", "accept-language")];
    let key = store(&cache, &p, &en, &vary).await;
    assert_eq!(state(&cache.lookup(&key, &p, &en).await), "fresh");
    assert_eq!(state(&cache.lookup(&key, &p, &de).await), "vary-miss");
    store(&cache, &p, &de, &vary).await;
    assert_eq!(state(&cache.lookup(&key, &p, &de).await), "fresh");
    assert_eq!(
        state(&cache.lookup(&key, &p, &en).await),
        "fresh",
        "both variants kept"
    );
}

#[test]
fn set_cookie_private_and_authorization_are_refused_by_default() {
    let p = policy();
    let now = std::time::SystemTime::now();
    let plain = request("/a", &[]);
    let cookie = headers(&[("cache-control", "max-age=60"), ("set-cookie", "a=1")]);
    assert_eq!(
        admit(&p, &plain, StatusCode::OK, &cookie, now).err(),
        Some(NotStored::SetCookie)
    );
    let private = headers(&[("cache-control", "private, max-age=60")]);
    assert_eq!(
        admit(&p, &plain, StatusCode::OK, &private, now).err(),
        Some(NotStored::Uncacheable)
    );
    let authorized = request("/a", &[("authorization", "Bearer x")]);
    let public = headers(&[("cache-control", "public, max-age=60")]);
    assert_eq!(
        admit(&p, &authorized, StatusCode::OK, &public, now).err(),
        Some(NotStored::Uncacheable)
    );
    let open = RouteCachePolicy {
        authorized: true,
        set_cookie: true,
        ..policy()
    };
    let fresh = headers(&[("cache-control", "max-age=60")]);
    assert!(admit(&open, &authorized, StatusCode::OK, &fresh, now).is_ok());
    assert!(admit(&open, &plain, StatusCode::OK, &cookie, now).is_ok());
}

#[test]
fn client_conditions_compare_validators() {
    let p = policy();
    let req = request("/a", &[]);
    let stored = headers(&[
        ("cache-control", "max-age=60"),
        ("etag", "W/\"v1\""),
        ("last-modified", "Mon, 01 Jan 2001 00:00:00 GMT"),
    ]);
    let response = admit(
        &p,
        &req,
        StatusCode::OK,
        &stored,
        std::time::SystemTime::now(),
    )
    .expect("storable")
    .into_response(Bytes::new());
    assert!(response.satisfies_condition(&headers(&[("if-none-match", "\"v0\", \"v1\"")])));
    assert!(!response.satisfies_condition(&headers(&[("if-none-match", "\"v2\"")])));
    assert!(response.satisfies_condition(&headers(&[(
        "if-modified-since",
        "Mon, 01 Jan 2001 00:00:00 GMT"
    )])));
    // If-None-Match wins when both are sent.
    assert!(!response.satisfies_condition(&headers(&[
        ("if-none-match", "\"v2\""),
        ("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")
    ])));
}

#[tokio::test]
async fn the_store_stays_within_its_byte_budget() {
    let store = MemoryStore::new(64 * 1024);
    let p = policy();
    let req = request("/a", &[]);
    let fresh = headers(&[("cache-control", "max-age=60")]);
    for i in 0..100 {
        let key = CacheKey::new(
            &Arc::new("r".into()),
            &p,
            &format!("/{i}"),
            None,
            &HeaderMap::new(),
        );
        let response = admit(
            &p,
            &req,
            StatusCode::OK,
            &fresh,
            std::time::SystemTime::now(),
        )
        .expect("storable")
        .into_response(Bytes::from(vec![b'x'; 4096]));
        store.put(key, Arc::new(vec![Arc::new(response)])).await;
    }
    let stats = store.stats().await;
    assert!(stats.bytes <= 64 * 1024, "{stats:?}");
    assert!(stats.evictions > 0 || stats.entries < 100, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn one_leader_per_key_and_followers_wake_when_it_ends() {
    let fills = Arc::new(Fills::default());
    let key = CacheKey::new(
        &Arc::new("r".into()),
        &policy(),
        "/a",
        None,
        &HeaderMap::new(),
    );
    let Fill::Leader(guard) = fills.join(&key) else {
        panic!("the first request leads");
    };
    let Fill::Follower(wait) = fills.join(&key) else {
        panic!("the second follows");
    };
    assert!(fills.try_lead(&key).is_none(), "no second refresh");
    let waiting = tokio::spawn(wait.wait(Duration::from_secs(5)));
    tokio::task::yield_now().await;
    drop(guard);
    assert!(waiting.await.expect("task"), "woken by the end of the fill");
    assert!(fills.try_lead(&key).is_some(), "free again");

    // A fill that never ends: the wait gives up at its timeout.
    let _stuck = fills.try_lead(&key).expect("lead");
    let Fill::Follower(wait) = fills.join(&key) else {
        panic!("follows");
    };
    assert!(!wait.wait(Duration::from_secs(1)).await, "timed out");
}

#[tokio::test]
async fn the_tee_hands_over_a_whole_body_and_gives_up_past_its_limit() {
    use http_body_util::BodyExt;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = |n: usize| {
        let chunks = (0..n).map(|_| {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(
                b"0123456789",
            )))
        });
        crate::body::streaming(http_body_util::StreamBody::new(futures::stream::iter(
            chunks,
        )))
    };
    let sent = tx.clone();
    let whole = TeeBody::new(stream(3), 30, move |b| {
        sent.send(b).expect("send");
        Box::pin(async {})
    });
    assert_eq!(whole.collect().await.expect("body").to_bytes().len(), 30);
    assert_eq!(rx.recv().await.expect("copy").len(), 30);

    let sent = tx.clone();
    let over = TeeBody::new(stream(4), 30, move |b| {
        sent.send(b).expect("send");
        Box::pin(async {})
    });
    assert_eq!(
        over.collect().await.expect("body").to_bytes().len(),
        40,
        "sent whole"
    );
    drop(tx);
    assert!(rx.recv().await.is_none(), "no copy past the limit");
}

#[tokio::test]
async fn the_body_ends_only_once_its_copy_is_stored() {
    use http_body_util::BodyExt;
    let (release, stored) = tokio::sync::oneshot::channel::<()>();
    let inner = crate::body::streaming(http_body_util::StreamBody::new(futures::stream::iter([
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(b"abc"))),
    ])));
    let mut body = std::pin::pin!(TeeBody::new(inner, 30, move |_| {
        Box::pin(async move {
            let _ = stored.await;
        })
    }));
    let first = body.frame().await.expect("a frame").expect("data");
    assert_eq!(first.into_data().expect("data"), Bytes::from_static(b"abc"));
    assert!(
        futures::poll!(body.frame()).is_pending(),
        "the end waits for the store"
    );
    assert!(!http_body::Body::is_end_stream(body.as_ref().get_ref()));
    release.send(()).expect("release");
    assert!(body.frame().await.is_none(), "then the body ends");
}
