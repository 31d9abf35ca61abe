//! Requests that switch protocols (WebSocket) on routes with `upgrades` (docs/websocket.md):
//! what the pipeline keeps of the client's upgrade, the 101 it answers with, and the task
//! that relays the upgraded connection until it closes.
//!
//! Only HTTP/1.1 requests upgrade. The request goes through the whole request phase (limits,
//! plugins: an auth plugin guards the WebSocket) and reaches the upstream on a dedicated
//! connection (`conn::UpgradeRequest`); the response phase never sees the stream.

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::body::{self, Body};
use crate::conn::UpgradeRequest;
use crate::headers;
use crate::listener::UpgradeLease;
use crate::ratelimit::InFlightPermit;
use crate::routing::Route;
use crate::telemetry::{Metrics, UpgradedLog};
use crate::tunnel::{self, Direction};

/// The client's side of an upgrade the route allows, taken out of the request before
/// anything else can drop it.
pub(super) struct ClientUpgrade {
    on_upgrade: OnUpgrade,
    lease: UpgradeLease,
    /// The client's `Upgrade` header, sent upstream as is.
    protocol: HeaderValue,
    idle: Duration,
}

impl ClientUpgrade {
    /// The client's upgrade, if `route` allows what this HTTP/1.1 request asks for. Other
    /// requests, HTTP/2 ones included, go on as plain requests (their `Upgrade` and
    /// `Connection` are removed with the other hop-by-hop headers).
    /// Boxed: it is carried through the whole request, whose future every request moves.
    pub(super) fn take(route: &Route, parts: &mut Parts) -> Option<Box<Self>> {
        let policy = route.config.upgrade.as_ref()?;
        if parts.version != http::Version::HTTP_11 {
            return None;
        }
        policy.requested(&parts.headers)?;
        let protocol = parts.headers.get(header::UPGRADE)?.clone();
        // Both are set by the listener for every request hyper may upgrade.
        let on_upgrade = parts.extensions.remove::<OnUpgrade>()?;
        let lease = parts.extensions.remove::<UpgradeLease>()?;
        Some(Box::new(Self {
            on_upgrade,
            lease,
            protocol,
            idle: policy.idle_timeout,
        }))
    }

    /// Makes `req` (after the request plugins) the upgrade request sent upstream: `Upgrade`
    /// and `Connection: upgrade` again, on a dedicated connection.
    pub(super) fn prepare(&self, req: &mut Request<Body>) {
        let headers = req.headers_mut();
        headers.insert(header::UPGRADE, self.protocol.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        req.extensions_mut().insert(UpgradeRequest);
    }

    /// The 101 for the client, from the upstream's `upstream` 101 (its handshake headers:
    /// `Sec-WebSocket-Accept`, `-Protocol`, `-Extensions`...), and the relay to run once
    /// hyper has written it.
    pub(super) fn switch(
        self,
        upstream: &mut Response<Body>,
        in_flight: Option<InFlightPermit>,
        route: &Arc<String>,
    ) -> (Response<Body>, Box<PendingTunnel>) {
        let upstream_side = hyper::upgrade::on(&mut *upstream);
        let mut headers = std::mem::take(upstream.headers_mut());
        let protocol = headers
            .get(header::UPGRADE)
            .cloned()
            .unwrap_or_else(|| self.protocol.clone());
        headers::remove_hop_by_hop(&mut headers);
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *response.headers_mut() = headers;
        let pending = Box::new(PendingTunnel {
            client: self.on_upgrade,
            upstream: upstream_side,
            lease: self.lease,
            in_flight,
            idle: self.idle,
            route: Arc::clone(route),
        });
        (response, pending)
    }
}

/// An upgrade both sides agreed to; [`PendingTunnel::run`] relays it.
pub(super) struct PendingTunnel {
    client: OnUpgrade,
    upstream: OnUpgrade,
    /// Keeps the client connection under the listener's connection cap, and cuts the
    /// relay at the drain deadline.
    lease: UpgradeLease,
    /// The route's `max_in_flight` place, held while the connection is open.
    in_flight: Option<InFlightPermit>,
    idle: Duration,
    route: Arc<String>,
}

impl PendingTunnel {
    /// Waits for both connections to switch, relays bytes until either side closes (or the
    /// idle timeout, or the drain deadline), then writes the access-log line.
    pub(super) async fn run(self: Box<Self>, log: UpgradedLog, metrics: Arc<Metrics>) {
        let PendingTunnel {
            client,
            upstream,
            mut lease,
            in_flight,
            idle,
            route,
        } = *self;
        let switched = tokio::select! {
            sides = async { tokio::try_join!(client, upstream) } => sides,
            () = lease.cut() => {
                log.close(Duration::ZERO, 0, 0, "shutdown");
                return;
            }
        };
        let (client, upstream) = match switched {
            Ok(sides) => sides,
            Err(error) => {
                // The client or the upstream went away during the switch.
                tracing::debug!(route = %route, %error, "upgrade did not complete");
                log.close(Duration::ZERO, 0, 0, "error");
                return;
            }
        };
        let counted = metrics.upgraded(&route);
        let started = Instant::now();
        let relayed = tunnel::relay(
            TokioIo::new(client),
            TokioIo::new(upstream),
            idle,
            lease.cut(),
            |direction, n| counted.bytes(direction == Direction::Up, n),
        )
        .await;
        let end = relayed.end.as_str();
        if let tunnel::RelayEnd::Failed(error) = &relayed.end {
            tracing::debug!(route = %route, %error, "upgraded connection failed");
        }
        counted.closed(end);
        log.close(started.elapsed(), relayed.bytes_up, relayed.bytes_down, end);
        // Only now: the connection counted against the caps until it closed.
        drop(in_flight);
        drop(lease);
    }
}
