//! A plugin that does nothing: the baseline for measuring per-request plugin overhead.

use gatehouse_sdk::prelude::*;

/// Continues every request unchanged.
pub struct Noop;

impl Plugin for Noop {}

export_plugin!(Noop);
