//! Route targets at run time (blue-green, canary steps): read and set a route's split, and
//! switch every route of one service to another at once.
//!
//! - `GET /admin/routes/{name}/split`: the route's targets and weights, as the config keys.
//! - `PUT /admin/routes/{name}/split` with `{"split": [{"service": …, "weight": …}, …],
//!   "sticky": …}`: validated like the config file (400 naming the field otherwise).
//! - `POST /admin/services/{from}/switch-to/{to}`: every route sending to `from` sends that
//!   share to `to` instead (merged with `to`'s weight when a split already holds both).
//!
//! Each change is one snapshot swap (`Reloader::change_targets`); the config file stays the
//! source of truth: a reload or a restart puts back its targets (README, "Run-time targets").

use std::collections::BTreeSet;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Deserializer};

use super::{json, method_not_allowed};
use crate::balancing::HashKey;
use crate::body::Body;
use crate::error::{json_error, json_field_error};
use crate::reload::Reloader;
use crate::routing::{RouteConfig, RouteError, RouteTarget, Split};
use crate::state::Snapshot;
use crate::upstream::ServiceName;

/// What `PUT /admin/routes/{name}/split` says about how long the change lasts.
const LASTS: &str = "set at run time: a config reload or a restart puts back the config file's target for this route";

/// A split body larger than this is not a split.
const MAX_BODY: usize = 64 * 1024;

/// `PUT /admin/routes/{name}/split`'s body: the config file's keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitBody {
    split: Vec<TargetBody>,
    /// Absent: keep the route's sticky key; `null`: none; a string: this key.
    #[serde(default, deserialize_with = "present")]
    sticky: Option<Option<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    service: String,
    weight: i64,
}

/// Tells a `null` (`Some(None)`) from an absent key (`None`, the default).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Why a change was refused; nothing was applied.
enum Refused {
    NotFound { code: &'static str, message: String },
    Field { field: String, message: String },
    Bad(String),
    Routes(RouteError),
}

impl From<RouteError> for Refused {
    fn from(e: RouteError) -> Self {
        Refused::Routes(e)
    }
}

impl Refused {
    fn into_response(self, request_id: &HeaderValue) -> http::Response<Body> {
        match self {
            Refused::NotFound { code, message } => {
                json_error(StatusCode::NOT_FOUND, code, &message, request_id)
            }
            Refused::Field { field, message } => json_field_error(
                StatusCode::BAD_REQUEST,
                "bad_split",
                &field,
                &format!("{field}: {message}"),
                request_id,
            ),
            Refused::Bad(message) => {
                json_error(StatusCode::BAD_REQUEST, "bad_split", &message, request_id)
            }
            Refused::Routes(e) => json_error(
                StatusCode::CONFLICT,
                "route_table",
                &e.to_string(),
                request_id,
            ),
        }
    }
}

/// `/admin/routes/{name}/split`, GET or PUT.
pub(super) async fn route_split(
    reloader: &Reloader,
    snapshot: &Snapshot,
    req: Request<Incoming>,
    request_id: &HeaderValue,
) -> http::Response<Body> {
    let path = req.uri().path().to_owned();
    let name = match path
        .strip_prefix("/admin/routes/")
        .and_then(|rest| rest.strip_suffix("/split"))
    {
        Some(name) if !name.is_empty() && !name.contains('/') => name.to_owned(),
        _ => {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no admin endpoint at {path}; expected /admin/routes/{{name}}/split"),
                request_id,
            )
        }
    };
    match *req.method() {
        Method::GET => match snapshot.config.routes.iter().find(|r| r.name.0 == name) {
            Some(route) => json(StatusCode::OK, &describe(route, None)),
            None => unknown_route(&name).into_response(request_id),
        },
        Method::PUT => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => {
                    return Refused::Bad(format!("cannot read the body: {e}"))
                        .into_response(request_id)
                }
            };
            let result = reloader.change_targets(|current| -> Result<_, Refused> {
                let (index, route) = find_route(current, &name)?;
                let target = parse_split(current, route, &body)?;
                Ok(vec![(index, target)])
            });
            match result {
                Ok(now) => match now.config.routes.iter().find(|r| r.name.0 == name) {
                    Some(route) => json(StatusCode::OK, &describe(route, Some(LASTS))),
                    None => unknown_route(&name).into_response(request_id),
                },
                Err(refused) => refused.into_response(request_id),
            }
        }
        ref other => method_not_allowed(other, &path, "GET or PUT", request_id),
    }
}

/// `POST /admin/services/{from}/switch-to/{to}`. A POST on a path, not a PUT of a body: it is
/// an action over every route (like `.../drain`), needs no body to write, and repeating it
/// changes nothing more.
pub(super) fn switch(
    reloader: &Reloader,
    method: &Method,
    path: &str,
    request_id: &HeaderValue,
) -> http::Response<Body> {
    let parts: Vec<&str> = path
        .trim_start_matches("/admin/services/")
        .split('/')
        .collect();
    let [from, "switch-to", to] = parts[..] else {
        return json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!(
                "no admin endpoint at {path}; expected /admin/services/{{from}}/switch-to/{{to}}"
            ),
            request_id,
        );
    };
    if method != Method::POST {
        return method_not_allowed(method, path, "POST", request_id);
    }
    let (from, to) = (ServiceName(from.to_owned()), ServiceName(to.to_owned()));
    let mut switched: Vec<String> = Vec::new();
    let result = reloader.change_targets(|current| {
        for service in [&from, &to] {
            if current.upstreams.service(&service.0).is_none() {
                return Err(Refused::NotFound {
                    code: "unknown_service",
                    message: format!(
                        "no service named {:?} {}",
                        service.0,
                        known_services(current)
                    ),
                });
            }
        }
        if from == to {
            return Err(Refused::Bad(format!("cannot switch {from} to itself")));
        }
        let mut changes = Vec::new();
        for (i, route) in current.config.routes.iter().enumerate() {
            if let Some(target) = route.target.replace_service(&from, &to) {
                if let Some(message) = upgrade_conflict(current, route, &to.0) {
                    return Err(Refused::Bad(message));
                }
                switched.push(route.name.0.clone());
                changes.push((i, target));
            }
        }
        Ok(changes)
    });
    match result {
        Ok(now) => {
            let routes: Vec<serde_json::Value> = now
                .config
                .routes
                .iter()
                .filter(|r| switched.contains(&r.name.0))
                .map(|r| describe(r, None))
                .collect();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "from": from,
                    "to": to,
                    "routes": routes,
                    "note": if routes.is_empty() {
                        format!("no route sends to {from}: nothing changed")
                    } else {
                        LASTS.to_owned()
                    },
                }),
            )
        }
        Err(refused) => refused.into_response(request_id),
    }
}

/// `{"route": …, "split": […], "sticky": …, "set_at_run_time": …}`: a one-service route
/// reads as a split with one target of weight 1, so a client can GET, edit and PUT back.
fn describe(route: &RouteConfig, note: Option<&str>) -> serde_json::Value {
    let split: Vec<serde_json::Value> = route
        .target
        .targets()
        .into_iter()
        .map(|(service, weight)| serde_json::json!({ "service": service, "weight": weight }))
        .collect();
    let mut v = serde_json::json!({
        "route": route.name,
        "split": split,
        "sticky": route.target.sticky().map(|k| k.to_string()),
        "set_at_run_time": route.target_set_at_run_time,
    });
    if let Some(note) = note {
        v["note"] = note.into();
    }
    v
}

fn unknown_route(name: &str) -> Refused {
    Refused::NotFound {
        code: "unknown_route",
        message: format!("no route named {name:?}"),
    }
}

fn find_route<'a>(snapshot: &'a Snapshot, name: &str) -> Result<(usize, &'a RouteConfig), Refused> {
    snapshot
        .config
        .routes
        .iter()
        .enumerate()
        .find(|(_, r)| r.name.0 == name)
        .ok_or_else(|| unknown_route(name))
}

/// The body as a target, checked as the config file is: types, unknown keys, weights,
/// duplicate and unknown services, the sticky key.
fn parse_split(
    snapshot: &Snapshot,
    route: &RouteConfig,
    body: &[u8],
) -> Result<RouteTarget, Refused> {
    if let RouteTarget::Static(_) = route.target {
        // Turning a static answer into a proxied route changes what the route is, not how it
        // spreads traffic: that is a config change.
        return Err(Refused::Bad(format!(
            "route {:?} answers by itself (respond or redirect) and has no services to split; \
             change it in the config file",
            route.name.0
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: SplitBody = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        Refused::Field {
            field: if field == "." {
                "(body)".to_owned()
            } else {
                field
            },
            message: e.into_inner().to_string(),
        }
    })?;
    Split::check(parsed.split.iter().map(|t| (t.service.as_str(), t.weight))).map_err(|e| {
        Refused::Field {
            field: e.field(),
            message: e.to_string(),
        }
    })?;
    for (i, t) in parsed.split.iter().enumerate() {
        if snapshot.upstreams.service(&t.service).is_none() {
            return Err(Refused::Field {
                field: format!("split[{i}].service"),
                message: format!(
                    "no service named {:?} {}",
                    t.service,
                    known_services(snapshot)
                ),
            });
        }
        if let Some(message) = upgrade_conflict(snapshot, route, &t.service) {
            return Err(Refused::Field {
                field: format!("split[{i}].service"),
                message,
            });
        }
    }
    let sticky = match parsed.sticky {
        None => route.target.sticky().cloned(),
        Some(None) => None,
        Some(Some(key)) => Some(HashKey::parse(&key).ok_or_else(|| Refused::Field {
            field: "sticky".to_owned(),
            message: format!(
                "{key:?} is not a sticky key; expected \"header:NAME\", \"cookie:NAME\" or \"client-address\""
            ),
        })?),
    };
    let mut targets: Vec<(ServiceName, u32)> = parsed
        .split
        .into_iter()
        .map(|t| (ServiceName(t.service), u32::try_from(t.weight).unwrap_or(1)))
        .collect();
    if targets.len() == 1 && sticky.is_none() {
        // One service, nothing to keep: the plain target, which costs nothing per request.
        let (service, _) = targets.remove(0);
        return Ok(RouteTarget::Service(service));
    }
    let split = Split::new(targets, sticky).map_err(|e| Refused::Field {
        field: e.field(),
        message: e.to_string(),
    })?;
    Ok(RouteTarget::Split(Arc::new(split)))
}

/// Why `route` cannot send to `service`: it has `upgrades` and the service speaks HTTP/2 (h2
/// or h2c), which cannot carry an HTTP/1.1 upgrade (the config file's rule).
fn upgrade_conflict(snapshot: &Snapshot, route: &RouteConfig, service: &str) -> Option<String> {
    route.upgrade.as_ref()?;
    let svc = snapshot.upstreams.service(service)?;
    let protocol = svc.config.protocol;
    protocol.is_http2().then(|| {
        format!(
            "route {:?} has upgrades and service {service:?} speaks {} (HTTP/2), which cannot carry an HTTP/1.1 upgrade",
            route.name.0,
            protocol.name()
        )
    })
}

/// "(known: a, b)".
fn known_services(snapshot: &Snapshot) -> String {
    let names: BTreeSet<&str> = snapshot
        .config
        .services
        .iter()
        .map(|s| s.name.0.as_str())
        .collect();
    let list = names.into_iter().collect::<Vec<_>>().join(", ");
    format!("(known: {list})")
}
