//! The primary cache key: route, policy generation, canonical client path and query, and
//! the route's key extension (`key_headers`, `key_cookies`). Vary is the secondary key, held
//! by the stored variants (`entry`).

use std::sync::Arc;

use http::HeaderMap;

use super::RouteCachePolicy;

/// Which stored responses a request may be answered from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub route: Arc<String>,
    /// [`RouteCachePolicy::generation`]: entries of an older policy are never seen.
    pub generation: u64,
    /// The canonical path the client asked for, before any rewrite: what purge names.
    pub path: String,
    pub query: Option<String>,
    /// The key extension's values, in the policy's order; empty without one.
    pub extension: Vec<Option<String>>,
}

impl CacheKey {
    /// The key of a request to `route` for `path` and `query`; `headers` are the request's
    /// as they go upstream (after the request plugins, so an identity a plugin set counts).
    pub fn new(
        route: &Arc<String>,
        policy: &RouteCachePolicy,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Self {
        let mut extension = Vec::with_capacity(policy.key_headers.len() + policy.key_cookies.len());
        for name in &policy.key_headers {
            // Every value of the header, in order: `a, b` and `b, a` are different keys.
            let values: Vec<&str> = headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap_or("\u{fffd}"))
                .collect();
            extension.push((!values.is_empty()).then(|| values.join("\n")));
        }
        for cookie in &policy.key_cookies {
            extension.push(
                crate::headers::cookies(headers)
                    .find(|(name, _)| name == cookie)
                    .map(|(_, value)| value.to_owned()),
            );
        }
        CacheKey {
            route: Arc::clone(route),
            generation: policy.generation(),
            path: path.to_owned(),
            query: query.map(str::to_owned),
            extension,
        }
    }

    /// Bytes the key takes, for the store's weigher.
    pub fn weight(&self) -> usize {
        64 + self.route.len()
            + self.path.len()
            + self.query.as_ref().map_or(0, String::len)
            + self
                .extension
                .iter()
                .map(|v| 8 + v.as_ref().map_or(0, String::len))
                .sum::<usize>()
    }
}
