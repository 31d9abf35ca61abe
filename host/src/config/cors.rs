//! `[routes.cors]` (docs/cors.md); converts into `cors::CorsPolicy`.

use http::{HeaderName, Method};
use serde::Deserialize;
use toml::Spanned;

use super::validate::Validator;
use crate::cors::{AllowHeaders, AllowedOrigins, CorsPolicy, OriginPattern};

/// `[routes.cors]`: the gateway answers preflights and sets the CORS headers of the route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Exact origins (`https://app.example.com`), wildcard subdomains
    /// (`https://*.example.com`) or `"*"`. Required.
    pub allow_origins: Spanned<Vec<Spanned<String>>>,
    /// Methods a preflight may ask for. Default `["GET", "HEAD", "POST"]`.
    pub allow_methods: Option<Vec<Spanned<String>>>,
    /// Request headers a preflight may ask for; `["*"]` allows whatever it asks for.
    /// Default: none beyond the CORS-safelisted ones.
    #[serde(default)]
    pub allow_headers: Vec<Spanned<String>>,
    /// Response headers a page may read. Default: only the CORS-safelisted ones.
    #[serde(default)]
    pub expose_headers: Vec<Spanned<String>>,
    /// Allow cookies and HTTP authentication. Default false; refused with `"*"`.
    pub allow_credentials: Option<Spanned<bool>>,
    /// How long a browser may cache a preflight answer (a duration). Default: not sent.
    pub max_age: Option<Spanned<String>>,
    /// Answer Private Network Access preflights. Default false.
    pub allow_private_network: Option<bool>,
}

pub(super) fn route(v: &mut Validator<'_>, raw: Option<&RawCors>, at: &str) -> Option<CorsPolicy> {
    let raw = raw?;
    let at = format!("{at}.cors");
    let mut origins = Vec::new();
    for (j, o) in raw.allow_origins.get_ref().iter().enumerate() {
        match OriginPattern::parse(o.get_ref()) {
            Ok(pattern) => origins.push((pattern, o.get_ref().clone())),
            Err(why) => v.problem(
                o.span(),
                format!("{at}.allow_origins[{j}]"),
                format!("{:?} is not an allowed origin: {why}", o.get_ref()),
            ),
        }
    }
    if raw.allow_origins.get_ref().is_empty() {
        v.problem(
            raw.allow_origins.span(),
            format!("{at}.allow_origins"),
            "lists no origin; name the origins allowed (e.g. \"https://app.example.com\") or \"*\""
                .to_owned(),
        );
    }
    let origins = AllowedOrigins::new(origins);
    let credentials = raw.allow_credentials.as_ref().is_some_and(|c| *c.get_ref());
    if credentials && origins.any {
        let span = raw
            .allow_credentials
            .as_ref()
            .map_or(raw.allow_origins.span(), |c| c.span());
        v.problem(
            span,
            format!("{at}.allow_credentials"),
            "true cannot go with allow_origins = \"*\": browsers refuse credentials from any \
             origin; list the origins allowed instead"
                .to_owned(),
        );
    }
    let methods = match &raw.allow_methods {
        None => CorsPolicy::DEFAULT_METHODS.to_vec(),
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(j, m)| {
                let upper = m.get_ref().to_ascii_uppercase();
                match Method::from_bytes(upper.as_bytes()) {
                    Ok(method) => Some(method),
                    Err(_) => {
                        v.problem(
                            m.span(),
                            format!("{at}.allow_methods[{j}]"),
                            format!("{:?} is not an HTTP method", m.get_ref()),
                        );
                        None
                    }
                }
            })
            .collect(),
    };
    let mirror = raw.allow_headers.iter().any(|h| h.get_ref() == "*");
    let allow_headers = if mirror {
        AllowHeaders::Mirror
    } else {
        AllowHeaders::List(header_names(
            v,
            &raw.allow_headers,
            &format!("{at}.allow_headers"),
        ))
    };
    let expose_headers = header_names(v, &raw.expose_headers, &format!("{at}.expose_headers"));
    let max_age = raw
        .max_age
        .as_ref()
        .map(|_| v.duration(&raw.max_age, &format!("{at}.max_age"), Default::default()));
    Some(CorsPolicy::new(
        origins,
        methods,
        allow_headers,
        expose_headers,
        credentials,
        max_age,
        raw.allow_private_network.unwrap_or(false),
    ))
}

fn header_names(v: &mut Validator<'_>, raw: &[Spanned<String>], field: &str) -> Vec<HeaderName> {
    raw.iter()
        .enumerate()
        .filter_map(
            |(j, h)| match HeaderName::from_bytes(h.get_ref().as_bytes()) {
                Ok(name) => Some(name),
                Err(_) => {
                    v.problem(
                        h.span(),
                        format!("{field}[{j}]"),
                        format!("{:?} is not a header name", h.get_ref()),
                    );
                    None
                }
            },
        )
        .collect()
}
