//! `[routes.respond]` and `[routes.redirect]`: routes that answer by themselves, converted into
//! `routing::StaticResponse`.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use toml::Spanned;

use super::model::{RawRedirect, RawRespond, RawRoute};
use super::validate::{header_pair, template_params, Validator};
use crate::routing::{
    content_type_for, PathMatch, Redirect, RouteTarget, StaticResponse, MAX_STATIC_BODY,
    REDIRECT_STATUSES,
};

/// The route's own answer, when it has `respond` or `redirect` (`None` otherwise). Reports
/// every other way of answering set beside it, and the keys that mean nothing without a
/// service.
pub(super) fn target(
    v: &mut Validator<'_>,
    r: &RawRoute,
    at: &str,
    path: &PathMatch,
) -> Option<RouteTarget> {
    let (span, answer) = match (&r.respond, &r.redirect) {
        (None, None) => return None,
        (Some(respond), Some(redirect)) => {
            v.problem(
                redirect.span(),
                format!("{at}.redirect"),
                "respond and redirect cannot be set together; a route answers one way".to_owned(),
            );
            (respond.span(), respond_to(v, respond.get_ref(), at))
        }
        (Some(respond), None) => (respond.span(), respond_to(v, respond.get_ref(), at)),
        (None, Some(redirect)) => (
            redirect.span(),
            redirect_to(v, redirect.get_ref(), at, path),
        ),
    };
    let key = if r.respond.is_some() {
        "respond"
    } else {
        "redirect"
    };
    // Each refused key is pointed at where it is written, when its span is known.
    let mut refuse = |at_key: Option<std::ops::Range<usize>>, field: &str, why: &str| {
        if let Some(key_span) = at_key {
            v.problem(
                if key_span.is_empty() {
                    span.clone()
                } else {
                    key_span
                },
                format!("{at}.{field}"),
                format!("{field} cannot be set on a route with {key}: {why}"),
            );
        }
    };
    let service = "the route answers by itself; remove one of them";
    refuse(r.service.as_ref().map(Spanned::span), "service", service);
    refuse(r.split.as_ref().map(Spanned::span), "split", service);
    refuse(
        r.mirror.as_ref().map(|_| 0..0),
        "mirror",
        "there is no upstream request to copy",
    );
    refuse(
        r.upgrades.as_ref().map(Spanned::span),
        "upgrades",
        "there is no upstream to switch protocols with",
    );
    refuse(
        r.rewrite.as_ref().map(Spanned::span),
        "rewrite",
        "there is no upstream path to rewrite",
    );
    refuse(
        r.strip_prefix.then_some(0..0),
        "strip_prefix",
        "there is no upstream path to strip",
    );
    Some(RouteTarget::Static(Arc::new(answer)))
}

fn respond_to(v: &mut Validator<'_>, raw: &RawRespond, at: &str) -> StaticResponse {
    let at = format!("{at}.respond");
    let status = status(
        v,
        raw.status.as_ref(),
        &format!("{at}.status"),
        (StatusCode::OK, |n| (200..=599).contains(&n)),
        "is not a status for an answer; expected 200-599",
    );
    let mut headers = headers(v, &raw.headers, &at);
    let (body, default_type) = match (&raw.body, &raw.body_file) {
        (Some(_), Some(file)) => {
            v.problem(
                file.span(),
                format!("{at}.body_file"),
                "body and body_file cannot be set together".to_owned(),
            );
            (Bytes::new(), None)
        }
        (Some(body), None) => {
            check_size(v, body, body.get_ref().len(), &format!("{at}.body"));
            (
                Bytes::from(body.get_ref().clone()),
                Some("text/plain; charset=utf-8"),
            )
        }
        (None, Some(file)) => {
            let path = v.base().join(file.get_ref());
            let body = read_body(v, file, &path, &format!("{at}.body_file"));
            (body, Some(content_type_for(&path)))
        }
        (None, None) => (Bytes::new(), None),
    };
    // RFC 9110 §15.3.5, §15.4.5: these statuses have no content.
    if !body.is_empty() && matches!(status.as_u16(), 204 | 304) {
        let span = raw.status.as_ref().map(|s| s.span()).unwrap_or_default();
        v.problem(
            span,
            format!("{at}.status"),
            format!(
                "a {} response has no body; remove body or body_file",
                status.as_u16()
            ),
        );
    }
    if let Some(default_type) = default_type {
        headers
            .entry(header::CONTENT_TYPE)
            .or_insert(HeaderValue::from_static(default_type));
    }
    StaticResponse {
        status,
        headers,
        body,
        redirect: None,
    }
}

fn redirect_to(
    v: &mut Validator<'_>,
    raw: &RawRedirect,
    at: &str,
    path: &PathMatch,
) -> StaticResponse {
    let at = format!("{at}.redirect");
    let status = status(
        v,
        raw.status.as_ref(),
        &format!("{at}.status"),
        (StatusCode::FOUND, |n| REDIRECT_STATUSES.contains(&n)),
        "is not a redirect status; expected one of 301, 302, 303, 307, 308",
    );
    check_location(v, &raw.location, path, &format!("{at}.location"));
    StaticResponse {
        status,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        redirect: Some(Redirect {
            location: raw.location.get_ref().clone(),
            keep_query: raw.keep_query.unwrap_or(true),
        }),
    }
}

/// `raw`, if it is a status `allowed` takes; the default when unset (or refused, reported).
fn status(
    v: &mut Validator<'_>,
    raw: Option<&Spanned<i64>>,
    field: &str,
    (default, allowed): (StatusCode, fn(u16) -> bool),
    refusal: &str,
) -> StatusCode {
    let Some(raw) = raw else { return default };
    let status = u16::try_from(*raw.get_ref())
        .ok()
        .filter(|&n| allowed(n))
        .and_then(|n| StatusCode::from_u16(n).ok());
    status.unwrap_or_else(|| {
        v.problem(raw.span(), field, format!("{} {refusal}", raw.get_ref()));
        default
    })
}

/// Every `{param}` of the location is captured by the route's path template, and the location
/// is a header value whatever the parameters hold (checked with a stand-in value).
fn check_location(v: &mut Validator<'_>, raw: &Spanned<String>, path: &PathMatch, field: &str) {
    let location = raw.get_ref();
    if location.trim().is_empty() {
        v.problem(
            raw.span(),
            field,
            "the location is empty; give a URL or a path".to_owned(),
        );
        return;
    }
    let captured: Vec<&str> = match path {
        PathMatch::Path(p) => template_params(p).collect(),
        PathMatch::Prefix(_) => Vec::new(),
    };
    let mut unknown = template_params(location).filter(|p| !captured.contains(p));
    if let Some(param) = unknown.next() {
        let captured = if captured.is_empty() {
            "none: match.path has no {param}".to_owned()
        } else {
            captured.join(", ")
        };
        v.problem(
            raw.span(),
            field,
            format!("{{{param}}} is not captured by match.path (captured: {captured})"),
        );
        return;
    }
    let mut filled = location.clone();
    for p in template_params(location) {
        filled = filled
            .replace(&format!("{{{p}}}"), "x")
            .replace(&format!("{{*{p}}}"), "x");
    }
    if HeaderValue::from_str(&filled).is_err() {
        v.problem(
            raw.span(),
            field,
            format!("{location:?} is not a header value (control characters are not allowed)"),
        );
    }
}

fn headers(
    v: &mut Validator<'_>,
    raw: &std::collections::BTreeMap<String, Spanned<String>>,
    at: &str,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in raw {
        if let Some((name, value)) = header_pair(v, name, value, &format!("{at}.headers.{name}")) {
            headers.append(name, value);
        }
    }
    headers
}

fn read_body(
    v: &mut Validator<'_>,
    file: &Spanned<String>,
    path: &std::path::Path,
    field: &str,
) -> Bytes {
    // The size first: a large file is refused without being read.
    let size = match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => meta.len(),
        Ok(_) => {
            v.problem(
                file.span(),
                field,
                format!("{} is not a file", path.display()),
            );
            return Bytes::new();
        }
        Err(e) => {
            v.problem(
                file.span(),
                field,
                format!("cannot read {}: {e}", path.display()),
            );
            return Bytes::new();
        }
    };
    if !check_size(v, file, usize::try_from(size).unwrap_or(usize::MAX), field) {
        return Bytes::new();
    }
    match std::fs::read(path) {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => {
            v.problem(
                file.span(),
                field,
                format!("cannot read {}: {e}", path.display()),
            );
            Bytes::new()
        }
    }
}

fn check_size(v: &mut Validator<'_>, at: &Spanned<String>, size: usize, field: &str) -> bool {
    if size > MAX_STATIC_BODY {
        v.problem(
            at.span(),
            field,
            format!(
                "the body is {size} bytes; a static response holds at most {MAX_STATIC_BODY} (1 MiB): \
                 serve larger files from a service"
            ),
        );
        return false;
    }
    true
}
