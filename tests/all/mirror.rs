//! Traffic mirroring through the real gateway: a copy of a route's requests goes to a mirror
//! origin on 127.0.0.1, which never slows or fails the client's request (docs/traffic.md).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse::gateway::RunningGateway;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::info;

use crate::support::origin::{self, Origin};
use crate::support::{self, eventually, http1, send};

const DEADLINE: Duration = Duration::from_secs(10);

/// What a mirror origin received: (method, path and query, headers, body).
type Seen = Arc<Mutex<Vec<(String, String, http::HeaderMap, Bytes)>>>;

/// A mirror origin that records every request and answers `status`.
async fn recording(status: u16) -> (Origin, Seen) {
    let seen: Seen = Arc::default();
    let origin = {
        let seen = seen.clone();
        origin::start(move |req: Request<Incoming>| {
            let seen = seen.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let pq = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                seen.lock().expect("seen").push((
                    parts.method.to_string(),
                    pq,
                    parts.headers,
                    body,
                ));
                origin::text(status, "mirror")
            }
        })
        .await
    };
    (origin, seen)
}

/// A mirror origin that reads the request and never answers; counts what arrived.
async fn hanging() -> (Origin, Seen) {
    let seen: Seen = Arc::default();
    let origin = {
        let seen = seen.clone();
        origin::start(move |req: Request<Incoming>| {
            let seen = seen.clone();
            async move {
                let pq = req.uri().to_string();
                seen.lock().expect("seen").push((
                    req.method().to_string(),
                    pq,
                    req.headers().clone(),
                    Bytes::new(),
                ));
                std::future::pending::<()>().await;
                origin::text(200, "never")
            }
        })
        .await
    };
    (origin, seen)
}

fn count(seen: &Seen) -> usize {
    seen.lock().expect("seen").len()
}

async fn gateway(main: &Origin, mirror: std::net::SocketAddr, route_keys: &str) -> RunningGateway {
    support::gateway(&format!(
        "[[services]]\nname = \"main\"\nendpoints = [\"{}\"]\n\
         [[services]]\nname = \"shadow\"\nendpoints = [\"{mirror}\"]\n\
         [[routes]]\nname = \"r\"\nservice = \"main\"\nmatch = {{ prefix = \"/\" }}\n{route_keys}",
        main.addr
    ))
    .await
}

/// A counter from `/metrics`: the line starting with `series` (name and labels).
async fn metric(gw: &RunningGateway, series: &str) -> u64 {
    let got = support::get(&format!("http://{}/metrics", gw.admin_addr), &[]).await;
    let needle = format!("{series} ");
    got.text()
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_mirror_does_not_slow_the_main_path_and_full_drops_are_counted() {
    let main = origin::echo("main").await;
    let (mirror, seen) = hanging().await;
    let gw = gateway(
        &main,
        mirror.addr,
        "[routes.mirror]\nservice = \"shadow\"\nmax_concurrent = 4\ntimeout = \"60s\"\n",
    )
    .await;
    let client = http1();
    let url = format!("http://{}/work", gw.public_addr);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let t = Instant::now();
        let got = send(&client, "GET", &url, &[], Bytes::new()).await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(got.status, 200, "{}", got.text());
    }
    let total = started.elapsed();
    eprintln!(
        "50 requests with a mirror that never answers: {total:?} in all, slowest {slowest:?}"
    );
    // The mirror hangs for 60 s; the origin answers at once. A request that waited for the
    // mirror would take a minute.
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request took {slowest:?}"
    );
    assert!(total < Duration::from_secs(5), "50 requests took {total:?}");

    eventually("the 4 mirrored requests arrive", DEADLINE, async || {
        count(&seen) == 4
    })
    .await;
    assert_eq!(
        metric(&gw, "gatehouse_mirror_requests_total{route=\"r\"}").await,
        4
    );
    assert_eq!(
        metric(
            &gw,
            "gatehouse_mirror_dropped_total{route=\"r\",reason=\"full\"}"
        )
        .await,
        46,
        "the mirror was full for every later request"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_gets_its_share_with_the_upstream_path_headers_and_body() {
    let main = origin::echo("main").await;
    let (mirror, seen) = recording(200).await;
    let gw = gateway(
        &main,
        mirror.addr,
        "[routes.request_headers]\nset = { x-env = \"prod\" }\n\
         [routes.mirror]\nservice = \"shadow\"\n",
    )
    .await;
    let client = http1();
    let url = format!("http://{}/orders/7?x=1", gw.public_addr);
    let got = send(
        &client,
        "POST",
        &url,
        &[("x-user", "ann")],
        Bytes::from("hello"),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.json()["body"],
        "hello",
        "the main upstream gets the whole body"
    );
    eventually("the copy arrives", DEADLINE, async || count(&seen) == 1).await;
    let (method, pq, headers, body) = seen.lock().expect("seen")[0].clone();
    assert_eq!((method.as_str(), pq.as_str()), ("POST", "/orders/7?x=1"));
    assert_eq!(body, "hello");
    assert_eq!(headers["x-user"], "ann");
    assert_eq!(headers["x-env"], "prod", "after the route's header policy");
    assert_eq!(
        headers["x-gatehouse-mirror"], "r",
        "marked as a mirror copy"
    );
    assert!(headers.contains_key("x-request-id"));
    let config = support::get(&format!("http://{}/admin/config", gw.admin_addr), &[]).await;
    let mirror = &config.json()["routes"][0]["mirror"];
    assert_eq!(
        (mirror["service"].as_str(), mirror["percent"].as_u64()),
        (Some("shadow"), Some(100))
    );
    gw.shutdown().await;

    info!("percent = 30: about 30 % of 1000 requests are copied");
    let (mirror, seen) = recording(200).await;
    let gw = gateway(
        &main,
        mirror.addr,
        "[routes.mirror]\nservice = \"shadow\"\npercent = 30\n",
    )
    .await;
    let url = format!("http://{}/work", gw.public_addr);
    for _ in 0..1000 {
        assert_eq!(
            send(&client, "GET", &url, &[], Bytes::new()).await.status,
            200
        );
    }
    let sent = metric(&gw, "gatehouse_mirror_requests_total{route=\"r\"}").await;
    eventually("every copy arrives", DEADLINE, async || {
        count(&seen) as u64 == sent
    })
    .await;
    // 30 % of 1000: the standard deviation is 14.5, so ±70 is over 4 sigma.
    assert!((230..=370).contains(&sent), "mirrored {sent} of 1000");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_cap_or_of_unknown_length_are_not_mirrored() {
    let main = origin::echo("main").await;
    let (mirror, seen) = recording(200).await;
    let gw = gateway(
        &main,
        mirror.addr,
        "[routes.mirror]\nservice = \"shadow\"\nmax_body_bytes = 10\n",
    )
    .await;
    let client = http1();
    let url = format!("http://{}/up", gw.public_addr);
    let big = Bytes::from(vec![b'x'; 11]);
    let got = send(&client, "POST", &url, &[], big).await;
    assert_eq!(
        (got.status, got.json()["body"].as_str().map(str::len)),
        (200, Some(11))
    );

    // A chunked body: its length is unknown until it ends.
    let chunks = futures::stream::iter([Ok::<_, std::convert::Infallible>(
        http_body::Frame::data(Bytes::from("abc")),
    )]);
    let req = Request::post(&url)
        .body(http_body_util::StreamBody::new(chunks))
        .expect("request");
    let chunked = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http()
        .request(req)
        .await
        .expect("chunked request");
    let got = support::collect(chunked).await;
    assert_eq!(got.json()["body"], "abc");

    let got = send(&client, "POST", &url, &[], Bytes::from("0123456789")).await;
    assert_eq!(got.status, 200);
    eventually("the small body is mirrored", DEADLINE, async || {
        count(&seen) == 1
    })
    .await;
    assert_eq!(seen.lock().expect("seen")[0].3, "0123456789");
    assert_eq!(
        metric(
            &gw,
            "gatehouse_mirror_dropped_total{route=\"r\",reason=\"body_too_large\"}"
        )
        .await,
        2
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_mirror_never_fails_the_client() {
    let main = origin::echo("main").await;
    let (erroring, seen) = recording(500).await;
    let closed = origin::closed_port().await;
    for (what, mirror) in [
        ("answers 500", erroring.addr),
        ("refuses connections", closed),
    ] {
        info!(what, "mirror");
        let gw = gateway(&main, mirror, "[routes.mirror]\nservice = \"shadow\"\n").await;
        let client = http1();
        let url = format!("http://{}/work", gw.public_addr);
        for _ in 0..30 {
            let got = send(&client, "GET", &url, &[], Bytes::new()).await;
            assert_eq!(got.status, 200, "mirror {what}: {}", got.text());
        }
        gw.shutdown().await;
    }
    eventually("the 500 mirror saw the copies", DEADLINE, async || {
        count(&seen) == 30
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_body_that_goes_silent_while_buffered_for_the_mirror_still_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let main = origin::echo("main").await;
    let (mirror, seen) = recording(200).await;
    let gw = support::gateway(&format!(
        "[limits]\nbody_idle_timeout = \"300ms\"\n\
         [[services]]\nname = \"main\"\nendpoints = [\"{}\"]\n\
         [[services]]\nname = \"shadow\"\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"r\"\nservice = \"main\"\nmatch = {{ prefix = \"/\" }}\n\
         [routes.mirror]\nservice = \"shadow\"\n",
        main.addr, mirror.addr
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.public_addr)
        .await
        .expect("connect");
    s.write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n012")
        .await
        .expect("head and part of the body");
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut answer))
        .await
        .expect("the gateway answers and closes")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_idle_timeout"), "{answer}");
    assert_eq!(
        metric(
            &gw,
            "gatehouse_mirror_dropped_total{route=\"r\",reason=\"body_error\"}"
        )
        .await,
        1
    );
    assert_eq!(count(&seen), 0, "nothing was mirrored");
    gw.shutdown().await;
}
