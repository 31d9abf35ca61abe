//! A runaway plugin must not stall its worker: with one worker, plain requests are served while
//! plugins compute until their deadlines, and each deadline counts its plugin's own running
//! time, not the time it waited while the worker served others.

use std::time::{Duration, Instant};

use super::guests::{self, TempDir};
use crate::support::{self, origin, Got};

const RUNAWAYS: usize = 4;
const DEADLINE: Duration = Duration::from_millis(400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_plugins_do_not_stall_a_plain_route_on_their_worker() {
    let o = origin::start(|_req| async { origin::text(200, "origin") }).await;
    let dir = TempDir::new("fair-plugins");
    std::fs::write(dir.join("kit.wasm"), guests::bytes("test-kit")).expect("write");
    let cache = guests::workspace().join("target/guests/artifact-cache");
    let gw = support::gateway(&format!(
        r#"
[listen]
public = "127.0.0.1:0"
admin = "127.0.0.1:0"
workers = 1

[plugins]
dir = {dir:?}
cache_dir = {cache:?}
deadline = "{deadline}ms"
max_instances = 16

[[services]]
name = "o"
endpoints = ["{origin}"]

[[routes]]
name = "loop"
service = "o"
match = {{ prefix = "/loop" }}
plugins = [{{ name = "kit", config = {{ mode = "loop" }} }}]

[[routes]]
name = "ok"
service = "o"
match = {{ prefix = "/ok" }}
"#,
        dir = dir.0.display().to_string(),
        cache = cache.display().to_string(),
        deadline = DEADLINE.as_millis(),
        origin = o.addr,
    ))
    .await;
    let url = |path: &str| format!("http://{}{path}", gw.public_addr);

    let mut unloaded = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(support::get(&url("/ok"), &[]).await.status, 200);
        unloaded = unloaded.max(t.elapsed());
    }

    let started = Instant::now();
    let runaways: Vec<_> = (0..RUNAWAYS)
        .map(|_| {
            let url = url("/loop");
            tokio::spawn(async move {
                let got: Got = support::get(&url, &[]).await;
                (got, Instant::now())
            })
        })
        .collect();
    // Plain requests on the same (only) worker while the runaways compute.
    let mut plain: Vec<(Duration, Instant)> = Vec::new();
    while !runaways.iter().all(|r| r.is_finished()) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "runaway plugins never ended"
        );
        let t = Instant::now();
        let got = support::get(&url("/ok"), &[]).await;
        assert_eq!(got.status, 200, "{}", got.text());
        plain.push((t.elapsed(), Instant::now()));
    }
    let mut first_end = None::<Instant>;
    let mut last_end = started;
    for runaway in runaways {
        let (got, ended) = runaway.await.expect("task");
        assert_eq!(got.status, 503, "{}", got.text());
        assert_eq!(got.json()["kind"], "deadline");
        first_end = Some(first_end.map_or(ended, |f| f.min(ended)));
        last_end = last_end.max(ended);
    }
    let first_end = first_end.expect("runaways ran");
    let during: Vec<Duration> = plain
        .iter()
        .filter(|(_, done)| *done < first_end)
        .map(|(took, _)| *took)
        .collect();
    let worst = during.iter().max().copied().unwrap_or_default();
    eprintln!(
        "unloaded plain max {unloaded:?}; {} plain requests during {RUNAWAYS} runaways, worst {worst:?}; runaways ended after {:?}..{:?}",
        during.len(),
        first_end - started,
        last_end - started,
    );
    // Without yielding, the worker runs one runaway to its deadline before anything else,
    // so no plain request could finish in less than a deadline.
    assert!(
        during.len() >= 3,
        "plain requests must be served while runaways run: {} were",
        during.len()
    );
    assert!(
        worst < DEADLINE,
        "a plain request waited {worst:?}, as long as a runaway's deadline ({DEADLINE:?})"
    );
    // One thread cannot give each runaway its deadline of CPU in less than their sum: a
    // deadline counting wall time would have ended them all after about one deadline.
    assert!(
        last_end - started >= DEADLINE * RUNAWAYS as u32 / 2,
        "the runaways shared one worker yet all ended within {:?}",
        last_end - started
    );
    gw.shutdown().await;
}
