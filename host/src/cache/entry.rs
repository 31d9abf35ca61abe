//! A stored response and the RFC 9111 rules around it. `http-cache-semantics`, as a shared
//! cache, decides storability, freshness, Vary matching and revalidation headers; on top of
//! it: the route's `ttl` for responses without freshness of their own, the route's
//! `authorized`/`set_cookie` opt-ins, stale-while-revalidate and stale-if-error (RFC 5861),
//! and clients' conditional requests against a stored response.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};

use super::RouteCachePolicy;
use crate::body::{self, Body};

/// The Vary variants stored under one key.
pub type Variants = Vec<Arc<CachedResponse>>;

/// Most variants one key holds; storing another drops the oldest.
const MAX_VARIANTS: usize = 16;
/// How long past its last stale window an entry with a validator (ETag, Last-Modified) is
/// kept, to be revalidated rather than fetched again.
const REVALIDATE_GRACE: Duration = Duration::from_secs(600);

/// As a shared cache, with no heuristic freshness: a response without freshness of its own
/// gets the route's `ttl` or is not stored, never 10% of its Last-Modified age.
const OPTIONS: CacheOptions = CacheOptions {
    shared: true,
    cache_heuristic: 0.0,
    immutable_min_time_to_live: Duration::ZERO,
    ignore_cargo_cult: false,
};

/// A response the cache holds.
pub struct CachedResponse {
    pub status: StatusCode,
    /// The headers served (hop-by-hop ones removed), without Age.
    pub headers: HeaderMap,
    pub body: Bytes,
    policy: CachePolicy,
    /// The values the request had for the headers Vary names: the variant's identity.
    vary: VaryValues,
    fresh_until: SystemTime,
    windows: StaleWindows,
    keep_until: SystemTime,
}

type VaryValues = Vec<(String, Option<HeaderValue>)>;

#[derive(Debug, Clone, Copy)]
struct StaleWindows {
    while_revalidate: Duration,
    if_error: Duration,
}

/// Why a response is not stored (the cache-status `detail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// 206, 304 and statuses the rules do not let a cache store.
    Status,
    /// `Set-Cookie`, and the route does not say `set_cookie = true`.
    SetCookie,
    /// No freshness of its own and no route `ttl`, or nothing to reuse (no lifetime and no
    /// validator).
    NoFreshness,
    /// `no-store`, `private`, `Vary: *`, or an Authorization request the response does not
    /// open up.
    Uncacheable,
    /// The body is larger than `max_body_bytes`.
    TooLarge,
}

impl NotStored {
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Status => "status",
            NotStored::SetCookie => "set-cookie",
            NotStored::NoFreshness => "no-freshness",
            NotStored::Uncacheable => "uncacheable",
            NotStored::TooLarge => "too-large",
        }
    }
}

/// What the store holds for a request.
pub enum Lookup {
    /// Usable as is.
    Fresh(Arc<CachedResponse>),
    /// Held, but it must be revalidated first (or served stale while that happens).
    Stale {
        response: Arc<CachedResponse>,
        /// The conditional headers (If-None-Match, If-Modified-Since) to send upstream.
        conditions: HeaderMap,
        /// Within its stale-while-revalidate window: serve it now, refresh in the background.
        serve_while_revalidating: bool,
        /// Still fresh: the request itself asked for revalidation (`no-cache`, `max-age=0`).
        requested: bool,
    },
    /// Nothing usable; `vary_miss` when something is held for the key but for other Vary
    /// values.
    Miss { vary_miss: bool },
}

/// A response head the cache will store once its body is complete.
pub struct Admission {
    status: StatusCode,
    headers: HeaderMap,
    policy: CachePolicy,
    vary: VaryValues,
    windows: StaleWindows,
    max_body_bytes: u64,
    now: SystemTime,
}

/// The request as the cache rules see it: the method of the entry (GET: HEAD is answered
/// from it), the upstream URI and headers, Authorization left out when the route opts in
/// (the route keys on the identity instead).
fn request_view(request: &http::request::Parts, policy: &RouteCachePolicy) -> Request<()> {
    let mut view = Request::new(());
    *view.method_mut() = Method::GET;
    *view.uri_mut() = request.uri.clone();
    *view.headers_mut() = request.headers.clone();
    if policy.authorized {
        view.headers_mut().remove(header::AUTHORIZATION);
    }
    view
}

/// Cache-Control directives, lowercased, with their unquoted values.
fn directives(headers: &HeaderMap) -> Vec<(String, Option<String>)> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            Some(match d.split_once('=') {
                Some((k, v)) => (
                    k.trim().to_ascii_lowercase(),
                    Some(v.trim().trim_matches('"').to_owned()),
                ),
                None => (d.to_ascii_lowercase(), None),
            })
        })
        .collect()
}

fn seconds(directives: &[(String, Option<String>)], name: &str) -> Option<Duration> {
    directives
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.as_deref()?.parse().ok())
        .map(Duration::from_secs)
}

fn has(directives: &[(String, Option<String>)], name: &str) -> bool {
    directives.iter().any(|(k, _)| k == name)
}

/// The stale windows of a response under a route's policy. A directive that forbids serving
/// stale (RFC 9111 §4.2.4: no-cache, must-revalidate, proxy-revalidate, s-maxage) leaves only
/// the windows the response itself grants; otherwise the larger of route and response wins.
fn stale_windows(headers: &HeaderMap, policy: &RouteCachePolicy) -> StaleWindows {
    let d = directives(headers);
    let swr = seconds(&d, "stale-while-revalidate");
    let sie = seconds(&d, "stale-if-error");
    let forbidden = [
        "no-cache",
        "must-revalidate",
        "proxy-revalidate",
        "s-maxage",
    ]
    .iter()
    .any(|name| has(&d, name));
    let window = |own: Option<Duration>, route: Duration| match (forbidden, own) {
        (true, own) => own.unwrap_or_default(),
        (false, own) => own.unwrap_or_default().max(route),
    };
    StaleWindows {
        while_revalidate: window(swr, policy.stale_while_revalidate),
        if_error: window(sie, policy.stale_if_error),
    }
}

fn response_parts(status: StatusCode, headers: HeaderMap) -> http::response::Parts {
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = status;
    parts.headers = headers;
    parts
}

/// Whether a response head may be stored under `policy`; what to store if so.
/// `request` is the request as it went upstream; `headers` have no hop-by-hop headers left.
pub fn admit(
    policy: &RouteCachePolicy,
    request: &http::request::Parts,
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<Admission, NotStored> {
    if matches!(
        status,
        StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
    ) {
        return Err(NotStored::Status);
    }
    if !policy.authorized && request.headers.contains_key(header::AUTHORIZATION) {
        return Err(NotStored::Uncacheable);
    }
    let mut rules_view = headers.clone();
    if headers.contains_key(header::SET_COOKIE) {
        if !policy.set_cookie {
            return Err(NotStored::SetCookie);
        }
        // The route opted in: the rules must not refuse it either.
        rules_view.remove(header::SET_COOKIE);
    }
    let d = directives(headers);
    let explicit =
        has(&d, "max-age") || has(&d, "s-maxage") || headers.contains_key(header::EXPIRES);
    if !explicit {
        // The route's ttl as the freshness the rules see (the served headers keep theirs).
        let Some(ttl) = policy.ttl else {
            return Err(NotStored::NoFreshness);
        };
        let value = HeaderValue::from_str(&format!("s-maxage={}", ttl.as_secs()))
            .map_err(|_| NotStored::NoFreshness)?;
        rules_view.append(header::CACHE_CONTROL, value);
    }
    let vary_all = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == "*");
    let view = request_view(request, policy);
    let rules = CachePolicy::new_options(&view, &response_parts(status, rules_view), now, OPTIONS);
    if vary_all || !rules.is_storable() {
        return Err(NotStored::Uncacheable);
    }
    let has_validator =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    if rules.time_to_live(now).is_zero() && !has_validator {
        return Err(NotStored::NoFreshness);
    }
    if let Some(len) = declared_length(headers) {
        if len > policy.max_body_bytes {
            return Err(NotStored::TooLarge);
        }
    }
    Ok(Admission {
        status,
        headers: headers.clone(),
        windows: stale_windows(headers, policy),
        policy: rules,
        vary: vary_values(headers, view.headers()),
        max_body_bytes: policy.max_body_bytes,
        now,
    })
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

impl Admission {
    /// Most body bytes to copy.
    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }

    /// The entry, with its body.
    pub fn into_response(self, body: Bytes) -> CachedResponse {
        CachedResponse::new(
            self.status,
            self.headers,
            body,
            self.policy,
            self.vary,
            self.windows,
            self.now,
        )
    }
}

impl CachedResponse {
    fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        policy: CachePolicy,
        vary: VaryValues,
        windows: StaleWindows,
        now: SystemTime,
    ) -> Self {
        let fresh_until = now + policy.time_to_live(now);
        let mut keep = windows.while_revalidate.max(windows.if_error);
        if headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED) {
            keep += REVALIDATE_GRACE;
        }
        CachedResponse {
            status,
            headers,
            body,
            policy,
            vary,
            fresh_until,
            windows,
            keep_until: fresh_until + keep,
        }
    }

    /// After this, the entry is of no use (and the store may drop it).
    pub fn keep_until(&self) -> SystemTime {
        self.keep_until
    }

    /// Bytes it takes in the store: body, the headers served, and the rules' copies of the
    /// request and response heads.
    pub fn weight(&self) -> usize {
        let headers = crate::headers::header_bytes(&self.headers);
        256 + self.body.len() + 3 * headers
    }

    /// Seconds of freshness left (cache-status `ttl`, negative once stale).
    pub fn ttl_seconds(&self, now: SystemTime) -> i64 {
        match self.fresh_until.duration_since(now) {
            Ok(left) => i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            Err(past) => -i64::try_from(past.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// Whether it may answer a request whose upstream failed (stale-if-error).
    pub fn usable_on_error(&self, now: SystemTime) -> bool {
        match now.duration_since(self.fresh_until) {
            Err(_) => true,
            Ok(stale_for) => stale_for <= self.windows.if_error,
        }
    }

    /// The response to send: the stored head with its Age (RFC 9111 §5.1), and the body
    /// unless it answers a HEAD.
    pub fn to_response(&self, now: SystemTime, head: bool) -> Response<Body> {
        let mut response = Response::new(if head {
            body::empty()
        } else {
            body::full(self.body.clone())
        });
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response.headers_mut().insert(
            header::AGE,
            HeaderValue::from(self.policy.age(now).as_secs()),
        );
        response
    }

    /// Whether a client's conditional request (If-None-Match, else If-Modified-Since) is
    /// satisfied by this response: the client's copy is current, answer 304.
    pub fn satisfies_condition(&self, request: &HeaderMap) -> bool {
        condition_met(request, &self.headers)
    }

    /// The 304 answering a satisfied conditional request.
    pub fn not_modified(&self, now: SystemTime) -> Response<Body> {
        let mut response = not_modified_response(&self.headers);
        response.headers_mut().insert(
            header::AGE,
            HeaderValue::from(self.policy.age(now).as_secs()),
        );
        response
    }

    /// This entry refreshed by the origin's 304 to a revalidation (RFC 9111 §4.3.4: the
    /// 304's headers replace the stored ones); `None` when the 304 does not match it (its
    /// validator names another response).
    pub fn revalidated(
        &self,
        policy: &RouteCachePolicy,
        request: &http::request::Parts,
        not_modified: &HeaderMap,
        now: SystemTime,
    ) -> Option<CachedResponse> {
        let answer = response_parts(StatusCode::NOT_MODIFIED, not_modified.clone());
        match self
            .policy
            .after_response(&request_view(request, policy), &answer, now)
        {
            AfterResponse::NotModified(rules, _) => {
                let mut headers = self.headers.clone();
                merge_headers(&mut headers, not_modified);
                let windows = stale_windows(&headers, policy);
                Some(CachedResponse::new(
                    self.status,
                    headers,
                    self.body.clone(),
                    rules,
                    self.vary.clone(),
                    windows,
                    now,
                ))
            }
            AfterResponse::Modified(..) => None,
        }
    }
}

/// RFC 9111 §4.3.4: each header of the 304 replaces the stored ones of that name, except
/// those that describe the stored body's framing.
fn merge_headers(stored: &mut HeaderMap, update: &HeaderMap) {
    const KEEP: [HeaderName; 4] = [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::TRANSFER_ENCODING,
        header::CONTENT_RANGE,
    ];
    for name in update.keys() {
        if KEEP.contains(name) {
            continue;
        }
        stored.remove(name);
        for value in update.get_all(name) {
            stored.append(name.clone(), value.clone());
        }
    }
}

/// The 304 answering a satisfied conditional request for a response with these headers
/// (RFC 9110 §15.4.5: the validator and caching headers a 200 would have carried).
pub fn not_modified_response(headers: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::LAST_MODIFIED,
        header::VARY,
    ] {
        for value in headers.get_all(&name) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}

/// Whether a request's conditions (If-None-Match, else If-Modified-Since) hold the current
/// version of a response with `stored` headers (RFC 9110 §13.1.2, §13.1.3: weak ETag
/// comparison; If-Modified-Since is compared by exact value with Last-Modified, as clients
/// echo the value they were given).
pub fn condition_met(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let etag = stored
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|e| e.trim().trim_start_matches("W/"));
    let mut conditions = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .peekable();
    if conditions.peek().is_some() {
        return conditions.any(|tag| tag == "*" || Some(tag.trim_start_matches("W/")) == etag);
    }
    match (
        request.get(header::IF_MODIFIED_SINCE),
        stored.get(header::LAST_MODIFIED),
    ) {
        (Some(since), Some(modified)) => since == modified,
        _ => false,
    }
}

/// The variant of `variants` that may answer `request`, and how.
pub(super) fn select(
    variants: &Variants,
    policy: &RouteCachePolicy,
    request: &http::request::Parts,
    now: SystemTime,
) -> Lookup {
    let view = request_view(request, policy);
    let mut vary_miss = false;
    for variant in variants.iter().filter(|v| now <= v.keep_until) {
        match variant.policy.before_request(&view, now) {
            BeforeRequest::Fresh(_) => return Lookup::Fresh(Arc::clone(variant)),
            BeforeRequest::Stale {
                request,
                matches: true,
            } => {
                let mut conditions = HeaderMap::new();
                for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
                    if let Some(value) = request.headers.get(&name) {
                        conditions.insert(name, value.clone());
                    }
                }
                let requested = now < variant.fresh_until;
                let stale_for = now.duration_since(variant.fresh_until).unwrap_or_default();
                return Lookup::Stale {
                    response: Arc::clone(variant),
                    conditions,
                    serve_while_revalidating: !requested
                        && stale_for <= variant.windows.while_revalidate,
                    requested,
                };
            }
            BeforeRequest::Stale { matches: false, .. } => vary_miss = true,
        }
    }
    Lookup::Miss { vary_miss }
}

/// `current` with `response` added, replacing the variant it is (same Vary values) and
/// dropping variants past their use.
pub(super) fn with_variant(
    current: Option<&Variants>,
    response: Arc<CachedResponse>,
    now: SystemTime,
) -> Variants {
    let mut variants: Variants = current
        .into_iter()
        .flatten()
        .filter(|v| now <= v.keep_until && v.vary != response.vary)
        .cloned()
        .collect();
    variants.push(response);
    if variants.len() > MAX_VARIANTS {
        variants.remove(0);
    }
    variants
}

/// The request's values of the headers the response's Vary names.
fn vary_values(response: &HeaderMap, request: &HeaderMap) -> VaryValues {
    response
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .map(|name| {
            let value = request.get(name.as_str()).cloned();
            (name, value)
        })
        .collect()
}
