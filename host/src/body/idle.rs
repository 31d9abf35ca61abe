//! The client-body idle timeout: a request body that sends no byte for `limits.body_idle_timeout`
//! fails with [`BodyIdle`], which the pipeline answers with 408 (and a closed connection on
//! HTTP/1.1; HTTP/2 resets the stream). Without it, a client that sends headers and never its
//! body holds an upstream connection until the route's timeout.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::BoxError;

/// The client sent no body byte for this long.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request-body byte for {}", humantime::format_duration(*.0))]
pub struct BodyIdle(pub Duration);

impl BodyIdle {
    /// The `BodyIdle` in `error`'s source chain, if any.
    pub fn find<'a>(mut error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyIdle> {
        loop {
            if let Some(idle) = error.downcast_ref::<BodyIdle>() {
                return Some(idle);
            }
            error = error.source()?;
        }
    }
}

pin_project_lite::pin_project! {
    /// `inner`, failing once it has been waiting for a frame for `timeout`.
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        timeout: Duration,
        // When the last frame came (or the body was wrapped).
        last: Instant,
        // Armed lazily, on the first wait: a body read without waiting (empty, or already
        // buffered) never touches the timer.
        #[pin]
        timer: Option<Sleep>,
    }
}

impl<B> IdleTimeout<B> {
    /// Wraps `inner`; the clock starts now.
    pub fn new(inner: B, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            last: Instant::now(),
            timer: None,
        }
    }
}

impl<B> HttpBody for IdleTimeout<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.last = Instant::now();
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = *this.last + *this.timeout;
        match this.timer.as_mut().as_pin_mut() {
            Some(timer) => {
                if timer.deadline() != deadline {
                    timer.reset(deadline);
                }
            }
            None => this.timer.set(Some(tokio::time::sleep_until(deadline))),
        }
        if let Some(timer) = this.timer.as_pin_mut() {
            ready!(timer.poll(cx));
            return Poll::Ready(Some(Err(Box::new(BodyIdle(*this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn a_silent_body_fails_after_the_timeout_and_a_trickle_does_not() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let mut body = Box::pin(IdleTimeout::new(
            StreamBody::new(Box::pin(stream)),
            Duration::from_secs(5),
        ));
        let sender = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).await;
            }
            // Then silence, sender kept open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        for _ in 0..3 {
            let frame = body.frame().await.expect("a frame").expect("not an error");
            assert_eq!(frame.into_data().expect("data"), Bytes::from_static(b"x"));
        }
        let started = Instant::now();
        let error = body.frame().await.expect("an error").expect_err("idle");
        assert!(BodyIdle::find(error.as_ref()).is_some(), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        sender.abort();
    }
}
