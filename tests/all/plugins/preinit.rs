//! Pre-initialised instances (WIT 0.1.3 `init`): a plugin's set-up runs once per version and
//! route entry, and each fresh instance starts from a snapshot of it. test-kit's `preinit`
//! mode answers with what `init` set up: the route's `label`, an id drawn at random in `init`
//! (instances started from one snapshot share it; instances that ran `init` themselves each
//! have their own), and counters that show no state leaks between requests.

use std::time::Duration;

use gatehouse::plugins::OnError;
use serde_json::{json, Value};

use super::guests::{self, TempDir};
use super::runtime::{answered, failed, get, kit, kit_single_tier, plugin};
use crate::support::eventually;

/// Two answers in a row with the same init id: instances now start from one snapshot.
async fn snapshot_id(chain: &std::sync::Arc<gatehouse::plugins::PluginChain>) -> String {
    let mut id = String::new();
    eventually(
        "the snapshot serves",
        Duration::from_secs(120),
        async || {
            let (_, a) = answered(chain, get("/")).await;
            let (_, b) = answered(chain, get("/")).await;
            id = b["id"].as_str().unwrap_or_default().to_string();
            a["id"] == b["id"]
        },
    )
    .await;
    id
}

fn fresh(answer: &Value, label: &str) {
    assert_eq!(answer["label"], label, "{answer}");
    assert_eq!(answer["inits"], 1, "init ran once in this memory: {answer}");
    assert_eq!(answer["all_inits"], 1, "{answer}");
    assert_eq!(
        answer["scratch"], 1,
        "a request's writes are not seen by the next: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_entry_starts_from_the_snapshot_of_its_own_config() {
    let kit = kit_single_tier(&[("kit", guests::bytes("test-kit"))]).await;
    let a = kit.manager.chain(
        "route-a",
        &[plugin("kit", json!({ "mode": "preinit", "label": "a" }))],
        OnError::FailClosed,
    );
    let b = kit.manager.chain(
        "route-b",
        &[plugin("kit", json!({ "mode": "preinit", "label": "b" }))],
        OnError::FailClosed,
    );
    // Before and after the snapshot is ready, every answer is the route's own and fresh.
    let (_, first) = answered(&a, get("/")).await;
    fresh(&first, "a");
    let id_a = snapshot_id(&a).await;
    let id_b = snapshot_id(&b).await;
    assert_ne!(id_a, id_b, "one snapshot per route config");
    // An instance prepared off the request path before its snapshot was ready ran `init`
    // itself (its own id) and may still be on the shelf: valid, only not from the snapshot.
    // What must never happen is an instance of one route starting from the other's snapshot.
    let (mut from_a, mut from_b) = (0, 0);
    for _ in 0..20 {
        let (_, x) = answered(&a, get("/")).await;
        fresh(&x, "a");
        assert_ne!(x["id"], id_b.as_str(), "route a served from b's snapshot");
        from_a += usize::from(x["id"] == id_a.as_str());
        let (_, y) = answered(&b, get("/")).await;
        fresh(&y, "b");
        assert_ne!(y["id"], id_a.as_str(), "route b served from a's snapshot");
        from_b += usize::from(y["id"] == id_b.as_str());
    }
    assert!(
        from_a > 0 && from_b > 0,
        "snapshots serve: a {from_a}, b {from_b} of 20"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_refusing_its_config_fails_each_request_with_the_reason() {
    let kit = kit(&[("kit", guests::bytes("test-kit"))]).await;
    let chain = kit.manager.chain(
        "bad",
        &[plugin(
            "kit",
            json!({ "mode": "preinit", "init_error": "no usable key" }),
        )],
        OnError::FailClosed,
    );
    // The first requests run init themselves, later ones meet the recorded refusal: the same
    // failure either way.
    for _ in 0..10 {
        let (status, body) = failed(&chain).await;
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["kind"], "init", "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("no usable key"),
            "{body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A fail-open entry lets the request through.
    let open = kit.manager.chain(
        "bad-open",
        &[plugin(
            "kit",
            json!({ "mode": "preinit", "init_error": "no usable key" }),
        )],
        OnError::FailOpen,
    );
    let out = open.start(Default::default()).on_request(get("/")).await;
    assert!(matches!(
        out,
        Ok(gatehouse::plugins::RequestOutcome::Continue(_))
    ));
}

/// A plugin manager watching a fresh directory that holds test-kit as `kit.wasm`, with the
/// directory (kept alive with it) and the component's bytes.
async fn watched_kit(
    label: &str,
    tiered: bool,
) -> (TempDir, gatehouse::plugins::PluginManager, Vec<u8>) {
    let dir = TempDir::new(label);
    let bytes = guests::bytes("test-kit");
    std::fs::write(dir.join("kit.wasm"), &bytes).expect("write");
    let manager = gatehouse::plugins::PluginManager::start(
        gatehouse::plugins::PluginSettings {
            dir: dir.0.clone(),
            cache_dir: Some(guests::workspace().join("target/guests/artifact-cache")),
            watch: true,
            debounce: Duration::from_millis(50),
            limits: super::runtime::test_limits(),
            tiered,
            ..Default::default()
        },
        std::sync::Arc::new(super::runtime::FakeServices {
            delay: Duration::ZERO,
            seen: Default::default(),
        }),
    )
    .await
    .expect("starts");
    (dir, manager, bytes)
}

/// Writes `bytes` with a custom section appended: the same component as a new version (a new
/// content hash).
fn write_new_version(dir: &TempDir, bytes: &[u8]) {
    let mut changed = bytes.to_vec();
    changed.extend_from_slice(&[0, 6, 5, b'v', b'e', b'r', b'-', b'2']);
    std::fs::write(dir.join("kit.wasm"), &changed).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_plugin_version_is_snapshotted_again() {
    let (dir, manager, bytes) = watched_kit("preinit-reload", true).await;
    let chain = manager.chain(
        "reload",
        &[plugin("kit", json!({ "mode": "preinit", "label": "r" }))],
        OnError::FailClosed,
    );
    let old = snapshot_id(&chain).await;
    write_new_version(&dir, &bytes);
    let mut new = String::new();
    eventually(
        "the new version's snapshot serves",
        Duration::from_secs(120),
        async || {
            new = snapshot_id(&chain).await;
            new != old
        },
    )
    .await;
    // From now on only the new version serves: from its snapshot, or (an instance prepared
    // before that snapshot was ready) from its own `init`; never from the old snapshot.
    for _ in 0..10 {
        let (_, answer) = answered(&chain, get("/")).await;
        fresh(&answer, "r");
        assert_ne!(
            answer["id"],
            old.as_str(),
            "the old version's snapshot served"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_plugin_version_and_its_snapshot_are_freed() {
    let (dir, manager, bytes) = watched_kit("preinit-free", false).await;
    let name = gatehouse::plugins::PluginName::new("kit").expect("valid name");
    let chain = manager.chain(
        "free",
        &[plugin("kit", json!({ "mode": "preinit", "label": "f" }))],
        OnError::FailClosed,
    );
    let old_id = snapshot_id(&chain).await;
    let old = std::sync::Arc::downgrade(&manager.registry().get(&name).expect("loaded"));
    assert_eq!(chain.snapshots_held(), 1);
    write_new_version(&dir, &bytes);
    eventually(
        "the new version serves from its snapshot and the old one is gone",
        Duration::from_secs(120),
        async || {
            let (_, answer) = answered(&chain, get("/")).await;
            fresh(&answer, "f");
            answer["id"] != old_id.as_str()
                && old.strong_count() == 0
                && chain.snapshots_held() == 1
        },
    )
    .await;
    // Neither the old version nor its snapshot serves again.
    for _ in 0..10 {
        let (_, answer) = answered(&chain, get("/")).await;
        assert_ne!(answer["id"], old_id.as_str(), "{answer}");
    }
    assert_eq!(old.strong_count(), 0);
}
