//! Call-chain tracing: W3C Trace Context in and out, OpenTelemetry spans exported over OTLP.
//!
//! Off unless `[tracing]` is configured: then no [`Tracer`] exists, the request path makes no
//! span and parses no header, and an incoming `traceparent` passes upstream untouched.
//!
//! When on, each request gets a server span (a child of the client's `traceparent`, if it
//! sent one; sampling follows that parent, else `sample_ratio`). The span's context travels
//! as a [`TraceScope`] in the request's extensions and in the plugins' request metadata:
//! each plugin hook, each plugin service call and each upstream try makes a child span, and
//! every upstream try sends its own span as `traceparent`, sampled or not.
//!
//! Names follow the OpenTelemetry semantic conventions where one exists (`http.route`,
//! `http.response.status_code`, `client.address`, `server.address`, `error.type`), and are
//! `gatehouse.*` otherwise. See docs/observability.md.

mod export;

pub use export::{QueueSettings, SpanCounters};

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanExporter as _};
use serde::Serialize;

use crate::serialize::as_humantime;

/// The `traceparent` header (W3C Trace Context).
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` header (W3C Trace Context).
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `[tracing]`: where spans go and how many are kept.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TracingPolicy {
    /// The OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// Share of new traces sampled (0.0..=1.0); a request with a `traceparent` follows its
    /// parent's decision.
    pub sample_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Ended spans waiting for export; more are dropped (and counted).
    pub queue_size: usize,
    /// Spans per export call.
    pub batch_size: usize,
    #[serde(serialize_with = "as_humantime")]
    pub flush_interval: Duration,
    #[serde(serialize_with = "as_humantime")]
    pub export_timeout: Duration,
}

impl TracingPolicy {
    pub const DEFAULT_SAMPLE_RATIO: f64 = 1.0;
    pub const DEFAULT_SERVICE_NAME: &'static str = "gatehouse";
    pub const DEFAULT_QUEUE_SIZE: usize = 2048;
    pub const DEFAULT_BATCH_SIZE: usize = 512;
    pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("tracing.endpoint {endpoint:?}: cannot build the OTLP exporter: {message}")]
    Exporter { endpoint: String, message: String },
}

/// The gateway's tracer: makes spans and hands ended ones to the export queue.
#[derive(Debug)]
pub struct Tracer {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    policy: TracingPolicy,
}

impl Tracer {
    /// Starts the exporter's queue task; must run inside a tokio runtime. The collector is
    /// connected lazily: one that is down costs nothing at start.
    pub fn start(policy: &TracingPolicy, counters: SpanCounters) -> Result<Arc<Self>, TraceError> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(policy.endpoint.clone())
            .with_timeout(policy.export_timeout)
            .build()
            .map_err(|e| TraceError::Exporter {
                endpoint: policy.endpoint.clone(),
                message: e.to_string(),
            })?;
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(policy.service_name.clone())
            .build();
        exporter.set_resource(&resource);
        let processor = export::QueueProcessor::start(
            exporter,
            QueueSettings {
                queue_size: policy.queue_size,
                batch_size: policy.batch_size,
                flush_interval: policy.flush_interval,
                export_timeout: policy.export_timeout,
            },
            counters,
        );
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                policy.sample_ratio,
            ))))
            .with_resource(resource)
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("gatehouse");
        Ok(Arc::new(Tracer {
            tracer,
            provider,
            policy: policy.clone(),
        }))
    }

    /// The policy it was started with (a reload that changes it needs a restart).
    pub fn policy(&self) -> &TracingPolicy {
        &self.policy
    }

    /// The server span of one request: a child of the request's `traceparent` if it has a
    /// valid one, else the root of a new trace.
    pub fn request_span<B>(self: &Arc<Self>, req: &Request<B>, client: SocketAddr) -> RequestSpan {
        // No `traceparent` (the common case): a new root, without asking the propagator to
        // look the header up under a name parsed from a string.
        let parent = if req.headers().contains_key(&TRACEPARENT) {
            TraceContextPropagator::new()
                .extract_with_context(&Context::new(), &HeaderExtractor(req.headers()))
        } else {
            Context::new()
        };
        // The sampler looks at the parent and the trace id only, so the span is started bare
        // and gets its attributes only if it records: an unsampled request builds none.
        let mut span = self
            .tracer
            .span_builder(method_name(req.method()))
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        if span.is_recording() {
            let mut attributes = vec![
                KeyValue::new("http.request.method", req.method().as_str().to_owned()),
                KeyValue::new("url.path", req.uri().path().to_owned()),
                KeyValue::new("client.address", client.ip().to_string()),
                KeyValue::new("client.port", i64::from(client.port())),
                KeyValue::new("network.protocol.version", protocol_version(req.version())),
            ];
            if let Some(query) = req.uri().query() {
                attributes.push(KeyValue::new("url.query", query.to_owned()));
            }
            span.set_attributes(attributes);
        }
        RequestSpan {
            scope: TraceScope {
                tracer: Arc::clone(self),
                cx: parent.with_span(span),
            },
            method: req.method().clone(),
        }
    }

    /// Ends the export: spans still queued are sent for at most `timeout`.
    pub fn shutdown(&self, timeout: Duration) {
        if let Err(error) = self.provider.shutdown_with_timeout(timeout) {
            tracing::debug!(%error, "tracer shutdown");
        }
    }
}

/// A span name for `method`: the standard methods without an allocation.
fn method_name(method: &http::Method) -> Cow<'static, str> {
    use http::Method;
    let name = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return Cow::Owned(method.as_str().to_owned()),
    };
    Cow::Borrowed(name)
}

/// Lowercase hex of `bytes` into `out` (twice as long).
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// A span in progress and the tracer for its children. Cheap to clone (two `Arc`s); a copy
/// rides in the request's extensions and in the plugins' request metadata.
#[derive(Clone, Debug)]
pub struct TraceScope {
    tracer: Arc<Tracer>,
    cx: Context,
}

impl TraceScope {
    /// A child span. Its `attributes` are built only if the span records: a child of an
    /// unsampled span is unsampled (the sampler is parent-based), and needs only its ids.
    fn child(
        &self,
        name: impl FnOnce() -> Cow<'static, str>,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> ChildSpan {
        let sampled = self.is_sampled();
        let mut builder = self
            .tracer
            .tracer
            .span_builder(if sampled { name() } else { Cow::Borrowed("") })
            .with_kind(kind);
        if sampled {
            builder = builder.with_attributes(attributes());
        }
        let span = builder.start_with_context(&self.tracer.tracer, &self.cx);
        ChildSpan(TraceScope {
            tracer: Arc::clone(&self.tracer),
            cx: self.cx.with_span(span),
        })
    }

    /// The span's ids and sampled flag.
    pub fn span_context(&self) -> SpanContext {
        self.cx.span().span_context().clone()
    }

    /// Whether the span is sampled (recorded and exported).
    pub fn is_sampled(&self) -> bool {
        self.cx.span().span_context().is_sampled()
    }

    /// Sets `traceparent` (and `tracestate`, or removes a stale one) to this span.
    pub fn inject(&self, headers: &mut HeaderMap) {
        let span = self.cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        // `00-{trace id}-{span id}-{flags}`, written by hand: once per upstream try.
        let mut traceparent = *b"00-00000000000000000000000000000000-0000000000000000-00";
        write_hex(&mut traceparent[3..35], &sc.trace_id().to_bytes());
        write_hex(&mut traceparent[36..52], &sc.span_id().to_bytes());
        write_hex(&mut traceparent[53..55], &[sc.trace_flags().to_u8()]);
        if let Ok(value) = HeaderValue::from_bytes(&traceparent) {
            headers.insert(TRACEPARENT.clone(), value);
        }
        let state = sc.trace_state().header();
        match HeaderValue::from_str(&state) {
            Ok(value) if !state.is_empty() => {
                headers.insert(TRACESTATE.clone(), value);
            }
            _ => {
                headers.remove(&TRACESTATE);
            }
        }
    }

    /// A span for one plugin hook (`phase`: request, response, failure).
    pub fn plugin_hook(&self, plugin: &str, version: &str, phase: &'static str) -> ChildSpan {
        self.child(
            || Cow::Owned(format!("plugin {phase} {plugin}")),
            SpanKind::Internal,
            || {
                vec![
                    KeyValue::new("gatehouse.plugin.name", plugin.to_owned()),
                    KeyValue::new("gatehouse.plugin.version", version.to_owned()),
                    KeyValue::new("gatehouse.plugin.phase", phase),
                ]
            },
        )
    }

    /// A span for one service call a plugin makes; its upstream tries are its children.
    pub fn service_call(&self, plugin: &str, service: &str, method: &str, path: &str) -> ChildSpan {
        self.child(
            || Cow::Owned(format!("service call {service}")),
            SpanKind::Internal,
            || {
                vec![
                    KeyValue::new("gatehouse.plugin.name", plugin.to_owned()),
                    KeyValue::new("peer.service", service.to_owned()),
                    KeyValue::new("http.request.method", method.to_owned()),
                    KeyValue::new("url.path", path.to_owned()),
                ]
            },
        )
    }

    /// A client span for one try of an upstream call: `retry` is 0 for the first try.
    pub fn upstream_try(
        &self,
        service: &str,
        endpoint: SocketAddr,
        retry: u32,
        breaker: &'static str,
        method: &str,
    ) -> ChildSpan {
        self.child(
            || Cow::Owned(method.to_owned()),
            SpanKind::Client,
            || {
                vec![
                    KeyValue::new("peer.service", service.to_owned()),
                    KeyValue::new("server.address", endpoint.ip().to_string()),
                    KeyValue::new("server.port", i64::from(endpoint.port())),
                    KeyValue::new("http.request.method", method.to_owned()),
                    KeyValue::new("http.request.resend_count", i64::from(retry)),
                    KeyValue::new("gatehouse.upstream.retry", i64::from(retry)),
                    KeyValue::new("gatehouse.upstream.breaker", breaker),
                ]
            },
        )
    }
}

/// A child span; ended when dropped, or by one of its `end` methods with an outcome.
#[derive(Debug)]
pub struct ChildSpan(TraceScope);

impl ChildSpan {
    /// The scope for this span's own children (and its `traceparent`).
    pub fn scope(&self) -> &TraceScope {
        &self.0
    }

    /// Sets one attribute.
    pub fn set(&self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        self.0.cx.span().set_attribute(KeyValue::new(key, value));
    }

    /// Ends a plugin hook span with its outcome: `continue`, `respond`, `trap`, `deadline`,
    /// `oom`, or another failure kind (which also marks the span an error).
    pub fn end_hook(self, outcome: &'static str) {
        let span = self.0.cx.span();
        span.set_attribute(KeyValue::new("gatehouse.plugin.outcome", outcome));
        if !matches!(outcome, "continue" | "respond" | "skip") {
            span.set_attribute(KeyValue::new("error.type", outcome));
            span.set_status(Status::error(outcome));
        }
        span.end();
    }

    /// Ends an HTTP client span with the response status.
    pub fn end_status(self, status: StatusCode) {
        let span = self.0.cx.span();
        if !span.is_recording() {
            return;
        }
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            span.set_attribute(KeyValue::new("error.type", status.as_str().to_owned()));
            span.set_status(Status::error(""));
        }
        span.end();
    }

    /// Ends the span as failed with `kind` (`connect`, `timeout`, ...).
    pub fn end_error(self, kind: &'static str, message: String) {
        let span = self.0.cx.span();
        span.set_attribute(KeyValue::new("error.type", kind));
        span.set_status(Status::error(message));
        span.end();
    }
}

/// The server span of one request (see [`Tracer::request_span`]).
#[derive(Debug)]
pub struct RequestSpan {
    scope: TraceScope,
    method: http::Method,
}

impl RequestSpan {
    /// The scope for the request's child spans.
    pub fn scope(&self) -> &TraceScope {
        &self.scope
    }

    /// `(trace_id, span_id)` as lowercase hex, for the access log.
    pub fn ids(&self) -> (String, String) {
        let sc = self.scope.span_context();
        (sc.trace_id().to_string(), sc.span_id().to_string())
    }

    /// Ends the span: names it `METHOD route` and records the route and status.
    pub fn finish(self, route: Option<&str>, status: StatusCode) {
        let span = self.scope.cx.span();
        if !span.is_recording() {
            return;
        }
        if let Some(route) = route {
            span.set_attribute(KeyValue::new("http.route", route.to_owned()));
            span.update_name(format!("{} {route}", self.method));
        }
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            span.set_attribute(KeyValue::new("error.type", status.as_str().to_owned()));
            span.set_status(Status::error(""));
        }
        span.end();
    }
}
