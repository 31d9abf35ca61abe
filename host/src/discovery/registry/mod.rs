//! The built-in service registry (Eureka-style): instances register, renew a lease by
//! heartbeat and deregister; lapsed leases are evicted, except under self-preservation.
//!
//! Where instances live is `store`: in this process (the default), or in etcd
//! (`etcd_store`), shared by every gateway. Either way the request path and the API's reads
//! use this in-memory view; with etcd, a watcher applies etcd's changes to it.

mod api;
mod client;
mod etcd_store;
mod watch;

pub use api::handle;
pub use client::{ClientError, Registration, RegistryClient};
pub use etcd_store::{EtcdRegistry, DEFAULT_KEY_PREFIX};
pub use watch::{ServiceView, WatchError};

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch as channel;
use tokio::time::Instant;

use super::{Endpoint, EndpointMeta, EndpointSet};

/// `[registry]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    /// Bearer token required by write calls. `None`: writes are refused (403).
    pub token: Option<String>,
    /// A lease lapses this long after the last renewal. Default 90 s (Eureka).
    pub lease: Duration,
    /// The renewal interval clients are told to use. Default 30 s (Eureka).
    pub heartbeat: Duration,
    /// How often lapsed leases are swept; also the self-preservation window. Default 30 s.
    pub eviction_interval: Duration,
    /// Self-preservation: when more than this share of a service's instances would lapse in
    /// one sweep (and more than one instance), none are evicted and a warning is logged.
    /// 1.0 disables it. Default 0.5.
    pub self_preservation_share: f64,
    /// Blocking queries (watches) held open at once; past it a watch gets a 503. Default 4096.
    pub max_watches: usize,
    /// The longest a blocking query is held; longer `wait`s are cut to it. Default 5 min.
    pub max_wait: Duration,
    /// Where instances live.
    pub store: RegistryStore,
}

/// `[registry] store`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RegistryStore {
    /// In this process: each gateway has its own registry.
    #[default]
    Memory,
    /// In etcd, shared by every gateway that uses the same etcd and key prefix.
    Etcd(Box<EtcdRegistry>),
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            token: None,
            lease: Duration::from_secs(90),
            heartbeat: Duration::from_secs(30),
            eviction_interval: Duration::from_secs(30),
            self_preservation_share: 0.5,
            store: RegistryStore::Memory,
            max_watches: 4096,
            max_wait: Duration::from_secs(300),
        }
    }
}

/// Errors of registry operations; the API maps each to a 4xx.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("unknown service \"{service}\"")]
    UnknownService { service: String },
    #[error("service \"{service}\" has no instance \"{id}\"")]
    UnknownInstance { service: String, id: String },
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// The shared store (etcd) did not answer; the API answers 503.
    #[error("the registry store is unavailable: {reason}")]
    StoreUnavailable { reason: String },
}

/// What an instance registers with.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSpec {
    pub id: String,
    pub address: IpAddr,
    pub port: u16,
    pub meta: EndpointMeta,
}

/// An instance as the registry lists it.
#[derive(Debug, Clone)]
pub struct Instance {
    pub spec: InstanceSpec,
    /// In memory: the last renewal. In etcd: when this gateway last saw the key written.
    pub last_renewal: Instant,
    /// The etcd lease the instance's key is attached to (0 in memory).
    pub lease: i64,
}

/// Numbers every published change, registry-wide: a service's change index is the clock's
/// value at its last publish, so it only grows, even if a store drops and re-creates the
/// service. Blocking queries compare against it.
#[derive(Debug)]
struct ChangeClock {
    last: AtomicU64,
    /// Ticks when a service is published for the first time: what watches of a service that
    /// does not exist yet wait on (they hold no entry, so reads cannot create services).
    first_publish: channel::Sender<()>,
}

impl ChangeClock {
    fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
            first_publish: channel::channel(()).0,
        }
    }
}

/// A service's entry: its instances and the channel its backend pools (and blocking queries)
/// follow.
#[derive(Debug)]
struct ServiceEntry {
    instances: BTreeMap<String, Instance>,
    tx: channel::Sender<EndpointSet>,
    preserving: bool,
    /// etcd store: keys that vanished (lease expiry, not a deregister), still served until
    /// `settle` decides, by when they vanished.
    vanished: BTreeMap<String, Instant>,
    /// etcd store: when recent vanishes happened, for the self-preservation share.
    recent_vanishes: Vec<Instant>,
    /// etcd store: vanished instances kept by self-preservation, until when.
    held: BTreeMap<String, Instant>,
    /// The change index of the set last published; 0 = never published.
    index: u64,
}

impl ServiceEntry {
    fn new() -> Self {
        Self {
            instances: BTreeMap::new(),
            tx: channel::channel(EndpointSet::from(Vec::new())).0,
            preserving: false,
            vanished: BTreeMap::new(),
            recent_vanishes: Vec::new(),
            held: BTreeMap::new(),
            index: 0,
        }
    }

    /// Publishes the instance set to the backend pools and bumps the change index, which wakes
    /// blocking queries. Every store applies its changes through here (the in-memory calls
    /// below, an external store's events), so watches work whatever the store.
    fn publish(&mut self, clock: &ChangeClock) {
        let first = self.index == 0;
        self.index = clock.last.fetch_add(1, Ordering::Relaxed) + 1;
        if first {
            clock.first_publish.send_replace(());
        }
        let set: EndpointSet = self
            .instances
            .values()
            .map(|i| Endpoint {
                id: Arc::from(i.spec.id.as_str()),
                addr: SocketAddr::new(i.spec.address, i.spec.port),
                meta: i.spec.meta.clone(),
            })
            .collect();
        // send_replace: publish even when nobody watches yet, so a later watcher sees it.
        self.tx.send_replace(set);
    }
}

/// A summary row of `GET /registry/services`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSummary {
    pub name: String,
    pub instances: usize,
    pub self_preservation: bool,
}

/// What one eviction sweep did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// (service, instance id) evicted.
    pub evicted: Vec<(String, String)>,
    /// Services whose lapsed instances were kept by self-preservation.
    pub preserved: Vec<String>,
}

/// The in-memory registry. Writes take a short lock; the request path never does: it reads
/// the endpoint snapshots published on each service's watch channel.
#[derive(Debug)]
pub struct Registry {
    config: RegistryConfig,
    services: Mutex<BTreeMap<String, ServiceEntry>>,
    renewals: AtomicU64,
    expirations: AtomicU64,
    /// `Some` with `store = "etcd"`.
    etcd: Option<Arc<etcd_store::EtcdStore>>,
    clock: ChangeClock,
    /// Blocking queries held open now (`watch.rs`), against `config.max_watches`.
    watches: std::sync::atomic::AtomicUsize,
    /// Blocking queries refused with a 503 because `max_watches` were open.
    watches_refused: std::sync::atomic::AtomicU64,
    /// Set at shutdown: held blocking queries answer at once, new ones do not block.
    closing: channel::Sender<bool>,
}

/// Service names: 1–64 of `a-z A-Z 0-9 - _ .`; instance ids: 1–128, no `/` or whitespace.
fn check_name(field: &'static str, value: &str, max: usize) -> Result<(), RegistryError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if value.is_empty() || value.len() > max || !value.chars().all(ok_char) {
        return Err(RegistryError::Invalid {
            field,
            value: value.chars().take(80).collect(),
            reason: "expected 1 to 64/128 characters of letters, digits, '-', '_', '.', ':'",
        });
    }
    Ok(())
}

fn check_spec(service: &str, spec: &InstanceSpec) -> Result<(), RegistryError> {
    check_name("service", service, 64)?;
    check_name("id", &spec.id, 128)?;
    if spec.port == 0 {
        return Err(RegistryError::Invalid {
            field: "port",
            value: "0".into(),
            reason: "expected 1 to 65535",
        });
    }
    Ok(())
}

/// How long a vanished key is still served before `settle` judges its burst: etcd revokes
/// expired leases in batches about every 500 ms, so one burst arrives within this.
const SETTLE: Duration = Duration::from_millis(1000);

/// The etcd store's state, for `/metrics` and `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStatus {
    /// Whether the watch on etcd is established.
    pub up: bool,
    /// Whether `/readyz` reports not-ready while etcd is unreachable.
    pub ready_requires_store: bool,
    /// etcd events applied to the view.
    pub events: u64,
    /// Failed etcd calls (writes, reads, watches).
    pub errors: u64,
}

impl Registry {
    /// Registers through the configured store: in memory at once, or in etcd (the view
    /// follows through the watch). Returns whether the instance is new.
    pub async fn register_via_store(
        &self,
        service: &str,
        spec: InstanceSpec,
    ) -> Result<bool, RegistryError> {
        match &self.etcd {
            None => self.register(service, spec),
            Some(etcd) => {
                check_spec(service, &spec)?;
                let created = etcd.register(service, &spec, self.config.lease).await?;
                tracing::info!(%service, id = %spec.id, created, "registry: instance registered in etcd");
                Ok(created)
            }
        }
    }

    /// Renews a lease through the configured store (etcd: one lease keep-alive).
    pub async fn renew_via_store(&self, service: &str, id: &str) -> Result<(), RegistryError> {
        let Some(etcd) = &self.etcd else {
            return self.renew(service, id);
        };
        let known = self
            .lock()
            .get(service)
            .and_then(|e| e.instances.get(id).map(|i| i.lease));
        etcd.renew(service, id, known).await?;
        self.renewals.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Deregisters through the configured store (etcd: marks the key deregistered, then
    /// revokes its lease).
    pub async fn deregister_via_store(&self, service: &str, id: &str) -> Result<(), RegistryError> {
        let Some(etcd) = &self.etcd else {
            return self.deregister(service, id);
        };
        etcd.deregister(service, id).await?;
        tracing::info!(%service, %id, "registry: instance deregistered in etcd");
        Ok(())
    }

    /// `None` with the in-memory store.
    pub fn store_status(&self) -> Option<StoreStatus> {
        self.etcd.as_ref().map(|e| e.status())
    }

    /// Whether `/readyz` may say ready as far as the registry goes.
    pub fn ready(&self) -> bool {
        self.store_status()
            .is_none_or(|s| s.up || !s.ready_requires_store)
    }

    /// Starts the etcd watcher (with `store = "etcd"`) and waits (a connect and a call's
    /// budget) for its first full read, so a gateway starting beside running ones routes to
    /// their instances at once. When etcd is down it starts anyway and catches up later.
    pub async fn start_store(self: &Arc<Self>) {
        if let (Some(etcd), RegistryStore::Etcd(c)) = (&self.etcd, &self.config.store) {
            let wait = c.settings.connect_timeout + c.settings.timeout;
            let mut synced = etcd.spawn_watcher(Arc::downgrade(self));
            let first = tokio::time::timeout(wait, synced.wait_for(|s| *s)).await;
            if first.is_err() {
                tracing::warn!("registry: etcd not reachable at start; serving no registered instance until it is");
            }
        }
    }

    /// etcd view: an instance's key was written (a register or re-register).
    fn apply_put(&self, service: &str, spec: InstanceSpec, lease: i64) {
        let mut services = self.lock();
        let entry = services
            .entry(service.to_owned())
            .or_insert_with(ServiceEntry::new);
        entry.vanished.remove(&spec.id);
        if entry.held.remove(&spec.id).is_some() && entry.held.is_empty() {
            entry.preserving = false;
        }
        if entry
            .instances
            .get(&spec.id)
            .is_some_and(|i| i.spec == spec && i.lease == lease)
        {
            // A full re-read repeats what the view has: nothing to publish.
            return;
        }
        let id = spec.id.clone();
        entry.instances.insert(
            id,
            Instance {
                spec,
                last_renewal: Instant::now(),
                lease,
            },
        );
        entry.publish(&self.clock);
    }

    /// etcd view: an instance was deregistered: gone at once, self-preservation aside.
    fn apply_deregister(&self, service: &str, id: &str) {
        let mut services = self.lock();
        let Some(entry) = services.get_mut(service) else {
            return;
        };
        entry.vanished.remove(id);
        entry.held.remove(id);
        if entry.held.is_empty() {
            entry.preserving = false;
        }
        if entry.instances.remove(id).is_some() {
            entry.publish(&self.clock);
        }
    }

    /// etcd view: an instance's key vanished (its lease expired, or a full re-read no longer
    /// has it). It is still served until `settle` judges the burst it belongs to.
    fn apply_vanish(&self, service: &str, id: &str, now: Instant) {
        let mut services = self.lock();
        let Some(entry) = services.get_mut(service) else {
            return;
        };
        if !entry.instances.contains_key(id)
            || entry.held.contains_key(id)
            || entry.vanished.contains_key(id)
        {
            return;
        }
        entry.vanished.entry(id.to_owned()).or_insert(now);
        entry.recent_vanishes.push(now);
    }

    /// The (service, id) pairs the view holds from etcd, for a full re-read's diff.
    fn view_keys(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .flat_map(|(s, e)| e.instances.keys().map(move |id| (s.clone(), id.clone())))
            .collect()
    }

    /// etcd store: judges vanished keys once their burst has settled. When more than the
    /// self-preservation share of a service vanished within one `eviction_interval` (and
    /// more than one), they are held (still served) for one more `eviction_interval` and a
    /// warning is logged; otherwise they are removed. Held instances are removed once their
    /// time is up, unless they came back.
    pub fn settle(&self, now: Instant) -> Sweep {
        let mut sweep = Sweep::default();
        let window = self.config.eviction_interval;
        let share = self.config.self_preservation_share;
        for (name, entry) in self.lock().iter_mut() {
            let mut changed = false;
            entry
                .recent_vanishes
                .retain(|t| now.saturating_duration_since(*t) < window);
            let settled = entry
                .vanished
                .values()
                .min()
                .is_some_and(|first| now.saturating_duration_since(*first) >= SETTLE);
            if settled {
                let vanishing: Vec<String> = entry.vanished.keys().cloned().collect();
                entry.vanished.clear();
                let recent = entry.recent_vanishes.len();
                // The service's size at the window's start: what is left plus what vanished.
                let removed_earlier = recent.saturating_sub(vanishing.len());
                let total = entry.instances.len() + removed_earlier;
                let mass = entry.preserving || (recent > 1 && recent as f64 > share * total as f64);
                if mass {
                    if !entry.preserving {
                        tracing::warn!(
                            service = %name,
                            vanished = recent,
                            total,
                            "registry self-preservation: keeping instances whose etcd keys vanished together (mass expiry looks like a network blip)"
                        );
                    }
                    entry.preserving = true;
                    for id in vanishing {
                        entry.held.insert(id, now + window);
                    }
                    sweep.preserved.push(name.clone());
                } else {
                    for id in vanishing {
                        if entry.instances.remove(&id).is_some() {
                            tracing::warn!(service = %name, %id, "registry: etcd lease expired, instance removed");
                            self.expirations.fetch_add(1, Ordering::Relaxed);
                            sweep.evicted.push((name.clone(), id));
                            changed = true;
                        }
                    }
                }
            }
            let due: Vec<String> = entry
                .held
                .iter()
                .filter(|(_, until)| **until <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in due {
                entry.held.remove(&id);
                if entry.instances.remove(&id).is_some() {
                    tracing::warn!(service = %name, %id, "registry self-preservation: held instance did not come back, removed");
                    self.expirations.fetch_add(1, Ordering::Relaxed);
                    sweep.evicted.push((name.clone(), id));
                    changed = true;
                }
            }
            if entry.preserving && entry.held.is_empty() && entry.vanished.is_empty() {
                entry.preserving = false;
            }
            if changed {
                entry.publish(&self.clock);
            }
        }
        sweep
    }

    pub fn new(config: RegistryConfig) -> Arc<Self> {
        let etcd = match &config.store {
            RegistryStore::Memory => None,
            RegistryStore::Etcd(settings) => Some(Arc::new(etcd_store::EtcdStore::new(
                EtcdRegistry::clone(settings),
            ))),
        };
        Arc::new(Self {
            config,
            services: Mutex::new(BTreeMap::new()),
            renewals: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
            etcd,
            clock: ChangeClock::new(),
            watches: std::sync::atomic::AtomicUsize::new(0),
            watches_refused: std::sync::atomic::AtomicU64::new(0),
            closing: channel::channel(false).0,
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Lease renewals and lease expirations (evictions) so far, for `/metrics`.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.renewals.load(Ordering::Relaxed),
            self.expirations.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ServiceEntry>> {
        // Every critical section leaves the map consistent before it can panic (allocations
        // aside), so a poisoned lock still guards valid data.
        self.services
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Registers or re-registers (same id: replaced, lease renewed). Returns whether the
    /// instance is new.
    pub fn register(&self, service: &str, spec: InstanceSpec) -> Result<bool, RegistryError> {
        check_spec(service, &spec)?;
        let mut services = self.lock();
        let entry = services
            .entry(service.to_owned())
            .or_insert_with(ServiceEntry::new);
        let id = spec.id.clone();
        let created = entry
            .instances
            .insert(
                id.clone(),
                Instance {
                    spec,
                    last_renewal: Instant::now(),
                    lease: 0,
                },
            )
            .is_none();
        entry.publish(&self.clock);
        tracing::info!(%service, %id, created, "registry: instance registered");
        Ok(created)
    }

    /// Renews an instance's lease.
    pub fn renew(&self, service: &str, id: &str) -> Result<(), RegistryError> {
        let mut services = self.lock();
        let entry = services
            .get_mut(service)
            .ok_or_else(|| RegistryError::UnknownService {
                service: service.to_owned(),
            })?;
        let instance =
            entry
                .instances
                .get_mut(id)
                .ok_or_else(|| RegistryError::UnknownInstance {
                    service: service.to_owned(),
                    id: id.to_owned(),
                })?;
        instance.last_renewal = Instant::now();
        self.renewals.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes an instance at once.
    pub fn deregister(&self, service: &str, id: &str) -> Result<(), RegistryError> {
        let mut services = self.lock();
        let entry = services
            .get_mut(service)
            .ok_or_else(|| RegistryError::UnknownService {
                service: service.to_owned(),
            })?;
        if entry.instances.remove(id).is_none() {
            return Err(RegistryError::UnknownInstance {
                service: service.to_owned(),
                id: id.to_owned(),
            });
        }
        entry.publish(&self.clock);
        tracing::info!(%service, %id, "registry: instance deregistered");
        Ok(())
    }

    /// All services (including configured ones with no instance yet).
    pub fn services(&self) -> Vec<ServiceSummary> {
        self.lock()
            .iter()
            .map(|(name, e)| ServiceSummary {
                name: name.clone(),
                instances: e.instances.len(),
                self_preservation: e.preserving,
            })
            .collect()
    }

    /// The instances of one service.
    pub fn instances(&self, service: &str) -> Result<Vec<Instance>, RegistryError> {
        self.lock()
            .get(service)
            .map(|e| e.instances.values().cloned().collect())
            .ok_or_else(|| RegistryError::UnknownService {
                service: service.to_owned(),
            })
    }

    /// Follows a service's endpoint set; creates the (empty) service if unknown, so a service
    /// configured with `discovery = "registry"` exists before its first instance registers.
    pub fn watch(&self, service: &str) -> channel::Receiver<EndpointSet> {
        self.lock()
            .entry(service.to_owned())
            .or_insert_with(ServiceEntry::new)
            .tx
            .subscribe()
    }

    /// Evicts instances whose lease lapsed by `now`, service by service, unless more than the
    /// self-preservation share of a service would lapse within one window (lapsed now, or
    /// lapsing before the next sweep): then none is evicted and a warning is logged.
    pub fn sweep(&self, now: Instant) -> Sweep {
        if self.etcd.is_some() {
            // etcd expires leases itself; `settle` judges what vanished.
            return self.settle(now);
        }
        let mut sweep = Sweep::default();
        let lease = self.config.lease;
        // Leases that lapse before the next sweep count as lapsing in this window, so
        // instances that went silent together are judged together even if they registered
        // a few milliseconds apart.
        let soon = lease.saturating_sub(self.config.eviction_interval);
        let share = self.config.self_preservation_share;
        for (name, entry) in self.lock().iter_mut() {
            let age = |i: &Instance| now.saturating_duration_since(i.last_renewal);
            let lapsed: Vec<String> = entry
                .instances
                .iter()
                .filter(|(_, i)| age(i) >= lease)
                .map(|(id, _)| id.clone())
                .collect();
            let lapsing = entry.instances.values().filter(|i| age(i) >= soon).count();
            let total = entry.instances.len();
            let mass = !lapsed.is_empty() && lapsing > 1 && lapsing as f64 > share * total as f64;
            if mass {
                if !entry.preserving {
                    tracing::warn!(
                        service = %name,
                        lapsing,
                        total,
                        "registry self-preservation: keeping lapsed instances (mass expiry looks like a network blip)"
                    );
                }
                entry.preserving = true;
                sweep.preserved.push(name.clone());
                continue;
            }
            entry.preserving = false;
            if lapsed.is_empty() {
                continue;
            }
            for id in lapsed {
                entry.instances.remove(&id);
                tracing::warn!(service = %name, %id, "registry: lease lapsed, instance evicted");
                self.expirations.fetch_add(1, Ordering::Relaxed);
                sweep.evicted.push((name.clone(), id));
            }
            entry.publish(&self.clock);
        }
        sweep
    }

    /// Sweeps every `eviction_interval` in a background task, which ends by itself once the
    /// registry is dropped (it holds only a weak reference).
    pub fn spawn_evictions(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let registry = Arc::downgrade(self);
        // With etcd, vanished keys are judged within `SETTLE`, so the sweep runs often.
        let every = if self.etcd.is_some() {
            SETTLE / 5
        } else {
            self.config.eviction_interval
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                registry.sweep(Instant::now());
            }
        })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // The watcher holds the store, not the registry: stop it with the registry.
        if let Some(etcd) = &self.etcd {
            etcd.abort_tasks();
        }
    }
}

#[cfg(test)]
mod tests;
