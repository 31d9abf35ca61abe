//! The request-body limit, and telling a client's body fault from an upstream failure.
//!
//! A client body is streamed to the upstream as it arrives, so a body that turns out too large
//! or malformed fails inside the upstream call. [`LimitedBody`] records why in a slot the
//! pipeline keeps ([`BodyWatch`]), so the failure is answered as the client's fault (413 or
//! 400) whatever shape the upstream connection gave the error.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{self as body, Body, BoxError};

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
    limit_body(incoming, max)
}

fn limit_body<B>(
    incoming: B,
    max: MaxBodyBytes,
) -> Result<(Body, Option<BodyWatch>), RequestBodyError>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
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
pub struct LimitedBody<B = Incoming> {
    inner: B,
    remaining: u64,
    limit: u64,
    watch: BodyWatch,
}

impl<B> LimitedBody<B> {
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

impl<B> http_body::Body for LimitedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
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
                let message = chain(&*error.into());
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

/// An error with its causes ("error reading a body from connection: invalid chunk size").
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    type Chunk = Result<Frame<Bytes>, BoxError>;

    fn stream(chunks: Vec<Chunk>) -> StreamBody<futures::stream::Iter<std::vec::IntoIter<Chunk>>> {
        StreamBody::new(futures::stream::iter(chunks))
    }

    fn data(n: usize) -> Chunk {
        Ok(Frame::data(Bytes::from(vec![0u8; n])))
    }

    /// Polls the body to its end; the data it yielded and how it ended.
    async fn drain(mut body: Body) -> (usize, Option<String>) {
        let mut total = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => total += frame.data_ref().map_or(0, Bytes::len),
                Err(e) => return (total, Some(e.to_string())),
            }
        }
        (total, None)
    }

    #[tokio::test]
    async fn passes_up_to_the_limit_and_fails_the_chunk_that_crosses_it() {
        let (body, watch) =
            limit_body(stream(vec![data(60), data(40)]), MaxBodyBytes(100)).expect("no length");
        assert_eq!(drain(body).await, (100, None));
        assert!(watch.expect("watched").fault().is_none());

        let (body, watch) =
            limit_body(stream(vec![data(60), data(41), data(1)]), MaxBodyBytes(100))
                .expect("no length");
        let (passed, error) = drain(body).await;
        assert_eq!(passed, 60, "the crossing chunk is not passed on");
        assert!(error.is_some_and(|e| e.contains("limit of 100")));
        assert!(matches!(
            watch.expect("watched").fault(),
            Some(RequestBodyError::TooLarge { limit: 100 })
        ));
    }

    #[tokio::test]
    async fn a_failed_body_stays_failed() {
        let (mut body, _) =
            limit_body(stream(vec![data(101), data(1)]), MaxBodyBytes(100)).expect("no length");
        assert!(matches!(body.frame().await, Some(Err(_))));
        assert!(
            matches!(body.frame().await, Some(Err(_))),
            "never a clean end after a failure"
        );
    }

    #[tokio::test]
    async fn a_client_body_error_is_recorded_as_malformed() {
        let broken: Chunk = Err("invalid chunk size".into());
        let (body, watch) =
            limit_body(stream(vec![data(5), broken]), MaxBodyBytes(100)).expect("no length");
        let (passed, _) = drain(body).await;
        assert_eq!(passed, 5);
        assert!(matches!(
            watch.expect("watched").fault(),
            Some(RequestBodyError::Malformed { message }) if message.contains("invalid chunk size")
        ));
    }

    #[test]
    fn a_declared_length_over_the_limit_fails_before_reading() {
        let full = http_body_util::Full::new(Bytes::from(vec![0u8; 101]));
        assert!(matches!(
            limit_body(full, MaxBodyBytes(100)),
            Err(RequestBodyError::DeclaredTooLarge {
                declared: 101,
                limit: 100
            })
        ));
        let empty = http_body_util::Empty::<Bytes>::new();
        let (_, watch) = limit_body(empty, MaxBodyBytes(100)).expect("empty is fine");
        assert!(watch.is_none(), "an empty body needs no watching");
    }
}
