//! Upgraded connections (WebSocket): which upgrades a route allows, and the byte relay between
//! the client and the upstream once both sides switched protocols, with an idle timeout.
//!
//! The relay knows nothing of HTTP or WebSocket framing: after the 101 it copies bytes both
//! ways until either side closes, goes silent for the idle timeout, or the caller cuts it.
//! A close ends the whole relay, as nginx does: WebSocket has no use for a half-open
//! connection (its close handshake is over before a side closes TCP), and a peer that keeps
//! its half open would otherwise hold the tunnel until the idle timeout.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::serialize::as_humantime;

/// `routes.upgrade_idle_timeout` by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Read buffer of each direction: WebSocket frames of any size stream through it.
const BUFFER: usize = 16 * 1024;

/// The protocols a route may switch to (`routes.upgrades`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpgradeProtocol {
    /// RFC 6455, `Upgrade: websocket`.
    WebSocket,
}

impl UpgradeProtocol {
    /// Every accepted config spelling, for error messages.
    pub const NAMES: &'static str = "\"websocket\"";

    /// The config spelling (and `Upgrade` token), case-insensitive.
    pub fn parse(token: &str) -> Option<Self> {
        token
            .eq_ignore_ascii_case("websocket")
            .then_some(UpgradeProtocol::WebSocket)
    }
}

/// A route's upgrade policy: set only on routes with `upgrades`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpgradePolicy {
    /// The `Upgrade` tokens the route forwards (never empty).
    pub protocols: Vec<UpgradeProtocol>,
    /// An upgraded connection with no byte either way for this long is closed
    /// (`routes.upgrade_idle_timeout`, default [`DEFAULT_IDLE_TIMEOUT`]).
    #[serde(serialize_with = "as_humantime")]
    pub idle_timeout: Duration,
}

impl UpgradePolicy {
    /// The protocol an HTTP/1.1 request asks to switch to, if it asks for one this policy
    /// allows: `Connection` lists `upgrade` and `Upgrade` names an allowed protocol. A list of
    /// several protocols in `Upgrade` is refused (none of the allowed ones needs it).
    pub fn requested(&self, headers: &HeaderMap) -> Option<UpgradeProtocol> {
        let connection_upgrade = headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
        if !connection_upgrade {
            return None;
        }
        let mut upgrade = headers.get_all(http::header::UPGRADE).iter();
        let (Some(value), None) = (upgrade.next(), upgrade.next()) else {
            return None;
        };
        let protocol = UpgradeProtocol::parse(value.to_str().ok()?.trim())?;
        self.protocols.contains(&protocol).then_some(protocol)
    }
}

/// One direction of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to upstream.
    Up,
    /// Upstream to client.
    Down,
}

/// Why a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// A side closed the connection (the usual end of a WebSocket).
    Closed,
    /// No byte either way for the idle timeout.
    Idle,
    /// The caller's `cut` resolved (graceful shutdown reached its drain deadline).
    Cut,
    /// Reading or writing failed (a reset, usually).
    Failed(io::Error),
}

impl RelayEnd {
    /// A short stable name for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            RelayEnd::Closed => "closed",
            RelayEnd::Idle => "idle_timeout",
            RelayEnd::Cut => "shutdown",
            RelayEnd::Failed(_) => "error",
        }
    }
}

/// What a relay carried.
#[derive(Debug)]
pub struct Relayed {
    /// Bytes from the client to the upstream.
    pub bytes_up: u64,
    /// Bytes from the upstream to the client.
    pub bytes_down: u64,
    pub end: RelayEnd,
}

/// Copies bytes between `client` and `upstream` both ways until either side closes, neither
/// sent a byte for `idle`, a copy fails, or `cut` resolves. A side's close is passed on (the
/// other side's write half is shut down, after everything it sent was written) and ends the
/// relay; the caller drops both connections then.
/// `on_bytes` is called for every chunk relayed, so metrics move while the relay lasts.
pub async fn relay<C, U>(
    client: C,
    upstream: U,
    idle: Duration,
    cut: impl Future<Output = ()>,
    on_bytes: impl Fn(Direction, u64),
) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    // Milliseconds since `started` of the last byte relayed either way; one task owns both
    // directions, so the atomics are for `Send`, not for contention.
    let last = AtomicU64::new(0);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let activity = |direction: Direction, n: u64| {
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        last.store(millis, Ordering::Relaxed);
        let count = match direction {
            Direction::Up => &up,
            Direction::Down => &down,
        };
        count.fetch_add(n, Ordering::Relaxed);
        on_bytes(direction, n);
    };
    let copies = async {
        let up = copy(
            &mut client_read,
            &mut upstream_write,
            Direction::Up,
            &activity,
        );
        let down = copy(
            &mut upstream_read,
            &mut client_write,
            Direction::Down,
            &activity,
        );
        tokio::select! {
            done = up => done,
            done = down => done,
        }
    };
    let watchdog = async {
        loop {
            let seen = Duration::from_millis(last.load(Ordering::Relaxed));
            let until = started + seen + idle;
            if Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    };
    let end = tokio::select! {
        copied = copies => match copied {
            Ok(_) => RelayEnd::Closed,
            Err(e) => RelayEnd::Failed(e),
        },
        () = watchdog => RelayEnd::Idle,
        () = cut => RelayEnd::Cut,
    };
    Relayed {
        bytes_up: up.load(Ordering::Relaxed),
        bytes_down: down.load(Ordering::Relaxed),
        end,
    }
}

/// Copies `from` into `to` until `from` ends, then shuts `to`'s write half down.
async fn copy<R, W>(
    from: &mut R,
    to: &mut W,
    direction: Direction,
    activity: &impl Fn(Direction, u64),
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Passing the close on may fail if the other side is gone already: nothing is
            // left to deliver then.
            let _ = to.shutdown().await;
            return Ok(());
        }
        // Counted once read, before the other side can have seen them: metrics never lag
        // what a peer already received.
        activity(direction, n as u64);
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn policy() -> UpgradePolicy {
        UpgradePolicy {
            protocols: vec![UpgradeProtocol::WebSocket],
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn a_websocket_handshake_asks_for_websocket() {
        let h = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert_eq!(policy().requested(&h), Some(UpgradeProtocol::WebSocket));
    }

    #[test]
    fn upgrade_without_connection_upgrade_or_with_another_protocol_asks_for_nothing() {
        for h in [
            headers(&[("upgrade", "websocket")]),
            headers(&[("connection", "upgrade"), ("upgrade", "h2c")]),
            headers(&[("connection", "upgrade"), ("upgrade", "websocket, h2c")]),
            headers(&[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("upgrade", "websocket"),
            ]),
            headers(&[("connection", "upgrade")]),
        ] {
            assert_eq!(policy().requested(&h), None, "{h:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_relay_ends_at_the_idle_timeout() {
        let (client, _client_peer) = tokio::io::duplex(64);
        let (upstream, _upstream_peer) = tokio::io::duplex(64);
        let relayed = relay(
            client,
            upstream,
            Duration::from_secs(5),
            std::future::pending(),
            |_, _| {},
        )
        .await;
        assert!(matches!(relayed.end, RelayEnd::Idle), "{:?}", relayed.end);
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_and_a_close_is_passed_on() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let relay = tokio::spawn(relay(
            client,
            upstream,
            Duration::from_secs(60),
            std::future::pending(),
            |_, _| {},
        ));
        client_peer.write_all(b"ping").await.expect("client writes");
        let mut got = [0u8; 4];
        upstream_peer
            .read_exact(&mut got)
            .await
            .expect("upstream reads");
        assert_eq!(&got, b"ping");
        upstream_peer
            .write_all(b"pong!")
            .await
            .expect("upstream writes");
        let mut got = [0u8; 5];
        client_peer
            .read_exact(&mut got)
            .await
            .expect("client reads");
        assert_eq!(&got, b"pong!");
        // The upstream closes: the client sees the end, and the relay is over.
        upstream_peer.shutdown().await.expect("upstream closes");
        let mut rest = Vec::new();
        client_peer
            .read_to_end(&mut rest)
            .await
            .expect("client reads the end");
        assert!(rest.is_empty());
        let relayed = relay.await.expect("relay task");
        assert!(matches!(relayed.end, RelayEnd::Closed), "{:?}", relayed.end);
        assert_eq!((relayed.bytes_up, relayed.bytes_down), (4, 5));
    }
}
