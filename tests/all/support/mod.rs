//! Test support: real origin servers on 127.0.0.1:0, an in-process gateway, HTTP clients.

pub mod certs;
pub mod etcd;
pub mod load;
pub mod origin;
pub mod otlp;
pub mod redis;
pub mod scrape;

use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse::config;
use gatehouse::gateway::{self, RunningGateway};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Starts a gateway from TOML text. `[listen]` is filled in with ephemeral loopback ports
/// unless the text has its own.
pub async fn gateway(toml: &str) -> RunningGateway {
    let text = if toml.contains("[listen]") {
        toml.to_owned()
    } else {
        format!("[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{toml}")
    };
    let config = config::load_str(&text, "test.toml").expect("test config is valid");
    gateway::start(config).await.expect("gateway starts")
}

/// An HTTP/1.1 client with a keep-alive pool.
pub fn http1() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client with prior knowledge (h2c).
pub fn h2c() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A buffered response, for assertions.
pub struct Got {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn collect(response: Response<hyper::body::Incoming>) -> Got {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// Sends a GET with extra headers over HTTP/1.1.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Got {
    send(&http1(), "GET", url, headers, Bytes::new()).await
}

pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Got {
    let mut builder = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder.body(Full::new(body)).expect("request");
    collect(
        client
            .request(req)
            .await
            .expect("request reaches the gateway"),
    )
    .await
}

/// A 127.0.0.1 port the kernel just handed out and released, for a child process to bind
/// (another process may take it in between; callers that care retry).
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
}

/// Polls `check` until it returns true or the deadline passes.
pub async fn eventually(what: &str, deadline: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {deadline:?} waiting for: {what}");
}

/// The built `gatehouse` binary, started with `run --config <config>` and waited for until
/// its admin listener (`admin`) says ready. Output is captured (`wait_with_output`) when
/// `capture` is set, discarded otherwise. The process is killed if the handle is dropped.
pub async fn spawn_gatehouse(
    config: &std::path::Path,
    admin: std::net::SocketAddr,
    capture: bool,
) -> tokio::process::Child {
    let output = || {
        if capture {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        }
    };
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["run", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(output())
        .stderr(output())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn gatehouse");
    eventually(
        "the gateway is ready",
        Duration::from_secs(20),
        async || {
            http1()
                .get(format!("http://{admin}/readyz").parse().expect("uri"))
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    child
}

/// The built `gatehouse` binary with `args` and the environment variables `env`, its stdout
/// and stderr both written to `log`, waited for until its admin listener (`admin`) says
/// ready. `Err` with the log when it exits first (a start that must fail). The process is
/// killed if the handle is dropped.
pub async fn start_gatehouse_logged(
    args: &[String],
    env: &[(&str, &str)],
    admin: std::net::SocketAddr,
    log: &std::path::Path,
) -> Result<tokio::process::Child, String> {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn gatehouse");
    let logged = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited ({status}):\n{}", logged()));
        }
        let ready = http1()
            .get(format!("http://{admin}/readyz").parse().expect("uri"))
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            return Ok(child);
        }
        assert!(
            Instant::now() < deadline,
            "gateway not ready:\n{}",
            logged()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `signal` (e.g. `-TERM`, `-HUP`) to a spawned process.
pub fn signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("the process is running").to_string();
    let sent = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill {signal} {pid}");
}
