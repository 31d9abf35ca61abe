//! The registry in etcd (`[registry] store = "etcd"`, docs/scale-out.md): every gateway
//! writes instances to etcd and follows them there, so they all see the same instances.
//!
//! An instance is one key `<prefix><service>/<id>` whose JSON value holds its address, port
//! and metadata, attached to an etcd lease whose TTL is `[registry] lease`: register = lease
//! grant + put, heartbeat = one lease keep-alive (the lease id is the key's own lease field),
//! deregister = a put marking the value deregistered, then the lease's revoke; a lapse is
//! etcd expiring the lease. The mark lets every gateway tell a deregister (gone at once) from
//! a lease expiry (judged by self-preservation, `Registry::settle`).
//!
//! A watcher task reads the prefix (revision R), then watches from R+1, applying each event
//! to the registry's in-memory view; after a disconnect it resumes from the revision after
//! the last one it applied, after a compaction it reads everything again.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, KeyValue, PutOptions, WatchOptions};
use gatehouse_registry_client::Metadata;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{check_name, InstanceSpec, Registry, RegistryError, StoreStatus};
use crate::discovery::EndpointMeta;
use crate::etcd::EtcdSettings;
use crate::telemetry::LogThrottle;

/// Default `[registry] key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "/gatehouse/registry/";

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// `[registry] store = "etcd"` with `[etcd]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdRegistry {
    pub settings: EtcdSettings,
    /// Every key is `<key_prefix><service>/<id>`.
    pub key_prefix: String,
    /// `/readyz` answers 503 while the watch on etcd is down.
    pub ready_requires_store: bool,
}

/// The stored value of an instance's key.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct StoredInstance {
    address: std::net::IpAddr,
    port: u16,
    /// The same metadata JSON an instance registers with (the client crate's type).
    #[serde(default)]
    meta: Metadata,
    /// Set by a deregister just before the lease's revoke.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deregistered: bool,
}

/// What one key says.
#[derive(Debug, PartialEq)]
enum Decoded {
    Live { service: String, spec: InstanceSpec },
    Deregistered { service: String, id: String },
}

/// Why a key under the prefix is not an instance (someone else wrote it, or a newer
/// gateway's format).
#[derive(Debug, thiserror::Error, PartialEq)]
enum CodecError {
    #[error("key {0:?} is not <prefix><service>/<id>")]
    Key(String),
    #[error("value of {key:?} is not an instance: {reason}")]
    Value { key: String, reason: String },
}

fn key(prefix: &str, service: &str, id: &str) -> String {
    format!("{prefix}{service}/{id}")
}

fn encode(spec: &InstanceSpec, deregistered: bool) -> Vec<u8> {
    let stored = StoredInstance {
        address: spec.address,
        port: spec.port,
        meta: super::client::metadata(&spec.meta),
        deregistered,
    };
    serde_json::to_vec(&stored).unwrap_or_default()
}

fn decode(prefix: &str, key: &[u8], value: &[u8]) -> Result<Decoded, CodecError> {
    let key_text = String::from_utf8_lossy(key);
    let bad_key = || CodecError::Key(key_text.chars().take(200).collect());
    let rest = key_text.strip_prefix(prefix).ok_or_else(bad_key)?;
    let (service, id) = rest.split_once('/').ok_or_else(bad_key)?;
    if check_name("service", service, 64).is_err() || check_name("id", id, 128).is_err() {
        return Err(bad_key());
    }
    let bad_value = |reason: String| CodecError::Value {
        key: key_text.chars().take(200).collect(),
        reason,
    };
    let stored: StoredInstance =
        serde_json::from_slice(value).map_err(|e| bad_value(e.to_string()))?;
    if stored.deregistered {
        return Ok(Decoded::Deregistered {
            service: service.to_owned(),
            id: id.to_owned(),
        });
    }
    if stored.port == 0 || !(1..=10_000).contains(&stored.meta.weight) {
        return Err(bad_value("port 0 or weight outside 1..=10000".into()));
    }
    Ok(Decoded::Live {
        service: service.to_owned(),
        spec: InstanceSpec {
            id: id.to_owned(),
            address: stored.address,
            port: stored.port,
            meta: EndpointMeta {
                weight: stored.meta.weight,
                zone: stored.meta.zone,
                version: stored.meta.version,
                tags: stored.meta.tags,
            },
        },
    })
}

/// Why the watch stopped.
enum Stop {
    /// The registry is gone: the gateway stopped.
    Dropped,
    /// etcd compacted past the revision to resume from: read everything again.
    Compacted,
    /// etcd (or the way to it) failed; resume from the last applied revision.
    Failed(String),
}

impl From<etcd_client::Error> for Stop {
    fn from(e: etcd_client::Error) -> Self {
        Stop::Failed(e.to_string())
    }
}

/// The etcd side of a registry: the client, the watcher and their counters.
pub(super) struct EtcdStore {
    config: EtcdRegistry,
    client: tokio::sync::Mutex<Option<Client>>,
    up: AtomicBool,
    events: AtomicU64,
    errors: AtomicU64,
    log: LogThrottle,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl std::fmt::Debug for EtcdStore {
    // etcd_client::Client is not Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("config", &self.config)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    pub(super) fn new(config: EtcdRegistry) -> Self {
        Self {
            config,
            client: tokio::sync::Mutex::new(None),
            up: AtomicBool::new(false),
            events: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            log: LogThrottle::new(Duration::from_secs(10)),
            tasks: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn status(&self) -> StoreStatus {
        StoreStatus {
            up: self.up.load(Ordering::Relaxed),
            ready_requires_store: self.config.ready_requires_store,
            events: self.events.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    /// Counts a failed etcd call and logs it (rate-limited: a client can trigger writes).
    fn failed(&self, what: &str, error: &dyn std::fmt::Display) -> RegistryError {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.log.allow() {
            tracing::warn!(%error, suppressed, "registry: etcd {what} failed");
        }
        RegistryError::StoreUnavailable {
            reason: format!("etcd {what} failed: {error}"),
        }
    }

    /// The client, connecting on first use (and again after a failed connect).
    async fn client(&self) -> Result<Client, RegistryError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let budget = self.config.settings.connect_timeout + self.config.settings.timeout;
        let client =
            match tokio::time::timeout(budget, crate::etcd::connect(&self.config.settings)).await {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => return Err(self.failed("connect", &e)),
                Err(_) => return Err(self.failed("connect", &"timed out")),
            };
        *slot = Some(client.clone());
        Ok(client)
    }

    fn key(&self, service: &str, id: &str) -> String {
        key(&self.config.key_prefix, service, id)
    }

    /// Grants a lease and puts the key with it; a re-register moves the one key to the new
    /// lease and revokes the old one. Returns whether the instance is new.
    pub(super) async fn register(
        &self,
        service: &str,
        spec: &InstanceSpec,
        lease: Duration,
    ) -> Result<bool, RegistryError> {
        let mut client = self.client().await?;
        // etcd leases are whole seconds; round up so a lease is never shorter than asked.
        let ttl = i64::try_from(lease.as_millis().div_ceil(1000))
            .unwrap_or(i64::MAX)
            .max(1);
        let granted = client
            .lease_grant(ttl, None)
            .await
            .map_err(|e| self.failed("lease grant", &e))?;
        let options = PutOptions::new().with_lease(granted.id()).with_prev_key();
        let put = match client
            .put(
                self.key(service, &spec.id),
                encode(spec, false),
                Some(options),
            )
            .await
        {
            Ok(put) => put,
            Err(e) => {
                // Best effort: an unused lease lapses by itself anyway.
                let _ = client.lease_revoke(granted.id()).await;
                return Err(self.failed("put", &e));
            }
        };
        let created = match put.prev_key() {
            None => true,
            Some(prev) => {
                let old_lease = prev.lease();
                if old_lease != 0 && old_lease != granted.id() {
                    // The key now holds the new lease, so this revokes nothing else.
                    let _ = client.lease_revoke(old_lease).await;
                }
                matches!(
                    decode(&self.config.key_prefix, prev.key(), prev.value()),
                    Ok(Decoded::Deregistered { .. })
                )
            }
        };
        Ok(created)
    }

    /// One lease keep-alive for the instance's lease (`known` from this gateway's view, or
    /// read from the key).
    pub(super) async fn renew(
        &self,
        service: &str,
        id: &str,
        known: Option<i64>,
    ) -> Result<(), RegistryError> {
        let unknown = || RegistryError::UnknownInstance {
            service: service.to_owned(),
            id: id.to_owned(),
        };
        let mut client = self.client().await?;
        let lease = match known.filter(|l| *l != 0) {
            Some(lease) => lease,
            None => {
                let kv = self
                    .get(&mut client, service, id)
                    .await?
                    .ok_or_else(unknown)?;
                kv.lease()
            }
        };
        if lease == 0 {
            return Err(unknown());
        }
        // etcd-client's keep_alive sends one keep-alive and reads its answer: one request.
        let keep_alive = client.lease_keep_alive(lease);
        match tokio::time::timeout(self.config.settings.timeout, keep_alive).await {
            Err(_) => Err(self.failed("lease keep-alive", &"timed out")),
            Ok(Ok(_)) => Ok(()),
            // TTL 0: the lease expired or was revoked; the client registers again.
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m == "lease not found" => {
                Err(unknown())
            }
            Ok(Err(e)) => Err(self.failed("lease keep-alive", &e)),
        }
    }

    /// Marks the key deregistered (so every gateway drops it at once, no self-preservation)
    /// and revokes its lease, which deletes it.
    pub(super) async fn deregister(&self, service: &str, id: &str) -> Result<(), RegistryError> {
        let unknown = || RegistryError::UnknownInstance {
            service: service.to_owned(),
            id: id.to_owned(),
        };
        let mut client = self.client().await?;
        let kv = self
            .get(&mut client, service, id)
            .await?
            .ok_or_else(unknown)?;
        let spec = match decode(&self.config.key_prefix, kv.key(), kv.value()) {
            Ok(Decoded::Live { spec, .. }) => spec,
            // Already deregistered (its revoke is under way), or not an instance.
            _ => return Err(unknown()),
        };
        let key = self.key(service, id);
        let lease = kv.lease();
        let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        client
            .put(key.clone(), encode(&spec, true), options)
            .await
            .map_err(|e| self.failed("put", &e))?;
        if lease != 0 {
            client
                .lease_revoke(lease)
                .await
                .map_err(|e| self.failed("lease revoke", &e))?;
        } else {
            client
                .delete(key, None)
                .await
                .map_err(|e| self.failed("delete", &e))?;
        }
        Ok(())
    }

    async fn get(
        &self,
        client: &mut Client,
        service: &str,
        id: &str,
    ) -> Result<Option<KeyValue>, RegistryError> {
        let resp = client
            .get(self.key(service, id), None)
            .await
            .map_err(|e| self.failed("get", &e))?;
        Ok(resp.kvs().first().cloned())
    }

    /// Starts the watcher; the receiver turns true after its first full read.
    pub(super) fn spawn_watcher(
        self: &Arc<Self>,
        registry: Weak<Registry>,
    ) -> watch::Receiver<bool> {
        let (synced, rx) = watch::channel(false);
        let store = Arc::clone(self);
        let task = tokio::spawn(async move { store.watch_forever(registry, synced).await });
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task.abort_handle());
        rx
    }

    pub(super) fn abort_tasks(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }

    async fn watch_forever(&self, registry: Weak<Registry>, synced: watch::Sender<bool>) {
        let mut backoff = BACKOFF_MIN;
        // The revision to watch from; `None`: read everything first.
        let mut next: Option<i64> = None;
        loop {
            let stop = self
                .follow(&registry, &mut next, &synced, &mut backoff)
                .await;
            let was_up = self.up.swap(false, Ordering::Relaxed);
            match stop {
                Stop::Dropped => return,
                Stop::Compacted => {
                    tracing::warn!("registry: etcd compacted past the watch's revision; reading every instance again");
                    next = None;
                }
                Stop::Failed(error) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    if was_up {
                        tracing::warn!(%error, "registry: lost etcd; serving the last known instances and retrying");
                    } else if let Some(suppressed) = self.log.allow() {
                        tracing::warn!(%error, suppressed, retry_in = ?backoff, "registry: etcd unreachable");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Reads everything (when `next` is `None`), then applies watch events until the watch
    /// stops; `next` always holds the revision after the last one applied.
    async fn follow(
        &self,
        registry: &Weak<Registry>,
        next: &mut Option<i64>,
        synced: &watch::Sender<bool>,
        backoff: &mut Duration,
    ) -> Stop {
        let mut client = match self.client().await {
            Ok(client) => client,
            Err(e) => return Stop::Failed(e.to_string()),
        };
        let prefix = self.config.key_prefix.clone();
        let start = match *next {
            Some(revision) => revision,
            None => {
                let resp = match client
                    .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                    .await
                {
                    Ok(resp) => resp,
                    Err(e) => return e.into(),
                };
                let revision = resp.header().map_or(0, |h| h.revision());
                let Some(registry) = registry.upgrade() else {
                    return Stop::Dropped;
                };
                self.apply_all(&registry, resp.kvs());
                synced.send_replace(true);
                revision + 1
            }
        };
        *next = Some(start);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start)
            .with_progress_notify();
        let mut stream = match client.watch(prefix, Some(options)).await {
            Ok(stream) => stream,
            Err(e) => return e.into(),
        };
        loop {
            let msg = match stream.message().await {
                Ok(Some(msg)) => msg,
                Ok(None) => return Stop::Failed("the watch stream ended".into()),
                Err(e) => return e.into(),
            };
            if msg.canceled() {
                if msg.compact_revision() > 0 {
                    return Stop::Compacted;
                }
                return Stop::Failed(format!("watch canceled: {}", msg.cancel_reason()));
            }
            if msg.created() {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!(from_revision = start, "registry: watching etcd");
                }
                *backoff = BACKOFF_MIN;
                continue;
            }
            let Some(registry) = registry.upgrade() else {
                return Stop::Dropped;
            };
            if msg.events().is_empty() {
                // A progress notification: every event up to this revision was sent.
                if let Some(header) = msg.header() {
                    *next = Some(next.unwrap_or(0).max(header.revision() + 1));
                }
                continue;
            }
            let now = Instant::now();
            for event in msg.events() {
                let Some(kv) = event.kv() else { continue };
                self.events.fetch_add(1, Ordering::Relaxed);
                *next = Some(kv.mod_revision() + 1);
                match event.event_type() {
                    EventType::Put => self.apply_put(&registry, kv),
                    EventType::Delete => {
                        if let Some((service, id)) = self.split_key(kv.key()) {
                            registry.apply_vanish(&service, &id, now);
                        }
                    }
                }
            }
        }
    }

    fn split_key(&self, key: &[u8]) -> Option<(String, String)> {
        let text = std::str::from_utf8(key).ok()?;
        let (service, id) = text
            .strip_prefix(&self.config.key_prefix)?
            .split_once('/')?;
        Some((service.to_owned(), id.to_owned()))
    }

    fn apply_put(&self, registry: &Registry, kv: &KeyValue) {
        match decode(&self.config.key_prefix, kv.key(), kv.value()) {
            Ok(Decoded::Live { service, spec }) => registry.apply_put(&service, spec, kv.lease()),
            Ok(Decoded::Deregistered { service, id }) => registry.apply_deregister(&service, &id),
            Err(e) => {
                if let Some(suppressed) = self.log.allow() {
                    tracing::warn!(error = %e, suppressed, "registry: ignoring a key in etcd");
                }
            }
        }
    }

    /// A full read: every key is applied; instances of the view that etcd no longer has
    /// vanished while this gateway was not watching.
    fn apply_all(&self, registry: &Registry, kvs: &[KeyValue]) {
        let mut seen = HashSet::new();
        for kv in kvs {
            if let Ok(Decoded::Live { service, spec }) =
                decode(&self.config.key_prefix, kv.key(), kv.value())
            {
                seen.insert((service, spec.id));
            }
            self.apply_put(registry, kv);
        }
        let now = Instant::now();
        for (service, id) in registry.view_keys() {
            if !seen.contains(&(service.clone(), id.clone())) {
                registry.apply_vanish(&service, &id, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InstanceSpec {
        InstanceSpec {
            id: "a1".into(),
            address: "10.0.0.7".parse().expect("ip"),
            port: 8081,
            meta: EndpointMeta {
                weight: 3,
                zone: Some("eu-1".into()),
                version: Some("1.2.0".into()),
                tags: vec!["canary".into()],
            },
        }
    }

    const P: &str = "/gatehouse/registry/";

    #[test]
    fn an_instance_round_trips_through_its_key_and_value() {
        let k = key(P, "orders", "a1");
        assert_eq!(k, "/gatehouse/registry/orders/a1");
        let value = encode(&spec(), false);
        assert_eq!(
            decode(P, k.as_bytes(), &value),
            Ok(Decoded::Live {
                service: "orders".into(),
                spec: spec()
            })
        );
        let text = String::from_utf8(value).expect("utf-8");
        assert!(!text.contains("deregistered"), "{text}");
    }

    #[test]
    fn a_deregistered_mark_decodes_as_such() {
        let k = key(P, "orders", "a1");
        assert_eq!(
            decode(P, k.as_bytes(), &encode(&spec(), true)),
            Ok(Decoded::Deregistered {
                service: "orders".into(),
                id: "a1".into()
            })
        );
    }

    #[test]
    fn a_minimal_value_gets_default_metadata() {
        let got = decode(
            P,
            b"/gatehouse/registry/s/i",
            br#"{"address":"::1","port":80}"#,
        );
        let Ok(Decoded::Live { spec, .. }) = got else {
            panic!("{got:?}")
        };
        assert_eq!(spec.meta, EndpointMeta::default());
    }

    #[test]
    fn foreign_keys_and_values_are_refused() {
        for bad_key in [
            &b"/other/orders/a1"[..],
            b"/gatehouse/registry/orders",
            b"/gatehouse/registry/orders/a1/extra",
            b"/gatehouse/registry//a1",
        ] {
            assert!(
                matches!(
                    decode(P, bad_key, &encode(&spec(), false)),
                    Err(CodecError::Key(_))
                ),
                "{}",
                String::from_utf8_lossy(bad_key)
            );
        }
        for bad_value in [
            &b"not json"[..],
            br#"{"address":"host","port":80}"#,
            br#"{"address":"::1","port":0}"#,
            br#"{"address":"::1","port":80,"meta":{"weight":0}}"#,
        ] {
            assert!(
                matches!(
                    decode(P, b"/gatehouse/registry/s/i", bad_value),
                    Err(CodecError::Value { .. })
                ),
                "{}",
                String::from_utf8_lossy(bad_value)
            );
        }
    }
}
