//! The span exporter's queue: ended spans go into a bounded channel without waiting, and one
//! background task sends them to the collector in batches. A collector that is down or slow
//! fills the queue; then new spans are dropped and counted, and requests never wait.
//!
//! The SDK's own batch processor keeps its drop count private (it logs it once at shutdown),
//! so this small processor owns the queue to make `gatehouse_trace_spans_total{result=...}`
//! honest.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

/// What happened to ended, sampled spans.
#[derive(Debug, Clone, Default)]
pub struct SpanCounters {
    /// Accepted by the collector.
    pub exported: Counter,
    /// Dropped at once: the queue was full (the collector is slow or down).
    pub dropped: Counter,
    /// Sent in a batch the collector refused, or that failed or timed out.
    pub failed: Counter,
}

/// How the queue and its batches are sized.
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    pub queue_size: usize,
    pub batch_size: usize,
    /// A batch not yet full is sent after this long.
    pub flush_interval: Duration,
    /// One export is given up after this long (its spans count as failed).
    pub export_timeout: Duration,
}

/// Puts ended spans on the queue; never blocks.
#[derive(Debug)]
pub(super) struct QueueProcessor {
    queue: mpsc::Sender<SpanData>,
    counters: SpanCounters,
}

impl QueueProcessor {
    /// The processor, and the task that drains its queue into `exporter` (spawned on the
    /// current tokio runtime; it ends when the processor is dropped and the queue is empty).
    pub(super) fn start<E: SpanExporter + 'static>(
        exporter: E,
        settings: QueueSettings,
        counters: SpanCounters,
    ) -> Self {
        let (queue, rx) = mpsc::channel(settings.queue_size.max(1));
        tokio::spawn(drain(rx, exporter, settings, counters.clone()));
        QueueProcessor { queue, counters }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queue.try_send(span).is_err() {
            self.counters.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

async fn drain<E: SpanExporter>(
    mut rx: mpsc::Receiver<SpanData>,
    exporter: E,
    settings: QueueSettings,
    counters: SpanCounters,
) {
    let mut batch = Vec::with_capacity(settings.batch_size);
    loop {
        // Wait for the first span of a batch, then gather more until it is full or the
        // flush interval passed.
        let Some(first) = rx.recv().await else {
            return;
        };
        batch.push(first);
        let until = tokio::time::Instant::now() + settings.flush_interval;
        while batch.len() < settings.batch_size {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let spans = std::mem::replace(&mut batch, Vec::with_capacity(settings.batch_size));
        match tokio::time::timeout(settings.export_timeout, exporter.export(spans)).await {
            Ok(Ok(())) => {
                counters.exported.inc_by(n);
            }
            Ok(Err(error)) => {
                counters.failed.inc_by(n);
                tracing::debug!(%error, spans = n, "span export failed");
            }
            Err(_) => {
                counters.failed.inc_by(n);
                tracing::debug!(spans = n, "span export timed out");
            }
        }
    }
}
