//! Raw TOML and validation of the scale-out keys: `[redis]`, `[rate_limits]`, `[etcd]` and
//! `[registry] store` (docs/scale-out.md). Converts into `ratelimit::StorePolicy` with its
//! `redis_store::RedisSettings`, `etcd::EtcdSettings` and `registry::RegistryStore`.

use serde::Deserialize;
use toml::Spanned;

use super::model::RawRegistry;
use super::validate::Validator;
use crate::discovery::registry::{
    EtcdRegistry, RegistryStore, DEFAULT_KEY_PREFIX as REGISTRY_KEY_PREFIX,
};
use crate::etcd::{EtcdSettings, EtcdTls};
use crate::ratelimit::StorePolicy;
use crate::redis_store::{
    check_url, OnError, RedisSettings, DEFAULT_BREAKER_COOLDOWN, DEFAULT_BREAKER_FAILURES,
    DEFAULT_KEY_PREFIX, DEFAULT_TIMEOUT,
};

/// `[redis]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://[user:password@]host:port[/db]`. Required.
    pub url: Option<Spanned<String>>,
    /// A call's whole budget. Default `50ms`.
    pub timeout: Option<Spanned<String>>,
    /// Put before every key. Default `gatehouse:`.
    pub key_prefix: Option<Spanned<String>>,
    /// Failures in a row that open the breaker. Default 3.
    pub breaker_failures: Option<Spanned<i64>>,
    /// How long the open breaker skips Redis before one probe. Default `2s`.
    pub breaker_cooldown: Option<Spanned<String>>,
}

/// `[etcd]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    /// `http://host:port` or `https://host:port`, one per cluster member. Required.
    pub endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    /// etcd user (etcd's own authentication). Needs `password_env`.
    pub user: Option<Spanned<String>>,
    /// The environment variable holding `user`'s password (never the password itself).
    pub password_env: Option<Spanned<String>>,
    /// Default `2s`.
    pub connect_timeout: Option<Spanned<String>>,
    /// One call's budget. Default `2s`.
    pub timeout: Option<Spanned<String>>,
    /// TLS to etcd. Default: none (plain gRPC; `https://` endpoints alone use the system
    /// roots).
    pub tls: Option<Spanned<RawEtcdTls>>,
}

/// `[etcd.tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcdTls {
    /// PEM CA bundle that signed etcd's certificate. Default: the system roots.
    pub ca: Option<Spanned<String>>,
    /// Client certificate chain (PEM) when etcd requires one. Needs `key`.
    pub cert: Option<Spanned<String>>,
    /// The client certificate's key (PEM). Needs `cert`.
    pub key: Option<Spanned<String>>,
    /// The name to verify etcd's certificate against. Default: the endpoint's host.
    pub server_name: Option<Spanned<String>>,
}

/// `[registry] store` (with `[etcd]`, `key_prefix`, `ready_requires_store`).
pub(super) fn registry_store(
    v: &mut Validator<'_>,
    etcd: Option<&Spanned<RawEtcd>>,
    raw: &RawRegistry,
) -> RegistryStore {
    // `[etcd]` is checked whenever present: the config store reads it too.
    let settings = etcd.and_then(|e| etcd_settings(v, e));
    let etcd_only = |v: &mut Validator<'_>, span: std::ops::Range<usize>, key: &str| {
        v.problem(
            span,
            format!("registry.{key}"),
            format!("{key} applies to store = \"etcd\" only"),
        );
    };
    match raw.store.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("memory", _)) => {
            if let Some(p) = &raw.key_prefix {
                etcd_only(v, p.span(), "key_prefix");
            }
            if let Some(r) = &raw.ready_requires_store {
                etcd_only(v, r.span(), "ready_requires_store");
            }
            RegistryStore::Memory
        }
        Some(("etcd", span)) => {
            let key_prefix = match &raw.key_prefix {
                None => REGISTRY_KEY_PREFIX.to_owned(),
                Some(p) => {
                    let text = p.get_ref();
                    let ok = !text.is_empty()
                        && text.len() <= 128
                        && text.ends_with('/')
                        && !text.chars().any(|c| c.is_control() || c.is_whitespace());
                    if !ok {
                        v.problem(
                            p.span(),
                            "registry.key_prefix",
                            format!(
                                "{text:?} is not a key prefix; use at most 128 printable \
                                 characters without spaces, ending in '/', such as \
                                 \"{REGISTRY_KEY_PREFIX}\""
                            ),
                        );
                    }
                    text.clone()
                }
            };
            let ready_requires_store = raw
                .ready_requires_store
                .as_ref()
                .is_some_and(|r| *r.get_ref());
            if etcd.is_none() {
                v.problem(
                    span,
                    "registry.store",
                    "store = \"etcd\" needs an [etcd] table with its endpoints, such as \
                     endpoints = [\"http://127.0.0.1:2379\"]"
                        .to_owned(),
                );
                return RegistryStore::Memory;
            }
            match settings {
                Some(settings) => RegistryStore::Etcd(Box::new(EtcdRegistry {
                    settings,
                    key_prefix,
                    ready_requires_store,
                })),
                None => RegistryStore::Memory,
            }
        }
        Some((other, span)) => {
            v.problem(
                span,
                "registry.store",
                format!("{other:?} is not a registry store; expected \"memory\" or \"etcd\""),
            );
            RegistryStore::Memory
        }
    }
}

/// `[etcd]`; `None` (with a problem reported) when it is unusable. Also for other etcd users
/// (the config store) that read the same table.
pub(super) fn etcd_settings(v: &mut Validator<'_>, raw: &Spanned<RawEtcd>) -> Option<EtcdSettings> {
    let r = raw.get_ref();
    let problems_before = v.problem_count();
    let mut endpoints = Vec::new();
    match &r.endpoints {
        None => v.problem(
            raw.span(),
            "etcd.endpoints",
            "[etcd] needs endpoints, such as endpoints = [\"http://127.0.0.1:2379\"]".to_owned(),
        ),
        Some(list) if list.get_ref().is_empty() => v.problem(
            list.span(),
            "etcd.endpoints",
            "needs at least one endpoint, such as \"http://127.0.0.1:2379\"".to_owned(),
        ),
        Some(list) => {
            for (i, e) in list.get_ref().iter().enumerate() {
                match check_etcd_endpoint(e.get_ref()) {
                    Ok(()) => endpoints.push(e.get_ref().clone()),
                    Err(reason) => v.problem(
                        e.span(),
                        format!("etcd.endpoints[{i}]"),
                        format!(
                            "{:?} is not an etcd endpoint ({reason}); expected \
                             http://host:port or https://host:port",
                            e.get_ref()
                        ),
                    ),
                }
            }
        }
    }
    let user = match (&r.user, &r.password_env) {
        (None, None) => None,
        (Some(user), Some(var)) => match std::env::var(var.get_ref()) {
            Ok(password) => Some((user.get_ref().clone(), password)),
            Err(_) => {
                v.problem(
                    var.span(),
                    "etcd.password_env",
                    format!(
                        "the environment variable {:?} is not set (it holds the password of \
                         etcd user {:?})",
                        var.get_ref(),
                        user.get_ref()
                    ),
                );
                None
            }
        },
        (Some(user), None) => {
            v.problem(
                user.span(),
                "etcd.user",
                "user needs password_env, the name of the environment variable holding its \
                 password"
                    .to_owned(),
            );
            None
        }
        (None, Some(var)) => {
            v.problem(
                var.span(),
                "etcd.password_env",
                "password_env needs user".to_owned(),
            );
            None
        }
    };
    let connect_timeout = v.duration(
        &r.connect_timeout,
        "etcd.connect_timeout",
        crate::etcd::DEFAULT_CONNECT_TIMEOUT,
    );
    let timeout = v.duration(&r.timeout, "etcd.timeout", crate::etcd::DEFAULT_TIMEOUT);
    let https = endpoints.iter().any(|e| e.starts_with("https://"));
    let tls = match &r.tls {
        None => https.then_some(EtcdTls {
            ca: None,
            cert: None,
            key: None,
            server_name: None,
        }),
        Some(t) => {
            if endpoints.iter().any(|e| e.starts_with("http://")) {
                v.problem(
                    t.span(),
                    "etcd.tls",
                    "[etcd.tls] needs https:// endpoints; an http:// endpoint would send \
                     plaintext"
                        .to_owned(),
                );
            }
            etcd_tls(v, t.get_ref(), t.span())
        }
    };
    if v.problem_count() > problems_before {
        return None;
    }
    Some(EtcdSettings {
        endpoints,
        user,
        tls,
        connect_timeout,
        timeout,
    })
}

fn check_etcd_endpoint(endpoint: &str) -> Result<(), &'static str> {
    let uri: http::Uri = endpoint.parse().map_err(|_| "not a URL")?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("the scheme must be http or https"),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("no host");
    }
    if uri.port_u16().is_none() {
        return Err("no port");
    }
    if uri
        .path_and_query()
        .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        return Err("no path allowed");
    }
    Ok(())
}

fn etcd_tls(
    v: &mut Validator<'_>,
    t: &RawEtcdTls,
    span: std::ops::Range<usize>,
) -> Option<EtcdTls> {
    let file = |v: &mut Validator<'_>, raw: &Option<Spanned<String>>, key: &str| {
        let raw = raw.as_ref()?;
        let path = v.base().join(raw.get_ref());
        if let Err(e) = std::fs::metadata(&path) {
            v.problem(
                raw.span(),
                format!("etcd.tls.{key}"),
                format!("cannot read {}: {e}", path.display()),
            );
        }
        Some(path)
    };
    let ca = file(v, &t.ca, "ca");
    let cert = file(v, &t.cert, "cert");
    let key = file(v, &t.key, "key");
    if cert.is_some() != key.is_some() {
        v.problem(
            span,
            "etcd.tls",
            "a client certificate needs both cert and key".to_owned(),
        );
    }
    Some(EtcdTls {
        ca,
        cert,
        key,
        server_name: t.server_name.as_ref().map(|s| s.get_ref().clone()),
    })
}

/// `[rate_limits]` (top level; a route's `rate_limits = [...]` declares the limits) and
/// `[plugins.cache]`: where a store keeps its state.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStoreChoice {
    /// `memory` (default) or `redis`.
    pub store: Option<Spanned<String>>,
    /// With `redis`: `open` (default; carry on locally while Redis fails) or `closed` (rate
    /// limits only: 503).
    pub on_error: Option<Spanned<String>>,
}

/// `[plugins.cache]`: `Some` settings when plugin cache entries live in Redis. A cache
/// fails open only (a miss), so `on_error = "closed"` is refused.
pub(super) fn plugin_cache_store(
    v: &mut Validator<'_>,
    redis: Option<&Spanned<RawRedis>>,
    raw: Option<&RawStoreChoice>,
) -> Option<RedisSettings> {
    let raw = raw?;
    if let Some(e) = raw.on_error.as_ref().filter(|e| e.get_ref() != "open") {
        v.problem(
            e.span(),
            "plugins.cache.on_error",
            format!(
                "{:?}: the plugin cache can only fail open (a miss while Redis is down); \
                 remove on_error or set it to \"open\"",
                e.get_ref()
            ),
        );
    }
    match raw.store.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("memory", _)) => None,
        Some(("redis", span)) => match redis {
            Some(r) => settings(v, r),
            None => {
                v.problem(
                    span,
                    "plugins.cache.store",
                    "store = \"redis\" needs a [redis] table with its url, such as \
                     url = \"redis://127.0.0.1:6379\""
                        .to_owned(),
                );
                None
            }
        },
        Some((other, span)) => {
            v.problem(
                span,
                "plugins.cache.store",
                format!("{other:?} is not a cache store; expected \"memory\" or \"redis\""),
            );
            None
        }
    }
}

/// `[redis]` and `[rate_limits]` into where counters live.
pub(super) fn rate_limit_store(
    v: &mut Validator<'_>,
    redis: Option<&Spanned<RawRedis>>,
    raw: &RawStoreChoice,
) -> StorePolicy {
    let settings = redis.and_then(|r| settings(v, r));
    let on_error = on_error(v, raw.on_error.as_ref(), "rate_limits.on_error");
    match raw.store.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("memory", _)) => {
            if let Some(e) = &raw.on_error {
                v.problem(
                    e.span(),
                    "rate_limits.on_error",
                    "on_error applies to store = \"redis\" only; counters in memory never fail"
                        .to_owned(),
                );
            }
            StorePolicy::Memory
        }
        Some(("redis", span)) => match (settings, redis) {
            (Some(settings), _) => StorePolicy::Redis { settings, on_error },
            // `settings` reported its own problem.
            (None, Some(_)) => StorePolicy::Memory,
            (None, None) => {
                v.problem(
                    span,
                    "rate_limits.store",
                    "store = \"redis\" needs a [redis] table with its url, such as \
                     url = \"redis://127.0.0.1:6379\""
                        .to_owned(),
                );
                StorePolicy::Memory
            }
        },
        Some((other, span)) => {
            v.problem(
                span,
                "rate_limits.store",
                format!("{other:?} is not a counter store; expected \"memory\" or \"redis\""),
            );
            StorePolicy::Memory
        }
    }
}

fn on_error(v: &mut Validator<'_>, raw: Option<&Spanned<String>>, field: &str) -> OnError {
    match raw.map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("open", _)) => OnError::Open,
        Some(("closed", _)) => OnError::Closed,
        Some((other, span)) => {
            v.problem(
                span,
                field,
                format!("{other:?} is not an error policy; expected \"open\" or \"closed\""),
            );
            OnError::Open
        }
    }
}

/// `[redis]`; `None` (with a problem reported) when it is unusable.
fn settings(v: &mut Validator<'_>, raw: &Spanned<RawRedis>) -> Option<RedisSettings> {
    let r = raw.get_ref();
    let url = match &r.url {
        None => {
            v.problem(
                raw.span(),
                "redis.url",
                "[redis] needs url, such as url = \"redis://127.0.0.1:6379\"".to_owned(),
            );
            None
        }
        Some(url) => {
            match check_url(url.get_ref()) {
                Ok(()) => Some(url.get_ref().clone()),
                Err(e) => {
                    // The URL may hold a password: name the problem, not the value.
                    v.problem(
                    url.span(),
                    "redis.url",
                    format!("not a Redis URL ({e}); expected redis://[user:password@]host:port[/db]"),
                );
                    None
                }
            }
        }
    };
    let timeout = v.duration(&r.timeout, "redis.timeout", DEFAULT_TIMEOUT);
    let breaker_cooldown = v.duration(
        &r.breaker_cooldown,
        "redis.breaker_cooldown",
        DEFAULT_BREAKER_COOLDOWN,
    );
    let breaker_failures = v.positive(
        &r.breaker_failures,
        "redis.breaker_failures",
        DEFAULT_BREAKER_FAILURES as usize,
    );
    let key_prefix = match &r.key_prefix {
        None => DEFAULT_KEY_PREFIX.to_owned(),
        Some(p) if p.get_ref().len() <= 128 && !p.get_ref().chars().any(char::is_control) => {
            p.get_ref().clone()
        }
        Some(p) => {
            v.problem(
                p.span(),
                "redis.key_prefix",
                format!(
                    "{:?} is not a key prefix; use at most 128 printable characters",
                    p.get_ref()
                ),
            );
            DEFAULT_KEY_PREFIX.to_owned()
        }
    };
    Some(RedisSettings {
        url: url?,
        timeout,
        key_prefix,
        breaker_failures: u32::try_from(breaker_failures).unwrap_or(u32::MAX),
        breaker_cooldown,
    })
}
