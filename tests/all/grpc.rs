//! gRPC end to end: the grpc-transcode plugin (REST/JSON → unary gRPC over h2c → JSON) and
//! plain gRPC passthrough (trailers included), in front of a real tonic server on 127.0.0.1.

use bytes::Bytes;
use gatehouse::gateway::RunningGateway;
use grpc_greeter::pb::greeter_client::GreeterClient;
use grpc_greeter::pb::{HelloReply, HelloRequest};
use grpc_greeter::prost::Message;
use grpc_greeter::tonic;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::info;

use crate::plugins::guests::{self, TempDir};
use crate::shipped_plugins::kit::{toml_inline, url};
use crate::support::{self, send};

/// The tonic greeter on an ephemeral port; stops when dropped.
struct Greeter {
    addr: std::net::SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn greeter() -> Greeter {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind greeter");
    let addr = listener.local_addr().expect("greeter address");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(grpc_greeter::serve(listener, async {
        // A dropped sender also means stop.
        let _ = stopped.await;
    }));
    Greeter { addr, _stop: stop }
}

/// An address nothing listens on (bound, then released).
async fn closed_port() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("address")
}

/// An address that accepts connections and never answers, holding them open.
async fn silent_port() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = l.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// A plugins directory with the grpc-transcode plugin and the greeter's descriptor set.
fn plugins_dir() -> TempDir {
    let dir = TempDir::new("grpc");
    std::fs::copy(
        guests::path("grpc-transcode"),
        dir.join("grpc-transcode.wasm"),
    )
    .expect("copy the built grpc-transcode plugin");
    std::fs::write(dir.join("greeter.pb"), grpc_greeter::DESCRIPTOR_SET)
        .expect("write the descriptor set");
    dir
}

/// Asserts a JSON error answer: the status, the `error` code, and a `message` with `needle`.
fn assert_error(got: &support::Got, status: u16, error: &str, needle: &str) {
    assert_eq!(got.status, status, "{}", got.text());
    let doc = got.json();
    assert_eq!(doc["error"], error, "{doc}");
    let message = doc["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

/// A gateway with `/hello` transcoded to `helloworld.Greeter/SayHello` on `backend`, routes
/// with a method the descriptor set lacks (`/wave`) and with no file granted (`/no-file`),
/// and gRPC passthrough for `/helloworld.Greeter/*`.
async fn gateway(dir: &TempDir, backend: std::net::SocketAddr) -> RunningGateway {
    gateway_with(dir, backend, "").await
}

/// [`gateway`] with extra top-level TOML (e.g. `[limits]`).
async fn gateway_with(dir: &TempDir, backend: std::net::SocketAddr, extra: &str) -> RunningGateway {
    let cache = guests::workspace().join("target/guests/artifact-cache");
    let pb = dir.0.join("greeter.pb");
    let entry = |method: &str| {
        format!(
            "{{ name = \"grpc-transcode\", config = {}, calls = [\"greeter\"], files = {{ descriptors = {} }} }}",
            toml_inline(&json!({ "service": "greeter", "method": method })),
            toml_inline(&json!(pb.display().to_string())),
        )
    };
    support::gateway(&format!(
        r#"
{extra}
[plugins]
dir = {dir}
cache_dir = {cache}
watch = false

[[services]]
name = "greeter"
endpoints = ["{backend}"]
protocol = "h2c"

[[routes]]
name = "hello"
service = "greeter"
match = {{ path = "/hello" }}
plugins = [{hello}]

[[routes]]
name = "misconfigured"
service = "greeter"
match = {{ path = "/wave" }}
plugins = [{wave}]

[[routes]]
name = "no-file"
service = "greeter"
match = {{ path = "/no-file" }}
plugins = [{{ name = "grpc-transcode", config = {no_file}, calls = ["greeter"] }}]

[[routes]]
name = "grpc"
service = "greeter"
match = {{ prefix = "/helloworld.Greeter" }}
"#,
        dir = toml_inline(&json!(dir.0.display().to_string())),
        cache = toml_inline(&json!(cache.display().to_string())),
        hello = entry("helloworld.Greeter/SayHello"),
        wave = entry("helloworld.Greeter/Wave"),
        no_file =
            toml_inline(&json!({ "service": "greeter", "method": "helloworld.Greeter/SayHello" })),
    ))
    .await
}

async fn post(gw: &RunningGateway, path: &str, body: &'static str) -> support::Got {
    let headers = [("content-type", "application/json")];
    send(
        &support::http1(),
        "POST",
        &url(gw, path),
        &headers,
        Bytes::from_static(body.as_bytes()),
    )
    .await
}

#[tokio::test]
async fn grpc_transcode_json_to_grpc_and_back() {
    let backend = greeter().await;
    let dir = plugins_dir();
    let gw = gateway(&dir, backend.addr).await;

    info!("JSON body → SayHello → JSON reply (int64 as a string, per proto3 JSON)");
    let got = post(&gw, "/hello", r#"{"name":"ada","times":2}"#).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(
        got.json(),
        json!({ "message": "Hello, ada! Hello, ada!", "length": "23" })
    );

    info!("GET with query parameters only");
    let got = support::get(&url(&gw, "/hello?name=bob&shout=true"), &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["message"], "HELLO, BOB!");
    gw.shutdown().await;
}

#[tokio::test]
async fn grpc_transcode_maps_grpc_status_to_http() {
    let backend = greeter().await;
    let dir = plugins_dir();
    let gw = gateway(&dir, backend.addr).await;

    let cases = [
        // The message is percent-encoded by tonic on the wire and decoded by the plugin.
        (
            r#"{"name":"nobody"}"#,
            404,
            "not_found",
            5,
            "no one called “nobody” here",
        ),
        (
            r#"{"name":"mallory"}"#,
            403,
            "permission_denied",
            7,
            "mallory may not be greeted",
        ),
        (
            r#"{}"#,
            400,
            "invalid_argument",
            3,
            "name must not be empty",
        ),
    ];
    for (body, status, error, code, message) in cases {
        info!(body, "an error status from the service");
        let got = post(&gw, "/hello", body).await;
        assert_eq!(got.status, status, "{body}: {}", got.text());
        let request_id = got.headers["x-request-id"].to_str().expect("request id");
        assert_eq!(
            got.json(),
            json!({ "error": error, "grpc_status": code, "message": message, "request_id": request_id }),
            "{body}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn grpc_transcode_refuses_bad_json_and_names_config_mistakes() {
    let backend = greeter().await;
    let dir = plugins_dir();
    let gw = gateway(&dir, backend.addr).await;

    info!("malformed JSON: 400 with the parser's reason");
    let got = post(&gw, "/hello", r#"{"name": "#).await;
    assert_error(&got, 400, "bad_request", "not valid JSON");

    info!("JSON that does not fit the input message: 400 naming the message");
    let got = post(&gw, "/hello", r#"{"times":"many"}"#).await;
    assert_error(&got, 400, "bad_request", "helloworld.HelloRequest");

    info!("a method the descriptor set lacks: 500 naming it");
    let got = post(&gw, "/wave", r#"{"name":"ada"}"#).await;
    assert_error(&got, 500, "plugin_misconfigured", "has no method \"Wave\"");

    info!("no descriptor file granted: context.file gives none, 500 saying how to grant it");
    let got = post(&gw, "/no-file", r#"{"name":"ada"}"#).await;
    assert_error(
        &got,
        500,
        "plugin_misconfigured",
        "no file granted as \"descriptors\"",
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn grpc_transcode_backend_down_is_a_json_502() {
    let dir = plugins_dir();
    let gw = gateway(&dir, closed_port().await).await;
    let got = post(&gw, "/hello", r#"{"name":"ada"}"#).await;
    assert_error(&got, 502, "upstream_failed", "greeter");
    gw.shutdown().await;
}

#[tokio::test]
async fn grpc_transcode_backend_silent_is_a_json_504() {
    let dir = plugins_dir();
    let gw = gateway_with(
        &dir,
        silent_port().await,
        "[limits]\ndefault_timeout = \"300ms\"\n",
    )
    .await;
    let got = post(&gw, "/hello", r#"{"name":"ada"}"#).await;
    assert_error(&got, 504, "upstream_timeout", "in time");
    gw.shutdown().await;
}

#[tokio::test]
async fn grpc_passthrough_keeps_trailers() {
    let backend = greeter().await;
    let dir = plugins_dir();
    let gw = gateway(&dir, backend.addr).await;

    info!("a tonic client through the gateway: OK, and an error status");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gw.public_addr))
        .expect("gateway URL")
        .connect()
        .await
        .expect("the gateway accepts h2c");
    let mut client = GreeterClient::new(channel);
    let reply = client
        .say_hello(HelloRequest {
            name: "ada".into(),
            times: 1,
            shout: false,
        })
        .await
        .expect("SayHello through the gateway succeeds (grpc-status arrived in the trailers)");
    assert_eq!(reply.into_inner().message, "Hello, ada!");
    let status = client
        .say_hello(HelloRequest {
            name: "nobody".into(),
            ..Default::default()
        })
        .await
        .expect_err("nobody is not found");
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "no one called “nobody” here");

    info!("a raw h2c request: the response trailers carry grpc-status 0");
    let message = HelloRequest {
        name: "eve".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let req = http::Request::post(url(&gw, "/helloworld.Greeter/SayHello"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))
        .expect("request");
    let resp = support::h2c().request(req).await.expect("gateway answers");
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.expect("body and trailers");
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    let body = collected.to_bytes();
    let reply = HelloReply::decode(&body[5..]).expect("a HelloReply after the 5-byte prefix");
    assert_eq!(reply.message, "Hello, eve!");
    gw.shutdown().await;
}

#[test]
fn example_config_is_valid_and_its_descriptor_set_is_current() {
    let example = guests::workspace().join("examples/grpc-greeter");
    let shipped =
        std::fs::read(example.join("greeter.pb")).expect("examples/grpc-greeter/greeter.pb");
    assert!(
        shipped == grpc_greeter::DESCRIPTOR_SET,
        "greeter.pb is stale: run `cargo run -p grpc-greeter -- --write-descriptor examples/grpc-greeter/greeter.pb`"
    );
    gatehouse::config::load_file(&example.join("gatehouse.toml"))
        .expect("the example config is valid");
}
