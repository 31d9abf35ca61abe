//! Unit tests of the registry store (leases, self-preservation) on a paused clock.

use super::*;

fn spec(id: &str, port: u16) -> InstanceSpec {
    InstanceSpec {
        id: id.into(),
        address: [127, 0, 0, 1].into(),
        port,
        meta: EndpointMeta::default(),
    }
}

fn registry(share: f64) -> Arc<Registry> {
    Registry::new(RegistryConfig {
        token: Some("t".into()),
        lease: Duration::from_secs(9),
        heartbeat: Duration::from_secs(3),
        eviction_interval: Duration::from_secs(1),
        self_preservation_share: share,
        ..RegistryConfig::default()
    })
}

/// A registry with the etcd store, never connected: the view is fed by hand as the watcher
/// would feed it.
fn etcd_view(share: f64, window: Duration) -> Arc<Registry> {
    Registry::new(RegistryConfig {
        token: Some("t".into()),
        eviction_interval: window,
        self_preservation_share: share,
        store: RegistryStore::Etcd(Box::new(EtcdRegistry {
            settings: crate::etcd::EtcdSettings::new(vec!["http://127.0.0.1:1".into()]),
            key_prefix: DEFAULT_KEY_PREFIX.into(),
            ready_requires_store: true,
        })),
        ..RegistryConfig::default()
    })
}

fn ids(r: &Registry) -> Vec<String> {
    r.instances("orders")
        .map(|v| v.into_iter().map(|i| i.spec.id).collect())
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn etcd_view_removes_a_lone_vanish_after_it_settles() {
    let r = etcd_view(0.5, Duration::from_secs(10));
    let mut rx = r.watch("orders");
    for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
        r.apply_put("orders", spec(id, 1 + i as u16), 7);
    }
    assert_eq!(rx.borrow_and_update().len(), 4);
    let t0 = Instant::now();
    r.apply_vanish("orders", "a", t0);
    assert!(
        r.settle(t0).evicted.is_empty(),
        "still served while the burst settles"
    );
    assert_eq!(ids(&r), ["a", "b", "c", "d"]);
    let sweep = r.settle(t0 + SETTLE);
    assert_eq!(sweep.evicted, [("orders".to_owned(), "a".to_owned())]);
    assert_eq!(rx.borrow_and_update().len(), 3, "published");
    assert!(!r.ready(), "ready_requires_store and the watch is not up");
}

#[tokio::test(start_paused = true)]
async fn etcd_view_holds_a_mass_vanish_for_one_eviction_interval() {
    let window = Duration::from_secs(10);
    let r = etcd_view(0.5, window);
    for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
        r.apply_put("orders", spec(id, 1 + i as u16), 7);
    }
    let t0 = Instant::now();
    for id in ["a", "b", "c"] {
        r.apply_vanish("orders", id, t0);
    }
    let sweep = r.settle(t0 + SETTLE);
    assert_eq!(sweep.preserved, ["orders"]);
    assert!(r.services()[0].self_preservation);
    assert_eq!(
        ids(&r),
        ["a", "b", "c", "d"],
        "held instances are still served"
    );
    // One comes back during the hold.
    r.apply_put("orders", spec("b", 2), 8);
    let sweep = r.settle(t0 + SETTLE + window);
    assert_eq!(sweep.evicted.len(), 2, "{sweep:?}");
    assert_eq!(ids(&r), ["b", "d"]);
    assert!(!r.services()[0].self_preservation);
}

#[tokio::test(start_paused = true)]
async fn etcd_view_deregisters_are_not_vanishes() {
    let r = etcd_view(0.5, Duration::from_secs(10));
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        r.apply_put("orders", spec(id, 1 + i as u16), 7);
    }
    for id in ["a", "b", "c"] {
        r.apply_deregister("orders", id);
    }
    assert!(ids(&r).is_empty());
    assert!(!r.services()[0].self_preservation);
    let mut rx = r.watch("orders");
    // A full re-read repeating the view publishes nothing.
    r.apply_put("orders", spec("e", 5), 9);
    rx.borrow_and_update();
    r.apply_put("orders", spec("e", 5), 9);
    assert!(!rx.has_changed().unwrap_or(true));
}

#[tokio::test(start_paused = true)]
async fn register_renew_deregister_publish_endpoint_sets() {
    let r = registry(0.5);
    let mut rx = r.watch("orders");
    assert!(rx.borrow_and_update().is_empty());
    assert_eq!(r.register("orders", spec("a", 1)), Ok(true));
    assert_eq!(
        r.register("orders", spec("a", 2)),
        Ok(false),
        "re-register replaces"
    );
    assert!(rx.has_changed().expect("registry alive"));
    assert_eq!(rx.borrow_and_update()[0].addr.port(), 2);
    r.renew("orders", "a").expect("known instance");
    assert_eq!(
        r.renew("billing", "a"),
        Err(RegistryError::UnknownService {
            service: "billing".into()
        })
    );
    assert!(matches!(
        r.renew("orders", "zz"),
        Err(RegistryError::UnknownInstance { .. })
    ));
    r.deregister("orders", "a").expect("known instance");
    assert!(rx.borrow_and_update().is_empty());
    assert_eq!(r.services()[0].instances, 0);
}

#[test]
fn bad_names_and_ports_are_rejected() {
    let r = registry(0.5);
    assert!(matches!(
        r.register("", spec("a", 1)),
        Err(RegistryError::Invalid {
            field: "service",
            ..
        })
    ));
    assert!(matches!(
        r.register("s", spec("a/b", 1)),
        Err(RegistryError::Invalid { field: "id", .. })
    ));
    assert!(matches!(
        r.register("s", spec("a", 0)),
        Err(RegistryError::Invalid { field: "port", .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_lapsed_lease_is_evicted_and_renewed_ones_stay() {
    let r = registry(0.5);
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        r.register("s", spec(id, 10 + i as u16)).expect("valid");
    }
    let rx = r.watch("s");
    let sweeper = r.spawn_evictions();
    // a and b heartbeat every 3 s; c goes silent.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        r.renew("s", "a").expect("alive");
        r.renew("s", "b").expect("alive");
    }
    let ids: Vec<String> = rx.borrow().iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids, ["a", "b"], "c lapsed after 9 s without renewal");
    sweeper.abort();
}

#[tokio::test(start_paused = true)]
async fn mass_expiry_triggers_self_preservation() {
    let r = registry(0.5);
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        r.register("s", spec(id, 10 + i as u16)).expect("valid");
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    // All three lapse at once: 3/3 > 0.5, so they are kept.
    let sweep = r.sweep(Instant::now());
    assert_eq!(sweep.preserved, ["s"]);
    assert!(sweep.evicted.is_empty());
    assert_eq!(r.instances("s").expect("known").len(), 3);
    assert!(r.services()[0].self_preservation);

    // Two come back; the last one alone is now a normal expiry (1/3 ≤ 0.5).
    r.renew("s", "a").expect("alive");
    r.renew("s", "b").expect("alive");
    let sweep = r.sweep(Instant::now());
    assert_eq!(sweep.evicted, [("s".to_string(), "c".to_string())]);
    assert!(!r.services()[0].self_preservation);
}

#[tokio::test(start_paused = true)]
async fn instances_lapsing_within_one_window_are_judged_together() {
    let r = registry(0.5);
    r.register("s", spec("a", 1)).expect("valid");
    tokio::time::advance(Duration::from_millis(500)).await;
    r.register("s", spec("b", 2)).expect("valid");
    r.register("s", spec("c", 3)).expect("valid");
    // a lapsed, b and c lapse before the next sweep (1 s): 3 of 3 in one window.
    tokio::time::advance(Duration::from_millis(8600)).await;
    let sweep = r.sweep(Instant::now());
    assert_eq!(sweep.preserved, ["s"]);
    assert_eq!(r.instances("s").expect("known").len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_lone_silent_instance_expires_normally() {
    let r = registry(0.5);
    r.register("lone", spec("x", 3)).expect("valid");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(r.sweep(Instant::now()).evicted.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn share_of_one_disables_self_preservation_and_lone_instances_expire() {
    let r = registry(1.0);
    r.register("s", spec("a", 1)).expect("valid");
    r.register("s", spec("b", 2)).expect("valid");
    r.register("lone", spec("x", 3)).expect("valid");
    tokio::time::advance(Duration::from_secs(10)).await;
    let sweep = r.sweep(Instant::now());
    assert_eq!(sweep.evicted.len(), 3);
    assert!(sweep.preserved.is_empty());
}
