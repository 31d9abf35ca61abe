//! What a route is, as config hands it over: its name, service, match and what it does.

use std::fmt;
use std::time::Duration;

use http::Method;
use serde::{Serialize, Serializer};

use super::RouteTarget;
use crate::body::limit::MaxBodyBytes;
use crate::compression::CompressionPolicy;
use crate::cors::CorsPolicy;
use crate::headers::policy::HeaderPolicy;
use crate::matching::RequestMatch;
use crate::mirror::MirrorPolicy;
use crate::plugins::{OnError, RoutePlugin};
use crate::ratelimit::RouteLimitsSpec;
use crate::serialize::as_humantime;
use crate::tunnel::UpgradePolicy;

/// A route's unique name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RouteName(pub String);

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    pub name: RouteName,
    /// `service = "x"` or a weighted `split`; serialized as those keys.
    #[serde(flatten)]
    pub target: RouteTarget,
    /// The target was set through the admin API (`PUT /admin/routes/{name}/split`): the next
    /// reload or a restart puts back the file's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub target_set_at_run_time: bool,
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    pub strip_prefix: bool,
    pub rewrite: Option<String>,
    #[serde(serialize_with = "as_humantime")]
    pub timeout: Duration,
    /// This route's request-body limit (`limits.max_body_bytes` unless set).
    pub max_body_bytes: MaxBodyBytes,
    /// Encoded separators (`%2F`, `%5C`) may reach this route, still encoded.
    pub allow_encoded_slash: bool,
    /// The plugin chain, in order.
    pub plugins: Vec<RoutePlugin>,
    /// What a plugin failure does to the request.
    pub on_error: OnError,
    /// Applied to the request before the plugins run.
    pub request_headers: HeaderPolicy,
    /// Applied to the response last (after the response plugins).
    pub response_headers: HeaderPolicy,
    /// Every request gets this status, from the gateway.
    pub deny: Option<u16>,
    /// Rate limits and the in-flight cap (none by default).
    #[serde(skip_serializing_if = "RouteLimitsSpec::is_empty")]
    pub limits: RouteLimitsSpec,
    /// A copy of a share of the requests goes to this mirror (docs/traffic.md).
    pub mirror: Option<MirrorPolicy>,
    /// HTTP/1.1 upgrades (WebSocket) this route carries (docs/websocket.md); none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradePolicy>,
    /// The route's HTTP response cache (docs/cache.md); none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::cache::RouteCachePolicy>,
    /// Response compression (docs/compression.md): the route's `[routes.compression]` over
    /// the global `[compression]`; None when off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<CompressionPolicy>,
    /// The route's CORS policy (docs/cors.md); None: the gateway leaves CORS to the service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsPolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum HostMatch {
    /// `api.example.com`, lowercased.
    Exact(String),
    /// `*.example.com`: stored as the suffix `.example.com`; matches any depth of subdomain.
    Wildcard(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum PathMatch {
    /// An exact path or a template with `{param}` segments (and `{*rest}` catch-all).
    Path(String),
    /// A prefix on segment boundaries. `/` matches everything.
    Prefix(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct MatchConfig {
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    #[serde(serialize_with = "methods_as_strings")]
    pub methods: Vec<Method>,
    /// Header, cookie and query predicates (shown as `headers`, `cookies`, `query`).
    #[serde(flatten)]
    pub request: RequestMatch,
}

fn methods_as_strings<S: Serializer>(methods: &[Method], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(methods.iter().map(Method::as_str))
}
