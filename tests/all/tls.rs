//! Inbound TLS: a real rustls client (HTTP/1.1 and HTTP/2 by ALPN) through the gateway to a
//! plain origin; SNI picking one of several certificates; certificate files swapped under a
//! running gateway; mTLS required and optional; the plaintext redirect listener; handshake
//! failures in `/metrics`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse::config;
use gatehouse::gateway::{self, RunningGateway};
use http::Request;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::support::certs::{self, Ca, Leaf};
use crate::support::{self, origin, Got};

const DEADLINE: Duration = Duration::from_secs(10);

// --- clients ---

fn roots(ca: &Ca) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA root");
    }
    roots
}

/// A client trusting `ca`, offering `alpn`, presenting `identity` if given.
fn client(ca: &Ca, alpn: &[&[u8]], identity: Option<&Leaf>) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(gatehouse::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots(ca));
    let mut config = match identity {
        Some(leaf) => {
            let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client chain");
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Accepts any server certificate: the SNI test looks at which one it got, not whether it
/// matches the name asked for.
#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
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
            &gatehouse::tls::provider().signature_verification_algorithms,
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
            &gatehouse::tls::provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        gatehouse::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn any_certificate_client() -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(gatehouse::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
    Arc::new(config)
}

async fn connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    TlsConnector::from(config).connect(name, tcp).await
}

/// The subject of the certificate the server presented.
fn peer_subject(stream: &TlsStream<TcpStream>) -> String {
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate");
    gatehouse::tls::describe(leaf).expect("parse").subject
}

/// One GET over the stream, HTTP/2 if ALPN picked it, else HTTP/1.1.
async fn get(
    stream: TlsStream<TcpStream>,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(http::Version, Got), hyper::Error> {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let mut builder = Request::builder().uri(format!("https://{host}{path}"));
    if !h2 {
        builder = builder.header("host", host);
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder.body(Full::new(Bytes::new())).expect("request");
    let io = TokioIo::new(stream);
    let response = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        sender.send_request(req).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        sender.send_request(req).await?
    };
    let version = response.version();
    Ok((version, support::collect(response).await))
}

// --- gateways ---

/// A gateway from `text`, written as `dir/gatehouse.toml` so that relative certificate paths
/// resolve against `dir`.
async fn start_in(dir: &Path, text: &str) -> RunningGateway {
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, text).expect("write config");
    let config = config::load_file(&path).expect("valid config");
    gateway::start(config).await.expect("gateway starts")
}

fn routes_to(origin: SocketAddr) -> String {
    format!(
        "[[services]]\nname = \"echo\"\nendpoints = [\"{origin}\"]\n\
         [[routes]]\nname = \"echo\"\nservice = \"echo\"\nmatch = {{ prefix = \"/\" }}\n"
    )
}

const LISTEN: &str = "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n";

async fn admin_tls(gw: &RunningGateway) -> serde_json::Value {
    support::get(&format!("http://{}/admin/tls", gw.admin_addr), &[])
        .await
        .json()
}

async fn metrics(gw: &RunningGateway) -> String {
    support::get(&format!("http://{}/metrics", gw.admin_addr), &[])
        .await
        .text()
}

// --- tests ---

#[tokio::test]
async fn http1_and_http2_over_tls_reach_a_plain_origin() {
    let origin = origin::echo("plain").await;
    let dir = certs::temp_dir("tls-alpn");
    let ca = Ca::new("test CA");
    ca.server(&["localhost"]).write(&dir, "server");
    let gw = start_in(
        &dir,
        &format!(
            "{LISTEN}[listen.tls]\ncertificates = [{{ cert = \"server.pem\", key = \"server.key\" }}]\n{}",
            routes_to(origin.addr)
        ),
    )
    .await;

    let stream = connect(
        gw.public_addr,
        "localhost",
        client(&ca, &[b"h2", b"http/1.1"], None),
    )
    .await
    .expect("TLS handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (version, got) = get(stream, "localhost", "/over/h2", &[])
        .await
        .expect("h2 request");
    assert_eq!((version, got.status), (http::Version::HTTP_2, 200));
    assert_eq!(got.json()["path"], "/over/h2");
    assert_eq!(got.json()["origin"], "plain");

    let stream = connect(
        gw.public_addr,
        "localhost",
        client(&ca, &[b"http/1.1"], None),
    )
    .await
    .expect("TLS handshake");
    let (version, got) = get(stream, "localhost", "/over/h1", &[])
        .await
        .expect("http/1.1 request");
    assert_eq!((version, got.status), (http::Version::HTTP_11, 200));
    assert_eq!(got.json()["path"], "/over/h1");

    // No ALPN at all: the auto-detecting server still speaks HTTP/1.1.
    let stream = connect(gw.public_addr, "localhost", client(&ca, &[], None))
        .await
        .expect("TLS handshake");
    let (_, got) = get(stream, "localhost", "/no-alpn", &[])
        .await
        .expect("request");
    assert_eq!(got.status, 200);

    let text = metrics(&gw).await;
    assert!(
        text.contains("gatehouse_tls_handshakes_total{listener=\"public\",result=\"ok\"} 3"),
        "{text}"
    );
    // rcgen's default validity ends in 4096; an alert compares this with time().
    let expiry = text
        .lines()
        .find(|l| l.starts_with("gatehouse_tls_certificate_expiry_timestamp_seconds{"))
        .unwrap_or_else(|| panic!("no expiry metric: {text}"));
    assert!(expiry.contains("server.pem"), "{expiry}");
    let not_after: i64 = expiry
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(not_after > now + 365 * 86_400, "{expiry}");
    gw.shutdown().await;
}

#[tokio::test]
async fn sni_picks_exact_then_wildcard_then_default() {
    let origin = origin::echo("plain").await;
    let dir = certs::temp_dir("tls-sni");
    let ca = Ca::new("test CA");
    ca.server(&["api.example.org"]).write(&dir, "api");
    ca.server(&["*.example.org"]).write(&dir, "wild");
    ca.server(&["fallback.test"]).write(&dir, "fallback");
    ca.server(&["named-in-config.test"]).write(&dir, "named");
    let gw = start_in(
        &dir,
        &format!(
            "{LISTEN}[listen.tls]\ncertificates = [\n\
             {{ cert = \"api.pem\", key = \"api.key\" }},\n\
             {{ cert = \"wild.pem\", key = \"wild.key\" }},\n\
             {{ cert = \"fallback.pem\", key = \"fallback.key\", default = true }},\n\
             {{ cert = \"named.pem\", key = \"named.key\", names = [\"other.test\"] }},\n]\n{}",
            routes_to(origin.addr)
        ),
    )
    .await;
    for (sni, expected) in [
        ("api.example.org", "CN=api.example.org"),
        ("www.example.org", "CN=*.example.org"),
        ("a.b.example.org", "CN=fallback.test"),
        ("unknown.test", "CN=fallback.test"),
        ("other.test", "CN=named-in-config.test"),
        // Names from the config replace the certificate's own.
        ("named-in-config.test", "CN=fallback.test"),
    ] {
        let stream = connect(gw.public_addr, sni, any_certificate_client())
            .await
            .expect("TLS handshake");
        assert_eq!(peer_subject(&stream), expected, "SNI {sni}");
    }
    // A client that verifies gets through with the exact and the wildcard names.
    for sni in ["api.example.org", "www.example.org"] {
        let stream = connect(gw.public_addr, sni, client(&ca, &[b"h2"], None))
            .await
            .expect("verified TLS handshake");
        let (_, got) = get(stream, sni, "/", &[]).await.expect("request");
        assert_eq!(got.status, 200);
    }
    let status = admin_tls(&gw).await;
    assert_eq!(status["certificates"][2]["default"], true, "{status}");
    assert_eq!(status["certificates"][0]["names"][0], "api.example.org");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_swapped_certificate_reaches_new_handshakes_and_a_broken_one_keeps_the_old() {
    let origin = origin::echo("plain").await;
    let dir = certs::temp_dir("tls-swap");
    let ca = Ca::new("test CA");
    // A file in the same directory that is not watched.
    ca.client("first", Some("localhost")).write(&dir, "unused");
    let first = ca.server(&["localhost"]);
    let (cert_path, key_path) = first.write(&dir, "server");
    let gw = start_in(
        &dir,
        &format!(
            "{LISTEN}[listen.tls]\ncertificates = [{{ cert = \"server.pem\", key = \"server.key\" }}]\n{}",
            routes_to(origin.addr)
        ),
    )
    .await;
    let config = client(&ca, &[b"http/1.1"], None);
    // Held open across the swap: an open connection keeps what it negotiated.
    let open = connect(gw.public_addr, "localhost", config.clone())
        .await
        .expect("handshake");
    let first_fingerprint = leaf_der(&open);

    // A new certificate for the same name, written key first.
    let second = ca.server(&["localhost", "second.test"]);
    std::fs::write(&key_path, &second.key_pem).expect("write key");
    std::fs::write(&cert_path, &second.cert_pem).expect("write cert");
    support::eventually(
        "a new handshake sees the new certificate",
        DEADLINE,
        async || {
            let Ok(stream) = connect(gw.public_addr, "localhost", config.clone()).await else {
                return false;
            };
            leaf_der(&stream) != first_fingerprint
        },
    )
    .await;
    let (_, got) = get(open, "localhost", "/still-open", &[])
        .await
        .expect("the open connection still works");
    assert_eq!(got.status, 200);
    let status = admin_tls(&gw).await;
    assert_eq!(
        status["certificates"][0]["names"],
        serde_json::json!(["localhost", "second.test"]),
        "{status}"
    );

    // A broken file: the second certificate stays, and /admin/tls says why.
    std::fs::write(&cert_path, "not a certificate\n").expect("write broken cert");
    support::eventually("/admin/tls shows the failed reload", DEADLINE, async || {
        admin_tls(&gw).await["certificates"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("server.pem") && e.contains("no certificate"))
    })
    .await;
    let stream = connect(gw.public_addr, "localhost", config.clone())
        .await
        .expect("handshake with the kept certificate");
    let second_der = CertificateDer::pem_slice_iter(second.cert_pem.as_bytes())
        .next()
        .expect("one cert")
        .expect("PEM");
    assert_eq!(leaf_der(&stream), second_der.as_ref());

    // Fixed again: the error clears.
    let third = ca.server(&["localhost"]);
    std::fs::write(&key_path, &third.key_pem).expect("write key");
    std::fs::write(&cert_path, &third.cert_pem).expect("write cert");
    support::eventually(
        "the error clears once the files load",
        DEADLINE,
        async || admin_tls(&gw).await["certificates"][0]["last_error"].is_null(),
    )
    .await;
    gw.shutdown().await;
}

fn leaf_der(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate")
        .as_ref()
        .to_vec()
}

/// Whether a request over a fresh connection presenting `identity` is refused, at the
/// handshake or (TLS 1.3: the server checks the client's certificate after the client
/// finished) at the first read.
async fn refused(gw: &RunningGateway, config: Arc<ClientConfig>) -> bool {
    let Ok(stream) = connect(gw.public_addr, "localhost", config).await else {
        return true;
    };
    get(stream, "localhost", "/", &[]).await.is_err()
}

/// A gateway config with client certificates `mode`; returns the CA of the server's
/// certificate and the config text.
fn mtls_gateway_text(dir: &Path, origin: SocketAddr, mode: &str) -> (Ca, String) {
    let ca = Ca::new("server CA");
    ca.server(&["localhost"]).write(dir, "server");
    Ca::new("client CA").write(dir, "clients.pem");
    let text = format!(
        "{LISTEN}[listen.tls]\ncertificates = [{{ cert = \"server.pem\", key = \"server.key\" }}]\n\
         client_auth = \"{mode}\"\nclient_ca = \"clients.pem\"\nclient_cert_header = \"x-client-cert\"\n{}",
        routes_to(origin)
    );
    (ca, text)
}

#[tokio::test]
async fn mtls_required_refuses_missing_and_foreign_certificates_and_forwards_the_identity() {
    let origin = origin::echo("plain").await;
    let dir = certs::temp_dir("tls-mtls");
    let server_ca = Ca::new("server CA");
    server_ca.server(&["localhost"]).write(&dir, "server");
    let clients = Ca::new("client CA");
    clients.write(&dir, "clients.pem");
    let gw = start_in(
        &dir,
        &format!(
            "{LISTEN}[listen.tls]\ncertificates = [{{ cert = \"server.pem\", key = \"server.key\" }}]\n\
             client_auth = \"required\"\nclient_ca = \"clients.pem\"\n\
             client_cert_header = \"x-client-cert\"\n{}",
            routes_to(origin.addr)
        ),
    )
    .await;

    assert!(
        refused(&gw, client(&server_ca, &[b"http/1.1"], None)).await,
        "no certificate"
    );
    let stranger = Ca::new("another CA").client("mallory", None);
    assert!(
        refused(&gw, client(&server_ca, &[b"http/1.1"], Some(&stranger))).await,
        "a certificate from another CA"
    );

    let alice = clients.client("alice", Some("alice.clients.test"));
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        let stream = connect(
            gw.public_addr,
            "localhost",
            client(&server_ca, &[alpn], Some(&alice)),
        )
        .await
        .expect("handshake with a good client certificate");
        let (_, got) = get(
            stream,
            "localhost",
            "/who",
            &[("x-client-cert", "Hash=forged;Subject=\"CN=admin\"")],
        )
        .await
        .expect("request");
        assert_eq!(got.status, 200);
        let header = got.json()["headers"]["x-client-cert"]
            .as_str()
            .expect("identity header upstream")
            .to_owned();
        assert!(header.starts_with("Hash="), "{header}");
        assert!(header.contains(";Subject=\"CN=alice\""), "{header}");
        assert!(header.ends_with(";DNS=alice.clients.test"), "{header}");
        assert!(!header.contains("forged"), "{header}");
        let hash = header["Hash=".len()..].split(';').next().expect("hash");
        assert_eq!(hash.len(), 64, "{header}");
    }

    let text = metrics(&gw).await;
    assert!(text.contains("result=\"client_cert_missing\"} 1"), "{text}");
    assert!(text.contains("result=\"client_cert_invalid\"} 1"), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn mtls_optional_serves_clients_without_a_certificate_and_strips_a_spoofed_identity() {
    let origin = origin::echo("plain").await;
    let dir = certs::temp_dir("tls-mtls-optional");
    let (server_ca, text) = mtls_gateway_text(&dir, origin.addr, "optional");
    let gw = start_in(&dir, &text).await;
    let stream = connect(
        gw.public_addr,
        "localhost",
        client(&server_ca, &[b"h2"], None),
    )
    .await
    .expect("handshake without a client certificate");
    let (_, got) = get(
        stream,
        "localhost",
        "/anonymous",
        &[("x-client-cert", "Hash=forged")],
    )
    .await
    .expect("request");
    assert_eq!(got.status, 200);
    assert!(
        got.json()["headers"].get("x-client-cert").is_none(),
        "{}",
        got.text()
    );
    // A certificate from an unknown CA is still refused: optional is not unverified.
    let stranger = Ca::new("another CA").client("mallory", None);
    assert!(refused(&gw, client(&server_ca, &[b"http/1.1"], Some(&stranger))).await);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_plaintext_listener_redirects_to_https() {
    let origin = origin::echo("plain").await;
    let dir = certs::temp_dir("tls-redirect");
    let ca = Ca::new("test CA");
    ca.server(&["localhost"]).write(&dir, "server");
    let gw = start_in(
        &dir,
        &format!(
            "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\
             [listen.tls]\ncertificates = [{{ cert = \"server.pem\", key = \"server.key\" }}]\n{}",
            routes_to(origin.addr)
        ),
    )
    .await;
    let http = gw.http_addr.expect("the plaintext listener");
    let got = support::get(
        &format!("http://{http}/a/b?c=1"),
        &[("host", "api.example.org:8080")],
    )
    .await;
    assert_eq!(got.status, 308);
    assert_eq!(
        got.headers["location"],
        format!("https://api.example.org:{}/a/b?c=1", gw.public_addr.port()).as_str()
    );
    assert_eq!(origin.accepted(), 0, "a redirect never reaches the origin");

    // A Host that is no host: a JSON 400.
    let mut tcp = TcpStream::connect(http).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: user@evil.test\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"bad_host\""), "{answer}");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_plaintext_listener_can_serve_routes_and_use_a_301() {
    let origin = origin::echo("plain").await;
    let dir = certs::temp_dir("tls-serve");
    let ca = Ca::new("test CA");
    ca.server(&["localhost"]).write(&dir, "server");
    let tls = "[listen.tls]\ncertificates = [{ cert = \"server.pem\", key = \"server.key\" }]\n";
    let gw = start_in(
        &dir,
        &format!(
            "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\
             http_mode = \"serve\"\n{tls}{}",
            routes_to(origin.addr)
        ),
    )
    .await;
    let http = gw.http_addr.expect("the plaintext listener");
    let got = support::get(&format!("http://{http}/plain"), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["path"], "/plain");
    gw.shutdown().await;

    let gw = start_in(
        &dir,
        &format!(
            "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\
             redirect_status = 301\nredirect_port = 443\n{tls}{}",
            routes_to(origin.addr)
        ),
    )
    .await;
    let http = gw.http_addr.expect("the plaintext listener");
    let got = support::get(&format!("http://{http}/x"), &[("host", "example.org")]).await;
    assert_eq!(got.status, 301);
    assert_eq!(got.headers["location"], "https://example.org/x");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_config_reload_applies_new_certificate_files_but_not_turning_tls_off() {
    let origin = origin::echo("plain").await;
    let dir = certs::temp_dir("tls-reload");
    let ca = Ca::new("test CA");
    ca.server(&["localhost"]).write(&dir, "one");
    ca.server(&["localhost", "two.test"]).write(&dir, "two");
    let with = |stem: &str| {
        format!(
            "{LISTEN}[listen.tls]\ncertificates = [{{ cert = \"{stem}.pem\", key = \"{stem}.key\" }}]\n{}",
            routes_to(origin.addr)
        )
    };
    let gw = start_in(&dir, &with("one")).await;
    let path: PathBuf = dir.join("gatehouse.toml");
    std::fs::write(&path, with("two")).expect("rewrite config");
    gw.reloader.reload_file().await.expect("reload applies");
    let stream = connect(gw.public_addr, "two.test", client(&ca, &[b"h2"], None))
        .await
        .expect("a handshake for a name only the new certificate has");
    assert_eq!(peer_subject(&stream), "CN=localhost");

    std::fs::write(&path, format!("{LISTEN}{}", routes_to(origin.addr))).expect("rewrite");
    let error = gw
        .reloader
        .reload_file()
        .await
        .expect_err("TLS off needs a restart");
    assert!(error.to_string().contains("[listen]"), "{error}");
    gw.shutdown().await;
}

#[test]
fn check_reports_a_mismatched_key_and_warns_of_an_expired_certificate() {
    let dir = certs::temp_dir("tls-check");
    let ca = Ca::new("test CA");
    let (cert, _) = ca.server(&["a.test"]).write(&dir, "a");
    let (_, other_key) = ca.server(&["b.test"]).write(&dir, "b");
    ca.expired_server(&["old.test"]).write(&dir, "old");
    std::fs::write(dir.join("empty.pem"), "nothing here\n").expect("write");
    let path = dir.join("gatehouse.toml");
    std::fs::write(
        &path,
        format!(
            "{LISTEN}[listen.tls]\ncertificates = [\n\
             {{ cert = \"{}\", key = \"{}\" }},\n\
             {{ cert = \"empty.pem\", key = \"b.key\" }},\n]\n",
            cert.display(),
            other_key.display()
        ),
    )
    .expect("write config");
    let error = config::load_file(&path).expect_err("refused").to_string();
    assert!(
        error.contains(":6:") && error.contains("listen.tls.certificates[0].key: the key in"),
        "{error}"
    );
    assert!(
        error.contains("does not match the certificate in"),
        "{error}"
    );
    assert!(
        error.contains(":7:") && error.contains("listen.tls.certificates[1].cert:"),
        "{error}"
    );
    assert!(error.contains("empty.pem: no certificate in it"), "{error}");

    std::fs::write(
        &path,
        format!(
            "{LISTEN}[listen.tls]\ncertificates = [{{ cert = \"old.pem\", key = \"old.key\" }}]\n"
        ),
    )
    .expect("write config");
    let config = config::load_file(&path).expect("an expired certificate is only a warning");
    let warnings = config.warning_lines();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(":5:") && warnings[0].contains("old.pem: expired on 2021-01-01"),
        "{warnings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_sees_the_client_certificate() {
    use crate::plugins::guests;
    use crate::shipped_plugins::kit::toml_inline;

    let origin = origin::echo("plain").await;
    let dir = certs::temp_dir("tls-plugin");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    std::fs::copy(guests::path("test-kit"), plugins.join("kit.wasm")).expect("copy plugin");
    let cache = guests::workspace().join("target/guests/artifact-cache");
    let (server_ca, text) = mtls_gateway_text(&dir, origin.addr, "optional");
    // The client CA the config trusts, replaced by one whose key this test holds.
    let clients = Ca::new("client CA");
    clients.write(&dir, "clients.pem");
    let text = text.replace(
        "match = { prefix = \"/\" }",
        "match = { prefix = \"/\" }\nplugins = [{ name = \"kit\", config = { mode = \"client-certificate\", subject = \"CN=alice\" } }]",
    );
    let text = format!(
        "{text}[plugins]\ndir = {}\ncache_dir = {}\nwatch = false\n",
        toml_inline(&serde_json::json!(plugins.display().to_string())),
        toml_inline(&serde_json::json!(cache.display().to_string())),
    );
    let gw = start_in(&dir, &text).await;

    let alice = clients.client("alice", None);
    let stream = connect(
        gw.public_addr,
        "localhost",
        client(&server_ca, &[b"h2"], Some(&alice)),
    )
    .await
    .expect("handshake");
    let (_, got) = get(stream, "localhost", "/", &[]).await.expect("request");
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = &got.json()["headers"];
    assert_eq!(seen["x-plugin-saw-subject"], "CN=alice");
    let header = seen["x-client-cert"].as_str().expect("identity header");
    let sha = seen["x-plugin-saw-sha256"].as_str().expect("fingerprint");
    assert!(header.starts_with(&format!("Hash={sha};")), "{header}");

    let bob = clients.client("bob", None);
    for identity in [Some(&bob), None] {
        let stream = connect(
            gw.public_addr,
            "localhost",
            client(&server_ca, &[b"h2"], identity),
        )
        .await
        .expect("handshake");
        let (_, got) = get(stream, "localhost", "/", &[]).await.expect("request");
        assert_eq!(got.status, 403, "{}", got.text());
    }
    gw.shutdown().await;
}

/// `gatehouse_open_connections` over TLS: a connection still in its handshake counts as
/// `pending`, an h2 connection (by ALPN) as `h2`, both with `tls="true"`; closed, neither counts.
#[tokio::test]
async fn open_connections_over_tls_by_protocol() {
    let origin = origin::echo("plain").await;
    let dir = certs::temp_dir("tls-open-connections");
    let ca = Ca::new("test CA");
    ca.server(&["localhost"]).write(&dir, "server");
    let gw = start_in(
        &dir,
        &format!(
            "{LISTEN}[listen.tls]\ncertificates = [{{ cert = \"server.pem\", key = \"server.key\" }}]\n{}",
            routes_to(origin.addr)
        ),
    )
    .await;
    let open = async |protocol: &str| {
        let m = support::scrape::scrape(gw.admin_addr).await;
        support::scrape::value(
            &m,
            "gatehouse_open_connections",
            &[
                ("listener", "public"),
                ("protocol", protocol),
                ("tls", "true"),
            ],
        )
    };

    // Connected, no ClientHello sent yet.
    let silent = TcpStream::connect(gw.public_addr).await.expect("connects");
    support::eventually(
        "the silent connection counts as pending",
        DEADLINE,
        async || open("pending").await == 1.0,
    )
    .await;

    let stream = connect(gw.public_addr, "localhost", client(&ca, &[b"h2"], None))
        .await
        .expect("TLS handshake");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let task = tokio::spawn(conn);
    let req = Request::get("https://localhost/x")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let got = sender.send_request(req).await.expect("h2 response");
    assert_eq!(got.status(), 200);
    support::eventually("the h2 connection counts", DEADLINE, async || {
        open("h2").await == 1.0 && open("http1").await == 0.0
    })
    .await;

    drop((got, sender, silent));
    let _ = task.await;
    support::eventually("closed connections are gone", DEADLINE, async || {
        open("h2").await == 0.0 && open("pending").await == 0.0
    })
    .await;
}
