//! DNS discovery: A/AAAA lookups of a name, re-resolved on an interval.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;

use super::{Discover, Endpoint, EndpointSet};

/// `discovery = "dns"`: resolve `name` every `interval`, endpoints at `port`.
#[derive(Debug, Clone)]
pub struct DnsSource {
    pub name: String,
    pub port: u16,
    /// Default 30 s.
    pub interval: Duration,
}

impl DnsSource {
    async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.name.as_str(), self.port))
            .await?
            .collect();
        // Resolvers rotate answers; sort so an unchanged answer is an unchanged set.
        addrs.sort();
        addrs.dedup();
        Ok(addrs)
    }
}

impl Discover for DnsSource {
    fn start(self) -> watch::Receiver<EndpointSet> {
        let (tx, rx) = watch::channel(EndpointSet::from(Vec::new()));
        tokio::spawn(async move {
            let mut current: Vec<SocketAddr> = Vec::new();
            loop {
                match self.resolve().await {
                    Ok(addrs) if addrs != current => {
                        tracing::info!(name = %self.name, endpoints = addrs.len(), "DNS endpoints changed");
                        current = addrs;
                        let set: EndpointSet =
                            current.iter().copied().map(Endpoint::from_addr).collect();
                        if tx.send(set).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Keep the last good answer: a resolver hiccup must not empty the pool.
                    Err(e) => {
                        tracing::warn!(name = %self.name, error = %e, "DNS lookup failed; keeping the last endpoints")
                    }
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(self.interval) => {}
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn localhost_resolves_to_loopback_endpoints() {
        let mut rx = DnsSource {
            name: "localhost".into(),
            port: 8080,
            interval: Duration::from_secs(60),
        }
        .start();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("resolved within 5 s")
            .expect("source alive");
        let set = rx.borrow().clone();
        assert!(!set.is_empty());
        assert!(set
            .iter()
            .all(|e| e.addr.ip().is_loopback() && e.addr.port() == 8080));
    }
}
