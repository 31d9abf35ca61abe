//! A route's cap on requests in flight (`max_in_flight`): a counter, the permit a request
//! holds, and the response body that carries the permit until the body ends.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

/// Requests in flight on one route, at most `max`.
#[derive(Debug)]
pub struct InFlight {
    max: u32,
    current: AtomicU32,
}

impl InFlight {
    /// A counter allowing `max` at once.
    pub fn new(max: u32) -> Self {
        InFlight {
            max,
            current: AtomicU32::new(0),
        }
    }

    /// The cap.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Requests holding a permit now.
    pub fn current(&self) -> u32 {
        self.current.load(Ordering::Relaxed)
    }

    /// A permit, or `None` when `max` are out.
    pub fn try_acquire(self: &Arc<Self>) -> Option<InFlightPermit> {
        self.current
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlightPermit(Arc::clone(self)))
    }
}

/// One request's place in flight; dropping it frees the place.
#[derive(Debug)]
pub struct InFlightPermit(Arc<InFlight>);

impl Drop for InFlightPermit {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::Release);
    }
}

pin_project_lite::pin_project! {
    /// A response body holding the request's permit: freed when the body ends (last frame or
    /// an error), or when the body is dropped, e.g. because the client went away.
    pub struct PermitBody<B> {
        #[pin]
        inner: B,
        permit: Option<InFlightPermit>,
    }
}

impl<B> PermitBody<B> {
    /// `inner`, holding `permit` until it ends.
    pub fn new(inner: B, permit: InFlightPermit) -> Self {
        PermitBody {
            inner,
            permit: Some(permit),
        }
    }
}

impl<B: Body> Body for PermitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            this.permit.take();
        }
        frame
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
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    #[test]
    fn permits_are_capped_and_come_back_on_drop() {
        let limit = Arc::new(InFlight::new(2));
        let a = limit.try_acquire().expect("first");
        let _b = limit.try_acquire().expect("second");
        assert!(limit.try_acquire().is_none(), "third is over the cap");
        drop(a);
        assert!(limit.try_acquire().is_some(), "a place came back");
    }

    #[tokio::test]
    async fn the_body_frees_its_permit_when_it_ends() {
        let limit = Arc::new(InFlight::new(1));
        let permit = limit.try_acquire().expect("first");
        let mut body = PermitBody::new(Full::new(Bytes::from_static(b"hi")), permit);
        assert_eq!(limit.current(), 1);
        let frame = body.frame().await.expect("a frame").expect("no error");
        assert_eq!(frame.into_data().ok(), Some(Bytes::from_static(b"hi")));
        assert!(body.frame().await.is_none());
        assert_eq!(
            limit.current(),
            0,
            "freed at the end, before the body is dropped"
        );
        drop(body);
        assert_eq!(limit.current(), 0);
    }
}
