//! TLS termination on the public listener: the `[listen.tls]` policy, certificates picked by
//! SNI, optional client certificates (mTLS), and reloading certificates without a restart.
//!
//! The rustls `ServerConfig` lives behind an `ArcSwap`: each handshake takes the current one,
//! so a reload (a changed file, or a config reload) reaches new handshakes only and open
//! connections keep what they negotiated. A file that no longer loads keeps its old
//! certificate; the reason is logged once and shown at `GET /admin/tls`.

mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderName;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use serde::Serialize;

use crate::tls::{self as pem, CertificateInfo, PemError};

pub use watch::CertificateWatch;

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[listen.tls]`: what the public listener terminates TLS with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsPolicy {
    pub certificates: Vec<CertificateSpec>,
    pub client_auth: ClientAuth,
    /// The CA bundle client certificates must chain to (set when `client_auth` is not off).
    pub client_ca: Option<PathBuf>,
    /// Forward the verified client identity upstream in this header (a client-sent one is
    /// always removed).
    #[serde(serialize_with = "header_name")]
    pub client_cert_header: Option<HeaderName>,
}

fn header_name<S: serde::Serializer>(name: &Option<HeaderName>, s: S) -> Result<S::Ok, S::Error> {
    match name {
        Some(name) => s.serialize_some(name.as_str()),
        None => s.serialize_none(),
    }
}

/// One certificate chain and key, and the SNI names it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateSpec {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Names given in the config; `None`: the certificate's DNS SANs.
    pub names: Option<Vec<String>>,
    /// Served when no name matches the client's SNI (else the first certificate is).
    pub default: bool,
}

/// Client certificates (mTLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    Off,
    /// A client may present a certificate; if it does, it must verify.
    Optional,
    /// The handshake fails without a verified client certificate.
    Required,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("[listen.tls] has no certificate")]
    NoCertificate,
    #[error("client CA {}: {reason}", .path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The names a certificate answers: the configured ones, or its DNS SANs, lower-case.
pub fn names_of(spec: &CertificateSpec, info: &CertificateInfo) -> Vec<String> {
    match &spec.names {
        Some(names) => names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        None => info.dns_names.clone(),
    }
}

// --- the SNI resolver ---

/// Picks a certificate by SNI: an exact name first, then a wildcard (`*.example.org` covers
/// one label), else the default.
#[derive(Debug, Default)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn add(&mut self, name: &str, key: &Arc<CertifiedKey>) {
        // The first certificate to claim a name keeps it (config refuses duplicates; a
        // reloaded file may bring new names).
        match name.strip_prefix("*.") {
            Some(parent) => self.wildcard.entry(parent.to_owned()),
            None => self.exact.entry(name.to_owned()),
        }
        .or_insert_with(|| Arc::clone(key));
    }

    fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name {
            let name = name.to_ascii_lowercase();
            if let Some(key) = self.exact.get(&name) {
                return Some(Arc::clone(key));
            }
            if let Some(key) = name
                .split_once('.')
                .and_then(|(_, parent)| self.wildcard.get(parent))
            {
                return Some(Arc::clone(key));
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

// --- loaded state ---

/// A certificate as loaded, and how its last reload went.
#[derive(Debug)]
struct LoadedCertificate {
    spec: CertificateSpec,
    key: Arc<CertifiedKey>,
    info: CertificateInfo,
    loaded_at: SystemTime,
    last_error: Option<String>,
}

impl LoadedCertificate {
    fn load(spec: &CertificateSpec) -> Result<Self, PemError> {
        let key = pem::load_certified_key(&spec.cert, &spec.key)?;
        let info = leaf_info(&key, &spec.cert)?;
        Ok(LoadedCertificate {
            spec: spec.clone(),
            key: Arc::new(key),
            info,
            loaded_at: SystemTime::now(),
            last_error: None,
        })
    }
}

fn leaf_info(key: &CertifiedKey, path: &Path) -> Result<CertificateInfo, PemError> {
    let leaf = key.cert.first().ok_or_else(|| PemError::NoCertificate {
        path: path.to_owned(),
    })?;
    pem::describe(leaf).map_err(|reason| PemError::BadCertificate {
        path: path.to_owned(),
        reason,
    })
}

#[derive(Debug)]
struct LoadedCa {
    path: PathBuf,
    roots: Arc<RootCertStore>,
    loaded_at: SystemTime,
    last_error: Option<String>,
}

impl LoadedCa {
    fn load(path: &Path) -> Result<Self, PemError> {
        Ok(LoadedCa {
            path: path.to_owned(),
            roots: Arc::new(pem::load_roots(path)?),
            loaded_at: SystemTime::now(),
            last_error: None,
        })
    }
}

#[derive(Debug)]
struct Loaded {
    policy: TlsPolicy,
    certificates: Vec<LoadedCertificate>,
    client_ca: Option<LoadedCa>,
}

impl Loaded {
    fn load(policy: &TlsPolicy) -> Result<Self, TlsError> {
        let certificates = policy
            .certificates
            .iter()
            .map(LoadedCertificate::load)
            .collect::<Result<Vec<_>, _>>()?;
        let client_ca = match (&policy.client_ca, policy.client_auth) {
            (Some(path), ClientAuth::Optional | ClientAuth::Required) => {
                Some(LoadedCa::load(path)?)
            }
            _ => None,
        };
        Ok(Loaded {
            policy: policy.clone(),
            certificates,
            client_ca,
        })
    }

    fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let mut resolver = SniResolver::default();
        for cert in &self.certificates {
            for name in names_of(&cert.spec, &cert.info) {
                resolver.add(&name, &cert.key);
            }
        }
        let default = self
            .certificates
            .iter()
            .find(|c| c.spec.default)
            .or_else(|| self.certificates.first())
            .ok_or(TlsError::NoCertificate)?;
        resolver.default = Some(Arc::clone(&default.key));

        let builder = ServerConfig::builder_with_provider(pem::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = match (&self.client_ca, self.policy.client_auth) {
            (Some(ca), auth @ (ClientAuth::Optional | ClientAuth::Required)) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(ca.roots.clone(), pem::provider());
                let verifier = if auth == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier.build().map_err(|e| TlsError::ClientCa {
                    path: ca.path.clone(),
                    reason: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Every file this state was loaded from.
    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .certificates
            .iter()
            .flat_map(|c| [c.spec.cert.clone(), c.spec.key.clone()])
            .collect();
        files.extend(self.client_ca.iter().map(|ca| ca.path.clone()));
        files
    }
}

// --- the terminator ---

/// The public listener's TLS: the current `ServerConfig`, and the certificates it was built
/// from, reloadable.
#[derive(Debug)]
pub struct TlsTerminator {
    current: ArcSwap<ServerConfig>,
    loaded: Mutex<Loaded>,
}

impl TlsTerminator {
    /// Loads every certificate, key and CA of `policy`; any failure is an error.
    pub fn new(policy: &TlsPolicy) -> Result<Self, TlsError> {
        let loaded = Loaded::load(policy)?;
        let config = loaded.server_config()?;
        Ok(TlsTerminator {
            current: ArcSwap::new(config),
            loaded: Mutex::new(loaded),
        })
    }

    /// The config a new handshake uses.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        // A poisoned lock only means a reload panicked; the loaded state is whole.
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A config reload: `policy` (same or new) replaces the running one, all files read
    /// afresh. Nothing changes when any of them fails to load.
    pub fn apply(&self, policy: &TlsPolicy) -> Result<(), TlsError> {
        let fresh = Loaded::load(policy)?;
        let config = fresh.server_config()?;
        let mut loaded = self.lock();
        *loaded = fresh;
        self.current.store(config);
        tracing::info!(
            certificates = loaded.certificates.len(),
            "TLS certificates reloaded with the config"
        );
        Ok(())
    }

    /// Re-reads the files (one of them changed). Each certificate that loads replaces its old
    /// one; one that does not keeps the old one and records why (logged once per new reason).
    pub fn refresh(&self) {
        let mut loaded = self.lock();
        let mut changed = false;
        for cert in &mut loaded.certificates {
            match LoadedCertificate::load(&cert.spec) {
                Ok(fresh) => {
                    let same = fresh.key.cert == cert.key.cert;
                    if !same || cert.last_error.is_some() {
                        if !same {
                            tracing::info!(cert = %cert.spec.cert.display(),
                                subject = %fresh.info.subject, "TLS certificate reloaded");
                        }
                        *cert = fresh;
                        changed = true;
                    }
                }
                Err(error) => {
                    record_failure(&mut cert.last_error, error.to_string(), "certificate")
                }
            }
        }
        if let Some(ca) = &mut loaded.client_ca {
            match LoadedCa::load(&ca.path) {
                Ok(fresh) => {
                    if fresh.roots.roots != ca.roots.roots || ca.last_error.is_some() {
                        tracing::info!(client_ca = %ca.path.display(), "client CA bundle reloaded");
                        *ca = fresh;
                        changed = true;
                    }
                }
                Err(error) => record_failure(&mut ca.last_error, error.to_string(), "client CA"),
            }
        }
        if changed {
            match loaded.server_config() {
                Ok(config) => self.current.store(config),
                Err(error) => {
                    tracing::warn!(%error, "TLS reload failed; keeping the running TLS setup")
                }
            }
        }
    }

    /// Every file the running TLS setup was loaded from (what the watch follows).
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock().files()
    }

    /// Each served certificate's file and expiry (Unix seconds), for the metrics.
    pub fn expiries(&self) -> Vec<(String, i64)> {
        self.lock()
            .certificates
            .iter()
            .map(|c| {
                let not_after = c
                    .info
                    .not_after
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                (c.spec.cert.display().to_string(), not_after)
            })
            .collect()
    }

    /// What `GET /admin/tls` shows.
    pub fn status(&self) -> TlsStatus {
        let loaded = self.lock();
        let default = loaded
            .certificates
            .iter()
            .position(|c| c.spec.default)
            .unwrap_or(0);
        TlsStatus {
            enabled: true,
            certificates: loaded
                .certificates
                .iter()
                .enumerate()
                .map(|(i, c)| CertificateStatus {
                    names: names_of(&c.spec, &c.info),
                    subject: c.info.subject.clone(),
                    not_before: rfc3339(c.info.not_before),
                    not_after: rfc3339(c.info.not_after),
                    expired: c.info.expired(SystemTime::now()),
                    default: i == default,
                    cert: c.spec.cert.clone(),
                    key: c.spec.key.clone(),
                    loaded_at: rfc3339(c.loaded_at),
                    last_error: c.last_error.clone(),
                })
                .collect(),
            client_auth: loaded.policy.client_auth,
            client_ca: loaded.client_ca.as_ref().map(|ca| CaStatus {
                file: ca.path.clone(),
                certificates: ca.roots.len(),
                loaded_at: rfc3339(ca.loaded_at),
                last_error: ca.last_error.clone(),
            }),
        }
    }
}

/// The public listener's TLS and the watch on its files, as the gateway holds them.
#[derive(Debug)]
pub struct InboundTls {
    pub terminator: Arc<TlsTerminator>,
    /// `None` when the OS watch could not start: changes then apply on a config reload.
    watch: Option<CertificateWatch>,
}

impl InboundTls {
    /// Loads `policy` and starts watching its files; must run inside a tokio runtime.
    pub fn start(policy: &TlsPolicy) -> Result<Self, TlsError> {
        let terminator = Arc::new(TlsTerminator::new(policy)?);
        let watch = match CertificateWatch::start(Arc::clone(&terminator)) {
            Ok(watch) => Some(watch),
            Err(error) => {
                tracing::warn!(%error, "cannot watch the certificate files; their changes apply on a config reload only");
                None
            }
        };
        Ok(InboundTls { terminator, watch })
    }

    /// A config reload: see [`TlsTerminator::apply`]; the watch follows the new files.
    pub fn apply(&self, policy: &TlsPolicy) -> Result<(), TlsError> {
        self.terminator.apply(policy)?;
        if let Some(watch) = &self.watch {
            watch.follow(&self.terminator.files());
        }
        Ok(())
    }
}

fn record_failure(last_error: &mut Option<String>, error: String, what: &str) {
    // Once per new reason: a file rewritten in several steps must not flood the log.
    if last_error.as_deref() != Some(error.as_str()) {
        tracing::warn!(%error, "{what} reload failed; keeping the loaded one");
        *last_error = Some(error);
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `GET /admin/tls`.
#[derive(Debug, Serialize)]
pub struct TlsStatus {
    pub enabled: bool,
    pub certificates: Vec<CertificateStatus>,
    pub client_auth: ClientAuth,
    pub client_ca: Option<CaStatus>,
}

impl TlsStatus {
    /// When the public listener has no TLS.
    pub fn disabled() -> Self {
        TlsStatus {
            enabled: false,
            certificates: Vec::new(),
            client_auth: ClientAuth::Off,
            client_ca: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CertificateStatus {
    pub names: Vec<String>,
    pub subject: String,
    pub not_before: String,
    pub not_after: String,
    pub expired: bool,
    pub default: bool,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub loaded_at: String,
    /// Why the last reload of its files failed (the certificate in use is the older one).
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CaStatus {
    pub file: PathBuf,
    pub certificates: usize,
    pub loaded_at: String,
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<CertifiedKey> {
        let made = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("cert");
        let der = rustls_pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
        Arc::new(
            CertifiedKey::from_der(vec![made.cert.der().clone()], der, &pem::provider())
                .expect("key"),
        )
    }

    #[test]
    fn picks_exact_then_one_label_wildcard_then_default() {
        let (api, wild, fallback) = (key("api"), key("wild"), key("default"));
        let mut resolver = SniResolver::default();
        resolver.add("api.example.org", &api);
        resolver.add("*.example.org", &wild);
        resolver.default = Some(fallback.clone());
        let pick = |name| resolver.pick(name).expect("a certificate");
        assert!(Arc::ptr_eq(&pick(Some("api.example.org")), &api));
        assert!(Arc::ptr_eq(&pick(Some("API.Example.org")), &api));
        assert!(Arc::ptr_eq(&pick(Some("www.example.org")), &wild));
        assert!(Arc::ptr_eq(&pick(Some("a.b.example.org")), &fallback));
        assert!(Arc::ptr_eq(&pick(Some("example.org")), &fallback));
        assert!(Arc::ptr_eq(&pick(None), &fallback));
    }
}
