//! Background client load: workers that send GETs in a loop until stopped, keeping every
//! status, for tests that change a gateway's upstreams while traffic flows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::{eventually, http1, send};

/// How long `wait_for` waits for the load to make progress.
const PROGRESS_DEADLINE: Duration = Duration::from_secs(10);

/// Client loops sending GETs with fixed headers until stopped; every status is kept.
pub struct Load {
    stop: Arc<AtomicBool>,
    statuses: Arc<Mutex<Vec<u16>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `workers` clients, each with its own keep-alive pool, sending GETs to `url`.
    pub fn start(
        url: String,
        headers: &'static [(&'static str, &'static str)],
        workers: usize,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let statuses: Arc<Mutex<Vec<u16>>> = Arc::default();
        let tasks = (0..workers)
            .map(|_| {
                let (stop, statuses, url) = (stop.clone(), statuses.clone(), url.clone());
                tokio::spawn(async move {
                    let client = http1();
                    while !stop.load(Ordering::SeqCst) {
                        let got = send(&client, "GET", &url, headers, Bytes::new()).await;
                        statuses.lock().expect("statuses lock").push(got.status);
                    }
                })
            })
            .collect();
        Load {
            stop,
            statuses,
            tasks,
        }
    }

    /// How many requests have been answered so far.
    pub fn count(&self) -> usize {
        self.statuses.lock().expect("statuses lock").len()
    }

    /// Waits until `more` requests have been answered since the call.
    pub async fn wait_for(&self, more: usize) {
        let target = self.count() + more;
        eventually("load makes progress", PROGRESS_DEADLINE, async || {
            self.count() >= target
        })
        .await;
    }

    /// Stops the load; returns every status in the order the answers came.
    pub async fn finish(self) -> Vec<u16> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("load worker");
        }
        Arc::try_unwrap(self.statuses)
            .map(|m| m.into_inner().expect("statuses lock"))
            .unwrap_or_default()
    }

    /// Stops the load; asserts every request got 200 and returns how many were sent.
    pub async fn finish_all_ok(self) -> usize {
        let statuses = self.finish().await;
        assert_all_ok(&statuses);
        statuses.len()
    }
}

/// Asserts every status is 200, naming the others.
pub fn assert_all_ok(statuses: &[u16]) {
    let bad: Vec<_> = statuses.iter().filter(|&&s| s != 200).collect();
    assert!(
        bad.is_empty(),
        "{} of {} requests failed: {bad:?}",
        bad.len(),
        statuses.len()
    );
}
