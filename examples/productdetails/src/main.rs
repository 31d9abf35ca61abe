//! `productdetails`: start the demo's mock services (all, or one per process so a single one
//! can be killed), or mint a demo JWT.
//!
//! ```text
//! productdetails serve --service all            # the four services in this process
//! productdetails serve --service price          # just the price service
//! productdetails token --sub alice --ttl 1h     # a JWT the route accepts
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gatehouse::discovery::registry::RegistryClient;
use productdetails::{token, MockService, ServiceKind};

#[derive(Parser)]
#[command(
    name = "productdetails",
    about = "The product-details demo's mock services and token minter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start mock services that register with the gateway and heartbeat until SIGINT/SIGTERM,
    /// then deregister.
    Serve {
        /// `all`, or one of product-info, recommendations, reviews, price.
        #[arg(long, default_value = "all")]
        service: String,
        /// The gateway's admin listener (where `/registry` lives).
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// The registry write token (`[registry] token` in gatehouse.toml).
        #[arg(long, env = "GATEHOUSE_REGISTRY_TOKEN", default_value = productdetails::REGISTRY_TOKEN)]
        registry_token: String,
        /// Lease renewal interval.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        heartbeat: Duration,
        /// Address to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Print a demo JWT (HS256, the demo secret, issuer and audience) for `authorization: Bearer`.
    Token {
        /// The user (`sub`); the gateway forwards it to the services as `x-user-id`.
        #[arg(long, default_value = "alice")]
        sub: String,
        /// How long the token is valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Token { sub, ttl } => {
            println!("{}", token::demo_token(&sub, ttl));
            Ok(())
        }
        Command::Serve {
            service,
            admin,
            registry_token,
            heartbeat,
            listen,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .init();
            let kinds = if service == "all" {
                ServiceKind::ALL.to_vec()
            } else {
                vec![ServiceKind::from_name(&service).with_context(|| {
                    format!("--service {service:?}: expected all, product-info, recommendations, reviews or price")
                })?]
            };
            if kinds.len() > 1 && listen.port() != 0 {
                anyhow::bail!("--listen with a fixed port needs a single --service");
            }
            serve(kinds, admin, registry_token, heartbeat, listen).await
        }
    }
}

async fn serve(
    kinds: Vec<ServiceKind>,
    admin: SocketAddr,
    registry_token: String,
    heartbeat: Duration,
    listen: SocketAddr,
) -> anyhow::Result<()> {
    let registry = RegistryClient::new(admin, registry_token);
    let mut running = Vec::new();
    for kind in kinds {
        let service = MockService::start(kind, listen, &registry, heartbeat)
            .await
            .with_context(|| format!("starting {} (is the gateway up on {admin}?)", kind.name()))?;
        tracing::info!(service = kind.name(), addr = %service.addr(), id = service.id(), "serving and registered");
        running.push(service);
    }
    shutdown_signal().await?;
    for service in running {
        let name = service.kind().name();
        match service.stop().await {
            Ok(()) => tracing::info!(service = name, "deregistered and stopped"),
            Err(e) => tracing::warn!(error = %e, "stopped; the lease will lapse on its own"),
        }
    }
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM (`kill <pid>`, what run.sh's hints use).
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
