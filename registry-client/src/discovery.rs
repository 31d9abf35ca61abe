//! Client-side discovery: follow one service's instances with blocking queries, keep the
//! last list through registry outages, and balance over it (round robin, skipping instances
//! the caller marked failed).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::transport::Transport;
use crate::{ClientError, Instance};

/// What discovery knows of the service at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The registry's change index of this list (0 before the first answer).
    pub index: u64,
    /// The instances, in the registry's order (by id).
    pub instances: Arc<[Instance]>,
    /// Whether the list has been fetched at least once.
    pub loaded: bool,
    /// Whether the last query failed: the list is the cached one, kept while the registry is
    /// unreachable.
    pub stale: bool,
}

/// Settings of a [`Discovery`]; [`Discovery::builder`] makes one.
#[derive(Debug, Clone)]
pub struct DiscoveryBuilder {
    registries: Vec<SocketAddr>,
    service: String,
    token: Option<String>,
    wait: Duration,
    failure_cooldown: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
}

impl DiscoveryBuilder {
    /// The admin token, when the registry's admin listener has one (reads need it then).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Another gateway serving the same registry (an etcd-backed cluster): tried in turn when
    /// the current one fails.
    pub fn fallback(mut self, registry: SocketAddr) -> Self {
        self.registries.push(registry);
        self
    }

    /// How long one blocking query may be held (default 60 s; the registry cuts it to its
    /// `max_wait`). Shorter means more requests while nothing changes, not faster updates.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// How long [`Discovery::mark_failed`] keeps an instance out of picks (default 10 s).
    pub fn failure_cooldown(mut self, cooldown: Duration) -> Self {
        self.failure_cooldown = cooldown;
        self
    }

    /// Retry delays after a failed query: `min`, doubled per failure, capped at `max`
    /// (defaults 100 ms and 10 s).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// Starts following the service in a background task (on the current tokio runtime),
    /// which ends when the last clone of the [`Discovery`] is dropped.
    pub fn start(self) -> Discovery {
        let (tx, _) = watch::channel(Snapshot::default());
        let shared = Arc::new(Shared {
            service: self.service.clone(),
            snapshot: tx,
            next: AtomicUsize::new(0),
            failed: Mutex::new(HashMap::new()),
            failure_cooldown: self.failure_cooldown,
            last_error: Mutex::new(String::from("no answer yet")),
        });
        let task = tokio::spawn(follow(Arc::clone(&shared), self));
        Discovery {
            inner: Arc::new(Inner { shared, task }),
        }
    }
}

/// Follows one service's instances and picks among them. Cheap to clone; the watch stops
/// when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct Shared {
    service: String,
    snapshot: watch::Sender<Snapshot>,
    /// Round-robin position.
    next: AtomicUsize,
    /// Instance id → until when it is skipped.
    failed: Mutex<HashMap<String, Instant>>,
    failure_cooldown: Duration,
    last_error: Mutex<String>,
}

impl Discovery {
    /// Discovery of `service` through the registry on the gateway admin listener `registry`.
    pub fn builder(registry: SocketAddr, service: impl Into<String>) -> DiscoveryBuilder {
        DiscoveryBuilder {
            registries: vec![registry],
            service: service.into(),
            token: None,
            wait: Duration::from_secs(60),
            failure_cooldown: Duration::from_secs(10),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }

    /// The service followed.
    pub fn service(&self) -> &str {
        &self.inner.shared.service
    }

    /// Waits until the first list arrived (it may be empty), at most `timeout`.
    pub async fn ready(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut rx = self.subscribe();
        let loaded = tokio::time::timeout(timeout, rx.wait_for(|s| s.loaded))
            .await
            .map(|r| r.map(drop));
        match loaded {
            Ok(Ok(())) => Ok(()),
            // Err inside: the task ended, which only an abort does; report like a timeout.
            Ok(Err(_)) | Err(_) => Err(ClientError::NotReady {
                service: self.service().to_owned(),
                last_error: lock(&self.inner.shared.last_error).clone(),
            }),
        }
    }

    /// What is known now.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.shared.snapshot.borrow().clone()
    }

    /// The current instances (the cached ones while the registry is unreachable).
    pub fn instances(&self) -> Arc<[Instance]> {
        Arc::clone(&self.inner.shared.snapshot.borrow().instances)
    }

    /// A receiver that sees every new snapshot (changed instances, stale or fresh again).
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.inner.shared.snapshot.subscribe()
    }

    /// The next instance in round-robin order, skipping those marked failed within the
    /// cooldown; when every instance is marked, one of them anyway (a call that may work
    /// beats none). `None` only when the service has no instance.
    pub fn pick(&self) -> Option<Instance> {
        let shared = &self.inner.shared;
        let instances = Arc::clone(&shared.snapshot.borrow().instances);
        let n = instances.len();
        if n == 0 {
            return None;
        }
        let start = shared.next.fetch_add(1, Ordering::Relaxed);
        let failed = lock(&shared.failed);
        let now = Instant::now();
        let usable = (0..n)
            .map(|k| &instances[(start + k) % n])
            .find(|i| failed.get(&i.id).is_none_or(|until| *until <= now));
        Some(usable.unwrap_or(&instances[start % n]).clone())
    }

    /// Keeps `instance` out of [`pick`](Self::pick) for the failure cooldown (call it when a
    /// call to it failed to connect or timed out).
    pub fn mark_failed(&self, instance: &Instance) {
        let shared = &self.inner.shared;
        let now = Instant::now();
        let mut failed = lock(&shared.failed);
        failed.retain(|_, until| *until > now);
        failed.insert(instance.id.clone(), now + shared.failure_cooldown);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing here can leave the data half-updated: a poisoned lock still guards valid data.
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// `GET /registry/services/{name}/instances` as the registry answers it.
#[derive(Deserialize)]
struct Listing {
    index: u64,
    instances: Vec<Instance>,
}

/// The watch loop: one blocking query at a time; on failure keep the list, back off, try the
/// next registry, and start over with a plain fetch.
async fn follow(shared: Arc<Shared>, cfg: DiscoveryBuilder) {
    let transports: Vec<Transport> = cfg.registries.iter().map(|r| Transport::new(*r)).collect();
    let service = &shared.service;
    let what = format!("watch {service}");
    let mut current = 0;
    let mut index: Option<u64> = None;
    let mut failures: u32 = 0;
    let wait_ms = cfg.wait.as_millis().max(1);
    // The registry holds a query up to `wait`; allow for its answer on top.
    let timeout = cfg.wait + cfg.wait / 8 + Duration::from_secs(10);
    loop {
        let transport = &transports[current];
        let path = match index {
            None => format!("/registry/services/{service}/instances"),
            Some(i) => format!("/registry/services/{service}/instances?index={i}&wait={wait_ms}ms"),
        };
        let answer = transport
            .call(
                &what,
                Method::GET,
                &path,
                cfg.token.as_deref(),
                Bytes::new(),
                timeout,
            )
            .await
            .and_then(|a| {
                serde_json::from_slice::<Listing>(&a.body).map_err(|e| ClientError::BadAnswer {
                    registry: transport.registry,
                    what: what.clone(),
                    reason: e.to_string(),
                })
            });
        match answer {
            Ok(listing) => {
                if failures > 0 {
                    tracing::info!(%service, registry = %transport.registry, "registry reachable again");
                }
                failures = 0;
                index = Some(listing.index);
                shared.snapshot.send_if_modified(|s| {
                    let changed = !s.loaded
                        || s.stale
                        || s.index != listing.index
                        || *s.instances != *listing.instances;
                    if changed {
                        tracing::debug!(%service, index = listing.index, instances = listing.instances.len(), "discovered instances");
                        *s = Snapshot {
                            index: listing.index,
                            instances: listing.instances.into(),
                            loaded: true,
                            stale: false,
                        };
                    }
                    changed
                });
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(%service, %error, "registry query failed; serving the cached instances and retrying");
                } else {
                    tracing::debug!(%service, %error, failures, "registry query failed again");
                }
                *lock(&shared.last_error) = error.to_string();
                shared
                    .snapshot
                    .send_if_modified(|s| !std::mem::replace(&mut s.stale, true));
                // Another registry (or this one restarted) numbers changes differently.
                index = None;
                current = (current + 1) % transports.len();
                let shift = (failures - 1).min(16);
                let delay = cfg
                    .min_backoff
                    .saturating_mul(1 << shift)
                    .min(cfg.max_backoff);
                tokio::time::sleep(delay).await;
            }
        }
    }
}
