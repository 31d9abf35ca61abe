//! Connections that switch protocols (WebSocket): hyper's connection future ends at the
//! upgrade, so what the listener tracks per connection — its place under
//! `limits.max_connections` and the graceful drain — travels with the request as an
//! [`UpgradeLease`] to whoever carries the upgraded stream.

use std::sync::Arc;

use tokio::sync::watch;

use super::shedding::Permit;

/// Handed to an upgrade request (a request extension, set only when hyper says the request
/// may upgrade). Holding it keeps the client connection counted against the listener's
/// connection cap; [`UpgradeLease::cut`] says when graceful shutdown reached its drain
/// deadline. Drop it when the upgraded connection closes.
#[derive(Debug, Clone)]
pub struct UpgradeLease {
    _permit: Arc<Permit>,
    cut: watch::Receiver<bool>,
}

impl UpgradeLease {
    /// Resolves when the listener's drain deadline has passed (or the listener is gone):
    /// the upgraded connection must close now.
    pub async fn cut(&mut self) {
        // An error means the listener is gone: cut as well.
        let _ = self.cut.wait_for(|cut| *cut).await;
    }
}

/// The leases a listener handed out, to wait for and cut at shutdown.
#[derive(Debug)]
pub(super) struct Leases {
    cut: watch::Sender<bool>,
}

impl Leases {
    pub(super) fn new() -> Self {
        Self {
            cut: watch::Sender::new(false),
        }
    }

    /// A lease on the connection that holds `permit`.
    pub(super) fn lease(&self, permit: &Arc<Permit>) -> UpgradeLease {
        UpgradeLease {
            _permit: Arc::clone(permit),
            cut: self.cut.subscribe(),
        }
    }

    /// Leases still held: upgraded connections open (and upgrade requests in flight).
    pub(super) fn open(&self) -> usize {
        self.cut.receiver_count()
    }

    /// Waits until every lease is dropped or `deadline` passes, then cuts those left and
    /// waits briefly for them to close (so their access-log lines are written). Returns how
    /// many were cut.
    pub(super) async fn drain(&self, deadline: tokio::time::Instant) -> usize {
        if tokio::time::timeout_at(deadline, self.cut.closed())
            .await
            .is_ok()
        {
            return 0;
        }
        let open = self.open();
        self.cut.send_replace(true);
        // Closing is a few writes per connection; bounded so a stuck peer cannot hold it.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.cut.closed()).await;
        open
    }
}
