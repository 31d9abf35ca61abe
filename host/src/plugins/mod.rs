//! WebAssembly plugins: the runtime that runs them, the loader that hot-reloads them from
//! the plugins directory, and the per-route chains that put them on the request path.
//!
//! ```text
//! request ─▶ chain.on_request (in order; a plugin may answer and stop the chain)
//!         ─▶ upstream
//!         ─▶ chain.on_response (reverse order)  or  chain.on_failure (reverse order)
//! ```

pub mod chain;
pub mod manager;
pub mod preflight;
pub mod reload;
pub mod runtime;
mod spec;

pub use chain::{ChainRun, OnError, PluginChain, RequestOutcome};
pub use manager::{PluginManager, PluginRef, PluginSettings, PluginsError};
pub use reload::registry::{PluginStatus, RolloutError};
pub use reload::rollout::{RolloutPolicy, RolloutStatus};
pub use runtime::bindings::types::UpstreamFailure;
pub use runtime::capabilities::{NoServices, RequestMeta, ServiceCallError, ServiceCaller};
pub use runtime::engine::PluginLimits;
pub use runtime::error::{InvokeError, LoadError, Phase, PluginFailure};
pub use spec::{PluginFile, RoutePlugin};

use std::fmt;
use std::sync::Arc;

/// The body type plugins see: the proxy's body.
pub use crate::body::{Body, BoxError};

/// A plugin's name: its file name in the plugins directory without `.wasm`
/// (ASCII letters, digits, `-` and `_`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginName(Arc<str>);

impl PluginName {
    /// Check and wrap a name.
    pub fn new(name: &str) -> Result<Self, String> {
        let ok = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(PluginName(name.into()))
        } else {
            Err(format!(
                "invalid plugin name `{}`: use 1-128 ASCII letters, digits, `-` or `_`",
                name.escape_debug()
            ))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
