//! Write gatehouse gateway plugins in Rust.
//!
//! A complete plugin that rejects requests without an API key and tags the rest:
//!
//! ```no_run
//! use gatehouse_sdk::prelude::*;
//!
//! struct RequireKey;
//!
//! impl Plugin for RequireKey {
//!     fn on_request(req: &Request) -> Decision {
//!         let cfg = config_json().unwrap_or_default();
//!         let header = cfg["header"].as_str().unwrap_or("x-api-key");
//!         match req.header_str(header) {
//!             Some(key) if !key.is_empty() => {
//!                 let _ = req.set_header_str("x-authenticated", "true");
//!                 Decision::Continue
//!             }
//!             _ => Decision::Respond(error_response(401, "missing_api_key", "send the key in x-api-key")),
//!         }
//!     }
//! }
//!
//! export_plugin!(RequireKey);
//! ```
//!
//! Build it as a WebAssembly component and drop it into the gateway's plugins directory:
//!
//! ```text
//! cargo build --release --target wasm32-wasip2
//! cp target/wasm32-wasip2/release/require_key.wasm /path/to/gatehouse/plugins/require-key.wasm
//! ```
//!
//! The crate must be a `cdylib` (`[lib] crate-type = ["cdylib"]`). The plugin's name in the
//! gateway config is the file name without `.wasm`.
//!
//! Every hook of [`Plugin`] has a default, so implement only the ones you need:
//! [`Plugin::on_request`] (continue, or answer now), [`Plugin::on_response`] (edit the upstream
//! response), [`Plugin::on_failure`] (return a fallback when the upstream failed).
//! Host services are plain blocking calls: [`services::call`] and [`services::call_batch`]
//! (run concurrently by the host; responses carry headers, body and trailers), [`cache`],
//! [`log`], [`config_json`], granted data files in [`files`], rate limits to charge in
//! [`limits`] and the request metadata in [`context`]. Authentication plugins share [`unauthorized`] (401 with a challenge),
//! [`misconfigured`] (500 for an unusable config), [`query_param`] and [`strip_query_param`]
//! (credentials in the URL) and [`is_header_name`].
#![deny(missing_docs)]

extern crate self as gatehouse_sdk;

/// The raw bindings generated from the `gatehouse:plugin` WIT package.
///
/// Most plugins need only the re-exports at the crate root and in [`prelude`].
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_world_plugin",
        default_bindings_module: "::gatehouse_sdk::bindings",
        runtime_path: "::gatehouse_sdk::__private::wit_bindgen::rt",
    });
}

mod helpers;

pub use bindings::gatehouse::plugin::context;
pub use bindings::gatehouse::plugin::types::{
    BodyError, Decision, FullResponse, HeaderError, Request, Response, UpstreamFailure,
};
pub use helpers::{
    config, config_json, error_body, error_response, is_header_name, json_response, log,
    misconfigured, query_param, query_without, strip_query_param, text_response, unauthorized,
    ConfigError, HeadersExt,
};

/// Calling named services through the gateway (discovery, balancing, timeouts).
///
/// A plugin may call only the services granted to it in the route config (`calls = [...]`).
pub mod services {
    pub use crate::bindings::gatehouse::plugin::services::{
        call, call_batch, CallError, ServiceRequest, ServiceResponse,
    };

    /// The first value of header `name` (case-insensitive) in a header list such as
    /// [`ServiceResponse::headers`] or [`ServiceResponse::trailers`].
    pub fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// A `GET` request for `path_with_query` with no headers and no body.
    pub fn get(path_with_query: &str) -> ServiceRequest {
        ServiceRequest {
            method: "GET".to_string(),
            path_with_query: path_with_query.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

/// Read-only data files granted to the plugin in the route config (`files = { name = "path" }`).
///
/// Plugins have no filesystem; the host reads granted files when the config loads and hands
/// them over on request (e.g. a protobuf descriptor set).
pub mod files {
    /// The contents of the file granted under `name`, or `None` if no file is granted under
    /// that name. Each call copies the file into the plugin's memory; call it once.
    pub fn get(name: &str) -> Option<Vec<u8>> {
        crate::bindings::gatehouse::plugin::context::file(name)
    }
}

/// The gateway's shared cache, scoped to the namespace granted in the route config
/// (`cache = "ns"`).
pub mod cache {
    pub use crate::bindings::gatehouse::plugin::cache::{delete, get, set, CacheError};
}

/// Rate limits the plugin may charge with keys it computes (a plan tier, a tenant): limits
/// declared on the route with `key = "plugin"` and granted to the plugin by name
/// (`limits = ["plan"]` in its chain entry).
///
/// ```no_run
/// use gatehouse_sdk::prelude::*;
///
/// fn charge(tenant: &str) -> Option<FullResponse> {
///     match limits::take("per-tenant", tenant, 1) {
///         Ok(limits::Charge::Allowed(_)) => None,
///         Ok(limits::Charge::Limited(retry_ms)) => Some(limits::too_many_requests("per-tenant", retry_ms)),
///         // No grant (a config mistake) or an unreachable store: let the request through.
///         Err(e) => {
///             log::warn(&format!("rate limit not charged: {e:?}"));
///             None
///         }
///     }
/// }
/// ```
pub mod limits {
    pub use crate::bindings::gatehouse::plugin::limits::{take, Charge, LimitError, Quota};

    /// The gateway's 429 for a refused charge: `Retry-After` (whole seconds, rounded up) and
    /// `{"error":"rate_limited","message":…,"limit":<limit>}` (the host adds `request_id`).
    pub fn too_many_requests(limit: &str, retry_after_ms: u64) -> crate::FullResponse {
        let seconds = retry_after_ms.div_ceil(1000).max(1);
        let mut body = crate::error_body(
            "rate_limited",
            &format!("rate limit \"{limit}\" exceeded; retry in {seconds} s"),
        );
        body["limit"] = limit.into();
        let mut response = crate::json_response(429, &body);
        response
            .headers
            .push(("retry-after".to_string(), seconds.to_string().into_bytes()));
        response
    }
}

/// Everything a typical plugin needs, for `use gatehouse_sdk::prelude::*`.
pub mod prelude {
    pub use crate::{
        cache, config, config_json, context, error_response, export_plugin, files, json_response,
        limits, log, misconfigured, services, text_response, unauthorized, Decision, FullResponse,
        HeadersExt, Plugin, Prepared, Request, Response, UpstreamFailure,
    };
    pub use serde_json::json;
}

/// The hooks a plugin implements. Each has a default that does nothing.
///
/// Register the implementing type with [`export_plugin!`]. By default the gateway creates a
/// fresh instance of the plugin for every request, so statics never leak between requests.
/// A route entry with `reuse_instances = true` instead hands one instance many requests of
/// that route, one at a time: statics then carry over to later requests, so a plugin meant
/// for that mode keeps no per-request state in them past its hooks. In both modes, within
/// one request the same instance runs `on_request` and then `on_response` or `on_failure`.
pub trait Plugin {
    /// Set-up done once per plugin version and route config rather than once per request:
    /// parse the config, decode keys, build tables. Keep the result in a static
    /// [`Prepared`] and read it from the hooks with the same [`Prepared::get`] call.
    ///
    /// The gateway calls it on one instance, snapshots that instance's memory, and starts
    /// every fresh instance of the route entry from the snapshot, so the hooks find the work
    /// done (until the snapshot is ready the gateway calls `init` on each fresh instance
    /// first). Return `Ok(true)` when there was set-up, `Ok(false)` when there is nothing to
    /// snapshot (the default), `Err(reason)` for an unusable config: each request of the entry
    /// then fails as a plugin failure with that reason. `init` must not keep host handles nor
    /// rely on time or randomness: they do not survive into the snapshot.
    fn init() -> Result<bool, String> {
        Ok(false)
    }

    /// The request phase, before the upstream call. Edit `req` in place and return
    /// [`Decision::Continue`], or answer the client now with [`Decision::Respond`] (the rest
    /// of the chain and the upstream call are skipped). Default: continue unchanged.
    ///
    /// Each default tells the gateway it does nothing (`context::default_hook`), so the
    /// gateway stops calling hooks a plugin does not implement.
    fn on_request(req: &Request) -> Decision {
        let _ = req;
        context::default_hook(context::Hook::Request);
        Decision::Continue
    }

    /// The response phase, after the upstream answered. Edit `resp` in place.
    /// Default: leave it unchanged.
    fn on_response(resp: &Response) {
        let _ = resp;
        context::default_hook(context::Hook::Response);
    }

    /// The failure phase, when the upstream call failed. Return a fallback response, or
    /// `None` to pass the error on. Default: `None`.
    fn on_failure(failure: UpstreamFailure) -> Option<FullResponse> {
        let _ = failure;
        context::default_hook(context::Hook::Failure);
        None
    }
}

/// Export a type implementing [`Plugin`] as the component's hooks.
///
/// Use it once per plugin crate, at the crate root: `export_plugin!(MyPlugin);`.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ident) => {
        const _: () = {
            impl $crate::bindings::exports::gatehouse::plugin::init::Guest for $ty {
                fn init() -> Result<bool, String> {
                    <$ty as $crate::Plugin>::init()
                }
            }
            impl $crate::bindings::exports::gatehouse::plugin::request_hook::Guest for $ty {
                fn on_request(req: $crate::Request) -> $crate::Decision {
                    <$ty as $crate::Plugin>::on_request(&req)
                }
            }
            impl $crate::bindings::exports::gatehouse::plugin::response_hook::Guest for $ty {
                fn on_response(resp: $crate::Response) {
                    <$ty as $crate::Plugin>::on_response(&resp)
                }
            }
            impl $crate::bindings::exports::gatehouse::plugin::failure_hook::Guest for $ty {
                fn on_failure(failure: $crate::UpstreamFailure) -> Option<$crate::FullResponse> {
                    <$ty as $crate::Plugin>::on_failure(failure)
                }
            }
    $crate::bindings::__export_world_plugin!($ty with_types_in $crate::bindings);
        };
    };
}

/// A value a plugin computes once from its config (parsed settings, decoded keys), for
/// [`Plugin::init`] to fill and the hooks to read.
///
/// ```ignore
/// static SETTINGS: Prepared<Settings> = Prepared::new();
/// fn load() -> Result<Settings, String> { /* parse context::config() */ }
/// impl Plugin for MyPlugin {
///     fn init() -> Result<bool, String> { SETTINGS.get(load).map(|_| true).map_err(str::to_string) }
///     fn on_request(req: &Request) -> Decision {
///         let settings = match SETTINGS.get(load) { Ok(s) => s, Err(e) => return Decision::Respond(misconfigured("my-plugin", e)) };
///         // ...
///     }
/// }
/// ```
///
/// `get` computes the value on first use and keeps it (or the error) for the instance's life:
/// in a pre-initialised instance that first use was `init`, before the snapshot, so the hooks
/// find it ready; a plugin loaded by an older gateway without `init` computes it on the first
/// hook, as it would without `Prepared`.
pub struct Prepared<T>(std::sync::OnceLock<Result<T, String>>);

impl<T> Prepared<T> {
    /// An empty cell, for a `static`.
    pub const fn new() -> Self {
        Prepared(std::sync::OnceLock::new())
    }

    /// The value, computing it with `make` on first use; the error of that first use
    /// otherwise.
    pub fn get(&self, make: impl FnOnce() -> Result<T, String>) -> Result<&T, &str> {
        self.0.get_or_init(make).as_ref().map_err(String::as_str)
    }
}

impl<T> Default for Prepared<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}
