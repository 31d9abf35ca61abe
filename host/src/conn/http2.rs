//! HTTP/2 (h2c, or h2 over TLS): one multiplexed connection per endpoint and worker, shared by
//! that worker's requests, replaced when it closes.

use std::sync::{Mutex, MutexGuard};

use http::{Request, Response};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::PooledBody;
use super::{ConnError, Handshake, Target};
use crate::body::Body;

type Sender = http2::SendRequest<Body>;

/// The endpoint's current connection. Each connection gets a generation number, so a caller
/// that found one closed replaces exactly that one and not a newer one someone else opened.
pub(super) struct Shared {
    target: Target,
    current: Mutex<Option<(u64, Sender)>>,
    /// Held across a connect (bounded by the connect timeout), so a burst of requests opens
    /// one connection and the rest wait for it.
    connecting: tokio::sync::Mutex<u64>,
}

impl Shared {
    pub(super) fn new(target: Target) -> Self {
        Self {
            target,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(0),
        }
    }

    pub(super) fn max_response_head(&self) -> usize {
        self.target.max_response_head
    }

    pub(super) fn target(&self) -> &Target {
        &self.target
    }

    pub(super) async fn send(
        &self,
        mut req: Request<Body>,
    ) -> Result<Response<PooledBody>, ConnError> {
        let (mut generation, mut tx, mut fresh) = self.sender(None).await?;
        loop {
            match tx.try_send_request(req).await {
                // HTTP/2 has no 101 (RFC 9113 §8.6); any final 1xx is refused the same way.
                Ok(response) if response.status().is_informational() => {
                    return Err(ConnError::Informational(response.status()));
                }
                Ok(response) => return Ok(response.map(|body| PooledBody::new(body, None))),
                Err(mut e) => {
                    let unsent = e.take_message();
                    let error = e.into_error();
                    match unsent {
                        // The connection closed (GOAWAY, the endpoint restarted) before this
                        // request went out: resend it once on a new connection.
                        Some(unsent) if !fresh => {
                            tracing::debug!(endpoint = %self.target.addr, error = %error, "HTTP/2 connection was closed; resending on a new one");
                            req = unsent;
                            (generation, tx, _) = self.sender(Some(generation)).await?;
                            fresh = true;
                        }
                        Some(_) => return Err(ConnError::Closed(error)),
                        None => return Err(ConnError::Send(error)),
                    }
                }
            }
        }
    }

    /// The open connection, or a new one. `stale` names a generation known to be unusable.
    /// Returns the generation, the sender, and whether this call opened it.
    async fn sender(&self, stale: Option<u64>) -> Result<(u64, Sender, bool), ConnError> {
        if let Some((generation, tx)) = self.open(stale) {
            return Ok((generation, tx, false));
        }
        let mut last = self.connecting.lock().await;
        // Someone else may have connected while we waited.
        if let Some((generation, tx)) = self.open(stale) {
            return Ok((generation, tx, false));
        }
        // Boxed: a rare path that would otherwise enlarge every request's future.
        let tx = Box::pin(self.connect()).await?;
        *last += 1;
        *self.lock() = Some((*last, tx.clone()));
        Ok((*last, tx, true))
    }

    fn open(&self, stale: Option<u64>) -> Option<(u64, Sender)> {
        self.lock()
            .as_ref()
            .filter(|(generation, tx)| Some(*generation) != stale && !tx.is_closed())
            .map(|(generation, tx)| (*generation, tx.clone()))
    }

    /// Whether a connection is open, as far as its task has noticed.
    #[cfg(test)]
    pub(super) fn is_open(&self) -> bool {
        self.open(None).is_some()
    }

    fn lock(&self) -> MutexGuard<'_, Option<(u64, Sender)>> {
        // The guarded value is replaced whole; poisoning cannot leave it half-written.
        self.current
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    async fn connect(&self) -> Result<Sender, ConnError> {
        self.target
            .connect(Http2Handshake {
                max_head: self.target.max_response_head,
            })
            .await
    }
}

/// hyper's defaults with a timer, as the legacy client used them.
struct Http2Handshake {
    max_head: usize,
}

impl Handshake for Http2Handshake {
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
        http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_head).unwrap_or(u32::MAX))
            .handshake(io)
    }
}
