//! The log lines of one test case: plugin log lines (`context.log`) and the host's warnings
//! about the plugin, captured by a `tracing` subscriber scoped to the case's future.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// One captured log line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogLine {
    /// `TRACE` .. `ERROR`.
    pub level: String,
    /// The message, with the host's extra fields (`service = ...`) after it.
    pub message: String,
}

/// Where a case's log lines go.
#[derive(Clone, Default)]
pub struct LogCapture {
    lines: Arc<Mutex<Vec<LogLine>>>,
}

impl LogCapture {
    /// A dispatcher sending the plugin's lines here; set it on the case's future
    /// (`tracing::instrument::WithSubscriber`).
    pub fn dispatch(&self) -> tracing::Dispatch {
        tracing::Dispatch::new(tracing_subscriber::registry().with(CaptureLayer(self.clone())))
    }

    /// The lines captured so far, emptied.
    pub fn take(&self) -> Vec<LogLine> {
        std::mem::take(&mut *self.lines.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

struct CaptureLayer(LogCapture);

/// The plugin's own lines, and the runtime's lines about it (a refused service call).
fn captured(target: &str) -> bool {
    target == "gatehouse::plugin" || target.starts_with("gatehouse::plugins::runtime")
}

impl<S: tracing::Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if !captured(event.metadata().target()) {
            return;
        }
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        let mut message = visitor.message;
        if !visitor.extra.is_empty() {
            let _ = write!(message, " ({})", visitor.extra.join(", "));
        }
        self.0
            .lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(LogLine {
                level: event.metadata().level().to_string(),
                message,
            });
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    extra: Vec<String>,
}

/// Fields every plugin line carries; the report shows them once per case, not per line.
const PER_CASE: [&str; 3] = ["plugin", "route", "request_id"];

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else if !PER_CASE.contains(&field.name()) {
            self.extra.push(format!("{} = {value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else if !PER_CASE.contains(&field.name()) {
            self.extra.push(format!("{} = {value}", field.name()));
        }
    }
}
