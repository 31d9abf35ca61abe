//! A plugin that does nothing: the baseline for measuring per-request plugin overhead.
// A plugin only makes sense as a wasm component; on the host target the crate is empty so
// workspace-wide native builds (`cargo test --workspace`) do not try to link wasm imports.
#![cfg(target_family = "wasm")]

use gatehouse_sdk::prelude::*;

/// Continues every request unchanged.
pub struct Noop;

// The request hook is implemented (to do nothing) so that the gateway calls it: hooks left
// to the SDK's defaults are skipped after the first request, and a plugin that is never
// called would measure nothing.
impl Plugin for Noop {
    fn on_request(_req: &Request) -> Decision {
        Decision::Continue
    }
}

export_plugin!(Noop);
