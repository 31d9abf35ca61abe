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

pub use self::exports::gatehouse::plugin::{failure_hook, request_hook, response_hook};
// `self::` because rustdoc also sees the `gatehouse` crate under that name.
pub use self::gatehouse::plugin::{cache, context, limits, services, types};

/// The export names of the hook interfaces, as looked up on a component. wasmtime's lookup
/// also finds a semver-compatible version: a component built against 0.1.0 or 0.1.1 exports
/// `...-hook@0.1.0` or `...-hook@0.1.1`, which these names find.
pub const REQUEST_HOOK: &str = "gatehouse:plugin/request-hook@0.1.2";
/// See [`REQUEST_HOOK`].
pub const RESPONSE_HOOK: &str = "gatehouse:plugin/response-hook@0.1.2";
/// See [`REQUEST_HOOK`].
pub const FAILURE_HOOK: &str = "gatehouse:plugin/failure-hook@0.1.2";
