//! Validation of a service's discovery, balancing, health and resilience keys, and of
//! `[registry]`: raw TOML → the typed policies of those modules (docs/discovery.md).

use std::time::Duration;

use http::Method;
use toml::Spanned;

use super::model::{RawBreaker, RawHealth, RawOutlier, RawRegistry, RawRetry, RawService};
use super::validate::Validator;
use crate::balancing::{Algorithm, HashKey};
use crate::discovery::registry::RegistryConfig;
use crate::health::{ActiveCheck, OutlierPolicy};
use crate::resilience::{BreakerPolicy, RetryBudgetPolicy, RetryOn, RetryPolicy};
use crate::upstream::{DiscoveryConfig, ServicePolicy};

impl Validator<'_> {
    fn opt_duration(&mut self, value: &Option<Spanned<String>>, field: &str) -> Option<Duration> {
        value
            .as_ref()
            .map(|_| self.duration(value, field, Duration::from_secs(1)))
    }

    /// An integer in `min..=max`.
    pub(super) fn int(
        &mut self,
        value: &Option<Spanned<i64>>,
        field: &str,
        min: i64,
        max: i64,
        default: i64,
    ) -> i64 {
        let Some(v) = value else { return default };
        let n = *v.get_ref();
        if (min..=max).contains(&n) {
            n
        } else {
            self.problem(
                v.span(),
                field,
                format!("{n} is out of range; expected {min} to {max}"),
            );
            default
        }
    }

    /// A share in `(0, 1]` (or `[0, 1]` when `zero_ok`).
    fn share(
        &mut self,
        value: &Option<Spanned<f64>>,
        field: &str,
        zero_ok: bool,
        default: f64,
    ) -> f64 {
        let Some(v) = value else { return default };
        let x = *v.get_ref();
        let ok = x.is_finite() && x <= 1.0 && (x > 0.0 || (zero_ok && x == 0.0));
        if ok {
            x
        } else {
            let range = if zero_ok {
                "0 to 1"
            } else {
                "greater than 0, at most 1"
            };
            self.problem(
                v.span(),
                field,
                format!("{x} is not a share; expected {range}"),
            );
            default
        }
    }
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Validates the policy keys of `services[i]`.
pub(super) fn service_policy(v: &mut Validator<'_>, s: &RawService, i: usize) -> ServicePolicy {
    let at = |key: &str| format!("services[{i}].{key}");
    let discovery = match s
        .discovery
        .as_ref()
        .map(|d| (d.get_ref().as_str(), d.span()))
    {
        None | Some(("static", _)) => DiscoveryConfig::Static,
        Some(("registry", _)) => DiscoveryConfig::Registry,
        Some(("dns", span)) => {
            let name = match &s.dns_name {
                Some(n) if !n.get_ref().is_empty() => n.get_ref().clone(),
                _ => {
                    v.problem(
                        span.clone(),
                        at("dns_name"),
                        "discovery = \"dns\" needs dns_name".into(),
                    );
                    String::new()
                }
            };
            let port = match &s.dns_port {
                Some(_) => v.int(&s.dns_port, &at("dns_port"), 1, 65535, 80),
                None => {
                    v.problem(
                        span,
                        at("dns_port"),
                        "discovery = \"dns\" needs dns_port".into(),
                    );
                    80
                }
            };
            let interval = v.duration(
                &s.dns_interval,
                &at("dns_interval"),
                Duration::from_secs(30),
            );
            DiscoveryConfig::Dns {
                name,
                port: u16::try_from(port).unwrap_or(80),
                interval,
            }
        }
        Some((other, span)) => {
            v.problem(
                span,
                at("discovery"),
                format!("{other:?} is not a discovery source; expected \"static\", \"registry\" or \"dns\""),
            );
            DiscoveryConfig::Static
        }
    };
    let mut p = ServicePolicy {
        discovery,
        ..ServicePolicy::default()
    };
    if p.discovery != DiscoveryConfig::Static {
        if let Some(e) = s.endpoints.first() {
            v.problem(
                e.span(),
                at("endpoints"),
                "endpoints and discovery = \"registry\"/\"dns\" cannot be set together".into(),
            );
        }
    }
    let dns = matches!(p.discovery, DiscoveryConfig::Dns { .. });
    for (key, set) in [
        ("dns_name", s.dns_name.as_ref().map(|x| x.span())),
        ("dns_port", s.dns_port.as_ref().map(|x| x.span())),
        ("dns_interval", s.dns_interval.as_ref().map(|x| x.span())),
    ] {
        if let (Some(span), false) = (set, dns) {
            v.problem(span, at(key), format!("{key} needs discovery = \"dns\""));
        }
    }

    if let Some(b) = &s.balance {
        match b.get_ref().parse::<Algorithm>() {
            Ok(a) => p.balance = a,
            Err(()) => v.problem(
                b.span(),
                at("balance"),
                format!(
                    "{:?} is not a balancer; expected one of {}",
                    b.get_ref(),
                    Algorithm::NAMES
                ),
            ),
        }
    }
    match (&s.hash_key, p.balance == Algorithm::Hash) {
        (Some(k), true) => match HashKey::parse(k.get_ref()) {
            Some(key) => p.hash_key = Some(key),
            None => v.problem(
                k.span(),
                at("hash_key"),
                format!(
                    "{:?} is not a hash key; expected \"header:NAME\", \"cookie:NAME\" or \"client-address\"",
                    k.get_ref()
                ),
            ),
        },
        (None, true) => {
            let span = s.balance.as_ref().map(|b| b.span()).unwrap_or(s.name.span());
            v.problem(span, at("hash_key"), "balance = \"hash\" needs hash_key".into());
        }
        (Some(k), false) => v.problem(k.span(), at("hash_key"), "hash_key needs balance = \"hash\"".into()),
        (None, false) => {}
    }

    p.try_timeout = v.opt_duration(&s.try_timeout, &at("try_timeout"));
    p.timeout = v.opt_duration(&s.timeout, &at("timeout"));
    p.health = s.health.as_ref().map(|h| health(v, h, &at("health")));
    p.outlier = s.outlier.as_ref().map(|o| outlier(v, o, &at("outlier")));
    if let Some(r) = &s.retry {
        p.retry = retry(v, r, &at("retry"));
    }
    p.breaker = s.breaker.as_ref().map(|b| breaker(v, b, &at("breaker")));
    p
}

fn health(v: &mut Validator<'_>, h: &RawHealth, at: &str) -> ActiveCheck {
    let mut c = ActiveCheck::new(h.path.get_ref().clone());
    if !c.path.starts_with('/') || c.path.parse::<http::uri::PathAndQuery>().is_err() {
        v.problem(
            h.path.span(),
            format!("{at}.path"),
            format!("{:?} is not a path; expected one starting with '/'", c.path),
        );
    }
    c.interval = v.duration(&h.interval, &format!("{at}.interval"), c.interval);
    c.timeout = v.duration(&h.timeout, &format!("{at}.timeout"), c.timeout);
    c.healthy_threshold = count(v.int(
        &h.healthy_threshold,
        &format!("{at}.healthy_threshold"),
        1,
        1000,
        2,
    ));
    c.unhealthy_threshold = count(v.int(
        &h.unhealthy_threshold,
        &format!("{at}.unhealthy_threshold"),
        1,
        1000,
        3,
    ));
    c
}

fn outlier(v: &mut Validator<'_>, o: &RawOutlier, at: &str) -> OutlierPolicy {
    let d = OutlierPolicy::default();
    let p = OutlierPolicy {
        consecutive_failures: count(v.int(
            &o.consecutive_failures,
            &format!("{at}.consecutive_failures"),
            1,
            1000,
            5,
        )),
        base_ejection: v.duration(
            &o.base_ejection,
            &format!("{at}.base_ejection"),
            d.base_ejection,
        ),
        max_ejection: v.duration(
            &o.max_ejection,
            &format!("{at}.max_ejection"),
            d.max_ejection,
        ),
        max_ejected_share: v.share(
            &o.max_ejected_share,
            &format!("{at}.max_ejected_share"),
            false,
            d.max_ejected_share,
        ),
    };
    if let (Some(span), true) = (
        o.max_ejection.as_ref().map(|m| m.span()),
        p.max_ejection < p.base_ejection,
    ) {
        v.problem(
            span,
            format!("{at}.max_ejection"),
            format!("{at}.max_ejection must be at least {at}.base_ejection"),
        );
    }
    p
}

fn retry(v: &mut Validator<'_>, r: &RawRetry, at: &str) -> RetryPolicy {
    let d = RetryPolicy::default();
    let mut p = RetryPolicy {
        max_retries: count(v.int(&r.max_retries, &format!("{at}.max_retries"), 0, 10, 2)),
        backoff: d.backoff,
        ..d
    };
    if let Some(methods) = &r.methods {
        p.methods = methods
            .iter()
            .enumerate()
            .filter_map(|(j, m)| {
                match Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
                    Ok(method) => Some(method),
                    Err(_) => {
                        v.problem(
                            m.span(),
                            format!("{at}.methods[{j}]"),
                            format!("{:?} is not an HTTP method", m.get_ref()),
                        );
                        None
                    }
                }
            })
            .collect();
    }
    if let Some(on) = &r.on {
        let mut set = RetryOn {
            connect_failure: false,
            reset: false,
            timeout: false,
            status_5xx: false,
        };
        for (j, o) in on.iter().enumerate() {
            match o.get_ref().as_str() {
                "connect-failure" => set.connect_failure = true,
                "reset" => set.reset = true,
                "timeout" => set.timeout = true,
                "5xx" => set.status_5xx = true,
                other => v.problem(
                    o.span(),
                    format!("{at}.on[{j}]"),
                    format!("{other:?} is not a retry condition; expected \"connect-failure\", \"reset\", \"timeout\" or \"5xx\""),
                ),
            }
        }
        p.on = set;
    }
    if r.backoff.is_some() {
        p.backoff = v.duration(&r.backoff, &format!("{at}.backoff"), p.backoff);
    }
    let bd = RetryBudgetPolicy::default();
    p.budget = RetryBudgetPolicy {
        ratio: v.share(
            &r.budget_ratio,
            &format!("{at}.budget_ratio"),
            true,
            bd.ratio,
        ),
        min_per_sec: count(v.int(
            &r.budget_min_per_sec,
            &format!("{at}.budget_min_per_sec"),
            0,
            1_000_000,
            10,
        )),
        window: v.duration(&r.budget_window, &format!("{at}.budget_window"), bd.window),
    };
    p
}

fn breaker(v: &mut Validator<'_>, b: &RawBreaker, at: &str) -> BreakerPolicy {
    let d = BreakerPolicy::default();
    BreakerPolicy {
        max_concurrent: v.int(
            &b.max_concurrent,
            &format!("{at}.max_concurrent"),
            1,
            1 << 20,
            1024,
        ) as usize,
        max_pending: v.int(
            &b.max_pending,
            &format!("{at}.max_pending"),
            0,
            1 << 20,
            1024,
        ) as usize,
        failure_rate: v.share(
            &b.failure_rate,
            &format!("{at}.failure_rate"),
            false,
            d.failure_rate,
        ),
        min_requests: count(v.int(
            &b.min_requests,
            &format!("{at}.min_requests"),
            1,
            1_000_000,
            20,
        )),
        window: v.duration(&b.window, &format!("{at}.window"), d.window),
        open_for: v.duration(&b.open_for, &format!("{at}.open_for"), d.open_for),
        half_open_probes: count(v.int(
            &b.half_open_probes,
            &format!("{at}.half_open_probes"),
            1,
            1000,
            3,
        )),
    }
}

/// Validates `[registry]`.
pub(super) fn registry(v: &mut Validator<'_>, r: &RawRegistry) -> RegistryConfig {
    let d = RegistryConfig::default();
    let token = r.token.as_ref().and_then(|t| {
        if t.get_ref().is_empty() {
            v.problem(t.span(), "registry.token", "must not be empty".into());
            None
        } else {
            Some(t.get_ref().clone())
        }
    });
    let c = RegistryConfig {
        token,
        lease: v.duration(&r.lease, "registry.lease", d.lease),
        heartbeat: v.duration(&r.heartbeat, "registry.heartbeat", d.heartbeat),
        eviction_interval: v.duration(
            &r.eviction_interval,
            "registry.eviction_interval",
            d.eviction_interval,
        ),
        self_preservation_share: v.share(
            &r.self_preservation,
            "registry.self_preservation",
            false,
            d.self_preservation_share,
        ),
        // `[registry] store` and `[etcd]`: config/scale_out.rs.
        store: d.store,
        max_watches: count(v.int(
            &r.max_watches,
            "registry.max_watches",
            1,
            1_000_000,
            d.max_watches as i64,
        )) as usize,
        max_wait: v.duration(&r.max_wait, "registry.max_wait", d.max_wait),
    };
    if let Some(w) = r.max_wait.as_ref().filter(|_| {
        c.max_wait < std::time::Duration::from_secs(1)
            || c.max_wait > std::time::Duration::from_secs(3600)
    }) {
        v.problem(
            w.span(),
            "registry.max_wait",
            format!("{:?} is out of range; expected 1s to 1h", w.get_ref()),
        );
    }
    if let (Some(span), true) = (r.lease.as_ref().map(|l| l.span()), c.lease <= c.heartbeat) {
        v.problem(
            span,
            "registry.lease",
            "registry.lease must be longer than registry.heartbeat".into(),
        );
    }
    c
}
