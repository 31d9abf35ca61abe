//! One HTTP/1.1 request to the registry, answered as status, headers and a bounded body.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::ClientError;

/// Listings larger than this are refused (a registry answer is a few hundred bytes per
/// instance).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

#[derive(Clone, Debug)]
pub(crate) struct Transport {
    pub(crate) registry: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub(crate) struct Answer {
    pub(crate) body: Bytes,
}

impl Transport {
    pub(crate) fn new(registry: SocketAddr) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Self {
            registry,
            client: Client::builder(TokioExecutor::new())
                // Idle watch connections are reused for the next query; none lingers long.
                .pool_idle_timeout(Duration::from_secs(90))
                .build(connector),
        }
    }

    /// Sends one request and reads the answer; a non-2xx is [`ClientError::Rejected`].
    pub(crate) async fn call(
        &self,
        what: &str,
        method: Method,
        path_and_query: &str,
        token: Option<&str>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, ClientError> {
        let registry = self.registry;
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{registry}{path_and_query}"))
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(body))
            .map_err(|source| ClientError::Request {
                registry,
                what: what.to_owned(),
                source,
            })?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|source| ClientError::Transport {
                    registry,
                    what: what.to_owned(),
                    source,
                })?;
            let (parts, body) = resp.into_parts();
            // A body that fails mid-read is reported as empty: the status says enough, and a
            // listing that does not parse is reported by its reader.
            let body = Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            Ok::<_, ClientError>((parts.status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                registry,
                what: what.to_owned(),
                timeout,
            })??;
        if status.is_success() {
            Ok(Answer { body })
        } else {
            Err(rejected(registry, what, status, &body))
        }
    }
}

fn rejected(registry: SocketAddr, what: &str, status: StatusCode, body: &[u8]) -> ClientError {
    ClientError::Rejected {
        registry,
        what: what.to_owned(),
        status,
        body: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
    }
}
