//! The response body from a pooled connection: gives the connection back when it ends.

use std::pin::Pin;
use std::sync::Weak;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use super::http1::Pool;
use crate::body::Body;

/// A response body as hyper streams it. For HTTP/1.1 it holds the connection's sender and
/// returns it to the pool when the body reaches its end; dropped earlier, it drops the
/// sender with the body, and hyper closes the connection (its state is unknown).
#[derive(Debug)]
pub struct PooledBody {
    inner: Incoming,
    giveback: Option<Giveback>,
}

/// The connection to return, and where to. `Weak`, so a body outliving its endpoint's
/// `Backend` neither keeps the pool alive nor returns a connection into it.
#[derive(Debug)]
pub(super) struct Giveback {
    pub(super) tx: SendRequest<Body>,
    pub(super) pool: Weak<Pool>,
}

impl PooledBody {
    pub(super) fn new(inner: Incoming, giveback: Option<Giveback>) -> Self {
        Self { inner, giveback }
    }

    fn give_back(&mut self) {
        if let Some(Giveback { tx, pool }) = self.giveback.take() {
            if let Some(pool) = pool.upgrade() {
                pool.put_back(tx);
            }
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            // Give back on the last frame, not after it: a consumer that sees
            // `is_end_stream()` (hyper's server does) never polls again.
            Some(Ok(_)) if !self.inner.is_end_stream() => {}
            // A broken body means a broken connection.
            Some(Err(_)) => self.giveback = None,
            Some(Ok(_)) | None => self.give_back(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
