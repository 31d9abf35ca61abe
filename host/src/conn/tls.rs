//! TLS to upstream endpoints: a service's client config (trust anchors, verification, client
//! certificate, ALPN), built once when the config is loaded and shared by every connection to
//! every endpoint of the service; and the handshake [`super::Target::connect`] runs between the
//! TCP connect and the HTTP handshake.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::Protocol;

/// `[services.tls]` of one service, ready to connect with. Cloning is cheap (the client
/// config is behind an `Arc`); its session cache is shared by all clones, so reconnects to any
/// endpoint of the service resume sessions.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    /// SNI and the name verified; `None`: each endpoint's IP address.
    server_name: Option<ServerName<'static>>,
    /// Whether HTTP/2 must be agreed through ALPN (`protocol = "h2"`).
    requires_h2: bool,
    summary: TlsSummary,
}

/// What the TLS settings are, for `/admin/config` and logs (never key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsSummary {
    /// The CA bundle's path, or `"system"` for the system's roots.
    pub ca: String,
    /// `None`: each endpoint's IP address.
    pub server_name: Option<String>,
    pub verify: bool,
    /// The client certificate's path (mTLS), if any.
    pub cert: Option<String>,
}

/// Where the trust anchors come from.
pub enum Roots {
    /// The system's roots (`rustls-native-certs`), loaded once per process.
    System,
    /// A CA bundle (`tls.ca`), already loaded.
    Bundle(RootCertStore),
}

/// The inputs of [`UpstreamTls::new`], loaded and checked by config.
pub struct TlsSettings {
    pub roots: Roots,
    pub server_name: Option<ServerName<'static>>,
    /// `false` accepts any certificate (the handshake signature is still checked).
    pub verify: bool,
    /// A client certificate for upstreams that require one.
    pub client_identity: Option<Arc<CertifiedKey>>,
    pub summary: TlsSummary,
}

/// Why a service's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{0}; name a CA bundle with `ca`")]
    NoSystemRoots(String),
    #[error("cannot build the TLS client: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("protocol {0:?} is cleartext and cannot be used with TLS")]
    Cleartext(Protocol),
}

impl UpstreamTls {
    /// Builds the client config for `protocol` (ALPN offers exactly `http/1.1` or `h2`).
    pub fn new(settings: TlsSettings, protocol: Protocol) -> Result<Self, TlsSetupError> {
        let alpn: &[u8] = match protocol {
            Protocol::Http1 => b"http/1.1",
            Protocol::H2 => b"h2",
            Protocol::H2c => return Err(TlsSetupError::Cleartext(protocol)),
        };
        let provider = crate::tls::provider();
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let builder = if settings.verify {
            let roots = match settings.roots {
                Roots::Bundle(roots) => Arc::new(roots),
                Roots::System => system_roots().map_err(TlsSetupError::NoSystemRoots)?,
            };
            let verifier =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TlsSetupError::Rustls(rustls::Error::General(e.to_string())))?;
            builder.with_webpki_verifier(verifier)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        };
        let mut config = match settings.client_identity {
            Some(identity) => builder.with_client_cert_resolver(Arc::new(ClientIdentity(identity))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: settings.server_name,
            requires_h2: protocol == Protocol::H2,
            summary: settings.summary,
        })
    }

    /// What the settings are (paths and names, no keys).
    pub fn summary(&self) -> &TlsSummary {
        &self.summary
    }

    /// Whether any certificate is accepted (`verify = false`).
    pub fn verify(&self) -> bool {
        self.summary.verify
    }

    /// The configured server name, or the endpoint's IP address.
    pub(super) fn server_name_for(&self, addr: SocketAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }

    /// The configured DNS server name, which HTTP/2 requests then carry as `:authority`.
    pub(super) fn dns_name(&self) -> Option<&str> {
        match &self.server_name {
            Some(ServerName::DnsName(name)) => Some(name.as_ref()),
            _ => None,
        }
    }

    /// The TLS handshake on a connected socket, verifying the peer as `server_name`; with
    /// `protocol = "h2"`, also that the endpoint agreed to HTTP/2.
    pub(super) async fn handshake(
        &self,
        server_name: &ServerName<'static>,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, super::ConnError> {
        let stream = self
            .connector
            .connect(server_name.clone(), tcp)
            .await
            .map_err(|e| super::ConnError::Tls {
                server_name: server_name.to_str().into_owned(),
                reason: TlsFailure::from_io(&e),
            })?;
        if self.requires_h2 {
            let chosen = stream.get_ref().1.alpn_protocol();
            if chosen != Some(b"h2") {
                return Err(super::ConnError::NoH2 {
                    chosen: chosen.map(|p| String::from_utf8_lossy(p).into_owned()),
                });
            }
        }
        Ok(stream)
    }
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("summary", &self.summary)
            .field("requires_h2", &self.requires_h2)
            .finish_non_exhaustive()
    }
}

/// Config reload compares services to keep their state; the summary names every input.
impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.summary == other.summary && self.requires_h2 == other.requires_h2
    }
}

impl Eq for UpstreamTls {}

/// Why a TLS handshake with an endpoint failed, in words an operator can act on.
#[derive(Debug, Clone)]
pub struct TlsFailure(String);

impl TlsFailure {
    fn from_io(error: &io::Error) -> Self {
        let rustls_error = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        let text = match rustls_error {
            Some(e) => describe(e),
            None if error.kind() == io::ErrorKind::UnexpectedEof => {
                "the endpoint closed the connection during the handshake (is it a TLS server?)"
                    .to_owned()
            }
            None => error.to_string(),
        };
        Self(text)
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// rustls' reasons, with a hint for the usual misconfigurations.
fn describe(error: &rustls::Error) -> String {
    use rustls::{AlertDescription, CertificateError, Error};
    match error {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "invalid peer certificate: unknown issuer (not signed by a CA in the service's `tls.ca`, or the system's roots without one)".to_owned()
        }
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("{error} (set `tls.server_name` to a name the certificate holds)"),
        Error::AlertReceived(AlertDescription::NoApplicationProtocol) => format!(
            "{error} (the endpoint does not speak the service's protocol over ALPN)"
        ),
        Error::AlertReceived(
            AlertDescription::CertificateRequired | AlertDescription::BadCertificate,
        ) => format!("{error} (the endpoint wants a client certificate: set `tls.cert` and `tls.key`)"),
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
            format!("{error} (is the endpoint a TLS server?)")
        }
        other => other.to_string(),
    }
}

/// The system's trust anchors, read once per process: every service without `ca` shares them.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), |e| e.to_string());
                return Err(format!("no system root certificates ({why})"));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// The one client certificate, whatever CAs the server hints at.
#[derive(Debug)]
struct ClientIdentity(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientIdentity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `verify = false`: any certificate for any name is accepted. The handshake signatures are
/// still checked, so the peer holds the key of the certificate it sent; whose certificate that
/// is, nobody checks.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
