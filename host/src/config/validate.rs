//! Validation: raw serde types → [`Config`]. Reports every problem at once, each with the line,
//! the key path, the bad value and what would be accepted.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use toml::Spanned;

use super::load::line_col;
use super::model::{
    RawConfig, RawForwarding, RawHeaderPolicy, RawLimits, RawMatch, RawRoute, RawService,
};
use super::{
    AdminConfig, Config, ConfigError, HostMatch, Limits, Listen, LogConfig, LogFormat, MatchConfig,
    MaxBodyBytes, PathMatch, Problem, RouteConfig, RouteName, ServiceConfig, ServiceName,
    ShutdownConfig, UnderscoreHeaders,
};
use crate::balancing::HashKey;
use crate::headers::forwarding::ForwardingPolicy;
use crate::headers::policy::{self as header_policy, HeaderPolicy};
use crate::matching::{RequestMatch, ValueMatch};
use crate::routing::{RouteTable, RouteTarget, Split, SplitError};

const DEFAULT_PUBLIC: &str = "0.0.0.0:8080";
const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_DRAIN: Duration = Duration::from_secs(30);
const DEFAULT_BODY_IDLE: Duration = Duration::from_secs(30);

/// Collects problems while walking the raw config.
pub(super) struct Validator<'a> {
    text: &'a str,
    /// The config file's directory: relative paths in it (plugin `files`, certificates)
    /// resolve here.
    pub(super) base: &'a Path,
    problems: Vec<Problem>,
    /// What `gatehouse check` prints and the gateway logs, without refusing the config.
    warnings: Vec<Problem>,
}

impl Validator<'_> {
    pub(super) fn problem(
        &mut self,
        span: std::ops::Range<usize>,
        field: impl Into<String>,
        message: String,
    ) {
        let (line, column) = line_col(self.text, span.start);
        self.problems.push(Problem {
            line,
            column,
            field: field.into(),
            message,
        });
    }

    /// A problem that does not make the config invalid (an expired certificate).
    pub(super) fn warning(
        &mut self,
        span: std::ops::Range<usize>,
        field: impl Into<String>,
        message: String,
    ) {
        let (line, column) = line_col(self.text, span.start);
        self.warnings.push(Problem {
            line,
            column,
            field: field.into(),
            message,
        });
    }

    /// Problems reported so far.
    pub(super) fn problem_count(&self) -> usize {
        self.problems.len()
    }

    /// The config file's directory: relative paths in it resolve here.
    pub(super) fn base(&self) -> &Path {
        self.base
    }

    pub(super) fn addr(
        &mut self,
        value: &Option<Spanned<String>>,
        field: &str,
        default: &str,
    ) -> SocketAddr {
        let fallback = || {
            default
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
        };
        let Some(v) = value else { return fallback() };
        match v.get_ref().parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                self.problem(
                    v.span(),
                    field,
                    format!(
                        "{:?} is not an address; expected IP:PORT such as \"127.0.0.1:8080\"",
                        v.get_ref()
                    ),
                );
                fallback()
            }
        }
    }

    pub(super) fn duration(
        &mut self,
        value: &Option<Spanned<String>>,
        field: &str,
        default: Duration,
    ) -> Duration {
        let Some(v) = value else { return default };
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.problem(v.span(), field, "must be greater than zero".to_owned());
                default
            }
            Err(e) => {
                // humantime's other errors name a byte offset ("expected number at 8").
                let unit = match e {
                    humantime::DurationError::UnknownUnit { unit, .. } => {
                        format!(" (unknown unit {unit:?})")
                    }
                    _ => String::new(),
                };
                self.problem(
                    v.span(),
                    field,
                    format!(
                        "{:?} is not a duration{unit}; expected e.g. \"250ms\", \"5s\", \"1m\"",
                        v.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn body_limit(
        &mut self,
        value: &Option<Spanned<i64>>,
        field: &str,
        default: MaxBodyBytes,
    ) -> MaxBodyBytes {
        let Some(v) = value else { return default };
        match u64::try_from(*v.get_ref()) {
            Ok(n) if n > 0 => MaxBodyBytes(n),
            _ => {
                self.problem(
                    v.span(),
                    field,
                    format!(
                        "{} is not a body limit; expected a positive number of bytes such as 1048576",
                        v.get_ref()
                    ),
                );
                default
            }
        }
    }

    pub(super) fn positive(
        &mut self,
        value: &Option<Spanned<i64>>,
        field: &str,
        default: usize,
    ) -> usize {
        let Some(v) = value else { return default };
        match usize::try_from(*v.get_ref()) {
            Ok(n) if n > 0 => n,
            _ => {
                self.problem(
                    v.span(),
                    field,
                    format!("{} must be a positive integer", v.get_ref()),
                );
                default
            }
        }
    }
}

/// One worker per CPU this process may run on (`taskset` and cgroup limits included).
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

pub(super) fn validate(
    raw: RawConfig,
    text: &str,
    file: &str,
    base: &Path,
) -> Result<Config, ConfigError> {
    let mut v = Validator {
        text,
        base,
        problems: Vec::new(),
        warnings: Vec::new(),
    };

    let listen = Listen {
        public: v.addr(&raw.listen.public, "listen.public", DEFAULT_PUBLIC),
        admin: v.addr(&raw.listen.admin, "listen.admin", DEFAULT_ADMIN),
        workers: v.positive(&raw.listen.workers, "listen.workers", default_workers()),
        tls: None,
        http: None,
    };
    let mut listen = listen;
    listen.tls = super::listen::tls(&mut v, &raw.listen);
    listen.http = super::listen::plaintext(&mut v, &raw.listen, listen.tls.is_some());

    let format = match raw
        .log
        .format
        .as_ref()
        .map(|f| (f.get_ref().as_str(), f.span()))
    {
        None | Some(("text", _)) => LogFormat::Text,
        Some(("json", _)) => LogFormat::Json,
        Some((other, span)) => {
            v.problem(
                span,
                "log.format",
                format!("{other:?} is not a log format; expected \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    let level = match &raw.log.level {
        None => "info".to_owned(),
        Some(l) => {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(l.get_ref()) {
                v.problem(
                    l.span(),
                    "log.level",
                    format!("{:?} is not a log filter: {e}", l.get_ref()),
                );
            }
            l.get_ref().clone()
        }
    };

    let limits = Limits {
        max_header_count: v.positive(&raw.limits.max_header_count, "limits.max_header_count", 100),
        max_header_bytes: v.positive(
            &raw.limits.max_header_bytes,
            "limits.max_header_bytes",
            16 * 1024,
        ),
        max_uri_length: v.positive(
            &raw.limits.max_uri_length,
            "limits.max_uri_length",
            8 * 1024,
        ),
        default_timeout: v.duration(
            &raw.limits.default_timeout,
            "limits.default_timeout",
            DEFAULT_TIMEOUT,
        ),
        max_response_header_bytes: response_head_limit(&mut v, &raw.limits),
        max_concurrent_streams: u32::try_from(v.positive(
            &raw.limits.max_concurrent_streams,
            "limits.max_concurrent_streams",
            128,
        ))
        .unwrap_or(u32::MAX),
        body_idle_timeout: v.duration(
            &raw.limits.body_idle_timeout,
            "limits.body_idle_timeout",
            DEFAULT_BODY_IDLE,
        ),
        max_requests_in_flight: raw.limits.max_requests_in_flight.as_ref().map(|_| {
            v.positive(
                &raw.limits.max_requests_in_flight,
                "limits.max_requests_in_flight",
                1,
            )
        }),
        max_connections: raw
            .limits
            .max_connections
            .as_ref()
            .map(|_| v.positive(&raw.limits.max_connections, "limits.max_connections", 1)),
        max_body_bytes: v.body_limit(
            &raw.limits.max_body_bytes,
            "limits.max_body_bytes",
            MaxBodyBytes::DEFAULT,
        ),
        underscore_headers: match raw
            .limits
            .underscore_headers
            .as_ref()
            .map(|u| (u.get_ref().as_str(), u.span()))
        {
            None | Some(("drop", _)) => UnderscoreHeaders::Drop,
            Some(("reject", _)) => UnderscoreHeaders::Reject,
            Some((other, span)) => {
                v.problem(
                    span,
                    "limits.underscore_headers",
                    format!(
                        "{other:?} is not an underscore policy; expected \"drop\" or \"reject\""
                    ),
                );
                UnderscoreHeaders::Drop
            }
        },
    };
    let forwarding = forwarding(&mut v, &raw.forwarding);

    let paths = crate::path::PathPolicy {
        merge_slashes: raw.paths.merge_slashes.unwrap_or(true),
        // Only a route can allow encoded separators (`routes.allow_encoded_slash`).
        allow_encoded_slash: false,
    };

    let token = raw.admin.token.as_ref().and_then(|t| {
        if t.get_ref().trim().is_empty() {
            v.problem(t.span(), "admin.token", "must not be empty".to_owned());
            None
        } else {
            Some(t.get_ref().clone())
        }
    });
    if !listen.admin.ip().is_loopback() && token.is_none() {
        let span = raw.listen.admin.as_ref().map_or(0..0, |a| a.span());
        v.problem(
            span,
            "listen.admin",
            format!(
                "{} is not a loopback address, so admin.token must be set: the admin API must not be open to the network",
                listen.admin
            ),
        );
    }
    let admin = AdminConfig {
        token_set: token.is_some(),
        token,
    };

    let shutdown = ShutdownConfig {
        drain_timeout: v.duration(
            &raw.shutdown.drain_timeout,
            "shutdown.drain_timeout",
            DEFAULT_DRAIN,
        ),
    };

    let mut services = validate_services(&mut v, &raw.services);
    let zone = super::traffic::gateway_zone(&mut v, &raw.gateway);
    for (i, (s, out)) in raw.services.iter().zip(&mut services).enumerate() {
        let zone_set = raw.gateway.zone.is_some();
        super::traffic::service(&mut v, s, i, zone.as_ref(), zone_set, &mut out.policy);
    }
    let mut registry = super::policy::registry(&mut v, &raw.registry);
    registry.store = super::scale_out::registry_store(&mut v, raw.etcd.as_ref(), &raw.registry);
    let known: BTreeSet<&str> = services.iter().map(|s| s.name.0.as_str()).collect();
    let cache = super::cache::budget(&mut v, &raw.cache);
    let rate_limits =
        super::scale_out::rate_limit_store(&mut v, raw.redis.as_ref(), &raw.rate_limits);
    let plugin_cache = super::scale_out::plugin_cache_store(
        &mut v,
        raw.redis.as_ref(),
        raw.plugins.cache.as_ref(),
    );
    let compression = super::compression::global(&mut v, raw.compression.as_ref());
    let mut routes = validate_routes(&mut v, &raw.routes, &known, &limits, &cache);
    for (i, (r, route)) in raw.routes.iter().zip(&mut routes).enumerate() {
        let at = format!("routes[{i}]");
        route.compression =
            super::compression::route(&mut v, r.compression.as_ref(), &at, &compression);
        route.cors = super::cors::route(&mut v, r.cors.as_ref(), &at);
    }
    let plugins = super::plugins::validate(&raw.plugins, v.base, text, &mut v.problems);
    super::plugins::check_entry_memory(&raw.routes, &plugins, text, &mut v.problems);
    let tracing = super::observability::tracing(&mut v, raw.tracing.as_ref());
    let metering = super::observability::metering(&mut v, &raw.metrics);
    super::upgrade::check_protocols(&mut v, &raw.routes, &routes, &services);

    // Route conflicts (two templates the radix tree cannot tell apart) are found by building the
    // real table: validation and the running router can never disagree.
    if v.problems.is_empty() {
        if let Err(e) = RouteTable::new(&routes) {
            let raw_route = &raw.routes[e.route_index];
            let span = raw_route
                .matcher
                .path
                .as_ref()
                .or(raw_route.matcher.prefix.as_ref())
                .map_or(raw_route.name.span(), |p| p.span());
            v.problem(span, format!("routes[{}].match", e.route_index), e.message);
        }
    }

    if !v.problems.is_empty() {
        return Err(ConfigError::Invalid {
            file: file.to_owned(),
            problems: v.problems,
        });
    }
    Ok(Config {
        source: file.to_owned(),
        listen,
        log: LogConfig { format, level },
        limits,
        paths,
        admin,
        forwarding,
        shutdown,
        services,
        routes,
        registry,
        plugins,
        cache,
        tracing,
        metering,
        rate_limits,
        plugin_cache,
        warnings: v.warnings,
    })
}

fn validate_services(v: &mut Validator<'_>, raw: &[RawService]) -> Vec<ServiceConfig> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let name = s.name.get_ref();
        check_name(v, &s.name, &format!("services[{i}].name"));
        if !seen.insert(name.clone()) {
            v.problem(
                s.name.span(),
                format!("services[{i}].name"),
                format!("duplicate service name {name:?}"),
            );
        }
        let mut policy = super::policy::service_policy(v, s, i);
        // Absent (or refused, reported above) reads as 0: no cap.
        policy.max_requests_per_endpoint = std::num::NonZeroUsize::new(v.positive(
            &s.max_requests_per_endpoint,
            &format!("services[{i}].max_requests_per_endpoint"),
            0,
        ));
        if s.endpoints.is_empty() && policy.discovery == super::DiscoveryConfig::Static {
            v.problem(
                s.name.span(),
                format!("services[{i}].endpoints"),
                format!("service {name:?} has no endpoints"),
            );
        }
        let endpoints: Vec<SocketAddr> = s
            .endpoints
            .iter()
            .enumerate()
            .filter_map(|(j, e)| match e.get_ref().parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    v.problem(
                        e.span(),
                        format!("services[{i}].endpoints[{j}]"),
                        format!(
                            "{:?} is not an endpoint; expected IP:PORT such as \"127.0.0.1:8081\"",
                            e.get_ref()
                        ),
                    );
                    None
                }
            })
            .collect();
        let protocol = super::upstream_tls::protocol(v, s, i);
        let tls = super::upstream_tls::upstream_tls(v, s, i, protocol, &policy.discovery);
        let drained = drained(v, s, i, &endpoints);
        out.push(ServiceConfig {
            name: ServiceName(name.clone()),
            drained,
            panic_mode: s.panic_mode.unwrap_or(true),
            endpoints,
            protocol,
            tls,
            connect_timeout: v.duration(
                &s.connect_timeout,
                &format!("services[{i}].connect_timeout"),
                DEFAULT_CONNECT_TIMEOUT,
            ),
            policy,
        });
    }
    out
}

fn validate_routes(
    v: &mut Validator<'_>,
    raw: &[RawRoute],
    known: &BTreeSet<&str>,
    limits: &Limits,
    cache: &crate::cache::CacheBudget,
) -> Vec<RouteConfig> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let at = format!("routes[{i}]");
        let name = r.name.get_ref();
        check_name(v, &r.name, &format!("{at}.name"));
        if !seen.insert(name.clone()) {
            v.problem(
                r.name.span(),
                format!("{at}.name"),
                format!("duplicate route name {name:?}"),
            );
        }
        let matcher = validate_match(v, &r.matcher, &at);
        let route_cache = super::cache::route(v, r, &at, &matcher, cache);
        let target = match super::respond::target(v, r, &at, &matcher.path) {
            Some(answer) => answer,
            None => route_target(v, r, &at, known),
        };
        if r.strip_prefix && !matches!(matcher.path, PathMatch::Prefix(_)) {
            v.problem(
                r.name.span(),
                format!("{at}.strip_prefix"),
                "strip_prefix = true needs match.prefix to be set".to_owned(),
            );
        }
        if r.strip_prefix && r.rewrite.is_some() {
            v.problem(
                r.name.span(),
                format!("{at}.rewrite"),
                "rewrite and strip_prefix cannot be set together".to_owned(),
            );
        }
        if let Some(rw) = &r.rewrite {
            check_rewrite(v, rw, &matcher.path, &format!("{at}.rewrite"));
        }
        out.push(RouteConfig {
            name: RouteName(name.clone()),
            target,
            target_set_at_run_time: false,
            matcher,
            strip_prefix: r.strip_prefix,
            rewrite: r.rewrite.as_ref().map(|s| s.get_ref().clone()),
            timeout: v.duration(&r.timeout, &format!("{at}.timeout"), limits.default_timeout),
            max_body_bytes: v.body_limit(
                &r.max_body_bytes,
                &format!("{at}.max_body_bytes"),
                limits.max_body_bytes,
            ),
            allow_encoded_slash: r.allow_encoded_slash,
            plugins: super::plugins::validate_route(r, &at, known, v.base, v.text, &mut v.problems),
            on_error: super::plugins::on_error(r, &at, v.text, &mut v.problems),
            request_headers: header_policy(
                v,
                r.request_headers.as_ref(),
                &format!("{at}.request_headers"),
            ),
            response_headers: header_policy(
                v,
                r.response_headers.as_ref(),
                &format!("{at}.response_headers"),
            ),
            deny: r
                .deny
                .as_ref()
                .and_then(|d| deny_status(v, d, &format!("{at}.deny"))),
            limits: super::ratelimit::route_limits(v, r, &at),
            mirror: None,
            upgrade: super::upgrade::route(v, r, &at),
            cache: route_cache,
            compression: None,
            cors: None,
        });
        let timeout = out.last().map_or(limits.default_timeout, |r| r.timeout);
        let mirror = super::traffic::mirror(v, r, &at, known, timeout);
        if let Some(route) = out.last_mut() {
            route.mirror = mirror;
        }
    }
    out
}

/// `service`, or `split` (with `sticky`): exactly one of the two, on a route without `respond`
/// or `redirect`.
fn route_target(
    v: &mut Validator<'_>,
    r: &RawRoute,
    at: &str,
    known: &BTreeSet<&str>,
) -> RouteTarget {
    // What an invalid route gets; the config is refused anyway.
    let placeholder = || RouteTarget::Service(ServiceName(String::new()));
    let known_service = |v: &mut Validator<'_>, s: &Spanned<String>, field: String| {
        let ok = known.contains(s.get_ref().as_str());
        if !ok {
            v.problem(
                s.span(),
                field,
                format!(
                    "no service named {:?} {}",
                    s.get_ref(),
                    known_services(known)
                ),
            );
        }
        ok
    };
    let split = match (&r.service, &r.split) {
        (Some(_), Some(split)) => {
            v.problem(
                split.span(),
                format!("{at}.split"),
                "service and split cannot be set together; use service for one service, split for several with weights".to_owned(),
            );
            return placeholder();
        }
        (None, None) => {
            v.problem(
                r.name.span(),
                format!("{at}.service"),
                "set service (one service), split (several services with weights), or respond \
                 or redirect (the gateway answers)"
                    .to_owned(),
            );
            return placeholder();
        }
        (Some(service), None) => {
            if let Some(sticky) = &r.sticky {
                v.problem(
                    sticky.span(),
                    format!("{at}.sticky"),
                    "sticky needs split: a route to one service has no choice to keep".to_owned(),
                );
            }
            known_service(v, service, format!("{at}.service"));
            return RouteTarget::Service(ServiceName(service.get_ref().clone()));
        }
        (None, Some(split)) => split,
    };
    let mut ok = true;
    if split.get_ref().is_empty() {
        v.problem(
            split.span(),
            format!("{at}.split"),
            SplitError::Empty.to_string(),
        );
        ok = false;
    }
    let mut targets = Vec::with_capacity(split.get_ref().len());
    for (j, t) in split.get_ref().iter().enumerate() {
        ok &= known_service(v, &t.service, format!("{at}.split[{j}].service"));
        // The same checks and words as the admin API's (`routing::Split::check`).
        let weight = *t.weight.get_ref();
        if let Err(e) = Split::check([("", weight)]) {
            v.problem(
                t.weight.span(),
                format!("{at}.split[{j}].weight"),
                e.to_string(),
            );
            ok = false;
        }
        let earlier = split.get_ref()[..j]
            .iter()
            .any(|o| o.service.get_ref() == t.service.get_ref());
        if earlier {
            let e = SplitError::Duplicate {
                index: j,
                service: t.service.get_ref().clone(),
            };
            v.problem(
                t.service.span(),
                format!("{at}.split[{j}].service"),
                e.to_string(),
            );
            ok = false;
        }
        let weight = u32::try_from(weight).unwrap_or(1);
        targets.push((ServiceName(t.service.get_ref().clone()), weight));
    }
    let sticky = r.sticky.as_ref().and_then(|k| {
        let key = HashKey::parse(k.get_ref());
        if key.is_none() {
            v.problem(
                k.span(),
                format!("{at}.sticky"),
                format!(
                    "{:?} is not a sticky key; expected \"header:NAME\", \"cookie:NAME\" or \"client-address\"",
                    k.get_ref()
                ),
            );
        }
        key
    });
    if !ok {
        return placeholder();
    }
    match Split::new(targets, sticky) {
        Ok(split) => RouteTarget::Split(Arc::new(split)),
        Err(e) => {
            v.problem(split.span(), format!("{at}.{}", e.field()), e.to_string());
            placeholder()
        }
    }
}

fn check_name(v: &mut Validator<'_>, name: &Spanned<String>, field: &str) {
    let n = name.get_ref();
    let ok = !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        v.problem(
            name.span(),
            field,
            format!("{n:?} is not a name; use letters, digits, '-', '_' or '.'"),
        );
    }
}

fn validate_match(v: &mut Validator<'_>, m: &RawMatch, at: &str) -> MatchConfig {
    let host = m.host.as_ref().and_then(|h| {
        let host = h.get_ref().to_ascii_lowercase();
        let (is_wild, bare) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host.as_str()),
        };
        let valid = !bare.is_empty()
            && bare
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !valid {
            v.problem(
                h.span(),
                format!("{at}.match.host"),
                format!(
                    "{:?} is not a host; expected \"api.example.com\" or \"*.example.com\"",
                    h.get_ref()
                ),
            );
            return None;
        }
        Some(if is_wild {
            HostMatch::Wildcard(format!(".{bare}"))
        } else {
            HostMatch::Exact(host)
        })
    });

    let path = match (&m.path, &m.prefix) {
        (Some(p), Some(_)) => {
            v.problem(
                p.span(),
                format!("{at}.match"),
                "set either path or prefix, not both".to_owned(),
            );
            PathMatch::Path(p.get_ref().clone())
        }
        (Some(p), None) => {
            check_path(v, p, &format!("{at}.match.path"));
            check_template(v, p, &format!("{at}.match.path"));
            PathMatch::Path(p.get_ref().clone())
        }
        (None, Some(p)) => {
            check_path(v, p, &format!("{at}.match.prefix"));
            if p.get_ref().contains('{') {
                v.problem(
                    p.span(),
                    format!("{at}.match.prefix"),
                    "a prefix cannot hold {params}; use match.path for templates".to_owned(),
                );
            }
            // `/api/` and `/api` mean the same prefix.
            let trimmed = p.get_ref().trim_end_matches('/');
            PathMatch::Prefix(if trimmed.is_empty() {
                "/".to_owned()
            } else {
                trimmed.to_owned()
            })
        }
        (None, None) => PathMatch::Prefix("/".to_owned()),
    };

    let methods = m
        .methods
        .iter()
        .enumerate()
        .filter_map(|(j, s)| {
            match Method::from_bytes(s.get_ref().to_ascii_uppercase().as_bytes()) {
                Ok(method) => Some(method),
                Err(_) => {
                    v.problem(
                        s.span(),
                        format!("{at}.match.methods[{j}]"),
                        format!("{:?} is not an HTTP method", s.get_ref()),
                    );
                    None
                }
            }
        })
        .collect();

    let headers = m
        .headers
        .iter()
        .filter_map(
            |(name, value)| match HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) => Some((h, value_match(value))),
                Err(_) => {
                    v.problem(
                        value.span(),
                        format!("{at}.match.headers.{name}"),
                        format!("{name:?} is not a header name"),
                    );
                    None
                }
            },
        )
        .collect();
    let query = m
        .query
        .iter()
        .map(|(k, val)| (k.clone(), value_match(val)))
        .collect();
    let cookies = m
        .cookies
        .iter()
        .filter_map(|(name, value)| {
            // RFC 6265 cookie-name: a token; `=`, `;`, spaces and controls cannot be in it.
            let is_token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            if !is_token {
                v.problem(
                    value.span(),
                    format!("{at}.match.cookies.{name}"),
                    format!("{name:?} is not a cookie name"),
                );
                return None;
            }
            Some((name.clone(), value_match(value)))
        })
        .collect();

    MatchConfig {
        host,
        path,
        methods,
        request: RequestMatch {
            headers,
            cookies,
            query,
        },
    }
}

fn value_match(v: &Spanned<String>) -> ValueMatch {
    ValueMatch::parse(v.get_ref())
}

fn check_path(v: &mut Validator<'_>, p: &Spanned<String>, field: &str) {
    let path = p.get_ref();
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        v.problem(
            p.span(),
            field,
            format!(
                "{path:?} is not a path; it must start with '/' and hold no '?', '#' or spaces"
            ),
        );
    }
}

/// "(known: a, b)", or that there are none, after "no service named …".
pub(super) fn known_services(known: &BTreeSet<&str>) -> String {
    if known.is_empty() {
        return "(the file defines no [[services]])".to_owned();
    }
    let list = known.iter().copied().collect::<Vec<_>>().join(", ");
    format!("(known: {list})")
}

/// A template's `{param}` segments are well formed. Found here rather than by the router, so
/// that it is said in the file's terms and listed with every other problem.
fn check_template(v: &mut Validator<'_>, p: &Spanned<String>, field: &str) {
    if let Some(what) = template_problem(p.get_ref()) {
        v.problem(
            p.span(),
            field,
            format!("{:?} is not a valid template: {what}", p.get_ref()),
        );
    }
}

/// What is wrong with a path template's braces, if anything.
fn template_problem(template: &str) -> Option<String> {
    let segments: Vec<&str> = template.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let mut open: Option<usize> = None;
        for (j, c) in segment.char_indices() {
            match (c, open) {
                ('{', Some(_)) => return Some(format!("`{{` inside a parameter in {segment:?}")),
                ('{', None) => open = Some(j),
                ('}', None) => {
                    return Some(format!("`}}` without a `{{` before it in {segment:?}"))
                }
                ('}', Some(start)) => {
                    let name = &segment[start + 1..j];
                    let bare = name.strip_prefix('*').unwrap_or(name);
                    if bare.is_empty() {
                        return Some(format!("{segment:?} has a parameter without a name"));
                    }
                    if name.starts_with('*') && i + 1 != segments.len() {
                        return Some(format!(
                            "the catch-all {segment:?} must be the last segment"
                        ));
                    }
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(start) = open {
            return Some(format!("missing `}}` after {:?}", &segment[start..]));
        }
    }
    None
}

/// Every `{param}` in a rewrite must be captured by the route's path template.
fn check_rewrite(v: &mut Validator<'_>, rw: &Spanned<String>, path: &PathMatch, field: &str) {
    check_path(v, rw, field);
    check_template(v, rw, field);
    let captured: Vec<&str> = match path {
        PathMatch::Path(p) => template_params(p).collect(),
        PathMatch::Prefix(_) => Vec::new(),
    };
    for param in template_params(rw.get_ref()) {
        // A nameless `{}` is reported by check_template.
        if !param.is_empty() && !captured.contains(&param) {
            v.problem(
                rw.span(),
                field,
                format!(
                    "{{{param}}} is not captured by match.path (captured: {})",
                    captured.join(", ")
                ),
            );
        }
    }
}

/// The names of `{param}` and `{*param}` segments in a template.
pub(crate) fn template_params(template: &str) -> impl Iterator<Item = &str> {
    template.split('{').skip(1).filter_map(|s| {
        s.split_once('}')
            .map(|(name, _)| name.trim_start_matches('*'))
    })
}

/// hyper's HTTP/1.1 client cannot read with a smaller buffer than this.
const MIN_RESPONSE_HEAD: usize = 8192;

fn response_head_limit(v: &mut Validator<'_>, raw: &RawLimits) -> usize {
    let field = "limits.max_response_header_bytes";
    let n = v.positive(&raw.max_response_header_bytes, field, 64 * 1024);
    if let (Some(span), true) = (&raw.max_response_header_bytes, n < MIN_RESPONSE_HEAD) {
        v.problem(
            span.span(),
            field,
            format!("{n} is too small; the smallest response head limit is {MIN_RESPONSE_HEAD}"),
        );
        return MIN_RESPONSE_HEAD;
    }
    n
}

/// `[forwarding] trusted_proxies`: CIDRs, or bare addresses meaning one host.
fn forwarding(v: &mut Validator<'_>, raw: &RawForwarding) -> ForwardingPolicy {
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .enumerate()
        .filter_map(|(i, cidr)| {
            let text = cidr.get_ref().trim();
            let parsed = text.parse::<ipnet::IpNet>().ok().or_else(|| {
                text.parse::<std::net::IpAddr>()
                    .ok()
                    .map(ipnet::IpNet::from)
            });
            if parsed.is_none() {
                v.problem(
                    cidr.span(),
                    format!("forwarding.trusted_proxies[{i}]"),
                    format!(
                        "{:?} is not a CIDR; expected e.g. \"10.0.0.0/8\", \"::1/128\" or an IP address",
                        cidr.get_ref()
                    ),
                );
            }
            parsed.map(|net| net.trunc())
        })
        .collect();
    ForwardingPolicy { trusted_proxies }
}

/// `services.drained`: addresses that must be among the service's static endpoints.
fn drained(
    v: &mut Validator<'_>,
    s: &RawService,
    i: usize,
    endpoints: &[SocketAddr],
) -> Vec<SocketAddr> {
    s.drained
        .iter()
        .enumerate()
        .filter_map(|(j, e)| {
            let field = format!("services[{i}].drained[{j}]");
            match e.get_ref().parse::<SocketAddr>() {
                Ok(addr) if endpoints.contains(&addr) => Some(addr),
                Ok(addr) => {
                    v.problem(
                        e.span(),
                        field,
                        format!("{addr} is not one of this service's endpoints"),
                    );
                    None
                }
                Err(_) => {
                    v.problem(
                        e.span(),
                        field,
                        format!(
                            "{:?} is not an endpoint; expected IP:PORT such as \"127.0.0.1:8081\"",
                            e.get_ref()
                        ),
                    );
                    None
                }
            }
        })
        .collect()
}

/// A header a config sets (`request_headers`, `response_headers`, `respond.headers`): a valid
/// name and value, and not one that frames the message or the connection.
pub(super) fn header_pair(
    v: &mut Validator<'_>,
    name: &str,
    value: &Spanned<String>,
    field: &str,
) -> Option<(HeaderName, HeaderValue)> {
    let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
        v.problem(
            value.span(),
            field,
            format!("{name:?} is not a header name"),
        );
        return None;
    };
    if header_policy::is_reserved(&header) {
        v.problem(
            value.span(),
            field,
            format!("{header} frames the message or the connection; the gateway sets it"),
        );
        return None;
    }
    match HeaderValue::from_str(value.get_ref()) {
        Ok(val) => Some((header, val)),
        Err(_) => {
            v.problem(
                value.span(),
                field,
                format!(
                    "{:?} is not a header value (control characters are not allowed)",
                    value.get_ref()
                ),
            );
            None
        }
    }
}

/// `routes.request_headers` / `routes.response_headers`.
fn header_policy(v: &mut Validator<'_>, raw: Option<&RawHeaderPolicy>, at: &str) -> HeaderPolicy {
    let Some(raw) = raw else {
        return HeaderPolicy::default();
    };
    let remove = raw
        .remove
        .iter()
        .enumerate()
        .filter_map(
            |(i, name)| match HeaderName::from_bytes(name.get_ref().as_bytes()) {
                Ok(h) => Some(h),
                Err(_) => {
                    v.problem(
                        name.span(),
                        format!("{at}.remove[{i}]"),
                        format!("{:?} is not a header name", name.get_ref()),
                    );
                    None
                }
            },
        )
        .collect();
    let mut pairs = |table: &std::collections::BTreeMap<String, Spanned<String>>, key: &str| {
        table
            .iter()
            .filter_map(|(name, value)| header_pair(v, name, value, &format!("{at}.{key}.{name}")))
            .collect::<Vec<_>>()
    };
    let set = pairs(&raw.set, "set");
    let append = pairs(&raw.append, "append");
    HeaderPolicy {
        remove,
        set,
        append,
    }
}

/// `routes.deny`: an error status.
fn deny_status(v: &mut Validator<'_>, raw: &Spanned<i64>, field: &str) -> Option<u16> {
    match u16::try_from(*raw.get_ref()) {
        Ok(code @ 400..=599) => Some(code),
        _ => {
            v.problem(
                raw.span(),
                field,
                format!(
                    "{} is not an error status; expected 400 to 599",
                    raw.get_ref()
                ),
            );
            None
        }
    }
}
