//! The registry's blocking queries and the client-side discovery crate, against a real
//! gateway's admin listener on 127.0.0.1:0.

use std::net::SocketAddr;
use std::time::Duration;

use gatehouse_registry_client::{Discovery, Instance, RegistryClient};

use crate::support::{self, eventually, get};

const TOKEN: &str = "s3cret";
const DEADLINE: Duration = Duration::from_secs(10);

fn config(admin: &str, extra: &str) -> String {
    format!(
        "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"{admin}\"\n[registry]\ntoken = \"{TOKEN}\"\n{extra}"
    )
}

fn instance(id: &str, port: u16) -> Instance {
    Instance::new(id, "127.0.0.1".parse().expect("ip"), port)
}

fn watch_url(admin: SocketAddr, service: &str, query: &str) -> String {
    format!("http://{admin}/registry/services/{service}/instances{query}")
}

#[tokio::test]
async fn a_blocking_query_holds_until_a_change_and_the_index_grows() {
    let gw = support::gateway(&config("127.0.0.1:0", "")).await;
    let admin = gw.admin_addr;
    let client = RegistryClient::new(admin, TOKEN);

    // Unknown service: an empty set at index 0, watchable.
    let first = get(&watch_url(admin, "b", ""), &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["index"], 0);
    assert_eq!(first.headers["x-registry-index"], "0");

    let held =
        tokio::spawn(async move { get(&watch_url(admin, "b", "?index=0&wait=30s"), &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "the query holds while nothing changes");
    client
        .register_once("b", &instance("b-1", 9001))
        .await
        .expect("register");
    let got = tokio::time::timeout(DEADLINE, held)
        .await
        .expect("the held query answers after a register")
        .expect("query task");
    assert_eq!(got.status, 200);
    let after_register = got.json()["index"].as_u64().expect("index");
    assert!(after_register > 0);
    assert_eq!(got.json()["instances"][0]["id"], "b-1");
    assert_eq!(
        got.headers["x-registry-index"],
        after_register.to_string().as_str()
    );

    let query = format!("?index={after_register}&wait=30s");
    let held = tokio::spawn(async move { get(&watch_url(admin, "b", &query), &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "the query holds at the current index");
    client.deregister("b", "b-1").await.expect("deregister");
    let got = tokio::time::timeout(DEADLINE, held)
        .await
        .expect("the held query answers after a deregister")
        .expect("query task");
    assert!(got.json()["index"].as_u64().expect("index") > after_register);
    assert_eq!(got.json()["instances"].as_array().map(Vec::len), Some(0));

    // A short wait with no change answers with the same index.
    let current = got.json()["index"].as_u64().expect("index");
    let got = get(
        &watch_url(admin, "b", &format!("?index={current}&wait=100ms")),
        &[],
    )
    .await;
    assert_eq!(
        (got.status, got.json()["index"].as_u64()),
        (200, Some(current))
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_parameters_get_a_400_and_the_watch_cap_a_503() {
    let gw = support::gateway(&config("127.0.0.1:0", "max_watches = 1\n")).await;
    let admin = gw.admin_addr;
    for query in [
        "?index=x",
        "?index=-1",
        "?wait=soon",
        "?index=1&index=2",
        "?idx=3",
    ] {
        let got = get(&watch_url(admin, "b", query), &[]).await;
        assert_eq!(got.status, 400, "{query}: {}", got.text());
        assert_eq!(got.json()["error"], "bad_query", "{query}");
    }
    let got = get(&watch_url(admin, "no/such", ""), &[]).await;
    assert_eq!(got.status, 404, "a path with more segments is no endpoint");

    let held =
        tokio::spawn(async move { get(&watch_url(admin, "b", "?index=0&wait=30s"), &[]).await });
    eventually("the first watch is held", DEADLINE, async || {
        gw.registry.open_watches() == 1
    })
    .await;
    let refused = get(&watch_url(admin, "b", "?index=0&wait=30s"), &[]).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.json()["error"], "too_many_watches");
    assert_eq!(refused.headers["retry-after"], "1");
    let metrics = get(&format!("http://{admin}/metrics"), &[]).await.text();
    for line in [
        "gatehouse_registry_watches 1",
        "gatehouse_registry_watches_refused_total 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }

    // Shutdown answers the held watch at once: the admin drain is clean.
    let report = gw.shutdown().await;
    assert_eq!(report.cut_connections, 0);
    let got = tokio::time::timeout(DEADLINE, held)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn the_client_follows_balances_and_survives_an_outage() {
    let gw = support::gateway(&config("127.0.0.1:0", "")).await;
    let admin = gw.admin_addr;
    let client = RegistryClient::new(admin, TOKEN);
    let discovery = Discovery::builder(admin, "b")
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .start();
    discovery.ready(DEADLINE).await.expect("first list");
    assert!(discovery.pick().is_none(), "no instance yet");

    for (id, port) in [("b-1", 9001), ("b-2", 9002), ("b-3", 9003)] {
        client
            .register_once("b", &instance(id, port))
            .await
            .expect("register");
    }
    eventually("all three discovered", DEADLINE, async || {
        discovery.instances().len() == 3
    })
    .await;
    let mut seen: Vec<String> = (0..6)
        .filter_map(|_| discovery.pick())
        .map(|i| i.id)
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        ["b-1", "b-1", "b-2", "b-2", "b-3", "b-3"],
        "round robin over all"
    );

    let b2 = discovery
        .instances()
        .iter()
        .find(|i| i.id == "b-2")
        .cloned()
        .expect("b-2");
    discovery.mark_failed(&b2);
    assert!(
        (0..6)
            .filter_map(|_| discovery.pick())
            .all(|i| i.id != "b-2"),
        "a failed instance is skipped"
    );

    client.deregister("b", "b-3").await.expect("deregister");
    eventually("b-3 is gone", DEADLINE, async || {
        discovery.instances().len() == 2
    })
    .await;

    // The registry goes away: the cached list keeps serving.
    gw.shutdown().await;
    eventually("the list is marked stale", DEADLINE, async || {
        discovery.snapshot().stale
    })
    .await;
    assert_eq!(discovery.instances().len(), 2);
    assert!(discovery.pick().is_some());

    // It comes back on the same address (empty): the client catches up.
    let gw = support::gateway(&config(&admin.to_string(), "")).await;
    let client = RegistryClient::new(gw.admin_addr, TOKEN);
    client
        .register_once("b", &instance("b-9", 9009))
        .await
        .expect("register");
    eventually("the client caught up", DEADLINE, async || {
        let s = discovery.snapshot();
        !s.stale && s.instances.len() == 1 && s.instances[0].id == "b-9"
    })
    .await;
    gw.shutdown().await;
}

// The runnable example, compiled into this binary: its `main` is unused here.
#[allow(dead_code)]
#[path = "../../examples/client-discovery/main.rs"]
mod client_discovery_example;

#[tokio::test]
async fn the_client_discovery_example_calls_b_directly() {
    let gw = support::gateway(&config("127.0.0.1:0", "")).await;
    let admin = gw.admin_addr;
    let b1 = tokio::spawn(client_discovery_example::serve_b(admin, 0, TOKEN));
    let b2 = tokio::spawn(client_discovery_example::serve_b(admin, 0, TOKEN));
    eventually("both b instances registered", DEADLINE, async || {
        gw.registry.view("b").is_ok_and(|v| v.instances.len() == 2)
    })
    .await;
    let lines = client_discovery_example::call_b(admin, None, 4)
        .await
        .expect("a calls b");
    let hellos: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.split(" -> hello from ").nth(1))
        .collect();
    assert_eq!(
        hellos.len(),
        2,
        "a reached both b instances directly: {lines:?}"
    );
    b1.abort();
    b2.abort();
    gw.shutdown().await;
}
