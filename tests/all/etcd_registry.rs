//! The registry in etcd (docs/scale-out.md): three real gateway processes share one real
//! etcd. An instance registered through one gateway is routed to by all; lease expiry and
//! deregistration remove it everywhere; a killed gateway or a restarted etcd loses nothing;
//! a mass vanish is held by self-preservation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use gatehouse::discovery::registry::{InstanceSpec, Registration, RegistryClient};
use gatehouse::discovery::EndpointMeta;

use crate::support::etcd::EtcdServer;
use crate::support::load::{assert_all_ok, Load};
use crate::support::origin::{self, Origin};
use crate::support::{
    eventually, free_addr, http1, send, signal, spawn_gatehouse, start_gatehouse_logged,
};

const TOKEN: &str = "s3cret";
/// How soon a change must show on every gateway.
const PROPAGATION: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(15);

/// A gateway process started from the built binary.
struct Gateway {
    public: SocketAddr,
    admin: SocketAddr,
    child: tokio::process::Child,
}

fn temp_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "gatehouse-etcdreg-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Three gateways on `etcd`, registry in etcd with `lease`, service `orders` routed at `/`.
async fn three_gateways(etcd: &EtcdServer, lease: &str, eviction_interval: &str) -> Vec<Gateway> {
    let dir = temp_dir();
    let mut gateways = Vec::new();
    for i in 0..3 {
        let path = dir.join(format!("gateway-{i}.toml"));
        gateways.push(start_gateway(etcd, lease, eviction_interval, &path, None).await);
    }
    gateways
}

/// One gateway whose config is written to `config`; its log goes to `log` when given.
async fn start_gateway(
    etcd: &EtcdServer,
    lease: &str,
    eviction_interval: &str,
    config: &std::path::Path,
    log: Option<&std::path::Path>,
) -> Gateway {
    let (public, admin) = (free_addr(), free_addr());
    let toml = format!(
        r#"
[listen]
public = "{public}"
admin = "{admin}"
workers = 1

[etcd]
endpoints = ["{url}"]
connect_timeout = "500ms"
timeout = "500ms"

[registry]
token = "{TOKEN}"
store = "etcd"
lease = "{lease}"
heartbeat = "500ms"
eviction_interval = "{eviction_interval}"

[[services]]
name = "orders"
discovery = "registry"

[[routes]]
name = "orders"
service = "orders"
match = {{ prefix = "/" }}
"#,
        url = etcd.url(),
    );
    std::fs::write(config, toml).expect("write config");
    let child = match log {
        None => spawn_gatehouse(config, admin, false).await,
        Some(log) => {
            let args = ["run", "--config", &config.display().to_string()].map(String::from);
            start_gatehouse_logged(&args, &[], admin, log)
                .await
                .unwrap_or_else(|e| panic!("the gateway did not start: {e}"))
        }
    };
    Gateway {
        public,
        admin,
        child,
    }
}

async fn named_origin(name: &'static str) -> Origin {
    origin::start(move |_req| async move { origin::text(200, name) }).await
}

fn spec(id: &str, origin: &Origin) -> InstanceSpec {
    InstanceSpec {
        id: id.to_owned(),
        address: origin.addr.ip(),
        port: origin.addr.port(),
        meta: EndpointMeta::default(),
    }
}

fn client(gw: &Gateway) -> RegistryClient {
    RegistryClient::new(gw.admin, TOKEN)
}

/// The body of `GET /` through `gw`, when it is a 200.
async fn routed(gw: &Gateway) -> Option<String> {
    let got = send(
        &http1(),
        "GET",
        &format!("http://{}/", gw.public),
        &[],
        Bytes::new(),
    )
    .await;
    (got.status == 200).then(|| got.text())
}

/// `GET /registry/services/orders` on `gw`: the instance ids and the self-preservation flag.
async fn view(gw: &Gateway) -> (Vec<String>, bool) {
    let list = send(
        &http1(),
        "GET",
        &format!("http://{}/registry/services/orders", gw.admin),
        &[],
        Bytes::new(),
    )
    .await
    .json();
    let ids = list["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let services = send(
        &http1(),
        "GET",
        &format!("http://{}/registry/services", gw.admin),
        &[],
        Bytes::new(),
    )
    .await
    .json();
    let preserving = services["services"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["name"] == "orders" && s["self_preservation"] == true);
    (ids, preserving)
}

async fn ids(gw: &Gateway) -> Vec<String> {
    view(gw).await.0
}

/// Waits until every gateway in `gws` routes `/` to `name` only.
async fn all_route_to(gws: &[&Gateway], name: &str, deadline: Duration) {
    eventually(
        &format!("every gateway routes to {name}"),
        deadline,
        async || {
            for gw in gws {
                if routed(gw).await.as_deref() != Some(name) {
                    return false;
                }
            }
            true
        },
    )
    .await;
}

async fn all_have(gws: &[&Gateway], expected: &[&str], deadline: Duration) {
    eventually(
        &format!("every gateway lists exactly {expected:?}"),
        deadline,
        async || {
            for gw in gws {
                if ids(gw).await != expected {
                    return false;
                }
            }
            true
        },
    )
    .await;
}

async fn register_raw(gw: &Gateway, id: &str, origin: &Origin) -> (u16, serde_json::Value) {
    let body = serde_json::json!({
        "id": id,
        "address": origin.addr.ip().to_string(),
        "port": origin.addr.port(),
    });
    let got = send(
        &http1(),
        "POST",
        &format!("http://{}/registry/services/orders/instances", gw.admin),
        &[("authorization", "Bearer s3cret")],
        Bytes::from(body.to_string()),
    )
    .await;
    (got.status, got.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_registered_on_one_gateway_is_routed_by_all_and_its_lapse_removes_it() {
    let etcd = EtcdServer::start();
    let gws = three_gateways(&etcd, "2s", "3s").await;
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);
    let one = named_origin("one").await;
    let (status, body) = register_raw(a, "one", &one).await;
    assert_eq!(status, 201, "{body}");
    all_route_to(&[b, c, a], "one", PROPAGATION).await;
    // Re-registering the same id replaces it: still one key, one instance everywhere.
    let (status, body) = register_raw(b, "one", &one).await;
    assert_eq!(status, 200, "{body}");
    let keys = etcd
        .client()
        .await
        .get(
            "/gatehouse/registry/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("etcd get");
    assert_eq!(keys.kvs().len(), 1, "one key per instance");
    all_have(&[a, b, c], &["one"], PROPAGATION).await;
    // Heartbeats through any gateway renew the one lease.
    for gw in [c, a] {
        client(gw).renew("orders", "one").await.expect("heartbeat");
    }
    // No more heartbeats: etcd expires the lease and every gateway drops the instance.
    all_have(&[a, b, c], &[], DEADLINE).await;
    let late = client(b).renew("orders", "one").await;
    assert!(
        matches!(late, Err(gatehouse::discovery::registry::ClientError::Rejected { status, .. }) if status == 404),
        "a heartbeat after the lapse is a 404, so the client registers again: {late:?}"
    );
    for gw in [a, b, c] {
        let status = send(
            &http1(),
            "GET",
            &format!("http://{}/", gw.public),
            &[],
            Bytes::new(),
        )
        .await
        .status;
        assert_eq!(status, 503, "no instance left to route to");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deregister_on_one_gateway_removes_instances_everywhere_at_once() {
    let etcd = EtcdServer::start();
    let gws = three_gateways(&etcd, "10s", "3s").await;
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);
    let origins = [
        named_origin("x1").await,
        named_origin("x2").await,
        named_origin("x3").await,
    ];
    for (id, o) in ["x1", "x2", "x3"].iter().zip(&origins) {
        client(a)
            .register_once("orders", &spec(id, o))
            .await
            .expect("register");
    }
    all_have(&[a, b, c], &["x1", "x2", "x3"], PROPAGATION).await;
    // Deregistering every instance is not a vanish: no self-preservation holds them.
    for id in ["x1", "x2", "x3"] {
        client(b)
            .deregister("orders", id)
            .await
            .expect("deregister");
    }
    all_have(&[a, b, c], &[], PROPAGATION).await;
    for gw in [a, b, c] {
        assert!(!view(gw).await.1, "no self-preservation after deregisters");
    }
    let err = client(c).deregister("orders", "x1").await;
    assert!(err.is_err(), "a second deregister is a 404");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_loses_no_instance_and_the_others_keep_serving() {
    let etcd = EtcdServer::start();
    let mut gws = three_gateways(&etcd, "3s", "3s").await;
    let one = named_origin("one").await;
    client(&gws[0])
        .register_once("orders", &spec("one", &one))
        .await
        .expect("register through A");
    all_route_to(&[&gws[1], &gws[2]], "one", PROPAGATION).await;
    let loads = [
        Load::start(format!("http://{}/", gws[1].public), &[], 2),
        Load::start(format!("http://{}/", gws[2].public), &[], 2),
    ];
    loads[0].wait_for(20).await;
    gws[0].child.start_kill().expect("SIGKILL gateway A");
    let _ = gws[0].child.wait().await;
    // The instance now heartbeats through B: its lease is found from (service, id) there.
    let beats = client(&gws[1]);
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        beats
            .renew("orders", "one")
            .await
            .expect("heartbeat through B");
    }
    for load in &loads {
        load.wait_for(20).await;
    }
    for load in loads {
        assert_all_ok(&load.finish().await);
    }
    // Longer than the lease since A died: heartbeats through B kept it everywhere.
    all_have(&[&gws[1], &gws[2]], &["one"], PROPAGATION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_restart_under_load_fails_no_request_and_loses_nothing() {
    let mut etcd = EtcdServer::start();
    let gws = three_gateways(&etcd, "10s", "3s").await;
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);
    let one = named_origin("one").await;
    let late = named_origin("late").await;
    let registration: Registration = client(a)
        .register("orders", spec("one", &one), Duration::from_millis(500))
        .await
        .expect("register");
    all_route_to(&[a, b, c], "one", PROPAGATION).await;
    let loads = [
        Load::start(format!("http://{}/", b.public), &[], 2),
        Load::start(format!("http://{}/", c.public), &[], 2),
    ];
    loads[0].wait_for(20).await;

    etcd.stop();
    let (status, body) = register_raw(a, "late", &late).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "registry_store_unavailable", "{body}");
    for load in &loads {
        load.wait_for(50).await;
    }
    etcd.restart();

    // Once the gateway's client is back on etcd, a registration is seen everywhere.
    eventually(
        "a registration succeeds after the restart",
        DEADLINE,
        async || register_raw(a, "late", &late).await.0 == 201,
    )
    .await;
    all_have(&[a, b, c], &["late", "one"], DEADLINE).await;
    for load in loads {
        let statuses = load.finish().await;
        assert_all_ok(&statuses);
    }
    let keys = etcd
        .client()
        .await
        .get(
            "/gatehouse/registry/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("etcd get");
    assert_eq!(keys.kvs().len(), 2, "nothing duplicated");
    registration.deregister().await.expect("deregister");
    all_have(&[a, b, c], &["late"], PROPAGATION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_vanish_is_held_by_self_preservation_for_an_eviction_interval() {
    let etcd = EtcdServer::start();
    let gws = three_gateways(&etcd, "2s", "4s").await;
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);
    let origins = [
        named_origin("v").await,
        named_origin("v").await,
        named_origin("v").await,
        named_origin("v").await,
    ];
    for (i, o) in origins.iter().enumerate() {
        client(a)
            .register_once("orders", &spec(&format!("v{i}"), o))
            .await
            .expect("register");
    }
    let all = ["v0", "v1", "v2", "v3"];
    all_have(&[a, b, c], &all, PROPAGATION).await;
    // Every lease lapses together (the instances lost their way to the gateways): the
    // gateways keep routing to them and say so.
    eventually(
        "every gateway preserves the vanished instances",
        DEADLINE,
        async || {
            for gw in [a, b, c] {
                let (ids, preserving) = view(gw).await;
                if !preserving || ids.is_empty() {
                    return false;
                }
            }
            true
        },
    )
    .await;
    for gw in [a, b, c] {
        assert_eq!(
            routed(gw).await.as_deref(),
            Some("v"),
            "held instances still serve"
        );
    }
    // Bounded: one eviction interval later they are gone.
    all_have(&[a, b, c], &[], DEADLINE).await;
    for gw in [a, b, c] {
        assert!(!view(gw).await.1, "self-preservation ends with the hold");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_past_a_compaction_reads_everything_again_and_converges() {
    let mut etcd = EtcdServer::start();
    let dir = temp_dir();
    let log = dir.join("gateway.log");
    let gw = start_gateway(&etcd, "30s", "60s", &dir.join("gateway.toml"), Some(&log)).await;
    let origins = [
        named_origin("a").await,
        named_origin("b").await,
        named_origin("c").await,
        named_origin("d").await,
    ];
    for (id, o) in ["a", "b", "c"].iter().zip(&origins) {
        client(&gw)
            .register_once("orders", &spec(id, o))
            .await
            .expect("register");
    }
    all_have(&[&gw], &["a", "b", "c"], PROPAGATION).await;

    // The gateway is frozen while etcd restarts (its watch stream is cut), changes are made
    // behind its back and etcd compacts them away: its watch cannot resume from the
    // revision it last applied.
    signal(&gw.child, "-STOP");
    etcd.restart();
    let mut direct = etcd.client().await;
    direct
        .delete("/gatehouse/registry/orders/b", None)
        .await
        .expect("delete b");
    let d = serde_json::json!({
        "address": origins[3].addr.ip().to_string(),
        "port": origins[3].addr.port(),
    });
    let put = direct
        .put("/gatehouse/registry/orders/d", d.to_string(), None)
        .await
        .expect("put d");
    let revision = put.header().expect("a header").revision();
    direct
        .compact(
            revision,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("compact");
    signal(&gw.child, "-CONT");

    // It reads every key again and diffs: b vanished (settled after its second), d arrived.
    all_have(&[&gw], &["a", "c", "d"], DEADLINE).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("compacted past the watch's revision"),
        "the resume went through the compaction path:\n{text}"
    );
}
