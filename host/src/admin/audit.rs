//! The audit log: every write to the admin API or the registry is logged once, after it is
//! answered, on the `tracing` target `audit` (always one JSON line, whatever `log.format`
//! says; see `telemetry::init`). Heartbeats (`PUT` renewals of a registry lease) are not
//! audited: a healthy fleet sends one per instance every few seconds, and each changes
//! nothing but a timestamp.

use std::net::SocketAddr;

use http::{header, Method, Request, StatusCode};

/// What a write was, derived from its method and path; `None` for reads and heartbeats,
/// which are not audited. Unknown admin writes are audited as `admin_write`, so a new
/// endpoint is never silently left out.
pub fn action(method: &Method, path: &str) -> Option<&'static str> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    Some(match (method, segments.as_slice()) {
        (&Method::POST, ["registry", "services", _, "instances"]) => "register",
        (&Method::PUT, ["registry", "services", _, "instances", _]) => return None,
        (&Method::DELETE, ["registry", "services", _, "instances", _]) => "deregister",
        (_, ["registry", ..]) => "registry_write",
        (_, ["admin", "reload"]) => "config_reload",
        (_, ["admin", "cache"]) => "cache_purge",
        (_, ["admin", "routes", _, "split"]) => "weight_change",
        (_, ["admin", "routes", ..]) => "route_write",
        (_, ["admin", "services", _, "switch-to", _]) => "service_switch",
        (_, ["admin", "services", _, "endpoints", _, "drain"]) => "endpoint_drain",
        (_, ["admin", "services", _, "endpoints", _, "undrain"]) => "endpoint_undrain",
        (_, ["admin", "plugins", _, "promote"]) => "plugin_promote",
        (_, ["admin", "plugins", _, "rollback"]) => "plugin_rollback",
        (_, ["admin", "plugins", ..]) => "plugin_write",
        _ => "admin_write",
    })
}

/// Which configured token the request presented: `admin` (`admin.token`), `registry`
/// (`registry.token`), `unknown` (a bearer token that is neither), or `none`. The token
/// itself is never logged.
pub fn token_name<B>(
    req: &Request<B>,
    admin: Option<&str>,
    registry: Option<&str>,
) -> &'static str {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return "none";
    };
    let is = |token: Option<&str>| {
        token.is_some_and(|t| super::constant_time_eq(given.as_bytes(), t.as_bytes()))
    };
    if is(admin) {
        "admin"
    } else if is(registry) {
        "registry"
    } else {
        "unknown"
    }
}

/// One write, as the audit line tells it.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// The client's address.
    pub client: SocketAddr,
    /// The token it presented (see [`token_name`]).
    pub token: &'static str,
    /// What it did (see [`action`]).
    pub action: &'static str,
    pub method: Method,
    pub path: String,
    pub request_id: String,
}

impl AuditEntry {
    /// Logs the entry with the write's answer: `ok` (2xx), `refused` (401/403), `failed`.
    /// Helpers that apply writes outside the admin handler call this once per write.
    pub fn record(&self, status: StatusCode, detail: Option<&str>) {
        let result = if status.is_success() {
            "ok"
        } else if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            "refused"
        } else {
            "failed"
        };
        tracing::info!(
            target: crate::telemetry::AUDIT_TARGET,
            client = %self.client,
            token = self.token,
            action = self.action,
            method = %self.method,
            path = %self.path,
            status = status.as_u16(),
            result,
            request_id = %self.request_id,
            detail,
            "admin write"
        );
    }
}
