//! HTTP/1.1: a LIFO pool of idle keep-alive connections to one endpoint.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;

use super::body::{Giveback, PooledBody};
use super::{ConnError, ConnSettings, Handshake, Shards, Target};
use crate::body::Body;

/// How long a checkout waits for a pooled connection that is still finishing its previous
/// exchange when no other one is ready. The usual case is a response body that just ended
/// while the connection's task has not yet run: microseconds. The rare one is an upstream
/// that answered early while the request body is still uploading: that can take minutes, so
/// after this grace a new connection is opened instead.
const BUSY_GRACE: Duration = Duration::from_millis(20);

/// A pooled connection idle at least this long yields once to the runtime before use. The
/// endpoint may have closed it (keep-alive timeouts are seconds: nginx 75 s, Node 5 s,
/// Apache 5 s) with the close still unseen by the runtime's I/O driver; a request written to
/// that socket would fail as a reset, whatever its method. The yield lets the driver deliver
/// the close first: either the connection's task closes it now, or it finds the close
/// before writing and hands the request back for a resend. Busy connections skip the yield.
pub(super) const RECHECK_AFTER: Duration = Duration::from_secs(1);

type Sender = http1::SendRequest<Body>;

fn lock(shard: &Mutex<VecDeque<Idle>>) -> MutexGuard<'_, VecDeque<Idle>> {
    // A panic while holding the lock leaves at worst a connection too many or too few.
    shard.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Idle connections, oldest first, one list per worker. The locks are std's: uncontended in
/// practice, held for a few pointer moves, never across an await.
pub(super) struct Pool {
    target: Target,
    max_idle: usize,
    idle_timeout: Duration,
    shards: Shards<Mutex<VecDeque<Idle>>>,
}

struct Idle {
    tx: Sender,
    since: Instant,
}

/// What a checkout found in the pool.
enum Found {
    /// Ready for a request now.
    Ready(Sender),
    /// Still finishing its previous exchange.
    Busy(Sender),
}

impl Pool {
    pub(super) fn new(target: Target, settings: &ConnSettings) -> Self {
        Self {
            target,
            max_idle: settings.max_idle,
            idle_timeout: settings.idle_timeout,
            shards: Shards::new(settings.workers, |_| Mutex::default()),
        }
    }

    pub(super) async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<Response<PooledBody>, ConnError> {
        let (mut tx, mut reused) = match self.checkout().await {
            Some(tx) => (tx, true),
            // Boxed here and below: a connect is rare next to a pooled send, and its future
            // would otherwise make every request's future (moved several times) larger.
            None => (Box::pin(self.connect()).await?, false),
        };
        loop {
            match tx.try_send_request(req).await {
                // Not wrapped: the connection must not go back to the pool after a 101.
                Ok(response) if response.status().is_informational() => {
                    return Err(ConnError::Informational(response.status()));
                }
                Ok(response) => return Ok(self.wrap(response, tx)),
                Err(mut e) => {
                    let unsent = e.take_message();
                    let error = e.into_error();
                    match unsent {
                        // The endpoint closed this idle connection (its keep-alive timeout,
                        // a restart) and we saw it only now. The request was never written,
                        // so it goes once more on a new connection: a stale pooled
                        // connection must not become a 502 (the legacy client's
                        // `retry_canceled_requests` did the same).
                        Some(unsent) if reused => {
                            tracing::debug!(endpoint = %self.target.addr, error = %error, "pooled connection was closed; resending on a new one");
                            req = unsent;
                            tx = Box::pin(self.connect()).await?;
                            reused = false;
                        }
                        Some(_) => return Err(ConnError::Closed(error)),
                        None => return Err(ConnError::Send(error)),
                    }
                }
            }
        }
    }

    /// An idle connection ready for a request, if the pool has one (see [`BUSY_GRACE`]).
    async fn checkout(&self) -> Option<Sender> {
        loop {
            let (found, idle_for) = self.take_idle()?;
            let tx = match found {
                Found::Ready(tx) => tx,
                Found::Busy(mut tx) => match tokio::time::timeout(BUSY_GRACE, tx.ready()).await {
                    Ok(Ok(())) => tx,
                    // It closed instead: look again.
                    Ok(Err(_)) => continue,
                    Err(_) => {
                        self.put_back(tx);
                        return None;
                    }
                },
            };
            if idle_for >= RECHECK_AFTER {
                tokio::task::yield_now().await;
                if tx.is_closed() {
                    continue;
                }
            }
            return Some(tx);
        }
    }

    /// Takes a connection out of the pool, with how long it was idle.
    fn take_idle(&self) -> Option<(Found, Duration)> {
        let now = Instant::now();
        let mut idle = self.own_shard();
        self.evict_expired(&mut idle, now);
        // The common case: the newest connection is ready.
        loop {
            let newest = idle.back()?;
            if newest.tx.is_ready() {
                return idle
                    .pop_back()
                    .map(|i| (Found::Ready(i.tx), now.saturating_duration_since(i.since)));
            }
            if !newest.tx.is_closed() {
                break;
            }
            idle.pop_back();
        }
        // The newest is still finishing its last exchange: an older ready one beats waiting.
        match idle.iter().rposition(|i| i.tx.is_ready()) {
            Some(at) => idle
                .remove(at)
                .map(|i| (Found::Ready(i.tx), now.saturating_duration_since(i.since))),
            None => idle
                .pop_back()
                .map(|i| (Found::Busy(i.tx), now.saturating_duration_since(i.since))),
        }
    }

    /// Returns a connection whose response has ended. The oldest idle connection makes room
    /// when the pool is full: the newest are the least likely to be closed by the endpoint.
    pub(super) fn put_back(&self, tx: Sender) {
        if tx.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut idle = self.own_shard();
        // Taken under the lock so the queue stays ordered by `since`.
        let now = Instant::now();
        self.evict_expired(&mut idle, now);
        if idle.len() >= self.max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle { tx, since: now });
    }

    /// Drops idle connections past the idle timeout and closed ones.
    pub(super) fn sweep(&self, now: Instant) {
        let timeout = self.idle_timeout;
        for shard in self.shards.iter() {
            lock(shard)
                .retain(|i| !i.tx.is_closed() && now.saturating_duration_since(i.since) < timeout);
        }
    }

    /// Where this pool connects; upgrades open their own connections there.
    pub(super) fn target(&self) -> &Target {
        &self.target
    }

    pub(super) fn max_response_head(&self) -> usize {
        self.target.max_response_head
    }

    pub(super) fn idle_count(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    /// Idle connections whose task has gone idle too (ready for a request right now).
    #[cfg(test)]
    pub(super) fn ready_count(&self) -> usize {
        let ready = |shard| lock(shard).iter().filter(|i| i.tx.is_ready()).count();
        self.shards.iter().map(ready).sum()
    }

    fn evict_expired(&self, idle: &mut VecDeque<Idle>, now: Instant) {
        while idle
            .front()
            .is_some_and(|i| now.saturating_duration_since(i.since) >= self.idle_timeout)
        {
            idle.pop_front();
        }
    }

    /// The calling worker's idle connections.
    fn own_shard(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        lock(self.shards.own())
    }

    async fn connect(&self) -> Result<Sender, ConnError> {
        self.target
            .connect(Http1Handshake {
                max_head: self.target.max_response_head,
            })
            .await
    }

    /// Gives `tx` back now if the body is already over (HEAD, 204, 304, an empty body),
    /// otherwise when the body reaches its end.
    fn wrap(self: &Arc<Self>, response: Response<Incoming>, tx: Sender) -> Response<PooledBody> {
        response.map(|body| {
            if http_body::Body::is_end_stream(&body) {
                self.put_back(tx);
                PooledBody::new(body, None)
            } else {
                PooledBody::new(
                    body,
                    Some(Giveback {
                        tx,
                        pool: Arc::downgrade(self),
                    }),
                )
            }
        })
    }
}

/// hyper's defaults, as the legacy client used them, but for the read buffer: a response head
/// that does not fit in it is a parse error (a 502), never relayed.
struct Http1Handshake {
    max_head: usize,
}

impl Handshake for Http1Handshake {
    type Sender = Sender;

    fn handshake<I>(
        self,
        io: hyper_util::rt::TokioIo<I>,
    ) -> impl std::future::Future<
        Output = Result<
            (
                Sender,
                impl std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
            ),
            hyper::Error,
        >,
    >
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        http1::Builder::new()
            .max_buf_size(self.max_head)
            // A request head copied into one buffer costs less than a gathered write (the
            // server side does the same, `listener::server`).
            .writev(false)
            .handshake(io)
    }
}
