//! The outside world of a test case: a [`ServiceCaller`] that answers a plugin's service calls
//! from the case's canned answers and records every call with its arguments.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use serde::Serialize;

use super::case::{CallFailure, CannedService};
use crate::plugins::runtime::message::full;
use crate::plugins::{Body, ServiceCallError, ServiceCaller};

/// One service call a plugin made, and what it got.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallRecord {
    /// The service name.
    pub service: String,
    /// The method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Request headers, in order.
    pub headers: Vec<(String, String)>,
    /// Request body: as text if it is printable UTF-8, else `hex:` and its bytes.
    pub body: String,
    /// What the call got: a status, or the failure.
    pub answer: String,
}

#[derive(Default)]
struct State {
    canned: Arc<Vec<CannedService>>,
    calls: Vec<CallRecord>,
}

/// Canned answers for the case running now; the runner swaps them between cases.
#[derive(Clone, Default)]
pub struct CannedServices {
    state: Arc<Mutex<State>>,
}

impl CannedServices {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answer from `canned` from now on, with an empty call record.
    pub fn start_case(&self, canned: Vec<CannedService>) {
        let mut state = self.state();
        state.canned = Arc::new(canned);
        state.calls.clear();
    }

    /// The calls made since `start_case`.
    pub fn take_calls(&self) -> Vec<CallRecord> {
        std::mem::take(&mut self.state().calls)
    }

    fn record(&self, call: CallRecord) {
        self.state().calls.push(call);
    }
}

impl ServiceCaller for CannedServices {
    fn call(
        &self,
        service: &str,
        req: http::Request<Body>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, ServiceCallError>> {
        let this = self.clone();
        let canned = self.state().canned.clone();
        let service = service.to_string();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let path = parts
                .uri
                .path_and_query()
                .map(|pq| pq.as_str().to_string())
                .unwrap_or_else(|| parts.uri.path().to_string());
            let mut record = CallRecord {
                service: service.clone(),
                method: parts.method.to_string(),
                path: path.clone(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                    .collect(),
                body: printable(&body),
                answer: String::new(),
            };
            let found = canned.iter().find(|c| {
                c.name == service && c.path.as_deref().is_none_or(|p| path.starts_with(p))
            });
            let Some(answer) = found else {
                record.answer = "no canned answer (failed)".into();
                this.record(record);
                return Err(ServiceCallError::Failed(format!(
                    "the test case has no canned answer for {service} {path}"
                )));
            };
            if answer.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(answer.delay_ms)).await;
            }
            let result = match answer.failure {
                Some(CallFailure::Timeout) => Err(ServiceCallError::Timeout),
                Some(CallFailure::Failed) => Err(ServiceCallError::Failed(
                    "canned failure from the test case".into(),
                )),
                Some(CallFailure::UnknownService) => {
                    Err(ServiceCallError::UnknownService(service.clone()))
                }
                None => canned_response(answer),
            };
            record.answer = match &result {
                Ok(resp) => resp.status().as_u16().to_string(),
                Err(e) => format!("error: {e}"),
            };
            this.record(record);
            result
        })
    }
}

/// A body as text if it is printable UTF-8, else as `hex:` and its bytes (a gRPC frame).
fn printable(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(text)
            if !text
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) =>
        {
            text.to_string()
        }
        _ => {
            use std::fmt::Write as _;
            let mut out = String::from("hex:");
            for b in body {
                let _ = write!(out, "{b:02x}");
            }
            out
        }
    }
}

/// `text` as bytes, two hex digits each (whitespace ignored).
fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

fn canned_response(answer: &CannedService) -> Result<http::Response<Body>, ServiceCallError> {
    let body = match &answer.body_hex {
        Some(hex) => from_hex(hex).ok_or_else(|| {
            ServiceCallError::Failed(format!("canned body_hex of {} is not hex", answer.name))
        })?,
        None => answer.body.clone().into_bytes(),
    };
    let mut resp = http::Response::new(full(Bytes::from(body)));
    *resp.status_mut() = http::StatusCode::from_u16(answer.status).map_err(|_| {
        ServiceCallError::Failed(format!("canned status {} is invalid", answer.status))
    })?;
    for (name, value) in &answer.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ServiceCallError::Failed(format!("canned header name `{name}`")))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| ServiceCallError::Failed(format!("canned header value `{value}`")))?;
        resp.headers_mut().append(name, value);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_bodies_decode_and_bad_ones_are_refused() {
        assert_eq!(super::from_hex("00 0a ff"), Some(vec![0, 10, 255]));
        assert_eq!(super::from_hex("0"), None);
        assert_eq!(super::from_hex("zz"), None);
    }
}
