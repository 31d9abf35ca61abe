//! gatehouse: a programmable API gateway.
pub mod plugins;
