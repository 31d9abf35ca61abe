//! TLS from the gateway to upstreams (`[services.tls]`): real rustls origins on 127.0.0.1:0
//! with certificates made per test, HTTP/1.1 and HTTP/2 over ALPN, verification failures,
//! mTLS to the upstream, health checks over TLS and `gatehouse check` on TLS files.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse::body;
use http::Response;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

use crate::support::certs::{temp_dir, Ca, Leaf};
use crate::support::{self, eventually, get};

/// A TLS origin: answers every request with JSON saying what it saw of the connection (ALPN,
/// SNI, client certificate) and of the request (version, path, authority).
struct TlsOrigin {
    addr: SocketAddr,
    /// Completed TLS handshakes.
    handshakes: Arc<AtomicUsize>,
    /// Requests for `/health`.
    health_probes: Arc<AtomicUsize>,
    task: AbortHandle,
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What an origin serves with: its certificate, the ALPN protocols it offers, and the CA its
/// clients' certificates must chain to (`None`: no client certificate asked for).
async fn tls_origin(leaf: &Leaf, alpn: &[&str], client_ca: Option<&Ca>) -> TlsOrigin {
    let provider = gatehouse::tls::provider();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("origin certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("origin key PEM");
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
                roots.add(cert.expect("client CA PEM")).expect("client CA");
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .expect("origin certificate and key");
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind TLS origin");
    let addr = listener.local_addr().expect("origin address");
    let handshakes = Arc::new(AtomicUsize::new(0));
    let health_probes = Arc::new(AtomicUsize::new(0));
    let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
    let task = tokio::spawn({
        let (handshakes, health_probes) = (Arc::clone(&handshakes), Arc::clone(&health_probes));
        async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, handshakes, health_probes) = (
                    acceptor.clone(),
                    Arc::clone(&handshakes),
                    Arc::clone(&health_probes),
                );
                let conn = tokio::spawn(async move {
                    // A refused handshake is what some tests are about; the gateway reports it.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    handshakes.fetch_add(1, Ordering::SeqCst);
                    let (_, session) = tls.get_ref();
                    let seen = serde_json::json!({
                        "alpn": session.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
                        "sni": session.server_name(),
                        "client_cert": session.peer_certificates().is_some_and(|c| !c.is_empty()),
                    });
                    let h2 = session.alpn_protocol() == Some(b"h2");
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        if req.uri().path() == "/health" {
                            health_probes.fetch_add(1, Ordering::SeqCst);
                        }
                        let mut json = seen.clone();
                        json["version"] = format!("{:?}", req.version()).into();
                        json["path"] = req.uri().path().into();
                        json["authority"] = req.uri().authority().map(|a| a.to_string()).into();
                        async move {
                            Ok::<_, Infallible>(Response::new(body::full(json.to_string())))
                        }
                    });
                    // How a connection ends does not matter here.
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    }
                });
                conns.lock().expect("conns").push(conn.abort_handle());
            }
        }
    })
    .abort_handle();
    TlsOrigin {
        addr,
        handshakes,
        health_probes,
        task,
    }
}

/// A `[[services]]` + `[[routes]]` pair named `name`, routed at `/{name}`, with `extra` keys
/// and `tls` keys in `[services.tls]`.
fn service(name: &str, addr: SocketAddr, extra: &str, tls: &str) -> String {
    format!(
        r#"
[[services]]
name = "{name}"
endpoints = ["{addr}"]
{extra}
[services.tls]
{tls}

[[routes]]
name = "{name}"
match = {{ prefix = "/{name}" }}
service = "{name}"
"#
    )
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test]
async fn http1_over_tls_reaches_the_origin_and_reuses_the_connection() {
    let dir = temp_dir("up-tls-h1");
    let ca = Ca::new("upstream CA");
    let origin = tls_origin(&ca.server(&["127.0.0.1"]), &["http/1.1"], None).await;
    let ca_file = ca.write(&dir, "ca.pem");
    let gw = support::gateway(&service(
        "pay",
        origin.addr,
        "",
        &format!("ca = {:?}", path(&ca_file)),
    ))
    .await;

    // One client connection: the gateway keeps upstream connections per worker.
    let client = support::http1();
    for _ in 0..2 {
        let url = format!("http://{}/pay/x", gw.public_addr);
        let got = support::send(&client, "GET", &url, &[], bytes::Bytes::new()).await;
        assert_eq!(got.status, 200, "{}", got.text());
        let seen = got.json();
        assert_eq!(seen["alpn"], "http/1.1", "{seen}");
        assert_eq!(seen["version"], "HTTP/1.1", "{seen}");
        // The default server name is the endpoint's IP: verified as an IP SAN, no SNI sent.
        assert_eq!(seen["sni"], serde_json::Value::Null, "{seen}");
        assert_eq!(seen["path"], "/pay/x", "{seen}");
    }
    assert_eq!(
        origin.handshakes.load(Ordering::SeqCst),
        1,
        "the second request reuses the pooled TLS connection"
    );
}

#[tokio::test]
async fn h2_over_tls_is_agreed_by_alpn_and_carries_https_authority() {
    let dir = temp_dir("up-tls-h2");
    let ca = Ca::new("upstream CA");
    let origin = tls_origin(&ca.server(&["pay.internal"]), &["h2", "http/1.1"], None).await;
    let ca_file = ca.write(&dir, "ca.pem");
    let gw = support::gateway(&service(
        "pay",
        origin.addr,
        "protocol = \"h2\"",
        &format!("ca = {:?}\nserver_name = \"pay.internal\"", path(&ca_file)),
    ))
    .await;

    let got = get(&format!("http://{}/pay/y", gw.public_addr), &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = got.json();
    assert_eq!(seen["alpn"], "h2", "{seen}");
    assert_eq!(seen["version"], "HTTP/2.0", "{seen}");
    assert_eq!(seen["sni"], "pay.internal", "{seen}");
    assert_eq!(
        seen["authority"],
        format!("pay.internal:{}", origin.addr.port()),
        "{seen}"
    );
}

#[tokio::test]
async fn h2_to_an_origin_without_h2_fails_with_the_alpn_reason() {
    let dir = temp_dir("up-tls-noh2");
    let ca = Ca::new("upstream CA");
    let origin = tls_origin(&ca.server(&["127.0.0.1"]), &["http/1.1"], None).await;
    let ca_file = ca.write(&dir, "ca.pem");
    let gw = support::gateway(&service(
        "pay",
        origin.addr,
        "protocol = \"h2\"",
        &format!("ca = {:?}", path(&ca_file)),
    ))
    .await;

    let got = get(&format!("http://{}/pay", gw.public_addr), &[]).await;
    assert_eq!(got.status, 502, "{}", got.text());
    let error = got.json();
    assert_eq!(error["error"], "upstream_tls_failed", "{error}");
    let message = error["message"].as_str().expect("message");
    assert!(message.contains("NoApplicationProtocol"), "{message}");
}

#[tokio::test]
async fn a_wrong_ca_is_a_502_that_names_the_tls_problem() {
    let dir = temp_dir("up-tls-wrongca");
    let real = Ca::new("the origin's CA");
    let other = Ca::new("some other CA");
    let origin = tls_origin(&real.server(&["127.0.0.1"]), &["http/1.1"], None).await;
    let other_file = other.write(&dir, "other.pem");
    let gw = support::gateway(&service(
        "pay",
        origin.addr,
        "",
        &format!("ca = {:?}", path(&other_file)),
    ))
    .await;

    let got = get(&format!("http://{}/pay", gw.public_addr), &[]).await;
    assert_eq!(got.status, 502, "{}", got.text());
    assert_eq!(got.headers["content-type"], "application/json");
    let error = got.json();
    assert_eq!(error["error"], "upstream_tls_failed", "{error}");
    let message = error["message"].as_str().expect("message");
    for part in [
        "\"pay\"",
        &origin.addr.to_string(),
        "TLS handshake",
        "unknown issuer",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert_eq!(origin.handshakes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_server_name_the_certificate_does_not_hold_is_a_502() {
    let dir = temp_dir("up-tls-name");
    let ca = Ca::new("upstream CA");
    let origin = tls_origin(&ca.server(&["pay.internal"]), &["http/1.1"], None).await;
    let ca_file = ca.write(&dir, "ca.pem");
    let gw = support::gateway(&service(
        "pay",
        origin.addr,
        "",
        &format!(
            "ca = {:?}\nserver_name = \"billing.internal\"",
            path(&ca_file)
        ),
    ))
    .await;

    let got = get(&format!("http://{}/pay", gw.public_addr), &[]).await;
    assert_eq!(got.status, 502, "{}", got.text());
    let error = got.json();
    assert_eq!(error["error"], "upstream_tls_failed", "{error}");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains("not valid for name \"billing.internal\""),
        "{message}"
    );
}

#[tokio::test]
async fn verify_false_accepts_a_certificate_no_ca_vouches_for() {
    let ca = Ca::new("nobody trusts this CA");
    let origin = tls_origin(&ca.server(&["elsewhere.example"]), &["http/1.1"], None).await;
    let text = service("pay", origin.addr, "", "verify = false");
    // `gatehouse check` warns (the config stays valid).
    let checked = gatehouse::config::load_str(&text, "verify.toml").expect("valid config");
    let warnings = checked.warning_lines();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("services[0].tls.verify") && w.contains("impersonate")),
        "{warnings:?}"
    );
    let gw = support::gateway(&text).await;

    let got = get(&format!("http://{}/pay", gw.public_addr), &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["alpn"], "http/1.1");
}

#[tokio::test]
async fn upstream_mtls_works_with_a_client_certificate_and_fails_without() {
    let dir = temp_dir("up-tls-mtls");
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let origin = tls_origin(
        &server_ca.server(&["127.0.0.1"]),
        &["http/1.1"],
        Some(&client_ca),
    )
    .await;
    let ca_file = server_ca.write(&dir, "ca.pem");
    let (cert, key) = client_ca.client("gatehouse", None).write(&dir, "gw-client");
    let with_cert = service(
        "with",
        origin.addr,
        "",
        &format!(
            "ca = {:?}\ncert = {:?}\nkey = {:?}",
            path(&ca_file),
            path(&cert),
            path(&key)
        ),
    );
    let without = service(
        "without",
        origin.addr,
        "",
        &format!("ca = {:?}", path(&ca_file)),
    );
    let gw = support::gateway(&format!("{with_cert}\n{without}")).await;

    let got = get(&format!("http://{}/with", gw.public_addr), &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["client_cert"], true);

    // TLS 1.3: the client finishes its side before the server judges its (absent)
    // certificate, so the refusal arrives as an alert on the first read.
    let got = get(&format!("http://{}/without", gw.public_addr), &[]).await;
    assert_eq!(got.status, 502, "{}", got.text());
    let message = got.json()["message"].as_str().expect("message").to_owned();
    assert!(message.contains("CertificateRequired"), "{message}");
}

#[tokio::test]
async fn health_checks_over_tls_mark_a_wrong_ca_unhealthy_with_the_reason() {
    let dir = temp_dir("up-tls-health");
    let ca = Ca::new("upstream CA");
    let other = Ca::new("some other CA");
    let good = tls_origin(&ca.server(&["127.0.0.1"]), &["http/1.1"], None).await;
    let bad = tls_origin(&ca.server(&["127.0.0.1"]), &["http/1.1"], None).await;
    let ca_file = ca.write(&dir, "ca.pem");
    let other_file = other.write(&dir, "other.pem");
    let health = r#"
[services.health]
path = "/health"
interval = "50ms"
timeout = "1s"
healthy_threshold = 1
unhealthy_threshold = 1"#;
    let config = format!(
        "{}\n{}",
        service(
            "good",
            good.addr,
            health,
            &format!("ca = {:?}", path(&ca_file))
        ),
        service(
            "bad",
            bad.addr,
            health,
            &format!("ca = {:?}", path(&other_file))
        ),
    );
    let gw = support::gateway(&config).await;
    let admin = format!("http://{}/admin/services", gw.admin_addr);

    let mut last = serde_json::Value::Null;
    eventually(
        "the wrong-CA endpoint is unhealthy and the right one passed a probe",
        Duration::from_secs(10),
        async || {
            let got = get(&admin, &[]).await;
            last = got.json();
            let endpoint = |service: usize| last["services"][service]["endpoints"][0].clone();
            let (good_ep, bad_ep) = (endpoint(0), endpoint(1));
            good.health_probes.load(Ordering::SeqCst) > 0
                && good_ep["healthy"] == true
                && good_ep["active_check"]["last_failure"].is_null()
                && bad_ep["healthy"] == false
        },
    )
    .await;
    let reason = last["services"][1]["endpoints"][0]["active_check"]["last_failure"]
        .as_str()
        .expect("a failure reason")
        .to_owned();
    assert!(
        reason.contains("TLS handshake") && reason.contains("unknown issuer"),
        "{reason}"
    );
    assert_eq!(last["services"][1]["tls"]["ca"], path(&other_file));
    assert_eq!(bad.handshakes.load(Ordering::SeqCst), 0);
}

#[test]
fn check_names_file_line_and_key_of_tls_file_problems_and_resolves_relative_paths() {
    let dir = temp_dir("up-tls-check");
    let ca = Ca::new("upstream CA");
    ca.write(&dir, "ca.pem");
    ca.server(&["127.0.0.1"]).write(&dir, "gw");
    let stranger = ca.server(&["127.0.0.1"]);
    std::fs::write(dir.join("stranger.key"), &stranger.key_pem).expect("write key");

    // Relative paths resolve against the config file's directory, not the working directory.
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        r#"[[services]]
name = "pay"
endpoints = ["127.0.0.1:8443"]
[services.tls]
ca = "ca.pem"
cert = "gw.pem"
key = "gw.key"
"#,
    )
    .expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        r#"[[services]]
name = "pay"
endpoints = ["127.0.0.1:8443"]
[services.tls]
ca = "missing-ca.pem"

[[services]]
name = "billing"
endpoints = ["127.0.0.1:8444"]
[services.tls]
cert = "gw.pem"
key = "stranger.key"
"#,
    )
    .expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .expect("run check");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path(&bad);
    assert!(
        stderr.contains(&format!("{file}:5:6: services[0].tls.ca: cannot read ")),
        "{stderr}"
    );
    assert!(stderr.contains("missing-ca.pem"), "{stderr}");
    assert!(
        stderr.contains(&format!("{file}:12:7: services[1].tls.key: the key in ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("does not match the certificate"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_expired_upstream_certificate_is_a_502() {
    let dir = temp_dir("up-tls-expired");
    let ca = Ca::new("upstream CA");
    let origin = tls_origin(&ca.expired_server(&["127.0.0.1"]), &["http/1.1"], None).await;
    let ca_file = ca.write(&dir, "ca.pem");
    let gw = support::gateway(&service(
        "pay",
        origin.addr,
        "",
        &format!("ca = {:?}", path(&ca_file)),
    ))
    .await;

    let got = get(&format!("http://{}/pay", gw.public_addr), &[]).await;
    assert_eq!(got.status, 502, "{}", got.text());
    let message = got.json()["message"].as_str().expect("message").to_owned();
    assert!(message.contains("certificate expired"), "{message}");
}
