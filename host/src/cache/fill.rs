//! Fill locks: the first request to miss (or revalidate) a key fills it; the others wait for
//! it, bounded by the route's `lock_timeout`, then look again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::CacheKey;

/// The fills in progress, by key.
#[derive(Default)]
pub struct Fills {
    in_progress: Mutex<HashMap<CacheKey, watch::Receiver<()>>>,
}

/// This request's part in a fill.
pub enum Fill {
    /// It fills the key; the others wait until the guard is dropped.
    Leader(FillGuard),
    /// Another request fills it: wait, then look again.
    Follower(FillWait),
}

/// Held by the request filling a key, until the response is stored (or will not be).
pub struct FillGuard {
    fills: Arc<Fills>,
    key: CacheKey,
    // Dropping the sender wakes every waiter.
    _done: watch::Sender<()>,
}

/// A wait for another request's fill.
pub struct FillWait(watch::Receiver<()>);

impl Fills {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, watch::Receiver<()>>> {
        // Every update is one insert or remove: a poisoned map is still consistent.
        self.in_progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leads the fill of `key`, or follows the one in progress.
    pub fn join(self: &Arc<Self>, key: &CacheKey) -> Fill {
        let mut map = self.lock();
        if let Some(rx) = map.get(key) {
            if rx.has_changed().is_ok() {
                return Fill::Follower(FillWait(rx.clone()));
            }
        }
        let (tx, rx) = watch::channel(());
        map.insert(key.clone(), rx);
        Fill::Leader(FillGuard {
            fills: Arc::clone(self),
            key: key.clone(),
            _done: tx,
        })
    }

    /// Leads the fill of `key` unless one is in progress (a background refresh).
    pub fn try_lead(self: &Arc<Self>, key: &CacheKey) -> Option<FillGuard> {
        match self.join(key) {
            Fill::Leader(guard) => Some(guard),
            Fill::Follower(_) => None,
        }
    }
}

impl FillWait {
    /// Waits until the fill ends or `timeout` passes; whether it ended.
    pub async fn wait(mut self, timeout: Duration) -> bool {
        // `changed` fails once the leader's sender is dropped: the fill ended.
        tokio::time::timeout(timeout, self.0.changed())
            .await
            .is_ok()
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        self.fills.lock().remove(&self.key);
    }
}
