//! `/admin/cache`: the response cache's size (GET) and purges (DELETE), docs/cache.md.

use http::{HeaderValue, Method, StatusCode};

use super::{json, method_not_allowed};
use crate::body::Body;
use crate::cache::Purge;
use crate::error::json_error;
use crate::state::Snapshot;

/// `GET /admin/cache`, or `DELETE /admin/cache[?route=NAME[&path=/x | &prefix=/x]]`.
pub(super) async fn handle(
    snapshot: &Snapshot,
    method: &Method,
    query: Option<&str>,
    request_id: &HeaderValue,
) -> http::Response<Body> {
    match *method {
        Method::GET => {
            let stats = snapshot.cache.store.stats().await;
            json(StatusCode::OK, &stats)
        }
        Method::DELETE => {
            let purge = match purge(snapshot, query) {
                Ok(purge) => purge,
                Err(message) => {
                    return json_error(StatusCode::BAD_REQUEST, "bad_purge", &message, request_id)
                }
            };
            let purged = snapshot.cache.store.purge(&purge).await;
            tracing::info!(
                ?purge,
                purged,
                "response cache purged through the admin API"
            );
            json(StatusCode::OK, &serde_json::json!({ "purged": purged }))
        }
        _ => method_not_allowed(method, "/admin/cache", "GET or DELETE", request_id),
    }
}

/// The purge a query names, or what is wrong with it.
fn purge(snapshot: &Snapshot, query: Option<&str>) -> Result<Purge, String> {
    let (mut route, mut path, mut prefix) = (None, None, None);
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let slot = match name.as_ref() {
            "route" => &mut route,
            "path" => &mut path,
            "prefix" => &mut prefix,
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; expected route, and path or prefix"
                ))
            }
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(format!("parameter {name:?} given twice"));
        }
    }
    let Some(route) = route else {
        return match (path, prefix) {
            (None, None) => Ok(Purge::All),
            _ => Err("path and prefix need route=NAME".to_owned()),
        };
    };
    if !snapshot.config.routes.iter().any(|r| r.name.0 == route) {
        return Err(format!("no route named {route:?}"));
    }
    let check = |p: &str| {
        if p.starts_with('/') {
            Ok(())
        } else {
            Err(format!("{p:?} is not a path; it must start with '/'"))
        }
    };
    match (path, prefix) {
        (None, None) => Ok(Purge::Route(route)),
        (Some(path), None) => {
            check(&path)?;
            Ok(Purge::Path { route, path })
        }
        (None, Some(prefix)) => {
            check(&prefix)?;
            Ok(Purge::Prefix { route, prefix })
        }
        (Some(_), Some(_)) => Err("give path or prefix, not both".to_owned()),
    }
}
