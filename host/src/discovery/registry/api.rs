//! The registry's REST API (JSON), served under `/registry` on the admin listener.
//!
//! ```text
//! GET    /registry/services                               list services
//! GET    /registry/services/{service}                     list a service's instances
//! GET    /registry/services/{service}/instances           the same, as a blocking query
//!                                                         (`?index=N&wait=30s`, watch.rs)
//! POST   /registry/services/{service}/instances           register (token)
//! PUT    /registry/services/{service}/instances/{id}      renew the lease (token)
//! DELETE /registry/services/{service}/instances/{id}      deregister (token)
//! ```

use std::net::IpAddr;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};

use super::{Instance, InstanceSpec, Registry, RegistryError, WatchError};
use crate::discovery::EndpointMeta;

/// Register bodies larger than this are refused (413).
const MAX_BODY: usize = 64 * 1024;

/// The change index of the answered set, on every instance listing.
pub const INDEX_HEADER: &str = "x-registry-index";

/// A blocking query without `wait` holds this long (cut to `[registry].max_wait`).
pub const DEFAULT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    id: String,
    address: String,
    // Wider than u16 so an out-of-range port gets our message, not serde's.
    port: i64,
    #[serde(default)]
    metadata: MetadataBody,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct MetadataBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
}

#[derive(Serialize)]
struct InstanceView<'a> {
    id: &'a str,
    address: String,
    port: u16,
    metadata: MetadataBody,
    /// Seconds since the last renewal.
    last_renewal_age_secs: f64,
}

/// Answers one `/registry/...` request. Never panics on any input; every failure is a JSON
/// `{"error": code, "message": ...}` with a 4xx status (503 `registry_store_unavailable`
/// while etcd does not answer), the gateway's one error shape.
pub async fn handle<B>(registry: &Registry, req: Request<B>) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match route(registry, req).await {
        Ok(resp) => resp,
        Err((status, code, message)) => {
            let mut response = json(
                status,
                &serde_json::json!({ "error": code, "message": message }),
            );
            if status == StatusCode::SERVICE_UNAVAILABLE {
                // Watches free up as they answer; a client waits a moment, then asks again.
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            }
            response
        }
    }
}

type ApiError = (StatusCode, &'static str, String);

async fn route<B>(registry: &Registry, req: Request<B>) -> Result<Response<Full<Bytes>>, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let method = req.method().clone();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["registry", "services"]) => {
            let list: Vec<_> = registry
                .services()
                .into_iter()
                .map(|s| {
                    serde_json::json!({
                        "name": s.name,
                        "instances": s.instances,
                        "self_preservation": s.self_preservation,
                    })
                })
                .collect();
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "services": list }),
            ))
        }
        (Method::GET, ["registry", "services", service]) => {
            // An unknown service stays a 404 here, as before the watch API; the one view
            // then gives instances and index from the same moment.
            registry.instances(service).map_err(api_error)?;
            let view = registry.view(service).map_err(api_error)?;
            Ok(listing(service, view.index, &view.instances))
        }
        (Method::GET, ["registry", "services", service, "instances"]) => {
            let query = WatchQuery::parse(req.uri().query())?;
            let view = match query.index {
                None => registry.view(service).map_err(api_error)?,
                Some(index) => registry
                    .wait_for_change(service, index, query.wait)
                    .await
                    .map_err(watch_error)?,
            };
            Ok(listing(service, view.index, &view.instances))
        }
        (Method::POST, ["registry", "services", service, "instances"]) => {
            authorize(registry, &req)?;
            let service = service.to_string();
            let body = read_body(req.into_body()).await?;
            let spec = parse_register(&body)?;
            let id = spec.id.clone();
            let created = registry
                .register_via_store(&service, spec)
                .await
                .map_err(api_error)?;
            let cfg = registry.config();
            Ok(json(
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                &serde_json::json!({
                    "service": service,
                    "id": id,
                    "lease_secs": cfg.lease.as_secs_f64(),
                    "heartbeat_secs": cfg.heartbeat.as_secs_f64(),
                }),
            ))
        }
        (Method::PUT, ["registry", "services", service, "instances", id]) => {
            authorize(registry, &req)?;
            registry
                .renew_via_store(service, id)
                .await
                .map_err(api_error)?;
            Ok(json(StatusCode::OK, &serde_json::json!({ "renewed": id })))
        }
        (Method::DELETE, ["registry", "services", service, "instances", id]) => {
            authorize(registry, &req)?;
            registry
                .deregister_via_store(service, id)
                .await
                .map_err(api_error)?;
            Ok(Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Full::new(Bytes::new()))
                .unwrap_or_default())
        }
        (_, ["registry", "services"])
        | (_, ["registry", "services", _])
        | (_, ["registry", "services", _, "instances"])
        | (_, ["registry", "services", _, "instances", _]) => Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err((
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no registry endpoint at {path}"),
        )),
    }
}

/// `?index=N&wait=D` of a blocking query. Without `index` the listing answers at once.
struct WatchQuery {
    index: Option<u64>,
    wait: std::time::Duration,
}

impl WatchQuery {
    fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let bad = |m: String| (StatusCode::BAD_REQUEST, "bad_query", m);
        let mut index = None;
        let mut wait = None;
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let shown: String = value.chars().take(40).collect();
            match &*key {
                "index" if index.is_none() => {
                    index = Some(value.parse::<u64>().map_err(|_| {
                        bad(format!(
                            "invalid index {shown:?}: expected the X-Registry-Index of an earlier answer (an integer from 0)"
                        ))
                    })?);
                }
                "wait" if wait.is_none() => {
                    wait = Some(humantime::parse_duration(&value).map_err(|_| {
                        bad(format!(
                            "invalid wait {shown:?}: expected a duration such as \"30s\", \"500ms\" or \"5m\""
                        ))
                    })?);
                }
                "index" | "wait" => return Err(bad(format!("{key} is given twice"))),
                other => {
                    let other: String = other.chars().take(40).collect();
                    return Err(bad(format!(
                        "unknown query parameter {other:?}: expected index and wait"
                    )));
                }
            }
        }
        Ok(Self {
            index,
            wait: wait.unwrap_or(DEFAULT_WAIT),
        })
    }
}

fn watch_error(e: WatchError) -> ApiError {
    match e {
        WatchError::Registry(e) => api_error(e),
        // Logged at debug: any reader can reach the cap, and each refusal is answered.
        WatchError::TooMany { .. } => {
            tracing::debug!(error = %e, "registry: blocking query refused");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_watches",
                e.to_string(),
            )
        }
    }
}

/// A service's instances with their change index, in the body and the `X-Registry-Index`
/// header.
fn listing(service: &str, index: u64, instances: &[Instance]) -> Response<Full<Bytes>> {
    let now = tokio::time::Instant::now();
    let views: Vec<InstanceView<'_>> = instances
        .iter()
        .map(|i| InstanceView {
            id: &i.spec.id,
            address: i.spec.address.to_string(),
            port: i.spec.port,
            metadata: MetadataBody {
                weight: Some(i64::from(i.spec.meta.weight)),
                zone: i.spec.meta.zone.clone(),
                version: i.spec.meta.version.clone(),
                tags: i.spec.meta.tags.clone(),
            },
            last_renewal_age_secs: now.saturating_duration_since(i.last_renewal).as_secs_f64(),
        })
        .collect();
    let mut response = json(
        StatusCode::OK,
        &serde_json::json!({ "service": service, "index": index, "instances": views }),
    );
    response
        .headers_mut()
        .insert(INDEX_HEADER, http::HeaderValue::from(index));
    response
}

fn api_error(e: RegistryError) -> ApiError {
    let (status, code) = match &e {
        RegistryError::UnknownService { .. } => (StatusCode::NOT_FOUND, "unknown_service"),
        RegistryError::UnknownInstance { .. } => (StatusCode::NOT_FOUND, "unknown_instance"),
        RegistryError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid"),
        RegistryError::StoreUnavailable { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "registry_store_unavailable",
        ),
    };
    (status, code, e.to_string())
}

/// Write calls need `Authorization: Bearer <token>` matching `[registry].token`.
fn authorize<B>(registry: &Registry, req: &Request<B>) -> Result<(), ApiError> {
    let Some(expected) = registry.config().token.as_deref() else {
        return Err((
            StatusCode::FORBIDDEN,
            "writes_disabled",
            "registry writes are disabled: set [registry].token".into(),
        ));
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err((
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "the bearer token does not match [registry].token".into(),
        )),
        None => Err((
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "write calls need an Authorization: Bearer <token> header".into(),
        )),
    }
}

// Compare without an early exit, so response timing does not reveal a token prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body exceeds {MAX_BODY} bytes"),
        )),
        Err(e) => Err((
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("reading the body failed: {e}"),
        )),
    }
}

fn parse_register(body: &[u8]) -> Result<InstanceSpec, ApiError> {
    let invalid = |m: String| (StatusCode::BAD_REQUEST, "invalid", m);
    let raw: RegisterBody = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the register body is not valid: {e}")))?;
    let address: IpAddr = raw.address.parse().map_err(|_| {
        invalid(format!(
            "invalid address {:?}: expected an IPv4 or IPv6 literal",
            raw.address
        ))
    })?;
    let port = u16::try_from(raw.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid(format!("invalid port {}: expected 1 to 65535", raw.port)))?;
    let weight = match raw.metadata.weight {
        None => 1,
        Some(w) => u32::try_from(w)
            .ok()
            .filter(|w| (1..=10_000).contains(w))
            .ok_or_else(|| invalid(format!("invalid metadata.weight {w}: expected 1 to 10000")))?,
    };
    Ok(InstanceSpec {
        id: raw.id,
        address,
        port,
        meta: EndpointMeta {
            weight,
            zone: raw.metadata.zone,
            version: raw.metadata.version,
            tags: raw.metadata.tags,
        },
    })
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::registry::RegistryConfig;

    fn registry() -> std::sync::Arc<Registry> {
        Registry::new(RegistryConfig {
            token: Some("s3cret".into()),
            ..RegistryConfig::default()
        })
    }

    async fn call(
        r: &Registry,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = b
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("valid request");
        let resp = handle(r, req).await;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .expect("full body")
            .to_bytes();
        let value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        (status, value)
    }

    const REG: &str = r#"{"id":"a1","address":"127.0.0.1","port":8081,
        "metadata":{"weight":3,"zone":"eu-1","version":"1.2.0","tags":["canary"]}}"#;

    #[tokio::test]
    async fn register_list_renew_deregister() {
        let r = registry();
        let p = "/registry/services/orders/instances";
        let (s, v) = call(&r, "POST", p, Some("s3cret"), REG).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["lease_secs"], 90.0);
        let (s, _) = call(&r, "POST", p, Some("s3cret"), REG).await;
        assert_eq!(s, StatusCode::OK, "re-register");

        let (s, v) = call(&r, "GET", "/registry/services", None, "").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["services"][0]["name"], "orders");
        assert_eq!(v["services"][0]["instances"], 1);
        let (_, v) = call(&r, "GET", "/registry/services/orders", None, "").await;
        assert_eq!(v["instances"][0]["metadata"]["weight"], 3);
        assert_eq!(v["instances"][0]["metadata"]["tags"][0], "canary");

        let renew = "/registry/services/orders/instances/a1";
        assert_eq!(
            call(&r, "PUT", renew, Some("s3cret"), "").await.0,
            StatusCode::OK
        );
        assert_eq!(
            call(&r, "DELETE", renew, Some("s3cret"), "").await.0,
            StatusCode::NO_CONTENT
        );
        let (s, v) = call(&r, "PUT", renew, Some("s3cret"), "").await;
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("unknown_instance"))
        );
    }

    #[tokio::test]
    async fn writes_need_the_token() {
        let r = registry();
        let p = "/registry/services/orders/instances";
        let (s, v) = call(&r, "POST", p, None, REG).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("missing_token"))
        );
        let (s, _) = call(&r, "POST", p, Some("wrong"), REG).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let open = Registry::new(RegistryConfig::default());
        let (s, _) = call(&open, "POST", p, Some("x"), REG).await;
        assert_eq!(
            s,
            StatusCode::FORBIDDEN,
            "no token configured: writes disabled"
        );
    }

    #[tokio::test]
    async fn bad_input_gets_a_4xx_json_error() {
        let r = registry();
        let p = "/registry/services/orders/instances";
        for (body, needle) in [
            (r#"{"address":"127.0.0.1","port":1}"#, "missing field `id`"),
            (
                r#"{"id":"a","address":"127.0.0.1","port":70000}"#,
                "invalid port 70000",
            ),
            (
                r#"{"id":"a","address":"127.0.0.1","port":0}"#,
                "invalid port 0",
            ),
            (
                r#"{"id":"a","address":"example.com","port":80}"#,
                "invalid address",
            ),
            (
                r#"{"id":"a","address":"::1","port":80,"metadata":{"weight":0}}"#,
                "metadata.weight",
            ),
            (
                r#"{"id":"a","address":"::1","port":80,"extra":1}"#,
                "unknown field",
            ),
            (r#"{"id":"a/b","address":"::1","port":80}"#, "invalid id"),
            ("not json", "not valid"),
        ] {
            let (s, v) = call(&r, "POST", p, Some("s3cret"), body).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
            let msg = v["message"].as_str().unwrap_or_default();
            assert!(msg.contains(needle), "{body}: {msg}");
        }
        let (s, v) = call(
            &r,
            "PUT",
            "/registry/services/nope/instances/a",
            Some("s3cret"),
            "",
        )
        .await;
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("unknown_service"))
        );
        let (s, _) = call(&r, "PATCH", "/registry/services", None, "").await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        let (s, _) = call(&r, "GET", "/registry/what", None, "").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let big = "x".repeat(MAX_BODY + 1);
        let (s, _) = call(&r, "POST", p, Some("s3cret"), &big).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
