//! One etcd key that holds a whole document (the gateway's TOML, docs/scale-out.md): read it,
//! write it with a compare-and-swap, and follow its revisions across disconnects and
//! compactions. Knows nothing of what the document means; `reload::etcd` applies it.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, EventType, GetResponse, Txn, TxnOp, TxnOpResponse};
use etcd_client::{WatchOptions, WatchResponse};
use tokio::sync::watch;

use super::{connect, EtcdError, EtcdSettings};

/// The default key of the gateway's config.
pub const DEFAULT_CONFIG_KEY: &str = "/gatehouse/config";

/// Backoff between watch attempts while etcd is unreachable: starts here, doubles.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// A key in etcd, with the client that reaches it.
#[derive(Clone)]
pub struct ConfigKey {
    client: etcd_client::Client,
    key: String,
    endpoints: String,
}

/// The key's value at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub value: Vec<u8>,
    /// The revision of the write that set this value (etcd's `mod_revision`).
    pub mod_revision: i64,
    /// The revision that created the key (after its last delete).
    pub create_revision: i64,
    /// Writes since it was created (1 for the first).
    pub version: i64,
}

/// What a read found, and the store's revision when it read: watching from the next one
/// misses nothing.
#[derive(Debug, Clone)]
pub struct Read {
    pub stored: Option<Stored>,
    pub store_revision: i64,
}

/// A change of the key, in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put(Stored),
    /// The key was deleted at `revision`.
    Deleted {
        revision: i64,
    },
}

impl Change {
    pub fn revision(&self) -> i64 {
        match self {
            Change::Put(stored) => stored.mod_revision,
            Change::Deleted { revision } => *revision,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Written at this revision.
    Written { revision: i64 },
    /// The key already held exactly this value at this revision; nothing was written (a
    /// write would make every gateway re-apply the same config).
    Unchanged { revision: i64 },
}

/// Why a read or a write of the key failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Connect(#[from] EtcdError),
    #[error("etcd at {endpoints}: cannot {what} {key}: {source}")]
    Call {
        what: &'static str,
        key: String,
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    /// The compare-and-swap lost: someone wrote the key since the revision the writer read
    /// (or pinned).
    #[error("{key} is at revision {}, not {} as expected: someone pushed since; nothing was written. Read it (`gatehouse config get`), review, and push again with --expect-revision {}",
        current.map_or_else(|| "none (the key does not exist)".to_owned(), |r| r.to_string()),
        if *expected == 0 { "absent".to_owned() } else { expected.to_string() },
        current.unwrap_or(0))]
    Conflict {
        key: String,
        expected: i64,
        current: Option<i64>,
    },
}

impl ConfigKey {
    /// A client for `key` at `settings` (no call yet: see [`connect`]).
    pub async fn connect(settings: &EtcdSettings, key: &str) -> Result<Self, KeyError> {
        Ok(ConfigKey {
            client: connect(settings).await?,
            key: key.to_owned(),
            endpoints: settings.endpoints.join(","),
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The endpoints, comma-separated, for messages.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    fn call_error(&self, what: &'static str, source: etcd_client::Error) -> KeyError {
        KeyError::Call {
            what,
            key: self.key.clone(),
            endpoints: self.endpoints.clone(),
            source,
        }
    }

    /// The key's current value, if any.
    pub async fn read(&self) -> Result<Read, KeyError> {
        let reply = self
            .client
            .kv_client()
            .get(self.key.as_bytes(), None)
            .await
            .map_err(|e| self.call_error("read", e))?;
        Ok(read_of(&reply))
    }

    /// Writes `value` if the key is still at `expected` (its `mod_revision`; 0: the key must
    /// not exist), or, with no `expected`, at the revision this call reads first. One etcd
    /// transaction compares and writes, so two writers that read the same revision cannot
    /// both win: the second gets [`KeyError::Conflict`] naming the current revision.
    pub async fn push(&self, value: &[u8], expected: Option<i64>) -> Result<Pushed, KeyError> {
        let current = self.read().await?;
        let expected =
            expected.unwrap_or_else(|| current.stored.as_ref().map_or(0, |s| s.mod_revision));
        if let Some(stored) = current
            .stored
            .as_ref()
            .filter(|s| s.mod_revision == expected && s.value == value)
        {
            return Ok(Pushed::Unchanged {
                revision: stored.mod_revision,
            });
        }
        let key = self.key.as_bytes();
        let compare = if expected == 0 {
            Compare::create_revision(key, CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key, CompareOp::Equal, expected)
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, None)]);
        let reply = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| self.call_error("write", e))?;
        if reply.succeeded() {
            // The put is the transaction's only write: the store's revision after it is the
            // key's new mod_revision.
            let revision = reply.header().map_or(0, |h| h.revision());
            return Ok(Pushed::Written { revision });
        }
        let current = reply.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => Some(read_of(&get).stored.map(|s| s.mod_revision)),
            _ => None,
        });
        Err(KeyError::Conflict {
            key: self.key.clone(),
            expected,
            current: current.flatten(),
        })
    }

    /// Follows the key's changes after store revision `after` (a [`Read::store_revision`])
    /// and publishes the latest into `changes` until every receiver is gone. A lost
    /// connection is retried with backoff and the watch resumes after the last revision seen,
    /// so nothing is missed; when that revision was compacted away, the key is read again
    /// and its current value published if it changed.
    pub async fn follow(&self, after: i64, changes: watch::Sender<Option<Change>>) {
        let mut next = after + 1;
        let mut retry = RETRY_FIRST;
        let mut failing = false;
        while !changes.is_closed() {
            match self.watch_from(&mut next, &changes, &mut failing).await {
                Ok(false) => {}
                Ok(true) => match self.read().await {
                    Ok(read) => {
                        tracing::info!(key = %self.key, from = next, now = read.store_revision,
                            "etcd compacted the revisions the config watch needed; read the key again");
                        let change = match read.stored {
                            Some(stored) if stored.mod_revision >= next => {
                                Some(Change::Put(stored))
                            }
                            Some(_) => None,
                            None => Some(Change::Deleted {
                                revision: read.store_revision,
                            }),
                        };
                        if let Some(change) = change {
                            changes.send_replace(Some(change));
                        }
                        next = read.store_revision + 1;
                    }
                    Err(error) => self.failed(&error.to_string(), &mut failing),
                },
                Err(error) => self.failed(&error, &mut failing),
            }
            if failing {
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            } else {
                retry = RETRY_FIRST;
            }
        }
    }

    /// One watch stream from `*next` until it ends, moving `*next` past each change it
    /// publishes: `Ok(true)` when the revisions it needed were compacted away.
    async fn watch_from(
        &self,
        next: &mut i64,
        changes: &watch::Sender<Option<Change>>,
        failing: &mut bool,
    ) -> Result<bool, String> {
        let options = WatchOptions::new().with_start_revision(*next);
        let mut stream = self
            .client
            .watch_client()
            .watch(self.key.as_bytes(), Some(options))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let reply = match stream.message().await {
                Ok(Some(reply)) => reply,
                Ok(None) => return Err("the watch stream ended".to_owned()),
                Err(error) => return Err(error.to_string()),
            };
            if reply.compact_revision() > 0 {
                return Ok(true);
            }
            if reply.canceled() {
                return Err(format!(
                    "etcd cancelled the watch: {}",
                    reply.cancel_reason()
                ));
            }
            if *failing && reply.created() {
                *failing = false;
                tracing::info!(key = %self.key, from = *next, "etcd config watch resumed");
            }
            if let Some(change) = last_change(&reply) {
                *next = change.revision() + 1;
                changes.send_replace(Some(change));
            }
            if changes.is_closed() {
                return Ok(false);
            }
        }
    }

    /// Logs a failed watch: the first of a run at warn, the retries after it at debug.
    fn failed(&self, error: &str, failing: &mut bool) {
        if *failing {
            tracing::debug!(key = %self.key, %error, "etcd config watch: retrying");
        } else {
            tracing::warn!(key = %self.key, endpoints = %self.endpoints, %error,
                "etcd config watch lost; the running config stays, retrying");
            *failing = true;
        }
    }
}

fn read_of(reply: &GetResponse) -> Read {
    Read {
        stored: reply.kvs().first().map(|kv| Stored {
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
            create_revision: kv.create_revision(),
            version: kv.version(),
        }),
        store_revision: reply.header().map_or(0, |h| h.revision()),
    }
}

/// The last change in a watch reply: the ones before it are already superseded.
fn last_change(reply: &WatchResponse) -> Option<Change> {
    let event = reply.events().last()?;
    let kv = event.kv()?;
    Some(match event.event_type() {
        EventType::Put => Change::Put(Stored {
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
            create_revision: kv.create_revision(),
            version: kv.version(),
        }),
        EventType::Delete => Change::Deleted {
            revision: kv.mod_revision(),
        },
    })
}
