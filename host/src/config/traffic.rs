//! Raw TOML and validation of the traffic keys: `[gateway] zone`, a service's gray subsets
//! (`[[services.gray]]`) and `zone_aware`, and a route's `[routes.mirror]` (docs/traffic.md).
//! Converts into `balancing::{GrayPolicy, ZonePolicy}` and `mirror::MirrorPolicy`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;
use toml::Spanned;

use super::model::{RawRoute, RawService};
use super::validate::Validator;
use super::{DiscoveryConfig, ServiceName, ServicePolicy};
use crate::balancing::{GrayPolicy, GraySubset, MetadataSelector, ZonePolicy};
use crate::matching::{RequestMatch, ValueMatch};
use crate::mirror::MirrorPolicy;

/// `[gateway]`: this gateway instance.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// The zone this gateway runs in, compared with registry instances' `zone` by services
    /// with `zone_aware = true`. Default: none.
    pub zone: Option<Spanned<String>>,
}

/// One `[[services.gray]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGray {
    /// The instances of the subset: `version`, `zone` and/or `tag`, all must match. Required.
    pub metadata: Spanned<BTreeMap<String, Spanned<String>>>,
    /// Percent of requests (0-100) sent to the subset when no predicate matched. Default 0.
    pub weight: Option<Spanned<i64>>,
    /// Requests matching this always go to the subset. Default: none.
    #[serde(rename = "match")]
    pub matcher: Option<Spanned<RawGrayMatch>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrayMatch {
    /// Headers that must be present with these values (`"*"`: any value).
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    /// Cookies that must be present with these values (`"*"`: any value).
    #[serde(default)]
    pub cookies: BTreeMap<String, Spanned<String>>,
    /// Query parameters that must be present with these values (`"*"`: any value).
    #[serde(default)]
    pub query: BTreeMap<String, Spanned<String>>,
}

/// `[routes.mirror]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    /// The service the copies go to. Required.
    pub service: Spanned<String>,
    /// Percent of the route's requests mirrored, 1-100. Default 100.
    pub percent: Option<Spanned<i64>>,
    /// Mirrored requests in flight at once. Default 64.
    pub max_concurrent: Option<Spanned<i64>>,
    /// Largest request body mirrored (0: bodiless requests only). Default 65536.
    pub max_body_bytes: Option<Spanned<i64>>,
    /// Time a mirrored request may take. Default: the route's timeout.
    pub timeout: Option<Spanned<String>>,
}

/// Validates `gateway.zone`.
pub(super) fn gateway_zone(v: &mut Validator<'_>, g: &RawGateway) -> Option<Arc<str>> {
    let z = g.zone.as_ref()?;
    if z.get_ref().trim().is_empty() {
        v.problem(z.span(), "gateway.zone", "must not be empty".into());
        return None;
    }
    Some(Arc::from(z.get_ref().as_str()))
}

/// Validates `services[i].gray` and `services[i].zone_aware` into `p`.
pub(super) fn service(
    v: &mut Validator<'_>,
    s: &RawService,
    i: usize,
    zone: Option<&Arc<str>>,
    gateway_zone_set: bool,
    p: &mut ServicePolicy,
) {
    let at = |key: &str| format!("services[{i}].{key}");
    let registry = p.discovery == DiscoveryConfig::Registry;
    if !s.gray.is_empty() {
        if !registry {
            v.problem(
                s.gray[0].metadata.span(),
                at("gray"),
                "metadata subsets need discovery = \"registry\": static and DNS endpoints carry no metadata".into(),
            );
        }
        let mut subsets: Vec<GraySubset> = Vec::new();
        let mut total = 0;
        for (j, g) in s.gray.iter().enumerate() {
            let subset = gray(v, g, &at(&format!("gray[{j}]")));
            if let Some(k) = subsets.iter().position(|x| x.metadata == subset.metadata) {
                v.problem(
                    g.metadata.span(),
                    at(&format!("gray[{j}].metadata")),
                    format!("same metadata as services[{i}].gray[{k}]: this subset could never hold an instance"),
                );
            }
            total += u32::from(subset.weight);
            if total > 100 {
                if let Some(w) = &g.weight {
                    v.problem(
                        w.span(),
                        at(&format!("gray[{j}].weight")),
                        format!("the weights of services[{i}].gray add up to {total}; expected at most 100 (percent of requests)"),
                    );
                }
            }
            subsets.push(subset);
        }
        p.gray = Some(Arc::new(GrayPolicy::new(subsets)));
    }
    match &s.zone_aware {
        Some(z) if *z.get_ref() => {
            if !registry {
                v.problem(
                    z.span(),
                    at("zone_aware"),
                    "zone_aware needs discovery = \"registry\": static and DNS endpoints carry no zone".into(),
                );
            }
            match zone {
                Some(local) => {
                    let min = v.int(&s.zone_min_healthy, &at("zone_min_healthy"), 1, 1000, 1);
                    p.zone = Some(ZonePolicy {
                        local: Arc::clone(local),
                        min_healthy: usize::try_from(min).unwrap_or(1),
                    });
                }
                None if !gateway_zone_set => v.problem(
                    z.span(),
                    at("zone_aware"),
                    "zone_aware = true needs gateway.zone (the zone this gateway runs in)".into(),
                ),
                // gateway.zone was set but refused: reported there.
                None => {}
            }
        }
        _ => {
            if let Some(m) = &s.zone_min_healthy {
                v.problem(
                    m.span(),
                    at("zone_min_healthy"),
                    "zone_min_healthy needs zone_aware = true".into(),
                );
            }
        }
    }
}

fn gray(v: &mut Validator<'_>, g: &RawGray, at: &str) -> GraySubset {
    let mut metadata = MetadataSelector::default();
    if g.metadata.get_ref().is_empty() {
        v.problem(
            g.metadata.span(),
            format!("{at}.metadata"),
            format!(
                "is empty; expected at least one of {}",
                MetadataSelector::KEYS
            ),
        );
    }
    for (key, value) in g.metadata.get_ref() {
        let slot = match key.as_str() {
            "version" => &mut metadata.version,
            "zone" => &mut metadata.zone,
            "tag" => &mut metadata.tag,
            other => {
                v.problem(
                    value.span(),
                    format!("{at}.metadata.{other}"),
                    format!(
                        "{other:?} is not an instance metadata key; expected {}",
                        MetadataSelector::KEYS
                    ),
                );
                continue;
            }
        };
        if value.get_ref().is_empty() {
            v.problem(
                value.span(),
                format!("{at}.metadata.{key}"),
                "must not be empty".into(),
            );
        }
        *slot = Some(value.get_ref().clone());
    }
    let weight = v.int(&g.weight, &format!("{at}.weight"), 0, 100, 0);
    let matcher = g
        .matcher
        .as_ref()
        .map(|m| request_match(v, m, &format!("{at}.match")));
    GraySubset {
        metadata,
        weight: u8::try_from(weight).unwrap_or(0),
        matcher,
    }
}

fn request_match(v: &mut Validator<'_>, raw: &Spanned<RawGrayMatch>, at: &str) -> RequestMatch {
    let m = raw.get_ref();
    let mut out = RequestMatch::default();
    if m.headers.is_empty() && m.cookies.is_empty() && m.query.is_empty() {
        v.problem(
            raw.span(),
            at.to_owned(),
            "is empty; expected at least one of headers, cookies, query".into(),
        );
    }
    for (name, value) in &m.headers {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => out.headers.push((h, ValueMatch::parse(value.get_ref()))),
            Err(_) => v.problem(
                value.span(),
                format!("{at}.headers"),
                format!("{name:?} is not a header name"),
            ),
        }
    }
    let pairs = |map: &BTreeMap<String, Spanned<String>>| {
        map.iter()
            .map(|(k, val)| (k.clone(), ValueMatch::parse(val.get_ref())))
            .collect()
    };
    out.cookies = pairs(&m.cookies);
    out.query = pairs(&m.query);
    out
}

/// Validates `routes[i].mirror`.
pub(super) fn mirror(
    v: &mut Validator<'_>,
    r: &RawRoute,
    at: &str,
    known: &BTreeSet<&str>,
    route_timeout: Duration,
) -> Option<MirrorPolicy> {
    let m = r.mirror.as_ref()?;
    let at = format!("{at}.mirror");
    let service = m.service.get_ref();
    if !known.contains(service.as_str()) {
        v.problem(
            m.service.span(),
            format!("{at}.service"),
            format!(
                "no service named {service:?} {}",
                super::validate::known_services(known)
            ),
        );
    } else if r.service.as_ref().is_some_and(|s| s.get_ref() == service)
        || r.split
            .iter()
            .flat_map(|s| s.get_ref())
            .any(|t| t.service.get_ref() == service)
    {
        v.problem(
            m.service.span(),
            format!("{at}.service"),
            format!("{service:?} is the route's own service (or in its split); a mirror must be another service (each mirrored request would reach it twice)"),
        );
    }
    let percent = v.int(&m.percent, &format!("{at}.percent"), 1, 100, 100);
    let max_concurrent = v.int(
        &m.max_concurrent,
        &format!("{at}.max_concurrent"),
        1,
        65536,
        64,
    );
    let max_body = v.int(
        &m.max_body_bytes,
        &format!("{at}.max_body_bytes"),
        0,
        16 * 1024 * 1024,
        64 * 1024,
    );
    let timeout = v.duration(&m.timeout, &format!("{at}.timeout"), route_timeout);
    Some(MirrorPolicy::new(
        ServiceName(service.clone()),
        u8::try_from(percent).unwrap_or(100),
        usize::try_from(max_concurrent).unwrap_or(64),
        u64::try_from(max_body).unwrap_or(0),
        timeout,
    ))
}
