//! One compiled route: its predicates (method, headers, query, cookies) and its path rewrite.

use std::sync::Arc;

use http::request::Parts;

use super::{PathMatch, RouteConfig};

/// Index of a route in the table, stable for the life of one config snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteId(pub usize);

/// A route ready for matching.
#[derive(Debug)]
pub struct Route {
    pub id: RouteId,
    /// The route's name, shared (not copied) with the access log and metrics labels.
    pub name: Arc<String>,
    pub config: RouteConfig,
}

impl Route {
    /// How specific the non-path predicates are; more specific routes are tried first.
    pub(super) fn specificity(&self) -> usize {
        let m = &self.config.matcher;
        usize::from(!m.methods.is_empty()) + m.request.len()
    }

    /// Method, header, cookie and query predicates (host and path are matched by the table).
    /// `method` is the request's, or for a CORS preflight the method it asks about.
    pub(super) fn predicates_match(&self, req: &Parts, method: &http::Method) -> bool {
        let m = &self.config.matcher;
        if !m.methods.is_empty() && !m.methods.contains(method) {
            return false;
        }
        m.request.matches(&req.headers, req.uri.query())
    }

    /// Whether the upstream gets the client's path and query unchanged.
    pub fn keeps_path(&self) -> bool {
        self.config.rewrite.is_none()
            && !(self.config.strip_prefix
                && matches!(self.config.matcher.path, PathMatch::Prefix(_)))
    }

    /// The path (and query) to send upstream, after `strip_prefix` or `rewrite`.
    pub fn upstream_path_and_query(
        &self,
        path: &str,
        query: Option<&str>,
        params: &[(String, String)],
    ) -> String {
        let mut out = if let Some(template) = &self.config.rewrite {
            fill_template(template, params)
        } else if let (true, PathMatch::Prefix(prefix)) =
            (self.config.strip_prefix, &self.config.matcher.path)
        {
            let rest = if prefix == "/" {
                path
            } else {
                path.get(prefix.len()..).unwrap_or("")
            };
            if rest.starts_with('/') {
                rest.to_owned()
            } else {
                format!("/{rest}")
            }
        } else {
            path.to_owned()
        };
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

pub(super) fn fill_template(template: &str, params: &[(String, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = rest[open + 1..open + close].trim_start_matches('*');
        if let Some((_, value)) = params.iter().find(|(k, _)| k == name) {
            out.push_str(value);
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}
