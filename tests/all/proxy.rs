//! Proxying: routing end to end, header handling, HTTP/1.1 and h2c, upstream failures, limits.

use std::time::Duration;

use bytes::Bytes;

use crate::support::{self, get, origin, send};

#[tokio::test]
async fn proxies_and_sets_forwarding_headers() {
    let users = origin::echo("users").await;
    let gw = support::gateway(&format!(
        r#"
[[services]]
name = "users"
endpoints = ["{}"]
[[routes]]
name = "users"
service = "users"
match = {{ prefix = "/api" }}
strip_prefix = true
"#,
        users.addr
    ))
    .await;

    let got = get(
        &format!("http://{}/api/users/7?x=1", gw.public_addr),
        &[
            ("host", "shop.test"),
            ("x-forwarded-for", "10.1.1.1"),
            ("connection", "x-drop"),
            ("x-drop", "1"),
        ],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = got.json();
    assert_eq!(seen["path"], "/users/7", "prefix is stripped");
    assert_eq!(seen["query"], "x=1", "query is kept");
    let h = &seen["headers"];
    assert_eq!(h["host"], "shop.test", "client Host is forwarded");
    // The client is no trusted proxy: its X-Forwarded-For is replaced, not appended to.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.test");
    assert!(
        h.get("x-drop").is_none(),
        "headers named by Connection are hop-by-hop"
    );
    let rid = h["x-request-id"]
        .as_str()
        .expect("request id passed upstream");
    assert_eq!(rid.len(), 32);
    assert_eq!(
        got.headers["x-request-id"], rid,
        "same id returned to the client"
    );
    assert!(
        !got.headers.contains_key("keep-alive"),
        "hop-by-hop response headers are removed"
    );

    let kept = get(
        &format!("http://{}/api/x", gw.public_addr),
        &[("x-request-id", "trace-abc")],
    )
    .await;
    assert_eq!(kept.json()["headers"]["x-request-id"], "trace-abc");
    assert_eq!(kept.headers["x-request-id"], "trace-abc");
    gw.shutdown().await;
}

#[tokio::test]
async fn routing_precedence_end_to_end() {
    let a = origin::echo("a").await;
    let b = origin::echo("b").await;
    let c = origin::echo("c").await;
    let gw = support::gateway(&format!(
        r#"
[[services]]
name = "a"
endpoints = ["{a}"]
[[services]]
name = "b"
endpoints = ["{b}"]
[[services]]
name = "c"
endpoints = ["{c}"]
[[routes]]
name = "catch-all"
service = "a"
[[routes]]
name = "user"
service = "b"
match = {{ path = "/users/{{id}}", methods = ["GET"] }}
rewrite = "/people/{{id}}"
[[routes]]
name = "tenant-host"
service = "c"
match = {{ host = "*.tenant.test", prefix = "/users" }}
"#,
        a = a.addr,
        b = b.addr,
        c = c.addr
    ))
    .await;
    let base = format!("http://{}", gw.public_addr);
    let r = get(&format!("{base}/users/42"), &[]).await.json();
    assert_eq!(
        (r["origin"].as_str(), r["path"].as_str()),
        (Some("b"), Some("/people/42"))
    );
    let r = send(
        &support::http1(),
        "DELETE",
        &format!("{base}/users/42"),
        &[],
        Bytes::new(),
    )
    .await
    .json();
    assert_eq!(
        r["origin"], "a",
        "method predicate falls through to the catch-all"
    );
    let r = get(&format!("{base}/users/42"), &[("host", "acme.tenant.test")])
        .await
        .json();
    assert_eq!(r["origin"], "c", "a host route beats a host-less one");
    gw.shutdown().await;
}

#[tokio::test]
async fn no_route_is_404_json() {
    let gw = support::gateway(
        r#"
[[services]]
name = "s"
endpoints = ["127.0.0.1:9"]
[[routes]]
name = "only"
service = "s"
match = { path = "/only" }
"#,
    )
    .await;
    let got = get(&format!("http://{}/missing", gw.public_addr), &[]).await;
    assert_eq!(got.status, 404);
    assert_eq!(got.headers["content-type"], "application/json");
    let body = got.json();
    assert_eq!(body["error"], "no_route");
    assert!(body["message"]
        .as_str()
        .expect("message")
        .contains("/missing"));
    assert_eq!(
        body["request_id"],
        got.headers["x-request-id"].to_str().expect("id")
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn h2c_clients_and_h2c_upstreams() {
    let h1_origin = origin::echo("h1").await;
    let h2_origin = origin::echo("h2").await;
    let gw = support::gateway(&format!(
        r#"
[[services]]
name = "h1"
endpoints = ["{}"]
[[services]]
name = "h2"
endpoints = ["{}"]
protocol = "h2c"
[[routes]]
name = "to-h2"
service = "h2"
match = {{ prefix = "/h2" }}
[[routes]]
name = "to-h1"
service = "h1"
"#,
        h1_origin.addr, h2_origin.addr
    ))
    .await;
    let client = support::h2c();
    let got = send(
        &client,
        "POST",
        &format!("http://{}/h1", gw.public_addr),
        &[],
        Bytes::from_static(b"hi"),
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = got.json();
    assert_eq!(seen["version"], "HTTP/1.1", "h2c client, HTTP/1.1 upstream");
    assert_eq!(seen["body"], "hi");
    assert_eq!(
        seen["headers"]["host"],
        gw.public_addr.to_string(),
        ":authority becomes Host"
    );

    let got = get(
        &format!("http://{}/h2/x", gw.public_addr),
        &[("te", "trailers")],
    )
    .await;
    assert_eq!(got.json()["version"], "HTTP/2.0", "h1 client, h2c upstream");
    assert_eq!(
        got.json()["headers"]["te"],
        "trailers",
        "te: trailers reaches an h2c upstream (gRPC needs it)"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn round_robin_over_static_endpoints() {
    let one = origin::echo("one").await;
    let two = origin::echo("two").await;
    let gw = support::gateway(&format!(
        "[[services]]\nname = \"s\"\nendpoints = [\"{}\", \"{}\"]\n[[routes]]\nname = \"r\"\nservice = \"s\"\n",
        one.addr, two.addr
    ))
    .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(
            get(&format!("http://{}/", gw.public_addr), &[])
                .await
                .json()["origin"]
                .clone(),
        );
    }
    assert_eq!(seen, ["one", "two", "one", "two"]);
    gw.shutdown().await;
}

#[tokio::test]
async fn refused_upstream_is_502_and_slow_upstream_is_504() {
    let closed = origin::closed_port().await;
    let slow = origin::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        origin::text(200, "too late")
    })
    .await;
    let gw = support::gateway(&format!(
        r#"
[[services]]
name = "down"
endpoints = ["{closed}"]
[[services]]
name = "slow"
endpoints = ["{}"]
[[routes]]
name = "down"
service = "down"
match = {{ prefix = "/down" }}
[[routes]]
name = "slow"
service = "slow"
match = {{ prefix = "/slow" }}
timeout = "200ms"
"#,
        slow.addr
    ))
    .await;
    let got = get(&format!("http://{}/down", gw.public_addr), &[]).await;
    assert_eq!(got.status, 502);
    assert_eq!(got.json()["error"], "upstream_connect_failed");
    assert!(got.json()["message"]
        .as_str()
        .expect("msg")
        .contains(&closed.to_string()));

    let started = std::time::Instant::now();
    let got = get(&format!("http://{}/slow", gw.public_addr), &[]).await;
    assert_eq!(got.status, 504);
    assert_eq!(got.json()["error"], "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the route timeout cut the wait"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn uri_and_header_limits() {
    let o = origin::echo("o").await;
    let gw = support::gateway(&format!(
        r#"
[limits]
max_uri_length = 64
max_header_count = 10
max_header_bytes = 512
[[services]]
name = "s"
endpoints = ["{}"]
[[routes]]
name = "r"
service = "s"
"#,
        o.addr
    ))
    .await;
    let base = format!("http://{}", gw.public_addr);
    let got = get(&format!("{base}/{}", "a".repeat(100)), &[]).await;
    assert_eq!(got.status, 414);
    assert_eq!(got.json()["error"], "uri_too_long");

    let names: Vec<String> = (0..12).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let got = get(&format!("{base}/"), &many).await;
    assert_eq!(got.status, 431);
    assert_eq!(got.json()["error"], "headers_too_large");

    let big = "v".repeat(600);
    let got = get(&format!("{base}/"), &[("x-big", big.as_str())]).await;
    assert_eq!(got.status, 431);

    assert_eq!(
        get(&format!("{base}/ok"), &[]).await.status,
        200,
        "normal requests still pass"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn garbage_on_the_wire_does_not_hurt_the_gateway() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = origin::echo("o").await;
    let gw = support::gateway(&format!(
        "[[services]]\nname = \"s\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nservice = \"s\"\n",
        o.addr
    ))
    .await;
    for junk in [
        &b"\x00\x01\x02garbage\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\nBad Header\r\n\r\n",
        b"GET /%%% HTTP/9.9\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(gw.public_addr)
            .await
            .expect("connect");
        s.write_all(junk).await.expect("write");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
        let head = String::from_utf8_lossy(&out);
        assert!(
            out.is_empty() || head.starts_with("HTTP/1.1 4"),
            "junk gets a 4xx or a close: {head}"
        );
    }
    assert_eq!(
        get(&format!("http://{}/", gw.public_addr), &[])
            .await
            .status,
        200
    );
    gw.shutdown().await;
}
