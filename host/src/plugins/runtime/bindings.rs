//! The host side of the `gatehouse:plugin` WIT world: the only `bindgen!` in the gateway.
#![allow(missing_docs)]

pub use super::message::{PluginRequest, PluginResponse};

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [PartialEq],
    with: {
        "gatehouse:plugin/types.request": PluginRequest,
        "gatehouse:plugin/types.response": PluginResponse,
    },
});

pub use self::exports::gatehouse::plugin::{failure_hook, init, request_hook, response_hook};
// `self::` because rustdoc also sees the `gatehouse` crate under that name.
pub use self::gatehouse::plugin::{cache, context, limits, services, types};

/// The export names of the hook interfaces, as looked up on a component. wasmtime's lookup
/// also finds a semver-compatible version: a component built against 0.1.0, 0.1.1 or 0.1.2
/// exports `...-hook@0.1.0` (and so on), which these names find.
pub const REQUEST_HOOK: &str = "gatehouse:plugin/request-hook@0.1.3";
/// See [`REQUEST_HOOK`].
pub const RESPONSE_HOOK: &str = "gatehouse:plugin/response-hook@0.1.3";
/// See [`REQUEST_HOOK`].
pub const FAILURE_HOOK: &str = "gatehouse:plugin/failure-hook@0.1.3";
/// The optional `init` export (since 0.1.3): set-up run once per version and route entry,
/// then snapshotted (`preinit`).
pub const INIT: &str = "gatehouse:plugin/init@0.1.3";
