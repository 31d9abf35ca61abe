//! `[tracing]` (call-chain tracing, docs/observability.md) and `[metrics]` (API metering);
//! converts into `telemetry::trace::TracingPolicy` and `telemetry::MeteringPolicy`.

use http::HeaderName;
use serde::Deserialize;
use toml::Spanned;

use super::validate::Validator;
use crate::telemetry::trace::TracingPolicy;
use crate::telemetry::MeteringPolicy;

/// `[tracing]`: its presence turns tracing on (`enabled = false` turns it off again).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// Default true where the table is written.
    pub enabled: Option<Spanned<bool>>,
    /// The OTLP/gRPC collector, `http://host:port`. Required.
    pub endpoint: Option<Spanned<String>>,
    /// Share of new traces sampled, 0.0 to 1.0. Default 1.0. Requests with a `traceparent`
    /// follow their parent's decision.
    pub sample_ratio: Option<Spanned<f64>>,
    /// `service.name` of the spans. Default `gatehouse`.
    pub service_name: Option<Spanned<String>>,
    /// Ended spans waiting for export; more are dropped and counted. Default 2048.
    pub queue_size: Option<Spanned<i64>>,
    /// Spans per export. Default 512.
    pub batch_size: Option<Spanned<i64>>,
    /// A partial batch is sent after this long. Default `1s`.
    pub flush_interval: Option<Spanned<String>>,
    /// One export is given up after this long. Default `5s`.
    pub export_timeout: Option<Spanned<String>>,
}

/// `[metrics]`: API metering by consumer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// The request header naming the consumer, as an auth plugin sets it. Default
    /// `x-consumer`.
    pub consumer_header: Option<Spanned<String>>,
    /// Consumers with their own label; the rest are counted as `other`. Default 50.
    pub top_consumers: Option<Spanned<i64>>,
}

/// `[tracing]`, or `None` when tracing is off.
pub(super) fn tracing(
    v: &mut Validator<'_>,
    raw: Option<&Spanned<RawTracing>>,
) -> Option<TracingPolicy> {
    let table = raw?;
    let raw = table.get_ref();
    if raw.enabled.as_ref().is_some_and(|e| !*e.get_ref()) {
        return None;
    }
    let endpoint = match &raw.endpoint {
        None => {
            v.problem(
                table.span(),
                "tracing.endpoint",
                "is required: the OTLP/gRPC collector, e.g. \"http://127.0.0.1:4317\" (or set enabled = false)".to_owned(),
            );
            String::new()
        }
        Some(e) => {
            let text = e.get_ref();
            let ok = text
                .strip_prefix("http://")
                .is_some_and(|rest| !rest.is_empty())
                && text
                    .parse::<http::Uri>()
                    .is_ok_and(|u| u.authority().is_some());
            if !ok {
                v.problem(
                    e.span(),
                    "tracing.endpoint",
                    format!(
                        "{text:?} is not an OTLP/gRPC endpoint; expected http://HOST:PORT such as \"http://127.0.0.1:4317\" (https is not supported yet: run a local collector)"
                    ),
                );
            }
            text.clone()
        }
    };
    let sample_ratio = match &raw.sample_ratio {
        None => TracingPolicy::DEFAULT_SAMPLE_RATIO,
        Some(r) if (0.0..=1.0).contains(r.get_ref()) => *r.get_ref(),
        Some(r) => {
            v.problem(
                r.span(),
                "tracing.sample_ratio",
                format!(
                    "{} is not a ratio; expected 0.0 to 1.0 (0.01 samples 1 %)",
                    r.get_ref()
                ),
            );
            TracingPolicy::DEFAULT_SAMPLE_RATIO
        }
    };
    let service_name = match &raw.service_name {
        None => TracingPolicy::DEFAULT_SERVICE_NAME.to_owned(),
        Some(n) if !n.get_ref().trim().is_empty() => n.get_ref().clone(),
        Some(n) => {
            v.problem(
                n.span(),
                "tracing.service_name",
                "must not be empty".to_owned(),
            );
            TracingPolicy::DEFAULT_SERVICE_NAME.to_owned()
        }
    };
    Some(TracingPolicy {
        endpoint,
        sample_ratio,
        service_name,
        queue_size: v.positive(
            &raw.queue_size,
            "tracing.queue_size",
            TracingPolicy::DEFAULT_QUEUE_SIZE,
        ),
        batch_size: v.positive(
            &raw.batch_size,
            "tracing.batch_size",
            TracingPolicy::DEFAULT_BATCH_SIZE,
        ),
        flush_interval: v.duration(
            &raw.flush_interval,
            "tracing.flush_interval",
            TracingPolicy::DEFAULT_FLUSH_INTERVAL,
        ),
        export_timeout: v.duration(
            &raw.export_timeout,
            "tracing.export_timeout",
            TracingPolicy::DEFAULT_EXPORT_TIMEOUT,
        ),
    })
}

/// `[metrics]`.
pub(super) fn metering(v: &mut Validator<'_>, raw: &RawMetrics) -> MeteringPolicy {
    let mut policy = MeteringPolicy::default();
    if let Some(name) = &raw.consumer_header {
        match HeaderName::from_bytes(name.get_ref().as_bytes()) {
            Ok(header) => policy.consumer_header = header,
            Err(_) => v.problem(
                name.span(),
                "metrics.consumer_header",
                format!("{:?} is not a header name", name.get_ref()),
            ),
        }
    }
    policy.top_consumers = v.positive(
        &raw.top_consumers,
        "metrics.top_consumers",
        MeteringPolicy::DEFAULT_TOP_CONSUMERS,
    );
    policy
}
