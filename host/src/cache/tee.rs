//! A response body that streams to the client while a copy is kept for the cache: the copy
//! is handed over when the body ends, and given up (nothing stored) once it grows past the
//! route's `max_body_bytes`, on a body error, or on trailers.
//!
//! The body's last frame reaches the client only once the copy is stored: a client that asks
//! again as soon as it has the response (or an operator who purges it) finds it in the store.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};

/// Stores the copy; the body's end waits for it.
type Complete = Box<dyn FnOnce(Bytes) -> BoxFuture<'static, ()> + Send>;
type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

pin_project_lite::pin_project! {
    /// Streams `inner` and, at its end, calls `complete` with the whole body.
    pub struct TeeBody {
        #[pin]
        inner: Body,
        copy: Option<(BytesMut, Complete)>,
        limit: usize,
        // The store in progress, and the last frame held back until it is done.
        storing: Option<(BoxFuture<'static, ()>, Polled)>,
    }
}

impl TeeBody {
    /// `complete` runs once, with the body, if it ends within `limit` bytes, and the body's
    /// end waits for the future it returns; dropping the tee earlier (client gone) drops
    /// `complete` uncalled.
    pub fn new(
        inner: Body,
        limit: usize,
        complete: impl FnOnce(Bytes) -> BoxFuture<'static, ()> + Send + 'static,
    ) -> Self {
        TeeBody {
            inner,
            copy: Some((BytesMut::new(), Box::new(complete))),
            limit,
            storing: None,
        }
    }
}

impl HttpBody for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let mut this = self.project();
        if let Some((store, _)) = this.storing.as_mut() {
            if store.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if let Some((_, last)) = this.storing.take() {
                return last;
            }
        }
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(data) => {
                    let over = this
                        .copy
                        .as_ref()
                        .is_some_and(|(bytes, _)| bytes.len() + data.len() > *this.limit);
                    if over {
                        *this.copy = None;
                    } else if let Some((bytes, _)) = this.copy.as_mut() {
                        bytes.extend_from_slice(data);
                    }
                }
                // Trailers are not stored: a cached answer without them would differ.
                None => *this.copy = None,
            },
            Poll::Ready(Some(Err(_))) => *this.copy = None,
            Poll::Ready(None) => {}
            Poll::Pending => return polled,
        }
        // hyper stops polling once the body says it ended: finish on that, not only on None.
        if matches!(polled, Poll::Ready(None)) || this.inner.is_end_stream() {
            if let Some((bytes, complete)) = this.copy.take() {
                let mut store = complete(bytes.freeze());
                if store.as_mut().poll(cx).is_pending() {
                    *this.storing = Some((store, polled));
                    return Poll::Pending;
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        // Not while the last frame waits for the store.
        self.storing.is_none() && self.inner.is_end_stream() && self.copy.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
