//! Traffic mirroring: a copy of a share of a route's requests goes to another service, in the
//! background, and its response is discarded (`[routes.mirror]`, docs/traffic.md).
//!
//! The client's request never waits for the mirror: the copy is handed to a spawned task and
//! the main request goes on at once. Only requests whose body is known to fit
//! `max_body_bytes` (a bodiless request, or a `Content-Length` up to the cap) are mirrored;
//! their body is read once into memory (at most the cap) and both requests get the bytes.
//! Unsized or larger bodies, and requests arriving while `max_concurrent` mirrors are in
//! flight, are dropped from mirroring (never waited for) and counted.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body::Body as _;
use http_body_util::BodyExt;
use rand::RngExt;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::body::{self, Body, BoxError};
use crate::serialize::as_humantime;
use crate::telemetry::Metrics;
use crate::upstream::{ServiceName, Upstreams};

/// The header that marks a mirrored request; its value is the route's name.
pub static MIRROR_HEADER: HeaderName = HeaderName::from_static("x-gatehouse-mirror");

/// A route's mirror (`[routes.mirror]`). Clones share the in-flight bound.
#[derive(Debug, Clone, Serialize)]
pub struct MirrorPolicy {
    /// The service the copies go to.
    pub service: ServiceName,
    /// Percent of the route's requests mirrored, 1..=100.
    pub percent: u8,
    /// Mirrored requests in flight at once; beyond, new ones are dropped.
    pub max_concurrent: usize,
    /// Largest request body mirrored; 0: bodiless requests only.
    pub max_body_bytes: u64,
    /// Time a mirrored request may take, response body included.
    #[serde(serialize_with = "as_humantime")]
    pub timeout: Duration,
    #[serde(skip)]
    in_flight: Arc<Semaphore>,
}

/// Why a request was not mirrored (label `reason` of `gatehouse_mirror_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// `max_concurrent` mirrored requests were in flight.
    Full,
    /// The body was larger than `max_body_bytes`, or of unknown length.
    Body,
    /// Reading the client's body failed (the main request gets the same failure).
    BodyError,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Full => "full",
            DropReason::Body => "body_too_large",
            DropReason::BodyError => "body_error",
        }
    }
}

impl MirrorPolicy {
    pub fn new(
        service: ServiceName,
        percent: u8,
        max_concurrent: usize,
        max_body_bytes: u64,
        timeout: Duration,
    ) -> Self {
        Self {
            service,
            percent,
            max_concurrent,
            max_body_bytes,
            timeout,
            in_flight: Arc::new(Semaphore::new(max_concurrent)),
        }
    }

    /// Mirrored requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.max_concurrent
            .saturating_sub(self.in_flight.available_permits())
    }

    /// Called on the request path just before the main upstream call: maybe sends a copy of
    /// `req` to the mirror service in the background, and returns the request to send on
    /// (its body read into memory when it was copied). Never waits for the mirror.
    pub async fn tee(
        &self,
        route: &Arc<String>,
        upstreams: &Upstreams,
        metrics: &Metrics,
        req: Request<Body>,
    ) -> Request<Body> {
        if self.percent < 100 && rand::rng().random_range(0..100u8) >= self.percent {
            return req;
        }
        let body = req.body();
        let bodiless = body.is_end_stream();
        if !bodiless
            && body
                .size_hint()
                .exact()
                .is_none_or(|n| n > self.max_body_bytes)
        {
            metrics.mirror_dropped(route, DropReason::Body.as_str());
            return req;
        }
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            metrics.mirror_dropped(route, DropReason::Full.as_str());
            return req;
        };
        // Validation checks the service exists; a reload builds routes and services together.
        let Some(service) = upstreams.service(&self.service.0).cloned() else {
            return req;
        };
        let (parts, body) = req.into_parts();
        let (bytes, main_body) = if bodiless {
            (Bytes::new(), body)
        } else {
            match Box::pin(body.collect()).await {
                Ok(collected) => {
                    let bytes = collected.to_bytes();
                    (bytes.clone(), body::full(bytes))
                }
                Err(e) => {
                    metrics.mirror_dropped(route, DropReason::BodyError.as_str());
                    // The main request fails with the same error, as if it had streamed.
                    return Request::from_parts(parts, failed(e));
                }
            }
        };
        let mut copy = Request::new(body::full(bytes));
        *copy.method_mut() = parts.method.clone();
        *copy.uri_mut() = parts.uri.clone();
        *copy.version_mut() = parts.version;
        *copy.headers_mut() = parts.headers.clone();
        if let Ok(v) = HeaderValue::from_str(route) {
            copy.headers_mut().insert(MIRROR_HEADER.clone(), v);
        }
        metrics.mirror_sent(route);
        let timeout = self.timeout;
        let route = Arc::clone(route);
        tokio::spawn(async move {
            let _permit = permit;
            let send = async {
                let resp = service.upstream.call(copy, timeout).await?;
                // Read the response to its end so the connection goes back to the pool.
                let _discarded = resp.1.into_body().collect().await;
                Ok::<_, crate::resilience::CallError>(())
            };
            match tokio::time::timeout(timeout, send).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::debug!(route = %route, %error, "mirrored request failed")
                }
                Err(_) => tracing::debug!(route = %route, "mirrored request timed out"),
            }
        });
        Request::from_parts(parts, main_body)
    }
}

/// A body that fails at once with `error`.
fn failed(error: BoxError) -> Body {
    let frames = futures::stream::once(async move { Err::<http_body::Frame<Bytes>, _>(error) });
    http_body_util::StreamBody::new(frames).boxed_unsync()
}
