//! Client-side discovery without the gateway in the path: `b` instances register with the
//! gateway's registry; `a` follows b's instances through the registry's blocking queries and
//! calls b directly, round robin, skipping an instance that failed.
//!
//! ```sh
//! cargo run -p gatehouse-registry-client --example client-discovery -- b --port 8101 --token s3cret
//! cargo run -p gatehouse-registry-client --example client-discovery -- b --port 8102 --token s3cret
//! cargo run -p gatehouse-registry-client --example client-discovery -- a --calls 6
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_registry_client::{Discovery, Instance, RegistryClient};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let admin: SocketAddr = arg(&args, "--admin")
        .unwrap_or_else(|| "127.0.0.1:9901".into())
        .parse()?;
    match args.first().map(String::as_str) {
        Some("b") => {
            let port: u16 = arg(&args, "--port").unwrap_or_else(|| "0".into()).parse()?;
            let token = arg(&args, "--token").ok_or("b needs --token <[registry].token>")?;
            serve_b(admin, port, &token).await
        }
        Some("a") => {
            let calls: usize = arg(&args, "--calls").unwrap_or_else(|| "6".into()).parse()?;
            for line in call_b(admin, arg(&args, "--admin-token"), calls).await? {
                println!("{line}");
            }
            Ok(())
        }
        _ => Err("usage: client-discovery b --port P --token T | a [--calls N] [--admin-token T] [--admin ADDR]".into()),
    }
}

/// Serves `hello from <id>` on `port`, registered as an instance of `b` until Ctrl-C.
pub(crate) async fn serve_b(admin: SocketAddr, port: u16, token: &str) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let id = format!("b-{}", addr.port());
    let registration = RegistryClient::new(admin, token)
        .register(
            "b",
            Instance::new(&id, addr.ip(), addr.port()),
            Duration::from_secs(10),
        )
        .await?;
    println!("b instance {id} serving on {addr}, registered at {admin}");
    let body = Bytes::from(format!("hello from {id}"));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let body = body.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let body = body.clone();
                        async move { Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(body))) }
                    });
                    // A client that goes away mid-request is its own problem.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    registration.deregister().await?;
    Ok(())
}

/// Discovers b and makes `calls` calls straight to its instances; returns one line per call.
pub(crate) async fn call_b(
    admin: SocketAddr,
    admin_token: Option<String>,
    calls: usize,
) -> Result<Vec<String>, Error> {
    let mut builder = Discovery::builder(admin, "b");
    if let Some(token) = admin_token {
        builder = builder.token(token);
    }
    let b = builder.start();
    b.ready(Duration::from_secs(5)).await?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut lines = Vec::new();
    for _ in 0..calls {
        let Some(instance) = b.pick() else {
            lines.push("no instance of b is registered".to_owned());
            continue;
        };
        let uri = format!("http://{}/", instance.addr()).parse::<http::Uri>()?;
        match client.get(uri).await {
            Ok(resp) => {
                let text = resp.into_body().collect().await?.to_bytes();
                lines.push(format!(
                    "{} -> {}",
                    instance.addr(),
                    String::from_utf8_lossy(&text)
                ));
            }
            Err(e) => {
                b.mark_failed(&instance);
                lines.push(format!("{} failed: {e}", instance.addr()));
            }
        }
    }
    Ok(lines)
}
