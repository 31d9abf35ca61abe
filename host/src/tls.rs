//! Certificates and keys from PEM files, and what a certificate says about itself: shared by the
//! public listener's TLS (`listener`) and TLS to upstreams (`conn`). One crypto provider
//! (rustls' `ring`) for both, so the gateway never depends on a process-wide default.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate, key or CA bundle could not be loaded. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----` blocks)", .path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no private key in it (expected a PEM PKCS#8, PKCS#1 or SEC1 key)", .path.display())]
    NoKey { path: PathBuf },
    #[error("{}: not valid PEM: {reason}", .path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("{}: unusable private key: {reason}", .path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("the key in {} does not match the certificate in {}", .key.display(), .cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: certificate cannot be parsed: {reason}", .path.display())]
    BadCertificate { path: PathBuf, reason: String },
}

/// The crypto provider every TLS config of the gateway is built with.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Every certificate in a PEM file, in order (a chain: leaf first).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(path, e))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            path: path.to_owned(),
        });
    }
    for cert in &certs {
        describe(cert).map_err(|reason| PemError::BadCertificate {
            path: path.to_owned(),
            reason,
        })?;
    }
    Ok(certs)
}

/// A certificate chain and the private key that goes with its leaf, checked to match.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, PemError> {
    let chain = load_certificates(cert)?;
    let key_bytes = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => PemError::NoKey {
            path: key.to_owned(),
        },
        other => malformed(key, other),
    })?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => PemError::KeyMismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        },
        other => PemError::BadKey {
            path: key.to_owned(),
            reason: other.to_string(),
        },
    })
}

/// A CA bundle: trust anchors for verifying peers.
pub fn load_roots(path: &Path) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certificates(path)? {
        roots.add(cert).map_err(|e| PemError::BadCertificate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// What a certificate says about itself: enough to pick it by name, warn before it expires,
/// and tell plugins and upstreams who a client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject as an RFC 4514-style string, e.g. `CN=client-1, O=Acme`.
    pub subject: String,
    /// DNS names from the subject alternative names (may hold `*.wildcards`).
    pub dns_names: Vec<String>,
    /// IP addresses from the subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// URIs from the subject alternative names (SPIFFE IDs, for instance).
    pub uris: Vec<String>,
    /// E-mail addresses from the subject alternative names.
    pub emails: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl CertificateInfo {
    /// Whether the certificate has expired at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        now > self.not_after
    }
}

/// Parses a DER certificate. The error is x509-parser's reason.
pub fn describe(cert: &CertificateDer<'_>) -> Result<CertificateInfo, String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| e.to_string())?;
    let mut info = CertificateInfo {
        subject: parsed.subject().to_string(),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        uris: Vec::new(),
        emails: Vec::new(),
        not_before: time_of(parsed.validity().not_before.timestamp()),
        not_after: time_of(parsed.validity().not_after.timestamp()),
    };
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| e.to_string())?;
    for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
        match name {
            GeneralName::DNSName(dns) => info.dns_names.push(dns.to_ascii_lowercase()),
            GeneralName::IPAddress(bytes) => {
                if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                    info.ip_addresses.push(IpAddr::from(v4));
                } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                    info.ip_addresses.push(IpAddr::from(v6));
                }
            }
            GeneralName::URI(uri) => info.uris.push((*uri).to_owned()),
            GeneralName::RFC822Name(email) => info.emails.push((*email).to_owned()),
            _ => {}
        }
    }
    Ok(info)
}

fn time_of(unix_seconds: i64) -> SystemTime {
    match u64::try_from(unix_seconds) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_owned(),
        source,
    })
}

fn malformed(path: &Path, error: rustls_pki_types::pem::Error) -> PemError {
    PemError::Malformed {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gatehouse-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn names_the_file_when_it_is_missing_or_holds_no_certificate() {
        let dir = temp_dir();
        let missing = dir.join("missing.pem");
        let err = load_certificates(&missing).unwrap_err();
        assert!(matches!(err, PemError::Read { .. }), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let empty = write(&dir, "empty.pem", "just text\n");
        let err = load_certificates(&empty).unwrap_err();
        assert!(matches!(err, PemError::NoCertificate { .. }), "{err}");

        let key_only = write(&dir, "nokey.key", "");
        let err = load_certified_key(&empty, &key_only).unwrap_err();
        assert!(matches!(err, PemError::NoCertificate { .. }), "{err}");
    }

    #[test]
    fn refuses_a_key_that_does_not_match_and_describes_a_certificate() {
        let dir = temp_dir();
        let first = rcgen::generate_simple_self_signed(vec!["a.example".into(), "10.1.2.3".into()])
            .expect("cert");
        let second = rcgen::generate_simple_self_signed(vec!["b.example".into()]).expect("cert");
        let cert = write(&dir, "a.pem", &first.cert.pem());
        let own_key = write(&dir, "a.key", &first.signing_key.serialize_pem());
        let other_key = write(&dir, "b.key", &second.signing_key.serialize_pem());

        assert!(load_certified_key(&cert, &own_key).is_ok());
        let err = load_certified_key(&cert, &other_key).unwrap_err();
        assert!(matches!(err, PemError::KeyMismatch { .. }), "{err}");

        let info = describe(&load_certificates(&cert).expect("certs")[0]).expect("describe");
        assert_eq!(info.dns_names, ["a.example"]);
        assert_eq!(info.ip_addresses, [IpAddr::from([10, 1, 2, 3])]);
        assert!(!info.expired(SystemTime::now()));
        assert!(load_roots(&cert).is_ok());
    }
}
