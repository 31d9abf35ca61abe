//! The request-body limit, and telling a client's body fault from an upstream failure.
//!
//! A client body is streamed to the upstream as it arrives, so a body that turns out too large
//! or malformed fails inside the upstream call. [`LimitedBody`] records why in a slot the
//! pipeline keeps ([`BodyWatch`]), so the failure is answered as the client's fault (413 or
//! 400) whatever shape the upstream connection gave the error.

use std::error::Error as _;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{self, Body, BoxError};

/// The request-body limit in bytes, `limits.max_body_bytes` or a route's override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct MaxBodyBytes(pub u64);

impl MaxBodyBytes {
    /// 10 MiB: room for JSON and form posts and small uploads; routes that take files raise it.
    pub const DEFAULT: MaxBodyBytes = MaxBodyBytes(10 * 1024 * 1024);
}

/// Why a client's request body was refused. The pipeline answers these itself.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestBodyError {
    /// `Content-Length` says the body is larger than the limit: refused before any of it is read.
    #[error("request body of {declared} bytes exceeds the limit of {limit} bytes")]
    DeclaredTooLarge { declared: u64, limit: u64 },
    /// A body of unknown length (chunked, HTTP/2) went past the limit while streaming.
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The client's body was malformed (bad chunk framing) or ended early.
    #[error("the request body could not be read: {message}")]
    Malformed { message: String },
}

/// Where [`LimitedBody`] records the fault it returned, read back by the pipeline.
#[derive(Debug, Clone, Default)]
pub struct BodyWatch(Arc<OnceLock<RequestBodyError>>);

impl BodyWatch {
    /// The client body's fault, if reading it failed.
    pub fn fault(&self) -> Option<&RequestBodyError> {
        self.0.get()
    }
}

/// Wraps the client's body with the limit. A declared length over the limit fails here, before
/// anything is read (so hyper never sends `100 Continue`). An empty body needs no watching.
pub fn limit(
    incoming: Incoming,
    max: MaxBodyBytes,
) -> Result<(Body, Option<BodyWatch>), RequestBodyError> {
    if incoming.is_end_stream() {
        return Ok((body::streaming(incoming), None));
    }
    // HTTP/1.1 `Content-Length` and HTTP/2 `content-length` both make the hint exact.
    let declared = incoming.size_hint().lower();
    if declared > max.0 {
        return Err(RequestBodyError::DeclaredTooLarge {
            declared,
            limit: max.0,
        });
    }
    let watch = BodyWatch::default();
    let limited = LimitedBody {
        inner: incoming,
        remaining: max.0,
        limit: max.0,
        watch: watch.clone(),
    };
    Ok((limited.boxed_unsync(), Some(watch)))
}

/// A client body that fails, instead of yielding, the chunk that would take it past its limit,
/// so the upstream never receives more than the limit nor a cleanly ended body.
#[derive(Debug)]
pub struct LimitedBody {
    inner: Incoming,
    remaining: u64,
    limit: u64,
    watch: BodyWatch,
}

impl LimitedBody {
    fn fail(&self, error: RequestBodyError) -> BoxError {
        // A second failure keeps the first: it is the one the upstream saw.
        let _ = self.watch.0.set(error);
        Box::new(
            self.watch
                .0
                .get()
                .cloned()
                .unwrap_or(RequestBodyError::TooLarge { limit: self.limit }),
        )
    }
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(fault) = self.watch.fault() {
            // Once failed, always failed: never let a later poll look like a clean end.
            return Poll::Ready(Some(Err(Box::new(fault.clone()))));
        }
        let frame = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                let message = chain(&error);
                return Poll::Ready(Some(
                    Err(self.fail(RequestBodyError::Malformed { message })),
                ));
            }
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                let limit = self.limit;
                return Poll::Ready(Some(Err(self.fail(RequestBodyError::TooLarge { limit }))));
            }
            self.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// hyper's error with its causes ("error reading a body from connection: invalid chunk size").
fn chain(error: &hyper::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
