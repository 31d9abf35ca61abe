//! CORS (docs/cors.md): a route's cross-origin policy, following the Fetch standard's CORS
//! protocol. The gateway answers preflights itself ([`preflight`]) and puts the CORS headers
//! on every other response of the route ([`CorsPolicy::apply`]), its own error answers
//! included; the upstream's `Access-Control-*` headers are dropped, the gateway owns them.

mod origin;
pub mod preflight;

use std::time::Duration;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ORIGIN,
};
use http::Method;
use serde::Serialize;

pub use origin::{AllowedOrigins, OriginPattern};
pub use preflight::{preflight_method, PreflightRefusal};

use crate::serialize::as_humantime;

/// Which request headers a preflight may ask for.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AllowHeaders {
    /// These names (lowercase).
    List(#[serde(serialize_with = "names_as_strings")] Vec<HeaderName>),
    /// Whatever the preflight asks for (`allow_headers = "mirror"`).
    Mirror,
}

/// A route's CORS policy.
#[derive(Debug, Clone, Serialize)]
pub struct CorsPolicy {
    pub origins: AllowedOrigins,
    /// Methods a preflight may ask for. GET, HEAD and POST need no preflight approval, but a
    /// preflight asking for them is answered like any other.
    #[serde(serialize_with = "methods_as_strings")]
    pub methods: Vec<Method>,
    pub allow_headers: AllowHeaders,
    /// Response headers a page may read beyond the CORS-safelisted ones.
    #[serde(serialize_with = "names_as_strings")]
    pub expose_headers: Vec<HeaderName>,
    /// Cookies and HTTP authentication may go with cross-origin requests.
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight's answer. None: the browser's default (5 s).
    #[serde(serialize_with = "optional_humantime")]
    pub max_age: Option<Duration>,
    /// Answer Private Network Access preflights with `Access-Control-Allow-Private-Network`.
    pub allow_private_network: bool,
    /// The header values, joined once at load.
    #[serde(skip)]
    rendered: Rendered,
}

#[derive(Debug, Clone, Default)]
struct Rendered {
    methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
}

fn methods_as_strings<S: serde::Serializer>(m: &[Method], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(m.iter().map(Method::as_str))
}

fn names_as_strings<S: serde::Serializer>(n: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(n.iter().map(HeaderName::as_str))
}

fn optional_humantime<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => as_humantime(d, s),
        None => s.serialize_none(),
    }
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let joined = items.collect::<Vec<_>>().join(", ");
    if joined.is_empty() {
        return None;
    }
    HeaderValue::from_str(&joined).ok()
}

impl CorsPolicy {
    /// Builds the policy. `allow_credentials` with any-origin is the caller's to refuse
    /// (config does, at load): here credentials would simply turn `*` into the echoed origin.
    pub fn new(
        origins: AllowedOrigins,
        methods: Vec<Method>,
        allow_headers: AllowHeaders,
        expose_headers: Vec<HeaderName>,
        allow_credentials: bool,
        max_age: Option<Duration>,
        allow_private_network: bool,
    ) -> Self {
        let rendered = Rendered {
            methods: join(methods.iter().map(Method::as_str)),
            allow_headers: match &allow_headers {
                AllowHeaders::List(names) => join(names.iter().map(HeaderName::as_str)),
                AllowHeaders::Mirror => None,
            },
            expose_headers: join(expose_headers.iter().map(HeaderName::as_str)),
            max_age: max_age.map(|d| HeaderValue::from(d.as_secs())),
        };
        CorsPolicy {
            origins,
            methods,
            allow_headers,
            expose_headers,
            allow_credentials,
            max_age,
            allow_private_network,
            rendered,
        }
    }

    /// The methods a preflight may ask for when the route names none.
    pub const DEFAULT_METHODS: [Method; 3] = [Method::GET, Method::HEAD, Method::POST];

    /// The `Access-Control-Allow-Origin` value for this request origin, or None when it is
    /// not allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if self.origins.any && !self.allow_credentials {
            return Some(HeaderValue::from_static("*"));
        }
        self.origins.allows(origin).then(|| origin.clone())
    }

    /// Whether responses differ by `Origin` (every policy but a bare `*`), so caches must
    /// key on it.
    fn varies_by_origin(&self) -> bool {
        !self.origins.any || self.allow_credentials
    }

    /// The CORS headers of a response to an actual (not preflight) request that carried
    /// `origin`: the upstream's `Access-Control-*` headers go, and an allowed origin gets
    /// the policy's. A disallowed origin gets none: the request was served, the browser
    /// withholds the response from the page.
    pub fn apply(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        remove_cors_headers(headers);
        if self.varies_by_origin() {
            crate::headers::add_vary(headers, &ORIGIN);
        }
        let Some(allow) = origin.and_then(|o| self.allow_origin(o)) else {
            return;
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if self.allow_credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.rendered.expose_headers {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

/// Drops every `Access-Control-*` response header (the upstream's say nothing for this
/// gateway's policy).
fn remove_cors_headers(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

// --- used by preflight ---

impl CorsPolicy {
    /// The Fetch standard lets a browser use the CORS-safelisted methods (GET, HEAD, POST)
    /// whatever `Access-Control-Allow-Methods` says: refusing a preflight that asks for one
    /// (sent because of a custom header) would block what browsers' own rules allow.
    fn allows_method(&self, method: &Method) -> bool {
        matches!(*method, Method::GET | Method::HEAD | Method::POST)
            || self.methods.contains(method)
    }

    fn allows_header(&self, name: &str) -> bool {
        match &self.allow_headers {
            AllowHeaders::Mirror => true,
            AllowHeaders::List(names) => {
                names.iter().any(|n| n.as_str().eq_ignore_ascii_case(name))
            }
        }
    }
}

#[cfg(test)]
mod tests;
