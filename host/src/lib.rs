//! gatehouse: a programmable API gateway.

pub mod balancing;
pub mod discovery;
pub mod health;
pub mod resilience;
