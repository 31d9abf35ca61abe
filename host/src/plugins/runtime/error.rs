//! Plugin errors: why a plugin could not be loaded, and why one invocation failed.

use std::fmt;

use super::super::PluginName;

/// Why a `.wasm` file could not become a loaded plugin. The previous good version, if any,
/// keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The plugin file was read again (for a snapshot or the optimized compile) and no longer
    /// holds the version loaded from it: a newer file replaces that version anyway.
    #[error("{path} changed since this version was loaded from it")]
    Changed {
        /// The file.
        path: String,
    },
    /// The bytes are a core WebAssembly module, not a component.
    #[error("not a component: this is a core WebAssembly module; build for wasm32-wasip2 or run `wasm-tools component new`")]
    CoreModule,
    /// The bytes are not WebAssembly at all (or the file is truncated).
    #[error("not a WebAssembly component: {0}")]
    NotWasm(String),
    /// Compilation failed (malformed or truncated component, unsupported feature).
    #[error("compile failed: {0}")]
    Compile(String),
    /// The engine the component needs could not be built.
    #[error(transparent)]
    Engine(#[from] super::engine::EngineError),
    /// The component imports something the host does not provide (built for a different world).
    #[error("does not fit the gatehouse:plugin world: {0}")]
    World(String),
    /// The component exports none of the hook interfaces.
    #[error("exports no hook: expected at least one of gatehouse:plugin/request-hook, response-hook, failure-hook (version 0.1.x)")]
    NoHooks,
    /// A hook interface is exported with the wrong signature.
    #[error("hook `{hook}` has the wrong shape: {reason}")]
    HookShape {
        /// The hook interface.
        hook: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The phase a plugin ran in when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `on-request`, before the upstream call.
    Request,
    /// `on-response`, after the upstream answered.
    Response,
    /// `on-failure`, after the upstream call failed.
    Failure,
}

impl Phase {
    /// The phase's name as used in logs and JSON errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Request => "request",
            Phase::Response => "response",
            Phase::Failure => "failure",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one plugin invocation failed. These are the plugin *crashing* or misbehaving; a
/// plugin that deliberately answers (e.g. 401) is not a failure.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The plugin named in the route is not loaded (missing file, or never compiled).
    #[error("plugin is not loaded")]
    NotLoaded,
    /// The plugin trapped (panic, `unreachable`, bad memory access...).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The plugin ran past its CPU deadline.
    #[error("plugin exceeded its {0} ms deadline")]
    Deadline(u64),
    /// The plugin tried to grow its memory past the limit.
    #[error("plugin exceeded its memory limit of {0} bytes")]
    OutOfMemory(u64),
    /// No instance slot was free (the pooling allocator is at capacity), or instantiation
    /// failed for another resource reason.
    #[error("no plugin instance available: {0}")]
    Instantiate(String),
    /// The plugin returned something the host cannot send (bad status, header bytes, or a
    /// body over the cap).
    #[error("plugin returned an invalid response: {0}")]
    BadOutput(String),
    /// Reading the request or response body for the plugin failed.
    #[error("body for plugin unavailable: {0}")]
    Body(String),
    /// The plugin's `init` refused the route entry's config; the reason is the plugin's.
    #[error("plugin init failed: {0}")]
    Init(String),
}

impl InvokeError {
    /// A short machine-readable kind, used in the JSON error and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            InvokeError::NotLoaded => "not_loaded",
            InvokeError::Trap(_) => "trap",
            InvokeError::Deadline(_) => "deadline",
            InvokeError::OutOfMemory(_) => "out_of_memory",
            InvokeError::Instantiate(_) => "unavailable",
            InvokeError::BadOutput(_) => "bad_output",
            InvokeError::Body(_) => "body",
            InvokeError::Init(_) => "init",
        }
    }

    /// The HTTP status the client gets when this failure is fatal (fail-closed).
    /// Resource exhaustion (deadline, memory, no free slot, plugin missing) is 503: the
    /// request may succeed later. A plugin bug (trap, bad output) is 500.
    pub fn status(&self) -> http::StatusCode {
        match self {
            InvokeError::NotLoaded
            | InvokeError::Deadline(_)
            | InvokeError::OutOfMemory(_)
            | InvokeError::Instantiate(_) => http::StatusCode::SERVICE_UNAVAILABLE,
            InvokeError::Trap(_) | InvokeError::BadOutput(_) | InvokeError::Init(_) => {
                http::StatusCode::INTERNAL_SERVER_ERROR
            }
            InvokeError::Body(_) => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// A plugin failure with where it happened: the plugin and the phase.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{plugin}` failed in the {phase} phase: {error}")]
pub struct PluginFailure {
    /// The plugin that failed.
    pub plugin: PluginName,
    /// The phase it failed in.
    pub phase: Phase,
    /// What went wrong.
    #[source]
    pub error: InvokeError,
}

impl PluginFailure {
    /// The HTTP status for this failure.
    pub fn status(&self) -> http::StatusCode {
        self.error.status()
    }

    /// The JSON body sent to the client:
    /// `{"error":"plugin_failed","plugin":…,"phase":…,"kind":…,"message":…}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": "plugin_failed",
            "plugin": self.plugin.as_str(),
            "phase": self.phase.as_str(),
            "kind": self.error.kind(),
            "message": self.error.to_string(),
        })
    }
}
