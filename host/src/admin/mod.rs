//! The admin listener: liveness, readiness, metrics, the active config and the dashboard
//! (loopback by default).

pub mod audit;
mod cache;
mod dashboard;
mod plugins;
mod services;
mod split;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{self, Body};
use crate::error::json_error;
use crate::state::Snapshot;
use crate::telemetry::Metrics;

/// Shared by the admin API and the gateway lifecycle.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Serves the admin API.
#[derive(Clone)]
pub struct Admin {
    pub state: Arc<ArcSwap<Snapshot>>,
    pub ready: Arc<Readiness>,
    pub metrics: Arc<Metrics>,
    /// Served under `/registry/` (docs/discovery.md).
    pub registry: Arc<crate::discovery::registry::Registry>,
    /// Loaded plugins, for `/admin/plugins`; `None` when no route uses plugins.
    pub plugins: Option<Arc<crate::state::plugins::GatewayPlugins>>,
    /// `POST /admin/reload`.
    pub reloader: Arc<crate::reload::Reloader>,
    /// The public listener's TLS, for `/admin/tls`; `None` when it is plaintext.
    pub tls: Option<Arc<crate::listener::tls::InboundTls>>,
}

impl Admin {
    /// Answers one admin request from `client`; every write is audited once (`audit`).
    pub async fn handle(
        self,
        req: Request<Incoming>,
        client: std::net::SocketAddr,
    ) -> Result<Response<Body>, Infallible> {
        let Some(action) = audit::action(req.method(), req.uri().path()) else {
            return self.respond(req).await;
        };
        let entry = audit::AuditEntry {
            client,
            token: {
                let config = &self.state.load().config;
                audit::token_name(
                    &req,
                    config.admin.token.as_deref(),
                    config.registry.token.as_deref(),
                )
            },
            action,
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            request_id: String::from_utf8_lossy(
                crate::headers::request_id(req.headers()).as_bytes(),
            )
            .into_owned(),
        };
        let mut entry = entry;
        let response = self.respond(req).await;
        if let Ok(response) = &response {
            // The id the answer carries, when the handler generated one.
            if let Some(id) = response.headers().get(&crate::headers::REQUEST_ID) {
                entry.request_id = String::from_utf8_lossy(id.as_bytes()).into_owned();
            }
            entry.record(response.status(), None);
        }
        response
    }

    async fn respond(self, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let snapshot = self.state.load_full();
        let request_id = crate::headers::request_id(req.headers());
        let path = req.uri().path();
        if path == "/registry" || path.starts_with("/registry/") {
            // The registry checks its own token on write calls. Reads are open on loopback;
            // once the admin API has a token (it must when exposed), reads need it too.
            let is_read = matches!(*req.method(), Method::GET | Method::HEAD);
            if is_read && !authorized(&req, snapshot.config.admin.token.as_deref()) {
                return Ok(json_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "reading the registry needs `Authorization: Bearer <admin.token>`",
                    &request_id,
                ));
            }
            let response = crate::discovery::registry::handle(&self.registry, req).await;
            return Ok(response.map(|b| b.map_err(|never| match never {}).boxed_unsync()));
        }
        // The page and its files hold no data: served before the token check (a browser
        // cannot send a header when it opens a page); its data endpoint checks the token.
        if let Some(response) = dashboard::asset(req.method(), path, &request_id) {
            return Ok(response);
        }
        if path.starts_with("/admin/") && !authorized(&req, snapshot.config.admin.token.as_deref())
        {
            return Ok(json_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this admin endpoint needs `Authorization: Bearer <admin.token>`",
                &request_id,
            ));
        }
        if path == "/admin/cache" {
            let query = req.uri().query();
            return Ok(cache::handle(&snapshot, req.method(), query, &request_id).await);
        }
        if let Some(rest) = path.strip_prefix("/admin/plugins/") {
            let method = req.method();
            let plugins = self.plugins.as_deref();
            return Ok(plugins::rollout(plugins, method, path, rest, &request_id));
        }
        if path.starts_with("/admin/routes/") {
            return Ok(split::route_split(&self.reloader, &snapshot, req, &request_id).await);
        }
        let response = match (req.method(), path) {
            (&Method::GET, "/healthz") => {
                json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
            }
            (&Method::GET, "/readyz") if self.ready.get() && self.registry.ready() => {
                json(StatusCode::OK, &serde_json::json!({ "status": "ready" }))
            }
            (&Method::GET, "/readyz") => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "status": "not ready" }),
            ),
            (&Method::GET, "/admin/config") => config_dump(&snapshot, &self.reloader),
            (&Method::GET, "/admin/services") => {
                json(StatusCode::OK, &services::services(&snapshot))
            }
            (&Method::GET, "/admin/plugins") => json(
                StatusCode::OK,
                &crate::state::plugins::GatewayPlugins::admin_status(
                    self.plugins.as_deref(),
                    &snapshot.config,
                ),
            ),
            (&Method::GET, "/admin/dashboard/state") => {
                dashboard::state_response(&snapshot, &self.registry, self.plugins.as_deref())
            }
            (&Method::GET, "/admin/tls") => match &self.tls {
                Some(tls) => json(StatusCode::OK, &tls.terminator.status()),
                None => json(StatusCode::OK, &crate::listener::tls::TlsStatus::disabled()),
            },
            (&Method::POST, "/admin/reload") => match self.reloader.reload().await {
                Ok(summary) => json(
                    StatusCode::OK,
                    &serde_json::json!({ "status": "reloaded", "config": summary }),
                ),
                Err(error) => {
                    tracing::warn!(%error, "config reload refused");
                    let status = if error.is_bad_config() {
                        StatusCode::BAD_REQUEST
                    } else {
                        StatusCode::CONFLICT
                    };
                    json_error(status, "reload_refused", &error.to_string(), &request_id)
                }
            },
            (method, p) if p.starts_with("/admin/services/") && p.contains("/switch-to/") => {
                split::switch(&self.reloader, method, p, &request_id)
            }
            (method, p) if p.starts_with("/admin/services/") => {
                drain(&snapshot, method, p, &request_id)
            }
            (_, "/admin/reload") => method_not_allowed(req.method(), path, "POST", &request_id),
            (&Method::GET, "/metrics") => {
                // Read at scrape time: reloads and file swaps change what is served.
                if let Some(tls) = &self.tls {
                    self.metrics.tls_certificates(tls.terminator.expiries());
                }
                self.scrape_state(&snapshot);
                let cache = snapshot.cache.store.stats().await;
                self.metrics
                    .cache_size(cache.bytes, cache.entries, cache.evictions);
                let mut response = Response::new(body::full(self.metrics.encode()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            (
                _,
                "/healthz"
                | "/readyz"
                | "/metrics"
                | "/admin/config"
                | "/admin/plugins"
                | "/admin/tls"
                | "/admin/services"
                | "/admin/dashboard/state",
            ) => method_not_allowed(req.method(), path, "GET", &request_id),
            _ => json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no admin endpoint at {path}"),
                &request_id,
            ),
        };
        Ok(response)
    }
}

impl Admin {
    /// Reads what `/metrics` shows as current state: breakers, idle connections, registry.
    fn scrape_state(&self, snapshot: &Snapshot) {
        self.metrics.clear_service_state();
        for service in &snapshot.config.services {
            let Some(svc) = snapshot.upstreams.service(&service.name.0) else {
                continue;
            };
            let breaker = svc.upstream.breaker().map(|b| match b.state() {
                crate::resilience::BreakerState::Closed => "closed",
                crate::resilience::BreakerState::Open => "open",
                crate::resilience::BreakerState::HalfOpen => "half_open",
            });
            let idle = svc
                .upstream
                .pool()
                .all_backends()
                .iter()
                .map(|b| (b.endpoint.addr, b.connections().idle_count()))
                .collect::<Vec<_>>();
            self.metrics
                .service_state(svc.upstream.name(), breaker, idle);
        }
        let (renewals, expirations) = self.registry.totals();
        self.metrics.registry_state(
            self.registry
                .services()
                .into_iter()
                .map(|s| (s.name, s.instances, s.self_preservation)),
            renewals,
            expirations,
        );
        self.metrics.registry_watches(
            self.registry.open_watches(),
            self.registry.refused_watches(),
        );
        if let Some(store) = self.registry.store_status() {
            self.metrics
                .registry_store(store.up, store.events, store.errors);
        }
    }
}

/// `GET /admin/config`: the active config, and under `running` where it came from (file or
/// etcd endpoints and key), its etcd revision, when it was applied and the last refusal.
fn config_dump(snapshot: &Snapshot, reloader: &crate::reload::Reloader) -> Response<Body> {
    let mut dump = match serde_json::to_value(&*snapshot.config) {
        Ok(dump) => dump,
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    if let (Some(fields), Ok(running)) = (
        dump.as_object_mut(),
        serde_json::to_value(reloader.running()),
    ) {
        fields.insert("running".to_owned(), running);
    }
    json(StatusCode::OK, &dump)
}

/// `POST /admin/services/{name}/endpoints/{addr}/drain` (or `/undrain`): the endpoint gets
/// no new requests (or gets them again); requests in flight finish. Lasts until the next
/// reload, which applies the config's `drained` lists afresh.
fn drain(
    snapshot: &Snapshot,
    method: &Method,
    path: &str,
    request_id: &HeaderValue,
) -> Response<Body> {
    let parts: Vec<&str> = path
        .trim_start_matches("/admin/services/")
        .split('/')
        .collect();
    let [service, "endpoints", addr, action @ ("drain" | "undrain")] = parts[..] else {
        return json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no admin endpoint at {path}; expected /admin/services/{{name}}/endpoints/{{ip:port}}/drain or /undrain"),
            request_id,
        );
    };
    if method != Method::POST {
        return method_not_allowed(method, path, "POST", request_id);
    }
    let Some(svc) = snapshot.upstreams.service(service) else {
        return json_error(
            StatusCode::NOT_FOUND,
            "unknown_service",
            &format!("no service named {service:?}"),
            request_id,
        );
    };
    let Ok(endpoint) = addr.parse::<std::net::SocketAddr>() else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_endpoint",
            &format!("{addr:?} is not an endpoint; expected IP:PORT"),
            request_id,
        );
    };
    let drained = action == "drain";
    if !svc.upstream.pool().set_drained(endpoint, drained) {
        return json_error(
            StatusCode::NOT_FOUND,
            "unknown_endpoint",
            &format!("service {service:?} has no endpoint {endpoint}"),
            request_id,
        );
    }
    tracing::info!(service, %endpoint, drained, "endpoint drain changed through the admin API");
    json(
        StatusCode::OK,
        &serde_json::json!({ "service": service, "endpoint": endpoint.to_string(), "drained": drained }),
    )
}

/// Without a configured token the admin API is open (it is on loopback: validation refuses a
/// non-loopback admin address without a token).
fn authorized<B>(req: &Request<B>, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 405 for `method` on `path`, naming the methods the endpoint takes (`allowed`).
fn method_not_allowed(
    method: &Method,
    path: &str,
    allowed: &str,
    request_id: &HeaderValue,
) -> Response<Body> {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("{method} is not allowed on {path}; use {allowed}"),
        request_id,
    )
}

fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    let text =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
