//! The active state: an immutable snapshot of config, routes and services behind an `ArcSwap`.
//! Readers never lock; a reload builds a new snapshot and swaps it in whole.

use std::sync::Arc;

use crate::config::Config;
use crate::discovery::registry::Registry;
use crate::routing::{RouteError, RouteTable};
use crate::upstream::Upstreams;

/// Everything a request needs, consistent with one config.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    pub upstreams: Upstreams,
}

impl Snapshot {
    /// `registry` is the process's built-in registry (it outlives snapshots).
    pub fn build(config: Config, registry: &Arc<Registry>) -> Result<Self, RouteError> {
        let routes = RouteTable::new(&config.routes)?;
        let upstreams = Upstreams::new(&config, registry);
        Ok(Snapshot {
            config: Arc::new(config),
            routes,
            upstreams,
        })
    }
}
