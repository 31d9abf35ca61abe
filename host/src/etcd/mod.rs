//! etcd as shared state between gateways (docs/scale-out.md): how to reach it. The users are
//! the etcd-backed registry (`discovery::registry`) and the config store (the gateway's TOML in
//! one key); both connect through [`connect`] with the [`EtcdSettings`] that config (`[etcd]`)
//! or the command line produce.
//!
//! etcd is etcd's own v3 gRPC API through `etcd-client` (tonic): no home-made replication.

pub mod config_key;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::serialize::as_humantime;

/// Default connect timeout per endpoint.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default budget of one etcd call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where etcd is and how the gateway authenticates to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdSettings {
    /// `http://host:port` or `https://host:port` (TLS: see `tls`); several for a cluster.
    pub endpoints: Vec<String>,
    /// etcd's own authentication (user and password), if enabled on the cluster.
    /// Not serialized: it holds a password.
    #[serde(skip)]
    pub user: Option<(String, String)>,
    /// TLS to etcd; `None`: plain gRPC (loopback or a private network only).
    pub tls: Option<EtcdTls>,
    #[serde(serialize_with = "as_humantime")]
    pub connect_timeout: Duration,
    /// Budget of one call (a put, a lease grant...). Watches are long-lived and not bounded.
    #[serde(serialize_with = "as_humantime")]
    pub timeout: Duration,
}

impl EtcdSettings {
    /// Settings for `endpoints` with the defaults: no auth, no TLS.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            user: None,
            tls: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// TLS to etcd: the CA that signed etcd's certificate (the system roots when `None`) and a
/// client certificate when etcd requires one (`--client-cert-auth`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name to verify etcd's certificate against, when it differs from the endpoint host.
    pub server_name: Option<String>,
}

/// Why the gateway could not reach etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd: no endpoint given")]
    NoEndpoint,
    #[error("etcd: cannot read {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd: a client certificate needs both `cert` and `key`")]
    HalfIdentity,
    #[error("etcd at {endpoints}: {source}")]
    Client {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
}

/// A client for `settings`. Connections are made lazily and re-made after a failure by the
/// client's channel, so this succeeds while etcd is down unless the settings are wrong or
/// the user cannot authenticate; calls then fail until etcd answers.
pub async fn connect(settings: &EtcdSettings) -> Result<etcd_client::Client, EtcdError> {
    if settings.endpoints.is_empty() {
        return Err(EtcdError::NoEndpoint);
    }
    let mut options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(settings.connect_timeout)
        .with_timeout(settings.timeout)
        // HTTP/2 pings find a dead etcd (or a dead network) under a long-lived watch.
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
        .with_keep_alive_while_idle(true);
    if let Some((user, password)) = &settings.user {
        options = options.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = &settings.tls {
        options = options.with_tls(tls_options(tls)?);
    }
    etcd_client::Client::connect(&settings.endpoints, Some(options))
        .await
        .map_err(|source| EtcdError::Client {
            endpoints: settings.endpoints.join(","),
            source,
        })
}

fn tls_options(tls: &EtcdTls) -> Result<etcd_client::TlsOptions, EtcdError> {
    let read = |what: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| EtcdError::ReadFile {
            what,
            path: path.clone(),
            source,
        })
    };
    let mut options = etcd_client::TlsOptions::new();
    options = match &tls.ca {
        Some(ca) => options.ca_certificate(etcd_client::Certificate::from_pem(read("CA", ca)?)),
        None => options.with_enabled_roots(),
    };
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            options = options.identity(etcd_client::Identity::from_pem(
                read("certificate", cert)?,
                read("key", key)?,
            ));
        }
        (None, None) => {}
        _ => return Err(EtcdError::HalfIdentity),
    }
    if let Some(name) = &tls.server_name {
        options = options.domain_name(name.clone());
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_endpoint_is_an_error() {
        let result = connect(&EtcdSettings::new(Vec::new())).await;
        assert!(matches!(result, Err(EtcdError::NoEndpoint)));
    }

    #[tokio::test]
    async fn a_client_certificate_without_its_key_is_refused() {
        let mut settings = EtcdSettings::new(vec!["https://127.0.0.1:2379".into()]);
        settings.tls = Some(EtcdTls {
            ca: None,
            cert: Some("/nonexistent/cert.pem".into()),
            key: None,
            server_name: None,
        });
        let result = connect(&settings).await;
        assert!(matches!(result, Err(EtcdError::HalfIdentity)));
    }
}
