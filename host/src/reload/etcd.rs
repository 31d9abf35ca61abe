//! The config in etcd: every new revision of the key is applied as a file reload is
//! ([`Reloader::apply_fetched`]); a bad one is refused, logged and counted, and the running
//! config stays. While etcd is unreachable the gateway serves on; the watch resumes after the
//! last revision it saw (`etcd::config_key`).

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ReloadError, Reloader};
use crate::etcd::config_key::{Change, ConfigKey};

/// Follows `key` after store revision `after` (the one the running config was read at) and
/// applies each change to `reloader`. Abort the task to stop.
pub fn spawn(reloader: Arc<Reloader>, key: ConfigKey, after: i64) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (changes, latest) = watch::channel(None);
        // One task: applying a revision (which may compile plugins) never stops the watch
        // from reading on; a newer revision that arrives meanwhile replaces an unapplied one.
        tokio::join!(
            key.follow(after, changes),
            apply_changes(&reloader, &key, latest)
        );
    })
}

async fn apply_changes(
    reloader: &Reloader,
    key: &ConfigKey,
    mut latest: watch::Receiver<Option<Change>>,
) {
    while latest.changed().await.is_ok() {
        let Some(change) = latest.borrow_and_update().clone() else {
            continue;
        };
        let revision = change.revision();
        let outcome = match change {
            Change::Put(stored) => match reloader.source().fetched(stored) {
                Ok(fetched) => reloader.apply_fetched(fetched).await,
                Err(error) => {
                    reloader.refused(Some(revision), &error);
                    Err(error)
                }
            },
            Change::Deleted { revision } => {
                let error = ReloadError::KeyDeleted {
                    key: key.key().to_owned(),
                    revision,
                };
                reloader.refused(Some(revision), &error);
                Err(error)
            }
        };
        match outcome {
            Ok(summary) => tracing::info!(key = %key.key(), revision,
                services = summary.services, routes = summary.routes,
                "config from etcd applied"),
            Err(error) => tracing::error!(key = %key.key(), revision, %error,
                "config from etcd refused; the running config stays"),
        }
    }
}
