//! Certificates for the TLS tests, made on the fly with rcgen and written as PEM files into a
//! fresh directory per test. Nothing is checked in: every run has its own CA.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A fresh, empty directory under the system temp dir, unique per call (removed by nobody:
/// it holds a few KiB of PEM files).
pub fn temp_dir(label: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "gatehouse-{label}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// A certificate authority that signs server and client certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// A certificate and its private key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    /// A self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names, `*.wildcards` or IP addresses), valid now.
    pub fn server(&self, names: &[&str]) -> Leaf {
        self.leaf(
            names,
            names.first().copied().unwrap_or("server"),
            |params| {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            },
        )
    }

    /// A client certificate with subject `CN=common_name` and, if given, one DNS name.
    pub fn client(&self, common_name: &str, dns_name: Option<&str>) -> Leaf {
        let names: Vec<&str> = dns_name.into_iter().collect();
        self.leaf(&names, common_name, |params| {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        })
    }

    /// A server certificate for `names` that expired (valid 2020-01-01 to 2021-01-01).
    pub fn expired_server(&self, names: &[&str]) -> Leaf {
        self.leaf(
            names,
            names.first().copied().unwrap_or("server"),
            |params| {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
            },
        )
    }

    fn leaf(
        &self,
        names: &[&str],
        common_name: &str,
        customise: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name = dn(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        customise(&mut params);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the CA certificate to `dir/name` and returns the path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).expect("write CA PEM");
        path
    }
}

impl Leaf {
    /// Writes `dir/{stem}.pem` (certificate) and `dir/{stem}.key` (key); returns both paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write certificate PEM");
        std::fs::write(&key, &self.key_pem).expect("write key PEM");
        (cert, key)
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}
