//! HTTP/1.1: a LIFO pool of idle keep-alive connections to one endpoint.
//!
//! A connection has no task of its own while it is in use: the request's task drives it
//! (hyper's connection future, [`Conn`]'s driver) while waiting for the response head, and
//! the response body ([`PooledBody`]) drives it while the body streams, so the request is
//! written and the response read in the task that asked, without a task switch each way.
//! An idle connection sits in the pool with its driver, undriven; the next request to take
//! it drives it again. Only a connection that is still busy when its response ends (an
//! upstream that answered before it read the whole request body) gets a task, which drives
//! it from then on.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, TrySendError};

use super::body::{Giveback, PooledBody, Upload};
use super::{ConnError, ConnSettings, Driver, Handshake, Shards, Target};
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

/// One connection: hyper's sender and, unless a task of its own drives it, its driver.
pub(super) struct Conn {
    tx: Sender,
    /// `None` once the connection has a task of its own, or once the driver ended (the
    /// connection closed; `tx` then says so).
    driver: Option<Driver>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("driven_here", &self.driver.is_some())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Conn {
    /// Lets the connection make progress (write, read, notice a close). Wakes `cx` when it
    /// can make more.
    pub(super) fn poll_driver(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver {
            if driver.as_mut().poll(cx).is_ready() {
                // Dropping it closes the sender too.
                self.driver = None;
            }
        }
    }

    /// Polls the driver with `cx`, then `part`: the response head or body, which only the
    /// driver completes. While the driver is polled here, `part` gets a waker that goes
    /// nowhere: the driver holds this task's waker for everything it waits on, and a real
    /// waker in `part` too would wake the task once more for what it has just seen (the
    /// driver delivers the head, say, and wakes its reader: this very task).
    pub(super) fn poll_part<T>(
        &mut self,
        cx: &mut Context<'_>,
        part: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let Some(driver) = &mut self.driver else {
            return part(cx);
        };
        if driver.as_mut().poll(cx).is_pending() {
            return part(&mut Context::from_waker(Waker::noop()));
        }
        // The connection ended; `part` finds out now, or wakes `cx` when it does.
        self.driver = None;
        part(cx)
    }

    /// Polls the driver once with a waker that goes nowhere: for connections no task waits on.
    fn poll_driver_unwatched(&mut self) {
        self.poll_driver(&mut Context::from_waker(Waker::noop()));
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Its last exchange is over: a request can go now.
    fn is_ready(&self) -> bool {
        self.tx.is_ready()
    }

    /// Sends `req` and drives the connection until the response head arrives.
    async fn send(
        &mut self,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, TrySendError<Request<Body>>> {
        let mut response = pin!(self.tx.try_send_request(req));
        // The driver first: it writes the request and reads the head that the response
        // future then finds, in one poll when the head is already there.
        poll_fn(|cx| self.poll_part(cx, |cx| response.as_mut().poll(cx))).await
    }

    /// Gives the connection a task of its own, which drives it from now on (until it
    /// closes). False off a tokio runtime, where the caller keeps driving it.
    fn detach(&mut self) -> bool {
        let Some(driver) = self.driver.take() else {
            return true;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                drop(runtime.spawn(driver));
                true
            }
            Err(_) => {
                self.driver = Some(driver);
                false
            }
        }
    }

    /// Waits until the connection finishes its last exchange (or closes).
    async fn ready(&mut self) -> Result<(), hyper::Error> {
        poll_fn(|cx| {
            self.poll_driver(cx);
            self.tx.poll_ready(cx)
        })
        .await
    }
}

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
    conn: Conn,
    since: Instant,
}

/// What a checkout found in the pool.
enum Found {
    /// Ready for a request now.
    Ready(Conn),
    /// Still finishing its previous exchange.
    Busy(Conn),
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
        let (mut conn, mut reused) = match self.checkout().await {
            Some(conn) => (conn, true),
            // Boxed here and below: a connect is rare next to a pooled send, and its future
            // would otherwise make every request's future (moved several times) larger.
            None => (Box::pin(self.connect()).await?, false),
        };
        // A request body still streaming is watched: see below.
        let upload = (!http_body::Body::is_end_stream(req.body())).then(|| {
            let (watched, done) = Upload::watch(std::mem::take(req.body_mut()));
            *req.body_mut() = watched;
            done
        });
        loop {
            match conn.send(req).await {
                // Not wrapped: the connection must not go back to the pool after a 101.
                Ok(response) if response.status().is_informational() => {
                    return Err(ConnError::Informational(response.status()));
                }
                Ok(response) => {
                    // The endpoint answered before it had the whole request body. The upload
                    // must go on whether or not anyone reads the response body (a client may
                    // send all of its body before it reads anything), so the connection gets
                    // a task of its own, as it would be busy past the response anyway.
                    if upload.as_ref().is_some_and(|done| !done.load(Ordering::Acquire)) {
                        conn.detach();
                    }
                    return Ok(self.wrap(response, conn));
                }
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
                            conn = Box::pin(self.connect()).await?;
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
    async fn checkout(&self) -> Option<Conn> {
        loop {
            let (found, idle_for) = self.take_idle()?;
            let mut conn = match found {
                Found::Ready(conn) => conn,
                Found::Busy(mut conn) => {
                    match tokio::time::timeout(BUSY_GRACE, conn.ready()).await {
                        Ok(Ok(())) => conn,
                        // It closed instead: look again.
                        Ok(Err(_)) => continue,
                        Err(_) => {
                            self.put_back(conn);
                            return None;
                        }
                    }
                }
            };
            if idle_for >= RECHECK_AFTER {
                tokio::task::yield_now().await;
                // An undriven connection notices the close only when driven.
                poll_fn(|cx| {
                    conn.poll_driver(cx);
                    Poll::Ready(())
                })
                .await;
                if conn.is_closed() {
                    continue;
                }
            }
            return Some(conn);
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
            if newest.conn.is_ready() {
                return idle
                    .pop_back()
                    .map(|i| (Found::Ready(i.conn), now.saturating_duration_since(i.since)));
            }
            if !newest.conn.is_closed() {
                break;
            }
            idle.pop_back();
        }
        // The newest is still finishing its last exchange: an older ready one beats waiting.
        match idle.iter().rposition(|i| i.conn.is_ready()) {
            Some(at) => idle
                .remove(at)
                .map(|i| (Found::Ready(i.conn), now.saturating_duration_since(i.since))),
            None => idle
                .pop_back()
                .map(|i| (Found::Busy(i.conn), now.saturating_duration_since(i.since))),
        }
    }

    /// Returns a connection whose response has ended. A connection still busy (uploading a
    /// request body the endpoint answered early) gets a task of its own to finish that: no
    /// request would drive it otherwise.
    pub(super) fn give_back(&self, mut conn: Conn) {
        // The last frame read may leave the connection a step short of idle. Polled with a
        // waker that goes nowhere, so that the task which drove it until now is not woken
        // when the next request (another client connection's task) sends on it: the driver
        // keeps the last waker it was polled with (its request channel, its socket).
        conn.poll_driver_unwatched();
        if conn.is_closed() || self.max_idle == 0 {
            return;
        }
        // Off a runtime nothing could drive it: closed.
        if !conn.is_ready() && !conn.detach() {
            return;
        }
        self.put_back(conn);
    }

    /// Puts a connection into the pool. The oldest idle connection makes room when the pool
    /// is full: the newest are the least likely to be closed by the endpoint.
    fn put_back(&self, conn: Conn) {
        if conn.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut idle = self.own_shard();
        // Taken under the lock so the queue stays ordered by `since`.
        let now = Instant::now();
        self.evict_expired(&mut idle, now);
        if idle.len() >= self.max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle { conn, since: now });
    }

    /// Drops idle connections past the idle timeout and closed ones.
    pub(super) fn sweep(&self, now: Instant) {
        let timeout = self.idle_timeout;
        for shard in self.shards.iter() {
            lock(shard).retain_mut(|i| {
                // Undriven connections notice an endpoint's close only when polled.
                i.conn.poll_driver_unwatched();
                !i.conn.is_closed() && now.saturating_duration_since(i.since) < timeout
            });
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
        let ready = |shard| lock(shard).iter().filter(|i| i.conn.is_ready()).count();
        self.shards.iter().map(ready).sum()
    }

    /// Idle connections whose driver is in the pool with them (no task of their own).
    #[cfg(test)]
    pub(super) fn driven_here_count(&self) -> usize {
        let here = |shard| lock(shard).iter().filter(|i| i.conn.driver.is_some()).count();
        self.shards.iter().map(here).sum()
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

    async fn connect(&self) -> Result<Conn, ConnError> {
        let (tx, driver) = self
            .target
            .connect_here(Http1Handshake {
                max_head: self.target.max_response_head,
            })
            .await?;
        Ok(Conn {
            tx,
            driver: Some(driver),
        })
    }

    /// Gives `conn` back now if the body is already over (HEAD, 204, 304, an empty body),
    /// otherwise the body drives it and gives it back when it reaches its end.
    fn wrap(self: &Arc<Self>, response: Response<Incoming>, conn: Conn) -> Response<PooledBody> {
        if http_body::Body::is_end_stream(response.body()) {
            self.give_back(conn);
            return response.map(|body| PooledBody::new(body, None));
        }
        response.map(|body| {
            PooledBody::new(
                body,
                Some(Giveback {
                    conn,
                    pool: Arc::downgrade(self),
                }),
            )
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
