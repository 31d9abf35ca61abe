//! `services.max_requests_per_endpoint`: an endpoint at its cap of in-flight requests gets no
//! more; the next one with room takes them, and with none left the request gets a fast 503.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::gateway::RunningGateway;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::support::{self, origin, Got};

/// An origin that holds every request until released, counting the ones that arrived; a
/// request with `x-fail` is answered 500 at once instead (counted apart).
struct Held {
    origin: origin::Origin,
    arrived: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
}

impl Held {
    async fn start(name: &'static str) -> Self {
        let arrived = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let (release, released) = watch::channel(false);
        let origin = origin::start({
            let (arrived, failed) = (Arc::clone(&arrived), Arc::clone(&failed));
            move |req| {
                let fail = req.headers().contains_key("x-fail");
                if fail {
                    failed.fetch_add(1, Ordering::SeqCst);
                } else {
                    arrived.fetch_add(1, Ordering::SeqCst);
                }
                let mut released = released.clone();
                async move {
                    if fail {
                        return origin::text(500, "failed");
                    }
                    // Err: the test ended and dropped the sender; answer anyway.
                    let _ = released.wait_for(|r| *r).await;
                    origin::text(200, name)
                }
            }
        })
        .await;
        Held {
            origin,
            arrived,
            failed,
            release,
        }
    }

    fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    fn release(&self) {
        self.release.send_replace(true);
    }
}

async fn gateway(endpoints: &[&Held], extra: &str) -> RunningGateway {
    let list: Vec<String> = endpoints
        .iter()
        .map(|h| format!("\"{}\"", h.origin.addr))
        .collect();
    support::gateway(&format!(
        "[[services]]\nname = \"api\"\nendpoints = [{}]\nmax_requests_per_endpoint = 2\n{extra}\n\
         [[routes]]\nname = \"all\"\nservice = \"api\"\nmatch = {{ prefix = \"/\" }}\n",
        list.join(", ")
    ))
    .await
}

/// Sends a GET in the background (its own connection), with `key` as `x-key`.
fn spawn_get(gw: &RunningGateway, key: &'static str) -> JoinHandle<Got> {
    let url = format!("http://{}/work", gw.public_addr);
    tokio::spawn(async move { support::get(&url, &[("x-key", key)]).await })
}

async fn wait_arrived(held: &Held, n: usize) {
    support::eventually(
        &format!("{n} requests held at the origin"),
        Duration::from_secs(10),
        async || held.arrived() >= n,
    )
    .await;
}

fn assert_saturated(got: &Got) {
    assert_eq!(got.status, 503, "{}", got.text());
    assert_eq!(got.headers["x-gatehouse-failure"], "overloaded");
    let body = got.json();
    assert_eq!(body["error"], "endpoints_saturated", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_requests_per_endpoint")),
        "{body}"
    );
}

#[tokio::test]
async fn third_request_to_a_full_endpoint_gets_a_fast_503_then_requests_flow_again() {
    let held = Held::start("a").await;
    let gw = gateway(&[&held], "").await;
    let first = spawn_get(&gw, "k");
    let second = spawn_get(&gw, "k");
    wait_arrived(&held, 2).await;

    let url = format!("http://{}/work", gw.public_addr);
    let start = Instant::now();
    let third = tokio::time::timeout(Duration::from_secs(5), support::get(&url, &[]))
        .await
        .expect("the refusal does not wait for room");
    assert_saturated(&third);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "refused at once, took {:?}",
        start.elapsed()
    );
    // Answered while the first two are still held, and never sent.
    assert!(!first.is_finished() && !second.is_finished());
    assert_eq!(
        held.arrived(),
        2,
        "the origin saw only the two under the cap"
    );

    held.release();
    for h in [first, second] {
        let got = h.await.expect("held request ends");
        assert_eq!(got.status, 200, "{}", got.text());
    }
    let after = support::get(&url, &[]).await;
    assert_eq!(
        after.status,
        200,
        "room again after release: {}",
        after.text()
    );
    assert_eq!(held.arrived(), 3);
}

#[tokio::test]
async fn a_hot_hash_key_spills_to_the_other_endpoint_then_gets_503() {
    let (a, b) = (Held::start("a").await, Held::start("b").await);
    let gw = gateway(&[&a, &b], "balance = \"hash\"\nhash_key = \"header:x-key\"").await;
    // Every request carries the same key: its home endpoint takes two, the third goes to
    // the other endpoint instead of piling onto the home one.
    let mut pending = vec![spawn_get(&gw, "hot"), spawn_get(&gw, "hot")];
    support::eventually("two at one endpoint", Duration::from_secs(10), async || {
        a.arrived() + b.arrived() >= 2
    })
    .await;
    let (home, other) = if a.arrived() == 2 { (&a, &b) } else { (&b, &a) };
    assert_eq!(
        (home.arrived(), other.arrived()),
        (2, 0),
        "one key, one home"
    );

    pending.push(spawn_get(&gw, "hot"));
    wait_arrived(other, 1).await;
    pending.push(spawn_get(&gw, "hot"));
    wait_arrived(other, 2).await;
    assert_eq!(home.arrived(), 2, "the home endpoint stayed at its cap");

    // Both full: refused at once.
    let url = format!("http://{}/work", gw.public_addr);
    let fifth = tokio::time::timeout(
        Duration::from_secs(5),
        support::get(&url, &[("x-key", "hot")]),
    )
    .await
    .expect("the refusal does not wait for room");
    assert_saturated(&fifth);
    assert_eq!(a.arrived() + b.arrived(), 4);
    assert!(pending.iter().all(|h| !h.is_finished()));

    a.release();
    b.release();
    for h in pending {
        let got = h.await.expect("held request ends");
        assert_eq!(got.status, 200, "{}", got.text());
    }
    let after = support::get(&url, &[("x-key", "hot")]).await;
    assert_eq!(after.status, 200, "{}", after.text());
}

#[tokio::test]
async fn round_robin_skips_the_full_endpoint() {
    let (a, b) = (Held::start("a").await, Held::start("b").await);
    // b answers at once; a holds. Round-robin alone would send every other request to a.
    b.release();
    let gw = gateway(&[&a, &b], "").await;
    let url = format!("http://{}/work", gw.public_addr);
    // One request at a time until a holds two: those that went to b have finished, so
    // only a's two stay in flight.
    let mut pending = Vec::new();
    while a.arrived() < 2 {
        let at_a = a.arrived();
        let h = spawn_get(&gw, "k");
        support::eventually("the request lands", Duration::from_secs(10), async || {
            a.arrived() > at_a || h.is_finished()
        })
        .await;
        if h.is_finished() {
            let got = h.await.expect("request ends");
            assert_eq!(got.text(), "b", "{}", got.text());
        } else {
            pending.push(h);
        }
    }
    let before_b = b.arrived();
    for _ in 0..6 {
        let got = support::get(&url, &[]).await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.text(), "b", "the full endpoint is skipped");
    }
    assert_eq!(a.arrived(), 2, "a never got more than its cap");
    assert_eq!(b.arrived(), before_b + 6);
    a.release();
    for h in pending {
        assert_eq!(h.await.expect("request ends").status, 200);
    }
}

#[tokio::test]
async fn a_retry_that_finds_every_endpoint_full_answers_the_failed_try() {
    let (a, b) = (Held::start("a").await, Held::start("b").await);
    let gw = gateway(
        &[&a, &b],
        "[services.retry]\nmax_retries = 1\non = [\"5xx\"]\nbackoff = \"2s\"\n\
         budget_min_per_sec = 100",
    )
    .await;
    // Three held requests, one at a time: one endpoint full (2), the other with room for one.
    let mut pending = Vec::new();
    for n in 1..=3 {
        pending.push(spawn_get(&gw, "k"));
        support::eventually("the request is held", Duration::from_secs(10), async || {
            a.arrived() + b.arrived() >= n
        })
        .await;
    }
    let (full, half) = if a.arrived() == 2 { (&a, &b) } else { (&b, &a) };
    assert_eq!((full.arrived(), half.arrived()), (2, 1));

    // A failing request takes the last slot, gets a 500, and backs off (1-3 s) before its
    // retry; meanwhile a held request takes the slot it freed.
    let url = format!("http://{}/work", gw.public_addr);
    let failing = tokio::spawn(async move { support::get(&url, &[("x-fail", "1")]).await });
    support::eventually("the failing try", Duration::from_secs(10), async || {
        half.failed() == 1
    })
    .await;
    pending.push(spawn_get(&gw, "k"));
    wait_arrived(half, 2).await;
    assert!(!failing.is_finished(), "still backing off");

    // The retry finds both endpoints full: no wait, no spin, the failed try is the answer.
    let got = tokio::time::timeout(Duration::from_secs(10), failing)
        .await
        .expect("the retry gives up at once")
        .expect("request task");
    assert_eq!(got.status, 500, "{}", got.text());
    assert_eq!(got.text(), "failed");
    assert_eq!(a.failed() + b.failed(), 1, "the retry was never sent");
    assert!(pending.iter().all(|h| !h.is_finished()));
    a.release();
    b.release();
    for h in pending {
        assert_eq!(h.await.expect("request ends").status, 200);
    }
}
