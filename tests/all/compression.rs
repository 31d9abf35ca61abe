//! Response compression at the gateway (docs/compression.md): negotiated by Accept-Encoding,
//! streamed, decoded here with real decoders, and never applied where it must not be.

use std::sync::Arc;
use std::time::Duration;

use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
use bytes::Bytes;
use gatehouse::body::{self, BoxError};
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Notify};

use crate::support::{self, origin, Got};

/// JSON lines that compress well, `n` bytes or a little more.
fn text(n: usize) -> Bytes {
    let mut out = String::with_capacity(n + 64);
    let mut i = 0;
    while out.len() < n {
        out.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item-{i}\",\"price\":{}.{:02}}}\n",
            i * 7 % 1000,
            i % 100
        ));
        i += 1;
    }
    Bytes::from(out)
}

async fn decode(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let read = match encoding {
        "gzip" => GzipDecoder::new(bytes).read_to_end(&mut out).await,
        "br" => BrotliDecoder::new(bytes).read_to_end(&mut out).await,
        "zstd" => ZstdDecoder::new(bytes).read_to_end(&mut out).await,
        other => panic!("unexpected encoding {other}"),
    };
    read.expect("the body decodes");
    out
}

/// An origin answering every path with `headers` and `body` (Content-Length set by hyper).
async fn fixed(
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: Bytes,
) -> origin::Origin {
    origin::start(move |_req| {
        let body = body.clone();
        async move {
            let mut r = Response::new(body::full(body));
            *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
            for (k, v) in headers {
                r.headers_mut().append(*k, v.parse().expect("header value"));
            }
            r
        }
    })
    .await
}

async fn gateway(
    addr: std::net::SocketAddr,
    route_extra: &str,
) -> gatehouse::gateway::RunningGateway {
    support::gateway(&format!(
        "[[services]]\nname = \"s\"\nendpoints = [\"{addr}\"]\n\
         [[routes]]\nname = \"r\"\nservice = \"s\"\n{route_extra}\n"
    ))
    .await
}

const ON: &str = "[routes.compression]\n";

async fn get(gw: &gatehouse::gateway::RunningGateway, headers: &[(&str, &str)]) -> Got {
    support::get(&format!("http://{}/x", gw.public_addr), headers).await
}

fn header<'a>(got: &'a Got, name: &str) -> Option<&'a str> {
    got.headers
        .get(name)
        .map(|v| v.to_str().expect("ascii header"))
}

#[tokio::test]
async fn gzip_brotli_and_zstd_round_trip() {
    let body = text(64 * 1024);
    let origin = fixed(200, &[("content-type", "application/json")], body.clone()).await;
    let gw = gateway(origin.addr, ON).await;
    for encoding in ["gzip", "br", "zstd"] {
        let got = get(&gw, &[("accept-encoding", encoding)]).await;
        assert_eq!(got.status, 200);
        assert_eq!(header(&got, "content-encoding"), Some(encoding));
        assert_eq!(header(&got, "content-length"), None, "{encoding}");
        assert_eq!(header(&got, "vary"), Some("accept-encoding"));
        assert!(got.body.len() < body.len() / 3, "{encoding} compresses");
        assert_eq!(
            decode(encoding, &got.body).await,
            body,
            "{encoding} round trip"
        );
    }
    // The server's preference (br, zstd, gzip) breaks the tie among equal weights.
    let got = get(&gw, &[("accept-encoding", "gzip, deflate, br, zstd")]).await;
    assert_eq!(header(&got, "content-encoding"), Some("br"));
    // HTTP/2 clients get the same.
    let got = support::send(
        &support::h2c(),
        "GET",
        &format!("http://{}/x", gw.public_addr),
        &[("accept-encoding", "gzip")],
        Bytes::new(),
    )
    .await;
    assert_eq!(header(&got, "content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &got.body).await, body);
    let metrics = support::get(&format!("http://{}/metrics", gw.admin_addr), &[]).await;
    assert!(
        metrics
            .text()
            .contains("gatehouse_compressed_responses_total{route=\"r\",encoding=\"br\"} 2"),
        "{}",
        metrics.text()
    );
    assert!(metrics
        .text()
        .contains("gatehouse_compression_bytes_total{route=\"r\",direction=\"in\"}"));
}

#[tokio::test]
async fn q_values_choose_or_refuse() {
    let body = text(8 * 1024);
    let origin = fixed(200, &[("content-type", "text/plain")], body.clone()).await;
    let gw = gateway(origin.addr, ON).await;
    let cases: [(&str, Option<&str>); 8] = [
        ("gzip;q=0", None),
        ("br;q=0, gzip", Some("gzip")),
        ("br;q=0.5, gzip;q=0.9", Some("gzip")),
        ("*;q=0", None),
        ("*", Some("br")),
        ("identity", None),
        ("gzip;q=0.5, identity", None),
        ("compress, deflate", None),
    ];
    for (accept, expected) in cases {
        let got = get(&gw, &[("accept-encoding", accept)]).await;
        assert_eq!(header(&got, "content-encoding"), expected, "{accept}");
        match expected {
            Some(e) => assert_eq!(decode(e, &got.body).await, body, "{accept}"),
            None => assert_eq!(got.body, body, "{accept}"),
        }
        // Compressible either way: caches must keep the variants apart.
        assert_eq!(header(&got, "vary"), Some("accept-encoding"), "{accept}");
    }
    let got = get(&gw, &[]).await;
    assert_eq!(
        header(&got, "content-encoding"),
        None,
        "no Accept-Encoding, no coding"
    );
    assert_eq!(got.body, body);
}

#[tokio::test]
async fn what_is_left_alone() {
    let big = text(8 * 1024);
    type Headers = &'static [(&'static str, &'static str)];
    let cases: Vec<(&str, u16, Headers, Bytes)> = vec![
        (
            "under min_bytes",
            200,
            &[("content-type", "application/json")],
            text(500),
        ),
        (
            "an image",
            200,
            &[("content-type", "image/png")],
            big.clone(),
        ),
        ("no content type", 200, &[], big.clone()),
        (
            "already encoded",
            200,
            &[("content-type", "text/plain"), ("content-encoding", "gzip")],
            big.clone(),
        ),
        (
            "a 206",
            206,
            &[
                ("content-type", "text/plain"),
                ("content-range", "bytes 0-8199/20000"),
            ],
            big.clone(),
        ),
        (
            "no-transform",
            200,
            &[
                ("content-type", "text/plain"),
                ("cache-control", "public, no-transform"),
            ],
            big.clone(),
        ),
    ];
    for (what, status, headers, body) in cases {
        let origin = fixed(status, headers, body.clone()).await;
        let gw = gateway(origin.addr, ON).await;
        let got = get(&gw, &[("accept-encoding", "gzip, br, zstd")]).await;
        assert_eq!(got.status, status, "{what}");
        assert_ne!(header(&got, "vary"), Some("accept-encoding"), "{what}");
        if what != "already encoded" {
            assert_eq!(header(&got, "content-encoding"), None, "{what}");
        }
        assert_eq!(got.body, body, "{what}: bytes as the origin sent them");
    }
}

#[tokio::test]
async fn head_gets_no_coding() {
    let origin = fixed(200, &[("content-type", "text/html")], text(8 * 1024)).await;
    let gw = gateway(origin.addr, ON).await;
    let got = support::send(
        &support::http1(),
        "HEAD",
        &format!("http://{}/x", gw.public_addr),
        &[("accept-encoding", "gzip")],
        Bytes::new(),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(header(&got, "content-encoding"), None);
}

#[tokio::test]
async fn vary_is_appended_and_etag_weakened() {
    let body = text(8 * 1024);
    let origin = fixed(
        200,
        &[
            ("content-type", "application/json"),
            ("vary", "Cookie"),
            ("etag", "\"v1\""),
            ("accept-ranges", "bytes"),
        ],
        body.clone(),
    )
    .await;
    let gw = gateway(origin.addr, ON).await;
    let got = get(&gw, &[("accept-encoding", "gzip")]).await;
    assert_eq!(header(&got, "content-encoding"), Some("gzip"));
    let vary: Vec<_> = got.headers.get_all("vary").iter().collect();
    assert_eq!(vary, ["Cookie", "accept-encoding"]);
    assert_eq!(header(&got, "etag"), Some("W/\"v1\""));
    assert_eq!(header(&got, "accept-ranges"), None);
    assert_eq!(decode("gzip", &got.body).await, body);

    // An upstream Vary that names it already is not repeated.
    let origin = fixed(
        200,
        &[
            ("content-type", "application/json"),
            ("vary", "Accept-Encoding"),
        ],
        body.clone(),
    )
    .await;
    let gw = gateway(origin.addr, ON).await;
    let got = get(&gw, &[("accept-encoding", "gzip")]).await;
    let vary: Vec<_> = got.headers.get_all("vary").iter().collect();
    assert_eq!(vary, ["Accept-Encoding"]);
}

/// An origin streaming the chunks it is given, as `content_type`, without a length.
async fn streaming_origin(
    content_type: &'static str,
) -> (origin::Origin, mpsc::Sender<mpsc::Receiver<Bytes>>) {
    let (handoff, rx) = mpsc::channel::<mpsc::Receiver<Bytes>>(1);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let origin = origin::start(move |_req| {
        let rx = Arc::clone(&rx);
        async move {
            let chunks = rx
                .lock()
                .await
                .recv()
                .await
                .expect("a body for the request");
            let stream = futures::stream::unfold(chunks, |mut chunks| async move {
                let chunk = chunks.recv().await?;
                Some((Ok::<_, BoxError>(Frame::data(chunk)), chunks))
            });
            let mut r = Response::new(body::streaming(StreamBody::new(stream)));
            r.headers_mut()
                .insert("content-type", content_type.parse().expect("value"));
            r
        }
    })
    .await;
    (origin, handoff)
}

async fn request(
    gw: &gatehouse::gateway::RunningGateway,
    accept: &str,
) -> Response<hyper::body::Incoming> {
    let req = Request::get(format!("http://{}/x", gw.public_addr))
        .header("accept-encoding", accept)
        .body(Full::new(Bytes::new()))
        .expect("request");
    support::http1().request(req).await.expect("response head")
}

#[tokio::test]
async fn server_sent_events_pass_untouched_and_unbuffered() {
    let (origin, handoff) = streaming_origin("text/event-stream").await;
    let gw = gateway(origin.addr, ON).await;
    let (chunks, rx) = mpsc::channel(4);
    handoff.send(rx).await.expect("handoff");
    chunks
        .send(Bytes::from_static(b"data: one\n\n"))
        .await
        .expect("first event");
    let response = tokio::time::timeout(Duration::from_secs(10), request(&gw, "gzip, br"))
        .await
        .expect("the head arrives while the stream is open");
    assert_eq!(response.headers().get("content-encoding"), None);
    let mut body = response.into_body();
    // The origin has not finished: the first event must arrive on its own.
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the first event arrives before the stream ends")
        .expect("a frame")
        .expect("no error")
        .into_data()
        .expect("data");
    assert_eq!(&first[..], b"data: one\n\n");
    drop(chunks);
}

#[tokio::test]
async fn a_large_body_streams_compressed_without_full_buffering() {
    let (origin, handoff) = streaming_origin("application/x-ndjson").await;
    let gw = gateway(origin.addr, ON).await;
    let (chunks, rx) = mpsc::channel(4);
    handoff.send(rx).await.expect("handoff");
    let part = text(1024 * 1024);
    let response = request(&gw, "gzip").await;
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(response.headers().get("content-length"), None);
    let mut body = response.into_body();
    let sent = Arc::new(Notify::new());
    // The first 2 MiB go out, then the origin waits until the client has seen compressed bytes:
    // a gateway that buffered the whole body would never send any, and this would hang.
    let producer = tokio::spawn({
        let part = part.clone();
        let sent = Arc::clone(&sent);
        async move {
            for _ in 0..2 {
                chunks.send(part.clone()).await.expect("send");
            }
            sent.notified().await;
            for _ in 0..3 {
                chunks.send(part.clone()).await.expect("send");
            }
        }
    });
    let mut compressed = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(20), body.frame())
        .await
        .expect("compressed bytes arrive while the origin is still sending")
        .expect("a frame")
        .expect("no error");
    compressed.extend_from_slice(&first.into_data().expect("data"));
    sent.notify_one();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("no error").into_data() {
            compressed.extend_from_slice(&data);
        }
    }
    producer.await.expect("producer");
    let decoded = decode("gzip", &compressed).await;
    assert_eq!(decoded.len(), part.len() * 5);
    assert!(decoded.chunks(part.len()).all(|c| c == part));
    assert!(compressed.len() < decoded.len() / 3);
}

#[tokio::test]
async fn global_table_with_route_overrides() {
    let body = text(8 * 1024);
    let origin = fixed(200, &[("content-type", "application/json")], body.clone()).await;
    let gw = support::gateway(&format!(
        "[compression]\nalgorithms = [\"gzip\"]\ngzip_level = 1\n\
         [[services]]\nname = \"s\"\nendpoints = [\"{a}\"]\n\
         [[routes]]\nname = \"on\"\nservice = \"s\"\nmatch = {{ prefix = \"/on\" }}\n\
         [[routes]]\nname = \"off\"\nservice = \"s\"\nmatch = {{ prefix = \"/off\" }}\n\
         [routes.compression]\nenabled = false\n\
         [[routes]]\nname = \"zstd\"\nservice = \"s\"\nmatch = {{ prefix = \"/zstd\" }}\n\
         [routes.compression]\nalgorithms = [\"zstd\", \"gzip\"]\nmin_bytes = 10000\n",
        a = origin.addr
    ))
    .await;
    let url = |p: &str| format!("http://{}{p}", gw.public_addr);
    let all = [("accept-encoding", "br, zstd, gzip")];
    let got = support::get(&url("/on"), &all).await;
    assert_eq!(header(&got, "content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &got.body).await, body);
    let got = support::get(&url("/off"), &all).await;
    assert_eq!(header(&got, "content-encoding"), None);
    assert_eq!(header(&got, "vary"), None);
    // The route's min_bytes (10000) is over this 8 KiB body.
    let got = support::get(&url("/zstd"), &all).await;
    assert_eq!(header(&got, "content-encoding"), None);
}

#[tokio::test]
async fn off_by_default() {
    let origin = fixed(200, &[("content-type", "application/json")], text(8 * 1024)).await;
    let gw = gateway(origin.addr, "").await;
    let got = get(&gw, &[("accept-encoding", "gzip")]).await;
    assert_eq!(header(&got, "content-encoding"), None);
    assert_eq!(header(&got, "vary"), None);
}

#[tokio::test]
async fn static_answers_are_compressed_and_carry_cors_headers() {
    let body = "static page line\n".repeat(256);
    let gw = support::gateway(&format!(
        "[[routes]]\nname = \"page\"\nmatch = {{ path = \"/page\" }}\n\
         [routes.respond]\nbody = \"\"\"{body}\"\"\"\n\
         [routes.compression]\n\
         [routes.cors]\nallow_origins = [\"https://app.example.com\"]\n"
    ))
    .await;
    let got = support::get(
        &format!("http://{}/page", gw.public_addr),
        &[
            ("accept-encoding", "zstd"),
            ("origin", "https://app.example.com"),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(header(&got, "content-encoding"), Some("zstd"));
    assert_eq!(
        header(&got, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let vary: Vec<_> = got.headers.get_all("vary").iter().collect();
    assert_eq!(vary, ["origin", "accept-encoding"]);
    assert_eq!(decode("zstd", &got.body).await, body.as_bytes());
}

/// The cache stores the origin's bytes; each hit is compressed for its own client, as nginx's
/// gzip filter does on `proxy_cache` hits.
#[tokio::test]
async fn cache_hits_are_compressed_per_client() {
    let body = text(16 * 1024);
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let origin = origin::start({
        let (body, hits) = (body.clone(), Arc::clone(&hits));
        move |_req| {
            hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = body.clone();
            async move {
                let mut r = Response::new(body::full(body));
                let h = r.headers_mut();
                h.insert("content-type", "application/json".parse().expect("v"));
                h.insert("cache-control", "max-age=60".parse().expect("v"));
                r
            }
        }
    })
    .await;
    let gw = gateway(origin.addr, "[routes.compression]\n[routes.cache]\n").await;
    let first = get(&gw, &[("accept-encoding", "gzip")]).await;
    assert_eq!(header(&first, "content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &first.body).await, body);
    // The entry is stored once its body has streamed through; poll until a hit answers.
    let mut hit = None;
    support::eventually("a cache hit", Duration::from_secs(5), async || {
        let got = get(&gw, &[("accept-encoding", "br")]).await;
        let is_hit = header(&got, "cache-status").is_some_and(|s| s.contains("hit"));
        if is_hit {
            hit = Some(got);
        }
        is_hit
    })
    .await;
    let hit = hit.expect("a hit");
    assert_eq!(header(&hit, "content-encoding"), Some("br"));
    assert_eq!(decode("br", &hit.body).await, body);
    let plain = get(&gw, &[]).await;
    assert_eq!(header(&plain, "content-encoding"), None);
    assert_eq!(plain.body, body);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}
