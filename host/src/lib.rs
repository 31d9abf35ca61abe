//! gatehouse: a programmable API gateway.
//!
//! A request flows one way through the host:
//!
//! ```text
//! client → listener::server (HTTP/1.1 + h2c, or TLS: SNI, ALPN, mTLS) → proxy::pipeline
//!        → limits (414/431), refusals → path (one canonical path, or 400)
//!        → routing (host, path, method, headers, query → route; deny)
//!        → ratelimit (limits keyed by route or client address; max_in_flight) → body limit
//!        → headers (forwarding trust, route request policy) → plugins (request)
//!        → ratelimit (limits keyed by header or cookie) → split (the route's service pick, or
//!          the route's own answer: `respond`, `redirect`, which skips mirror and upstream)
//!        → mirror (a background copy, never waited for)
//!        → on a route with `[routes.cache]`, proxy::cached: a stored response answers here
//!          (after the request plugins: auth always runs first); else one coalesced upstream
//!          call, revalidation or a stale answer, and the response is stored as it streams
//!        → upstream (gray subset and zone, endpoint pick, pooled client, timeout,
//!          response head validation)
//!        → plugins (response) → route response policy
//!        → cors (the route's CORS headers) → compression → telemetry (access log, and the
//!          route's live figures for the admin dashboard: `telemetry::live`)
//! ```
//!
//! A CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is routed
//! by the method it asks about and, on a route with `[routes.cors]`, answered right after
//! routing (`cors::preflight`): no limits, plugins or upstream. The last two steps run on
//! every response of a matched route, gateway errors included, with the request's `Origin`
//! and `Accept-Encoding` as captured on arrival (before plugins can change them).
//!
//! A WebSocket handshake on a route with `upgrades` takes the same path up to the upstream,
//! which it reaches on a dedicated connection (`conn::upgrade`); after the 101,
//! `proxy::upgrade` relays the two upgraded connections (`tunnel`) instead of the response
//! phase.
//!
//! Every error becomes an HTTP response in one place, [`error::ProxyError::to_response`].
//! The active state is an immutable [`state::Snapshot`] behind an `ArcSwap`.
//!
//! The modules form layers, each using only those below it (`tests/all/layering.rs` checks
//! there is no import circle), bottom to top:
//!
//! ```text
//! body, worker, serialize, path, headers, matching (header/cookie/query predicates),
//! discovery, telemetry, etcd (how to reach etcd; config_key: one key's value, compare-and-swap writes, a watch that resumes), ratelimit (limits and their counters), tls (PEM certificates and keys),
//! tunnel (upgrade policy and the byte relay of upgraded connections), fswatch (file events),
//! cache (the response cache's rules, key, byte-bounded store and fill locks),
//! compression (Accept-Encoding and streaming encoders), cors (origin policy, preflights)
//! conn (one endpoint's connections, TLS to upstreams), listener (public listener + Limits),
//! plugins → plugin_kit (`gatehouse plugin test` and `plugin new`: the runtime, offline)
//! balancing (backends and their health state) → health (checkers) → resilience → upstream
//! mirror (copies of a route's requests to another service)
//! routing, error
//! config (parses TOML, converts into the policy types each module above owns)
//! state (Snapshot, state::plugins) → proxy (the request path), reload → admin → gateway
//! ```

pub mod admin;
pub mod balancing;
pub mod body;
pub mod cache;
pub mod compression;
pub mod config;
pub mod conn;
pub mod cors;
pub mod demo;
pub mod discovery;
pub mod error;
pub mod etcd;
mod fswatch;
pub mod gateway;
pub mod headers;
pub mod health;
pub mod listener;
pub mod matching;
pub mod mirror;
pub mod path;
pub mod plugin_kit;
pub mod plugins;
pub mod proxy;
pub mod ratelimit;
pub mod redis_store;
pub mod reload;
pub mod resilience;
pub mod routing;
mod serialize;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod tunnel;
pub mod upstream;
pub mod worker;
