//! The bundled echo origin the embedded default config proxies to: it answers every request
//! with a JSON description of what it received, so a newcomer can see what the gateway forwards.

use std::collections::BTreeMap;
use std::convert::Infallible;

use http::{header, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{self, Body};
use crate::listener::shedding::ListenerBudget;
use crate::listener::{server, Limits};

/// Serves the echo origin on `listener` until `stop` flips to true.
pub async fn serve_echo(listener: TcpListener, stop: watch::Receiver<bool>) {
    let limits = Limits {
        max_header_count: 100,
        max_header_bytes: 64 * 1024,
        max_uri_length: 8192,
        default_timeout: std::time::Duration::from_secs(30),
        max_response_header_bytes: 64 * 1024,
        max_concurrent_streams: 128,
        body_idle_timeout: std::time::Duration::from_secs(30),
        max_requests_in_flight: None,
        max_connections: None,
        max_body_bytes: crate::body::limit::MaxBodyBytes::DEFAULT,
        underscore_headers: crate::headers::refuse::UnderscoreHeaders::Drop,
    };
    server::serve(
        listener,
        &limits,
        std::sync::Arc::new(ListenerBudget::unbounded("echo", None)),
        None,
        |req, _| echo(req),
        stop,
        std::time::Duration::from_secs(1),
    )
    .await;
}

async fn echo(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, incoming) = req.into_parts();
    let body_len = match incoming.collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(_) => 0,
    };
    let headers: BTreeMap<&str, String> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let description = serde_json::json!({
        "service": "echo",
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body_len,
    });
    let mut response = Response::new(body::full(description.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
