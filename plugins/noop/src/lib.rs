//! A plugin that does nothing: the baseline for measuring per-request plugin overhead.
// A plugin only makes sense as a wasm component; on the host target the crate is empty so
// workspace-wide native builds (`cargo test --workspace`) do not try to link wasm imports.
#![cfg(target_family = "wasm")]

use gatehouse_sdk::prelude::*;

/// Continues every request unchanged.
pub struct Noop;

impl Plugin for Noop {}

export_plugin!(Noop);
