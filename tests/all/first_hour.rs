//! What a newcomer meets first: README's minimal config passes `check`, and a response reaches
//! the client in the client's HTTP version whatever the origin spoke.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support;

/// README shows examples/minimal/gatehouse.toml verbatim, and it is a valid config.
#[test]
fn readme_minimal_config_is_the_example_file_and_passes_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = std::fs::read_to_string(root.join("examples/minimal/gatehouse.toml"))
        .expect("examples/minimal/gatehouse.toml");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    assert!(
        readme.contains(&format!("```toml\n{example}```")),
        "README's minimal config differs from examples/minimal/gatehouse.toml"
    );
    let config = gatehouse::config::load_file(&root.join("examples/minimal/gatehouse.toml"))
        .unwrap_or_else(|e| panic!("README's minimal config is invalid: {e}"));
    assert_eq!(config.services.len(), 1);
    assert_eq!(config.routes.len(), 2);
    let plugins: usize = config.routes.iter().map(|r| r.plugins.len()).sum();
    assert_eq!(plugins, 1, "one plugin on one route");
}

/// An origin that answers every connection with an HTTP/1.0 response, then closes.
async fn http10_origin() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nfrom 1.0")
                    .await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

/// Sends raw request bytes to the gateway and reads the whole answer (the gateway closes).
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect gateway");
    s.write_all(request).await.expect("send");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("gateway answers and closes within 10 s")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn an_http10_origin_answers_an_http11_client_in_http11() {
    let origin = http10_origin().await;
    let gw = support::gateway(&format!(
        "[[services]]\nname = \"old\"\nendpoints = [\"{origin}\"]\n\
         [[routes]]\nname = \"r\"\nservice = \"old\"\n"
    ))
    .await;

    let answer = raw_exchange(
        gw.public_addr,
        b"GET /x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("from 1.0"), "{answer}");

    // An HTTP/1.0 client still hears HTTP/1.0.
    let answer = raw_exchange(gw.public_addr, b"GET /x HTTP/1.0\r\nHost: gw\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert!(answer.contains("from 1.0"), "{answer}");
}

/// Asserts `got` is an error in README's one shape: `error` and `message` strings and the
/// response's own `x-request-id` as `request_id`. Returns the body for more checks.
pub fn assert_error_schema(got: &support::Got) -> serde_json::Value {
    assert_eq!(
        got.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{}",
        got.text()
    );
    let body = got.json();
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(body["message"].is_string(), "{body}");
    let id = got
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id on the response");
    assert_eq!(body["request_id"], id, "{body}");
    body
}

#[tokio::test]
async fn gateway_errors_have_the_one_error_shape() {
    let gw = support::gateway(
        "[[services]]\nname = \"s\"\nendpoints = [\"127.0.0.1:1\"]\n\
         [[routes]]\nname = \"r\"\nservice = \"s\"\nmatch = { prefix = \"/api\" }\n",
    )
    .await;
    let got = support::get(&format!("http://{}/nowhere", gw.public_addr), &[]).await;
    assert_eq!(got.status, 404);
    assert_eq!(assert_error_schema(&got)["error"], "no_route");
    let got = support::get(
        &format!("http://{}/api", gw.public_addr),
        &[("x-request-id", "mine-1")],
    )
    .await;
    assert_eq!(got.status, 502);
    assert_eq!(assert_error_schema(&got)["request_id"], "mine-1");
}
