//! Raw TOML and validation of the response cache keys: `[cache]` (the byte budget) and a
//! route's `[routes.cache]` (docs/cache.md). Converts into `cache::{CacheBudget,
//! RouteCachePolicy}`.

use std::time::Duration;

use http::{HeaderName, Method};
use serde::Deserialize;
use toml::Spanned;

use super::model::RawRoute;
use super::validate::Validator;
use super::MatchConfig;
use crate::cache::{
    CacheBudget, RouteCachePolicy, DEFAULT_LOCK_TIMEOUT, DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ENTRY_BYTES, MAX_ENTRY_BYTES_LIMIT,
};

/// `[cache]`: the response cache of the whole process.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Bytes of stored responses (headers and bodies) kept at most. Default 67108864 (64 MiB).
    pub max_bytes: Option<Spanned<i64>>,
}

/// `[routes.cache]`: its presence turns the route's response cache on.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    /// `false` turns the cache off while keeping the table. Default true.
    pub enabled: Option<Spanned<bool>>,
    /// Freshness of responses without their own (`max-age`, `s-maxage`, `Expires`). Default:
    /// none (such responses are not stored).
    pub ttl: Option<Spanned<String>>,
    /// Largest body stored; larger ones stream through uncached. Default 1048576 (1 MiB).
    pub max_body_bytes: Option<Spanned<i64>>,
    /// Request headers whose values are part of the key. Default: none.
    #[serde(default)]
    pub key_headers: Vec<Spanned<String>>,
    /// Request cookies whose values are part of the key. Default: none.
    #[serde(default)]
    pub key_cookies: Vec<Spanned<String>>,
    /// Serve stale this long past freshness while refreshing in the background. Default: none.
    pub stale_while_revalidate: Option<Spanned<String>>,
    /// Serve stale this long past freshness when the upstream fails. Default: none.
    pub stale_if_error: Option<Spanned<String>>,
    /// How long concurrent misses wait for the one request that fills the key. Default `5s`.
    pub lock_timeout: Option<Spanned<String>>,
    /// Store responses to requests with `Authorization`. Default false.
    pub authorized: Option<Spanned<bool>>,
    /// Store responses with `Set-Cookie`. Default false.
    pub set_cookie: Option<Spanned<bool>>,
}

/// `[cache]`.
pub(super) fn budget(v: &mut Validator<'_>, raw: &RawCache) -> CacheBudget {
    let Some(max) = &raw.max_bytes else {
        return CacheBudget::default();
    };
    match u64::try_from(*max.get_ref()) {
        Ok(n) if n >= 1024 => CacheBudget { max_bytes: n },
        _ => {
            v.problem(
                max.span(),
                "cache.max_bytes",
                format!(
                    "{} is not a cache size; expected at least 1024 bytes, such as {DEFAULT_MAX_BYTES}",
                    max.get_ref()
                ),
            );
            CacheBudget::default()
        }
    }
}

/// A route's `[routes.cache]`; `None` without it (or with `enabled = false`).
pub(super) fn route(
    v: &mut Validator<'_>,
    r: &RawRoute,
    at: &str,
    matcher: &MatchConfig,
    budget: &CacheBudget,
) -> Option<RouteCachePolicy> {
    let table = r.cache.as_ref()?;
    let c = table.get_ref();
    if c.enabled.as_ref().is_some_and(|e| !*e.get_ref()) {
        return None;
    }
    let at = format!("{at}.cache");
    if r.respond.is_some() || r.redirect.is_some() {
        v.problem(
            table.span(),
            at.clone(),
            "a route that answers by itself ([routes.respond] or [routes.redirect]) has no \
             upstream response to cache; remove [routes.cache]"
                .to_owned(),
        );
    }
    let methods = &matcher.methods;
    if !methods.is_empty() && !methods.contains(&Method::GET) {
        let list: Vec<&str> = methods.iter().map(Method::as_str).collect();
        v.problem(
            table.span(),
            at.clone(),
            format!(
                "the route's match.methods ({}) exclude GET: only GET and HEAD responses are \
                 cached; add \"GET\" or remove [routes.cache]",
                list.join(", ")
            ),
        );
    }
    let max_body_bytes = match &c.max_body_bytes {
        None => DEFAULT_MAX_ENTRY_BYTES.min(budget.max_bytes),
        Some(n) => match u64::try_from(*n.get_ref()) {
            Ok(n) if n > 0 && n <= MAX_ENTRY_BYTES_LIMIT && n <= budget.max_bytes => n,
            Ok(n) if n > budget.max_bytes && n <= MAX_ENTRY_BYTES_LIMIT => {
                v.problem(
                    c.max_body_bytes.as_ref().map_or(0..0, Spanned::span),
                    format!("{at}.max_body_bytes"),
                    format!(
                        "{n} is larger than cache.max_bytes ({}): no such response could ever \
                         be stored",
                        budget.max_bytes
                    ),
                );
                DEFAULT_MAX_ENTRY_BYTES
            }
            _ => {
                v.problem(
                    n.span(),
                    format!("{at}.max_body_bytes"),
                    format!(
                        "{} is not a body size; expected 1 to {MAX_ENTRY_BYTES_LIMIT} bytes, such as {DEFAULT_MAX_ENTRY_BYTES}",
                        n.get_ref()
                    ),
                );
                DEFAULT_MAX_ENTRY_BYTES
            }
        },
    };
    let key_headers = c
        .key_headers
        .iter()
        .enumerate()
        .filter_map(
            |(j, h)| match HeaderName::from_bytes(h.get_ref().as_bytes()) {
                Ok(name) => Some(name),
                Err(_) => {
                    v.problem(
                        h.span(),
                        format!("{at}.key_headers[{j}]"),
                        format!("{:?} is not a header name", h.get_ref()),
                    );
                    None
                }
            },
        )
        .collect();
    let key_cookies = c
        .key_cookies
        .iter()
        .enumerate()
        .filter_map(|(j, name)| {
            let is_token = !name.get_ref().is_empty()
                && name
                    .get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            if !is_token {
                v.problem(
                    name.span(),
                    format!("{at}.key_cookies[{j}]"),
                    format!("{:?} is not a cookie name", name.get_ref()),
                );
                return None;
            }
            Some(name.get_ref().clone())
        })
        .collect();
    let mut window = |value: &Option<Spanned<String>>, key: &str| match value {
        None => Duration::ZERO,
        Some(_) => v.duration(value, &format!("{at}.{key}"), Duration::ZERO),
    };
    let stale_while_revalidate = window(&c.stale_while_revalidate, "stale_while_revalidate");
    let stale_if_error = window(&c.stale_if_error, "stale_if_error");
    let ttl = match &c.ttl {
        None => None,
        Some(t) => {
            let ttl = v.duration(&c.ttl, &format!("{at}.ttl"), Duration::ZERO);
            if !ttl.is_zero() && ttl < Duration::from_secs(1) {
                v.problem(
                    t.span(),
                    format!("{at}.ttl"),
                    format!(
                        "{:?} is under a second; HTTP freshness counts whole seconds",
                        t.get_ref()
                    ),
                );
            }
            Some(ttl)
        }
    };
    Some(
        RouteCachePolicy {
            ttl,
            max_body_bytes,
            key_headers,
            key_cookies,
            stale_while_revalidate,
            stale_if_error,
            lock_timeout: v.duration(
                &c.lock_timeout,
                &format!("{at}.lock_timeout"),
                DEFAULT_LOCK_TIMEOUT,
            ),
            authorized: c.authorized.as_ref().is_some_and(|b| *b.get_ref()),
            set_cookie: c.set_cookie.as_ref().is_some_and(|b| *b.get_ref()),
            fingerprint: 0,
        }
        .fingerprinted(),
    )
}
