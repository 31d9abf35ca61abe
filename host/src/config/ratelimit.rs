//! Rate limit configuration: a route's `rate_limits = [...]` and `max_in_flight`, and the
//! limits its plugins are granted (`plugins[].limits`). Raw serde types and their conversion
//! into `ratelimit::RouteLimitsSpec`.

use std::collections::HashSet;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::model::RawRoute;
use super::validate::Validator;
use crate::ratelimit::{LimitKey, LimitSpec, MissingKey, Rate, RouteLimitsSpec, DEFAULT_MAX_KEYS};

/// One entry of a route's `rate_limits = [...]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Unique on the route (letters, digits, `-`, `_`, `.`): metrics, headers, plugin grants.
    pub name: Spanned<String>,
    /// Requests allowed per `per`. Required, positive.
    pub requests: Spanned<i64>,
    /// The period, a duration such as `"1s"` or `"1m"`. Required.
    pub per: Spanned<String>,
    /// Requests allowed at once on a full quota. Default: `requests`.
    pub burst: Option<Spanned<i64>>,
    /// What requests are counted by: `client-address` (default), `route`, `header:NAME`,
    /// `cookie:NAME`, or `plugin` (charged only by plugins granted the limit).
    pub key: Option<Spanned<String>>,
    /// Requests without the header or cookie: `shared` (default: one key for all of them) or
    /// `pass` (not counted).
    pub missing: Option<Spanned<String>>,
    /// Keys remembered at most; past it, the keys nearest a full quota are forgotten.
    /// Default 100000.
    pub max_keys: Option<Spanned<i64>>,
}

/// A route's `rate_limits` and `max_in_flight`, and its plugins' `limits` grants, which must
/// name `key = "plugin"` limits of the same route.
pub(super) fn route_limits(v: &mut Validator<'_>, r: &RawRoute, at: &str) -> RouteLimitsSpec {
    let mut names = HashSet::new();
    let mut rate_limits = Vec::with_capacity(r.rate_limits.len());
    for (i, raw) in r.rate_limits.iter().enumerate() {
        let here = format!("{at}.rate_limits[{i}]");
        let name = raw.name.get_ref();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            v.problem(
                raw.name.span(),
                format!("{here}.name"),
                format!("{name:?} is not a limit name; use 1-64 letters, digits, '-', '_' or '.'"),
            );
        } else if !names.insert(name.as_str()) {
            v.problem(
                raw.name.span(),
                format!("{here}.name"),
                format!("duplicate limit name {name:?} on this route"),
            );
        }
        let requests = count(
            v,
            &raw.requests,
            &format!("{here}.requests"),
            "request count",
        );
        let per = v.duration(
            &Some(raw.per.clone()),
            &format!("{here}.per"),
            Duration::from_secs(1),
        );
        let burst = match &raw.burst {
            None => requests,
            Some(b) => count(v, b, &format!("{here}.burst"), "burst"),
        };
        let key = match &raw.key {
            None => LimitKey::ClientAddress,
            Some(k) => LimitKey::parse(k.get_ref()).unwrap_or_else(|| {
                v.problem(
                    k.span(),
                    format!("{here}.key"),
                    format!(
                        "{:?} is not a limit key; expected \"client-address\", \"route\", \
                         \"header:NAME\", \"cookie:NAME\" or \"plugin\"",
                        k.get_ref()
                    ),
                );
                LimitKey::ClientAddress
            }),
        };
        let missing = match raw
            .missing
            .as_ref()
            .map(|m| (m.get_ref().as_str(), m.span()))
        {
            None | Some(("shared", _)) => MissingKey::Shared,
            Some(("pass", _)) => MissingKey::Pass,
            Some((other, span)) => {
                v.problem(
                    span,
                    format!("{here}.missing"),
                    format!(
                        "{other:?} is not a missing-key policy; expected \"shared\" or \"pass\""
                    ),
                );
                MissingKey::Shared
            }
        };
        let max_keys = v.positive(&raw.max_keys, &format!("{here}.max_keys"), DEFAULT_MAX_KEYS);
        rate_limits.push(LimitSpec {
            name: Arc::new(name.clone()),
            rate: Rate {
                requests,
                per,
                burst,
            },
            key,
            missing,
            max_keys: NonZeroUsize::new(max_keys).unwrap_or(NonZeroUsize::MIN),
        });
    }
    for (j, plugin) in r.plugins.iter().enumerate() {
        for grant in &plugin.limits {
            let field = format!("{at}.plugins[{j}].limits");
            let name = grant.get_ref();
            match rate_limits.iter().find(|l| l.name.as_str() == name) {
                Some(l) if l.key == LimitKey::Plugin => {}
                Some(l) => v.problem(
                    grant.span(),
                    field,
                    format!(
                        "limit {name:?} has key {:?}; only limits with key = \"plugin\" can be \
                         granted to a plugin",
                        l.key.to_string()
                    ),
                ),
                None => {
                    let declared: Vec<&str> = rate_limits.iter().map(|l| l.name.as_str()).collect();
                    v.problem(
                        grant.span(),
                        field,
                        format!(
                            "no limit named {name:?} on this route (declared: {})",
                            if declared.is_empty() {
                                "none".to_owned()
                            } else {
                                declared.join(", ")
                            }
                        ),
                    );
                }
            }
        }
    }
    let max_in_flight = r
        .max_in_flight
        .as_ref()
        .map(|m| count(v, m, &format!("{at}.max_in_flight"), "in-flight cap"));
    RouteLimitsSpec {
        rate_limits,
        max_in_flight,
    }
}

/// A count of requests: 1 to 2^32 - 1.
fn count(v: &mut Validator<'_>, raw: &Spanned<i64>, field: &str, what: &str) -> NonZeroU32 {
    match u32::try_from(*raw.get_ref()).ok().and_then(NonZeroU32::new) {
        Some(n) => n,
        None => {
            v.problem(
                raw.span(),
                field,
                format!(
                    "{} is not a valid {what}: expected a whole number from 1 to {}{}",
                    raw.get_ref(),
                    u32::MAX,
                    if *raw.get_ref() == 0 && what == "request count" {
                        " (to refuse every request, use `deny = 429`)"
                    } else {
                        ""
                    }
                ),
            );
            NonZeroU32::MIN
        }
    }
}
