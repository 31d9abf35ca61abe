//! Routing: the route table built from config, and matching a request to one route.
//!
//! Matching never scans the route list. Routes are bucketed by host (a hash map for exact
//! hosts, a hash map of suffixes for wildcards), then by path: exact paths and templates live in
//! a `matchit` radix tree, prefixes in a hash map probed from the longest prefix of the request
//! path down to `/`. The cost is O(path length + host labels), whatever the number of routes.
//!
//! Precedence, most specific first (documented in README):
//! 1. host: exact host, then the longest matching wildcard suffix, then routes with no host;
//! 2. path: exact path, then template (static segments beat `{param}`, which beat `{*rest}`),
//!    then the longest prefix;
//! 3. among routes with the same host and path pattern: the one with more predicates
//!    (methods counts as one, each header, query and cookie predicate as one);
//! 4. then file order: the route written first wins.

mod respond;
mod route;
mod spec;
mod split;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use http::request::Parts;

pub use respond::{
    content_type_for, Redirect, RespondError, StaticResponse, MAX_STATIC_BODY, REDIRECT_STATUSES,
};
pub use route::{Route, RouteId};
pub use spec::{HostMatch, MatchConfig, PathMatch, RouteConfig, RouteName};
pub use split::{Pick, RouteTarget, Split, SplitError, SplitTarget, MAX_WEIGHT};

/// A route that matched, with the parameters its path template captured.
#[derive(Debug)]
pub struct Matched {
    pub route: Arc<Route>,
    pub params: Vec<(String, String)>,
}

/// Why a set of routes cannot form a table.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RouteError {
    /// Index (file order) of the route that could not be added.
    pub route_index: usize,
    pub message: String,
}

/// Immutable, built once per config snapshot.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    exact_hosts: HashMap<String, PathTable>,
    wildcard_hosts: HashMap<String, PathTable>,
    any_host: PathTable,
}

#[derive(Debug, Default)]
struct PathTable {
    paths: matchit::Router<Vec<RouteId>>,
    /// Pattern → routes, kept to build `paths` and to name conflicts.
    patterns: HashMap<String, Vec<RouteId>>,
    prefixes: HashMap<String, Vec<RouteId>>,
}

impl RouteTable {
    /// Builds the table; fails on two path templates the radix tree cannot tell apart.
    pub fn new(configs: &[RouteConfig]) -> Result<Self, RouteError> {
        let routes: Vec<Arc<Route>> = configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Arc::new(Route {
                    id: RouteId(i),
                    name: Arc::new(c.name.0.clone()),
                    config: c.clone(),
                })
            })
            .collect();
        let mut table = RouteTable::default();
        for route in &routes {
            let bucket = match &route.config.matcher.host {
                Some(HostMatch::Exact(h)) => table.exact_hosts.entry(h.clone()).or_default(),
                Some(HostMatch::Wildcard(s)) => table.wildcard_hosts.entry(s.clone()).or_default(),
                None => &mut table.any_host,
            };
            match &route.config.matcher.path {
                PathMatch::Path(p) => bucket.patterns.entry(p.clone()).or_default().push(route.id),
                PathMatch::Prefix(p) => {
                    bucket.prefixes.entry(p.clone()).or_default().push(route.id)
                }
            }
        }
        let by_specificity = |ids: &mut Vec<RouteId>| {
            ids.sort_by_key(|id| (std::cmp::Reverse(routes[id.0].specificity()), id.0));
        };
        let buckets = table
            .exact_hosts
            .values_mut()
            .chain(table.wildcard_hosts.values_mut())
            .chain(std::iter::once(&mut table.any_host));
        for bucket in buckets {
            bucket.prefixes.values_mut().for_each(by_specificity);
            // Insert in file order so that a conflict is reported against the later route.
            let mut patterns: Vec<(String, Vec<RouteId>)> = bucket.patterns.drain().collect();
            patterns.sort_by_key(|(_, ids)| ids.iter().map(|id| id.0).min());
            for (pattern, mut ids) in patterns {
                by_specificity(&mut ids);
                let first = ids.iter().map(|id| id.0).min().unwrap_or(0);
                if let Err(e) = bucket.paths.insert(pattern.clone(), ids.clone()) {
                    let message = match &e {
                        matchit::InsertError::Conflict { with } => {
                            let other = bucket
                                .patterns
                                .get(with)
                                .and_then(|ids| ids.first())
                                .map_or_else(
                                    || with.clone(),
                                    |id| {
                                        format!(
                                            "{with:?} of route {:?}",
                                            routes[id.0].config.name.0
                                        )
                                    },
                                );
                            format!("path {pattern:?} conflicts with {other}: the two cannot be told apart")
                        }
                        other => format!("path {pattern:?} is not a valid template: {other}"),
                    };
                    return Err(RouteError {
                        route_index: first,
                        message,
                    });
                }
                bucket.patterns.insert(pattern, ids);
            }
        }
        table.routes = routes;
        Ok(table)
    }

    /// Number of routes in the table.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The most specific route for this request, if any.
    pub fn find(&self, req: &Parts) -> Option<Matched> {
        self.find_for_method(req, &req.method)
    }

    /// The route this request would take if its method were `method`: a CORS preflight
    /// (`OPTIONS`) belongs to the route of the method it asks about, whether or not that
    /// route's `methods` list `OPTIONS`.
    pub fn find_for_method(&self, req: &Parts, method: &http::Method) -> Option<Matched> {
        let path = req.uri.path();
        if self.exact_hosts.is_empty() && self.wildcard_hosts.is_empty() {
            // The common single-host gateway: no need to look at the host at all.
            return self.find_in(&self.any_host, req, method, path);
        }
        let host = request_host(req);
        if let Some(table) = host.as_deref().and_then(|h| self.exact_hosts.get(h)) {
            if let Some(m) = self.find_in(table, req, method, path) {
                return Some(m);
            }
        }
        if let (Some(host), false) = (host.as_deref(), self.wildcard_hosts.is_empty()) {
            // `a.b.example.com` probes `.b.example.com`, then `.example.com`, then `.com`.
            for (i, _) in host.match_indices('.') {
                if let Some(m) = self
                    .wildcard_hosts
                    .get(&host[i..])
                    .and_then(|t| self.find_in(t, req, method, path))
                {
                    return Some(m);
                }
            }
        }
        self.find_in(&self.any_host, req, method, path)
    }

    fn find_in(
        &self,
        table: &PathTable,
        req: &Parts,
        method: &http::Method,
        path: &str,
    ) -> Option<Matched> {
        if let Ok(m) = table.paths.at(path) {
            if let Some(id) = m
                .value
                .iter()
                .find(|id| self.routes[id.0].predicates_match(req, method))
            {
                let params = m
                    .params
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                return Some(Matched {
                    route: self.routes[id.0].clone(),
                    params,
                });
            }
        }
        if table.prefixes.is_empty() {
            return None;
        }
        let mut probe = path;
        loop {
            if let Some(ids) = table.prefixes.get(probe) {
                if let Some(id) = ids
                    .iter()
                    .find(|id| self.routes[id.0].predicates_match(req, method))
                {
                    return Some(Matched {
                        route: self.routes[id.0].clone(),
                        params: Vec::new(),
                    });
                }
            }
            probe = match probe.rfind('/') {
                Some(0) if probe.len() > 1 => "/",
                Some(i) if i > 0 => &probe[..i],
                _ => return None,
            };
        }
    }
}

/// The request's host, lowercased and without port: from the URI (HTTP/2 `:authority`,
/// absolute-form HTTP/1) or the `Host` header.
pub fn request_host(req: &Parts) -> Option<Cow<'_, str>> {
    let raw = match req.uri.host() {
        Some(h) => h,
        None => req.headers.get(http::header::HOST)?.to_str().ok()?,
    };
    let without_port = if raw.starts_with('[') {
        // IPv6 literal: `[::1]:8080`.
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        raw.split(':').next().unwrap_or(raw)
    };
    let host = without_port.trim_end_matches('.');
    // Clients almost always send lowercase hosts: only copy when there is something to fold.
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

#[cfg(test)]
mod tests;
