//! An example service that registers itself with gatehouse's built-in registry, renews its
//! lease while it runs, and deregisters on Ctrl-C.
//!
//! ```text
//! cargo run --example self-register -- --admin 127.0.0.1:9901 --token s3cret --service hello
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use gatehouse::discovery::registry::{InstanceSpec, RegistryClient};
use gatehouse::discovery::EndpointMeta;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

struct Args {
    admin: SocketAddr,
    token: String,
    service: String,
    id: Option<String>,
    listen: SocketAddr,
    heartbeat: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        admin: "127.0.0.1:9901".parse()?,
        token: std::env::var("GATEHOUSE_REGISTRY_TOKEN").unwrap_or_default(),
        service: "hello".into(),
        id: None,
        listen: "127.0.0.1:0".parse()?,
        heartbeat: Duration::from_secs(30),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--admin" => args.admin = value.parse().context("--admin")?,
            "--token" => args.token = value,
            "--service" => args.service = value,
            "--id" => args.id = Some(value),
            "--listen" => args.listen = value.parse().context("--listen")?,
            "--heartbeat" => args.heartbeat = humantime::parse_duration(&value)?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().init();
    let args = parse_args()?;
    let listener = TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let id = args
        .id
        .unwrap_or_else(|| format!("{}-{}", args.service, addr.port()));

    let server = tokio::spawn({
        let id = id.clone();
        async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let id = id.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let body = format!("hello from {id}\n");
                        async move {
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                        }
                    });
                    // A connection error only ends that connection.
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    });

    let client = RegistryClient::new(args.admin, args.token);
    let spec = InstanceSpec {
        id: id.clone(),
        address: addr.ip(),
        port: addr.port(),
        meta: EndpointMeta::default(),
    };
    let registration = client
        .register(&args.service, spec, args.heartbeat)
        .await
        .context("registering with gatehouse")?;
    tracing::info!(%addr, %id, service = %args.service, "serving and registered; Ctrl-C to leave");

    tokio::signal::ctrl_c().await?;
    registration.deregister().await.context("deregistering")?;
    server.abort();
    tracing::info!("deregistered");
    Ok(())
}
