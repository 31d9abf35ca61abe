//! The response body from a pooled connection: drives the connection while the body streams
//! and gives it back when the body ends.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use super::http1::{Conn, Pool};
use crate::body::{Body, BoxError};

/// A response body as hyper streams it. For HTTP/1.1 it holds the connection, drives it
/// while the body is read (whoever polls the body polls the connection: hyper's server
/// connection task), and returns it to the pool when the body reaches its end; dropped
/// earlier, it drops the connection, which closes it (its state is unknown).
#[derive(Debug)]
pub struct PooledBody {
    inner: Incoming,
    giveback: Option<Giveback>,
}

/// The connection to return, and where to. `Weak`, so a body outliving its endpoint's
/// `Backend` neither keeps the pool alive nor returns a connection into it.
#[derive(Debug)]
pub(super) struct Giveback {
    pub(super) conn: Conn,
    pub(super) pool: Weak<Pool>,
}

impl PooledBody {
    pub(super) fn new(inner: Incoming, giveback: Option<Giveback>) -> Self {
        Self { inner, giveback }
    }

    fn give_back(&mut self) {
        if let Some(Giveback { conn, pool }) = self.giveback.take() {
            if let Some(pool) = pool.upgrade() {
                pool.give_back(conn);
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
        // The connection first: it reads what the body then finds, in the same poll.
        let this = &mut *self;
        let inner = &mut this.inner;
        let frame = ready!(match &mut this.giveback {
            Some(giveback) => giveback
                .conn
                .poll_part(cx, |cx| Pin::new(inner).poll_frame(cx)),
            None => Pin::new(inner).poll_frame(cx),
        });
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

/// A request body that says when it has been sent whole (or has failed): a connection whose
/// endpoint answered before that must keep uploading without the response's reader.
pub(super) struct Upload {
    inner: Body,
    done: Arc<AtomicBool>,
}

impl Upload {
    /// `body` watched, and the flag it sets.
    pub(super) fn watch(body: Body) -> (Body, Arc<AtomicBool>) {
        let done = Arc::new(AtomicBool::new(false));
        let watched = Upload {
            inner: body,
            done: Arc::clone(&done),
        };
        (Body::new(watched), done)
    }
}

impl http_body::Body for Upload {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        // hyper stops polling once `is_end_stream()` says so, as after the last frame.
        if !matches!(frame, Some(Ok(_))) || self.inner.is_end_stream() {
            self.done.store(true, Ordering::Release);
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
