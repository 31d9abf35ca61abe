//! The active state: an immutable snapshot of config, routes and services behind an `ArcSwap`.
//! Readers never lock; a reload builds a new snapshot and swaps it in whole.

use std::sync::Arc;

use crate::config::Config;
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
    pub fn build(config: Config) -> Result<Self, RouteError> {
        let routes = RouteTable::new(&config.routes)?;
        let upstreams = Upstreams::new(&config);
        Ok(Snapshot {
            config: Arc::new(config),
            routes,
            upstreams,
        })
    }
}
