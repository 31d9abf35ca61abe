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
