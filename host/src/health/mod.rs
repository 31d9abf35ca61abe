//! Health: active HTTP checks and passive outlier detection, both marking each backend's
//! [`EndpointHealth`](crate::balancing::EndpointHealth); the backend pool leaves unhealthy
//! endpoints out of the balancer (panic mode aside).

mod active;
mod outlier;

pub use active::{ActiveCheck, ActiveChecker};
pub use outlier::{Outcome, OutlierDetector, OutlierPolicy};
