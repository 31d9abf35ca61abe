//! A response body that streams to the client while a copy is kept for the cache: the copy
//! is handed over when the body ends, and given up (nothing stored) once it grows past the
//! route's `max_body_bytes`, on a body error, or on trailers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};

type Complete = Box<dyn FnOnce(Bytes) + Send>;

pin_project_lite::pin_project! {
    /// Streams `inner` and, at its end, calls `complete` with the whole body.
    pub struct TeeBody {
        #[pin]
        inner: Body,
        copy: Option<(BytesMut, Complete)>,
        limit: usize,
    }
}

impl TeeBody {
    /// `complete` runs once, with the body, if it ends within `limit` bytes; dropping the
    /// tee earlier (client gone) drops `complete` uncalled.
    pub fn new(inner: Body, limit: usize, complete: impl FnOnce(Bytes) + Send + 'static) -> Self {
        let mut tee = TeeBody {
            inner,
            copy: Some((BytesMut::new(), Box::new(complete))),
            limit,
        };
        if tee.inner.is_end_stream() {
            tee.finish();
        }
        tee
    }

    fn finish(&mut self) {
        if let Some((bytes, complete)) = self.copy.take() {
            complete(bytes.freeze());
        }
    }
}

impl HttpBody for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
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
                complete(bytes.freeze());
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
