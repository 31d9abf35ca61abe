//! WebSocket through the gateway (`routes.upgrades`): a real tokio-tungstenite echo server
//! behind it and a real client in front. Echo of text, binary and a large message; a close
//! from either side reaches the other; an auth plugin guards the handshake; a route without
//! `upgrades` never upgrades; the idle timeout, the drain deadline and the route's caps apply
//! to the upgraded connection; metrics and the access log show it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::shipped_plugins::kit::{self, api_key_sha256, plugin, PluginsDir};
use crate::support::{self, origin};

const DEADLINE: Duration = Duration::from_secs(10);

type Client = WebSocketStream<TcpStream>;

/// What the echo server saw, counted across its connections.
#[derive(Default)]
struct Seen {
    /// TCP connections accepted (an upgrade or not).
    accepted: AtomicUsize,
    /// Close frames received from the gateway's side.
    closes_received: AtomicUsize,
    /// Connections whose WebSocket ended (a close handshake, or the TCP connection going).
    ended: AtomicUsize,
}

/// A WebSocket echo server on 127.0.0.1:0: echoes text and binary messages; on the text
/// `close-me` it closes with 1000 "bye" instead.
async fn echo_server() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let counters = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counters.accepted.fetch_add(1, Ordering::SeqCst);
            let seen = Arc::clone(&counters);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    match message {
                        Message::Text(t) if t.as_str() == "close-me" => {
                            let frame = CloseFrame {
                                code: CloseCode::Normal,
                                reason: "bye".into(),
                            };
                            let _ = ws.close(Some(frame)).await;
                        }
                        Message::Text(_) | Message::Binary(_) => {
                            let echoed = ws.send(message).await;
                            if echoed.is_err() {
                                break;
                            }
                        }
                        // tungstenite answers the close itself; the stream ends after it.
                        Message::Close(_) => {
                            seen.closes_received.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {}
                    }
                }
                seen.ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, seen)
}

fn config(origin: SocketAddr, route_extra: &str) -> String {
    format!(
        "[[services]]\nname = \"chat\"\nendpoints = [\"{origin}\"]\n\
         [[routes]]\nname = \"ws\"\nservice = \"chat\"\nmatch = {{ prefix = \"/ws\" }}\n{route_extra}\n"
    )
}

/// A WebSocket handshake to `ws://<gateway>/ws/chat` with `headers`.
async fn connect(gateway: SocketAddr, headers: &[(&'static str, &str)]) -> Result<Client, WsError> {
    let mut request = format!("ws://{gateway}/ws/chat")
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, value.parse().expect("header value"));
    }
    let stream = TcpStream::connect(gateway).await.expect("connect");
    tokio_tungstenite::client_async(request, stream)
        .await
        .map(|(ws, _response)| ws)
}

/// The next data or close message, within the deadline.
async fn next(ws: &mut Client) -> Option<Result<Message, WsError>> {
    tokio::time::timeout(DEADLINE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("a message or the end within the deadline")
}

async fn metrics(gw: &gatehouse::gateway::RunningGateway) -> String {
    support::get(&format!("http://{}/metrics", gw.admin_addr), &[])
        .await
        .text()
}

/// The value of the metric line starting with `prefix` (name and labels), if present.
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn text_binary_and_a_large_message_echo_through_the_gateway() {
    let (origin, _) = echo_server().await;
    let gw = support::gateway(&config(origin, "upgrades = [\"websocket\"]")).await;
    let mut ws = connect(gw.public_addr, &[]).await.expect("handshake");

    ws.send(Message::text("hello")).await.expect("send text");
    let got = next(&mut ws).await.expect("echo").expect("text");
    assert_eq!(got, Message::text("hello"));

    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send binary");
    let got = next(&mut ws).await.expect("echo").expect("binary");
    assert_eq!(got, Message::binary(vec![0u8, 1, 2, 255]));

    // 4 MiB in one message: many reads and writes of the relay's buffer each way.
    let large: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(large.clone()))
        .await
        .expect("send large");
    let got = next(&mut ws).await.expect("echo").expect("large");
    assert_eq!(got.into_data().as_ref(), &large[..]);
}

#[tokio::test]
async fn a_close_from_the_client_reaches_the_server_and_back() {
    let (origin, seen) = echo_server().await;
    let gw = support::gateway(&config(origin, "upgrades = [\"websocket\"]")).await;
    let mut ws = connect(gw.public_addr, &[]).await.expect("handshake");
    ws.send(Message::text("before close")).await.expect("send");
    assert_eq!(
        next(&mut ws).await.expect("echo").expect("text"),
        Message::text("before close")
    );

    ws.close(None).await.expect("client sends close");
    // The server's answer to the close comes back, then the stream ends.
    match next(&mut ws).await {
        Some(Ok(Message::Close(_))) => {}
        other => panic!("expected the server's close, got {other:?}"),
    }
    assert!(
        matches!(
            next(&mut ws).await,
            None | Some(Err(WsError::ConnectionClosed))
        ),
        "the stream ends after the close handshake"
    );
    support::eventually("the server saw the close", DEADLINE, async || {
        seen.closes_received.load(Ordering::SeqCst) == 1 && seen.ended.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn a_close_from_the_server_reaches_the_client() {
    let (origin, seen) = echo_server().await;
    let gw = support::gateway(&config(origin, "upgrades = [\"websocket\"]")).await;
    let mut ws = connect(gw.public_addr, &[]).await.expect("handshake");
    ws.send(Message::text("close-me")).await.expect("send");
    match next(&mut ws).await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::Normal);
            assert_eq!(frame.reason.as_str(), "bye");
        }
        other => panic!("expected the server's close frame, got {other:?}"),
    }
    // tungstenite has answered the close; the server's side then ends.
    assert!(matches!(
        next(&mut ws).await,
        None | Some(Err(WsError::ConnectionClosed))
    ));
    support::eventually("the server's side ended", DEADLINE, async || {
        seen.ended.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_plugin_denies_the_handshake_before_any_upstream_connection() {
    let (origin, seen) = echo_server().await;
    let dir = PluginsDir::new();
    let keys = json!({ "keys": [{ "sha256": api_key_sha256("chat-key"), "consumer": "app" }] });
    let route = format!(
        "upgrades = [\"websocket\"]\nplugins = [{}]",
        plugin("api-key", keys, &[], None)
    );
    let gw = kit::gateway(&dir, &config(origin, &route)).await;

    for headers in [&[][..], &[("x-api-key", "wrong")][..]] {
        match connect(gw.public_addr, headers).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 401, "{headers:?}"),
            Err(other) => panic!("expected a 401 response, got {other:?}"),
            Ok(_) => panic!("the handshake without a valid key must not upgrade"),
        }
    }
    assert_eq!(
        seen.accepted.load(Ordering::SeqCst),
        0,
        "a denied handshake opens no upstream connection"
    );

    let mut ws = connect(gw.public_addr, &[("x-api-key", "chat-key")])
        .await
        .expect("a valid key upgrades");
    ws.send(Message::text("authorised")).await.expect("send");
    assert_eq!(
        next(&mut ws).await.expect("echo").expect("text"),
        Message::text("authorised")
    );
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_route_without_upgrades_serves_the_handshake_as_a_plain_request() {
    let echo = origin::echo("plain").await;
    let gw = support::gateway(&config(echo.addr, "")).await;
    // A real client: the answer is the origin's 200, not a switch.
    match connect(gw.public_addr, &[]).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 200),
        other => panic!("expected the plain 200, got {other:?}"),
    }
    // What the origin saw: no Upgrade, no Connection: upgrade; the rest as sent.
    let got = support::get(
        &format!("http://{}/ws/chat", gw.public_addr),
        &[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    let headers = &got.json()["headers"];
    assert!(headers.get("upgrade").is_none(), "{headers}");
    assert!(
        headers
            .get("connection")
            .is_none_or(|c| !c.as_str().unwrap_or_default().contains("upgrade")),
        "{headers}"
    );
}

#[tokio::test]
async fn an_http2_request_with_upgrade_is_not_forwarded_as_an_upgrade() {
    let echo = origin::echo("plain").await;
    let gw = support::gateway(&config(echo.addr, "upgrades = [\"websocket\"]")).await;
    let request = http::Request::get(format!("http://{}/ws/chat", gw.public_addr))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let response = support::h2c().request(request).await.expect("h2c answer");
    assert_eq!(response.version(), http::Version::HTTP_2);
    let got = support::collect(response).await;
    assert_eq!(got.status, 200);
    assert!(got.json()["headers"].get("upgrade").is_none());
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_at_the_idle_timeout() {
    let (origin, seen) = echo_server().await;
    let route = "upgrades = [\"websocket\"]\nupgrade_idle_timeout = \"300ms\"";
    let gw = support::gateway(&config(origin, route)).await;
    let mut ws = connect(gw.public_addr, &[]).await.expect("handshake");
    ws.send(Message::text("one")).await.expect("send");
    assert_eq!(
        next(&mut ws).await.expect("echo").expect("text"),
        Message::text("one")
    );
    // Silence: the gateway closes both sides without a close frame.
    match next(&mut ws).await {
        None | Some(Err(_)) => {}
        Some(Ok(other)) => panic!("expected the connection to end, got {other:?}"),
    }
    support::eventually("the server's side ended", DEADLINE, async || {
        seen.ended.load(Ordering::SeqCst) == 1
    })
    .await;
    support::eventually("the metrics count the idle close", DEADLINE, async || {
        let text = metrics(&gw).await;
        metric(
            &text,
            "gatehouse_upgraded_closed_total{route=\"ws\",reason=\"idle_timeout\"}",
        ) == Some(1.0)
    })
    .await;
}

#[tokio::test]
async fn metrics_show_the_open_tunnel_and_its_bytes() {
    let (origin, _) = echo_server().await;
    let gw = support::gateway(&config(origin, "upgrades = [\"websocket\"]")).await;
    let mut ws = connect(gw.public_addr, &[]).await.expect("handshake");
    ws.send(Message::text("0123456789")).await.expect("send");
    next(&mut ws).await.expect("echo").expect("text");

    let open = "gatehouse_upgraded_connections{route=\"ws\"}";
    let up = "gatehouse_upgraded_bytes_total{route=\"ws\",direction=\"up\"}";
    let down = "gatehouse_upgraded_bytes_total{route=\"ws\",direction=\"down\"}";
    let text = metrics(&gw).await;
    assert_eq!(metric(&text, open), Some(1.0), "{text}");
    // A masked client frame of 10 bytes is 16 bytes, the server's unmasked echo 12.
    assert_eq!(metric(&text, up), Some(16.0), "{text}");
    assert_eq!(metric(&text, down), Some(12.0), "{text}");
    assert_eq!(
        metric(
            &text,
            "gatehouse_requests_total{route=\"ws\",status=\"101\"}"
        ),
        Some(1.0),
        "{text}"
    );

    ws.close(None).await.expect("close");
    while let Some(Ok(_)) = next(&mut ws).await {}
    support::eventually("the gauge goes back to 0", DEADLINE, async || {
        let text = metrics(&gw).await;
        metric(&text, open) == Some(0.0)
            && metric(
                &text,
                "gatehouse_upgraded_closed_total{route=\"ws\",reason=\"closed\"}",
            ) == Some(1.0)
    })
    .await;
}

#[tokio::test]
async fn an_open_tunnel_holds_its_place_under_max_in_flight() {
    let (origin, _) = echo_server().await;
    let route = "upgrades = [\"websocket\"]\nmax_in_flight = 1";
    let gw = support::gateway(&config(origin, route)).await;
    let mut first = connect(gw.public_addr, &[]).await.expect("handshake");
    match connect(gw.public_addr, &[]).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("expected 429 while the first tunnel is open, got {other:?}"),
    }
    first.close(None).await.expect("close");
    while let Some(Ok(_)) = next(&mut first).await {}
    support::eventually("the place is free again", DEADLINE, async || {
        connect(gw.public_addr, &[]).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn an_open_tunnel_counts_against_the_listener_connection_cap() {
    let (origin, _) = echo_server().await;
    let text = format!(
        "[limits]\nmax_connections = 1\n{}",
        config(origin, "upgrades = [\"websocket\"]")
    );
    let gw = support::gateway(&text).await;
    let mut ws = connect(gw.public_addr, &[]).await.expect("handshake");
    // The upgraded connection is still the one connection allowed: another is closed at once.
    let refused = connect(gw.public_addr, &[]).await;
    assert!(refused.is_err(), "a second connection over the cap");
    ws.send(Message::text("still here")).await.expect("send");
    assert_eq!(
        next(&mut ws).await.expect("echo").expect("text"),
        Message::text("still here")
    );
    ws.close(None).await.expect("close");
    while let Some(Ok(_)) = next(&mut ws).await {}
    support::eventually("the slot is free again", DEADLINE, async || {
        connect(gw.public_addr, &[]).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_open_tunnels_at_the_drain_deadline() {
    let (origin, seen) = echo_server().await;
    let text = format!(
        "[shutdown]\ndrain_timeout = \"300ms\"\n{}",
        config(origin, "upgrades = [\"websocket\"]")
    );
    let gw = support::gateway(&text).await;
    let mut ws = connect(gw.public_addr, &[]).await.expect("handshake");
    ws.send(Message::text("ping")).await.expect("send");
    next(&mut ws).await.expect("echo").expect("text");

    let report = gw.shutdown().await;
    assert_eq!(
        report.cut_connections, 1,
        "the tunnel was cut at the deadline"
    );
    match next(&mut ws).await {
        None | Some(Err(_)) => {}
        Some(Ok(other)) => panic!("expected the connection to end, got {other:?}"),
    }
    support::eventually("the server's side ended", DEADLINE, async || {
        seen.ended.load(Ordering::SeqCst) == 1
    })
    .await;
}

/// The real binary with a JSON log: one access line for the upgraded connection, written
/// when it closes, with its duration and the bytes each way.
#[tokio::test]
async fn the_access_log_line_is_written_at_close_with_bytes_each_way() {
    let (origin, _) = echo_server().await;
    let public = origin::closed_port().await;
    let admin = origin::closed_port().await;
    let dir = std::env::temp_dir().join(format!("gatehouse-ws-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("gatehouse.toml");
    std::fs::write(
        &file,
        format!(
            "[listen]\npublic = \"{public}\"\nadmin = \"{admin}\"\n[log]\nformat = \"json\"\n{}",
            config(origin, "upgrades = [\"websocket\"]")
        ),
    )
    .expect("config");
    let child = support::spawn_gatehouse(&file, admin, true).await;

    let mut ws = connect(public, &[]).await.expect("handshake");
    ws.send(Message::text("0123456789")).await.expect("send");
    next(&mut ws).await.expect("echo").expect("text");
    ws.close(None).await.expect("close");
    while let Some(Ok(_)) = next(&mut ws).await {}

    // Shutting down waits for the tunnel's line: it closed before the signal.
    support::signal(&child, "-TERM");
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("gatehouse exits")
        .expect("output");
    let _ = std::fs::remove_dir_all(&dir);
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["target"] == "gatehouse::access")
        .collect();
    assert_eq!(lines.len(), 1, "one access line expected in:\n{logs}");
    let line = &lines[0];
    assert_eq!(line["status"], 101);
    assert_eq!(line["route"], "ws");
    assert_eq!(line["path"], "/ws/chat");
    assert_eq!(line["closed"], "closed");
    // The text frame each way, then the close frames (masked from the client: 6 bytes each
    // way at least).
    assert!(
        line["bytes_up"].as_u64().is_some_and(|n| n >= 16 + 6),
        "{line}"
    );
    assert!(
        line["bytes_down"].as_u64().is_some_and(|n| n >= 12 + 2),
        "{line}"
    );
    assert!(line["upgraded_us"].is_u64(), "{line}");
    assert!(line["duration_us"].is_u64(), "{line}");
}

/// `wss://` end to end: TLS on the gateway's listener (ALPN http/1.1, as a browser opens a
/// WebSocket next to its HTTP/2 connection), and TLS from the gateway to a WebSocket origin
/// verified against a test CA: the upgrade connection is made like the pool's, TLS included.
#[tokio::test]
async fn wss_through_a_tls_listener_to_a_tls_origin() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let dir = crate::support::certs::temp_dir("wss");
    let ca = crate::support::certs::Ca::new("wss test CA");
    let ca_path = ca.write(&dir, "ca.pem");
    let (gw_cert, gw_key) = ca.server(&["localhost"]).write(&dir, "gateway");
    let origin_leaf = ca.server(&["127.0.0.1"]);

    // A WebSocket echo origin behind TLS.
    let chain = CertificateDer::pem_slice_iter(origin_leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("origin chain");
    let key = PrivateKeyDer::from_pem_slice(origin_leaf.key_pem.as_bytes()).expect("origin key");
    let server = rustls::ServerConfig::builder_with_provider(gatehouse::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("origin TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin = listener.local_addr().expect("addr");
    let upgraded = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&upgraded);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counter) = (acceptor.clone(), Arc::clone(&counter));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err()
                    {
                        break;
                    }
                }
            });
        }
    });

    let text = format!(
        "[listen.tls]\ncertificates = [{{ cert = {gw_cert:?}, key = {gw_key:?} }}]\n\
         [[services]]\nname = \"chat\"\nendpoints = [\"{origin}\"]\n\
         [services.tls]\nca = {ca_path:?}\n\
         [[routes]]\nname = \"ws\"\nservice = \"chat\"\nmatch = {{ prefix = \"/ws\" }}\n\
         upgrades = [\"websocket\"]\n"
    );
    let gw = support::gateway(&text).await;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("root");
    }
    let mut client = rustls::ClientConfig::builder_with_provider(gatehouse::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(gw.public_addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the gateway");
    let request = "wss://localhost/ws/chat"
        .into_client_request()
        .expect("request");
    let (mut ws, response) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("WebSocket handshake over TLS");
    assert_eq!(response.status(), 101);

    ws.send(Message::text("over tls")).await.expect("send");
    let got = next_tls(&mut ws).await;
    assert_eq!(got, Message::text("over tls"));
    assert_eq!(
        upgraded.load(Ordering::SeqCst),
        1,
        "the origin upgraded over TLS"
    );
    ws.close(None).await.expect("close");
}

async fn next_tls<S>(ws: &mut WebSocketStream<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(DEADLINE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return message,
                other => panic!("no message: {other:?}"),
            }
        }
    })
    .await
    .expect("a message within the deadline")
}
