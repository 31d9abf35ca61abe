//! Routes that answer by themselves (`[routes.respond]`, `[routes.redirect]`): a fixed status,
//! headers and body, or a redirect whose `Location` is filled from the path's parameters.
//! The answer replaces the upstream call: request and response plugins still run around it.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::body::{self, Body};

/// The largest body a static response may hold (inline or from a file): it is kept in memory
/// and copied into every answer's frame, so it stays small.
pub const MAX_STATIC_BODY: usize = 1024 * 1024;

/// The statuses a redirect may use.
pub const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// What a route answers with instead of calling a service.
#[derive(Debug, Clone, Serialize)]
pub struct StaticResponse {
    #[serde(serialize_with = "status_code")]
    pub status: StatusCode,
    /// Sent as given (after `Content-Type`, defaulted, and `Content-Length`).
    #[serde(serialize_with = "header_map")]
    pub headers: HeaderMap,
    /// Shown in `/admin/config` by size only: a page may be large and is not config text.
    #[serde(rename = "body_bytes", serialize_with = "body_len")]
    pub body: Bytes,
    /// Set for a redirect: the `Location` template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
}

/// A redirect's target.
#[derive(Debug, Clone, Serialize)]
pub struct Redirect {
    /// An absolute URL or a path; `{name}` and `{*name}` are the route's path parameters, as
    /// the client sent them (still percent-encoded).
    pub location: String,
    /// Append the request's query string to the location.
    pub keep_query: bool,
}

/// Why a static answer could not be made. Only a parameter value that does not fit in a header
/// can cause it, and the canonical path never holds such bytes; kept as an error, not a panic.
#[derive(Debug, thiserror::Error)]
#[error("the redirect location {location:?} is not a valid header value")]
pub struct RespondError {
    pub location: String,
}

impl StaticResponse {
    /// The answer to one request: `params` from the matched path, `query` as sent.
    pub fn respond(
        &self,
        params: &[(String, String)],
        query: Option<&str>,
    ) -> Result<Response<Body>, RespondError> {
        let mut response = Response::new(body::full(self.body.clone()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.clone_from(&self.headers);
        if let Some(redirect) = &self.redirect {
            let location = redirect.location_for(params, query);
            let value =
                HeaderValue::try_from(location.as_str()).map_err(|_| RespondError { location })?;
            headers.insert(header::LOCATION, value);
        }
        Ok(response)
    }
}

impl Redirect {
    fn location_for(&self, params: &[(String, String)], query: Option<&str>) -> String {
        let mut location = super::route::fill_template(&self.location, params);
        if let (true, Some(query)) = (self.keep_query, query) {
            // The template may carry a query of its own: the request's joins it.
            location.push(if location.contains('?') { '&' } else { '?' });
            location.push_str(query);
        }
        location
    }
}

/// The `Content-Type` a body file gets when the config names none, by its extension.
pub fn content_type_for(file: &std::path::Path) -> &'static str {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("xml") => "application/xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

fn status_code<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

fn header_map<S: serde::Serializer>(headers: &HeaderMap, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(
        headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("<binary>"))),
    )
}

fn body_len<S: serde::Serializer>(body: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(body.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(location: &str, keep_query: bool) -> StaticResponse {
        StaticResponse {
            status: StatusCode::PERMANENT_REDIRECT,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            redirect: Some(Redirect {
                location: location.to_owned(),
                keep_query,
            }),
        }
    }

    fn location(r: &Response<Body>) -> &str {
        r.headers()[header::LOCATION].to_str().unwrap()
    }

    #[test]
    fn a_redirect_fills_parameters_and_keeps_the_query() {
        let params = vec![
            ("id".to_owned(), "42".to_owned()),
            ("rest".to_owned(), "a/b%20c".to_owned()),
        ];
        let r = redirect("https://new.example.com/v2/{id}/{rest}", true);
        let response = r.respond(&params, Some("x=1")).unwrap();
        assert_eq!(response.status(), 308);
        assert_eq!(
            location(&response),
            "https://new.example.com/v2/42/a/b%20c?x=1"
        );
        let r = redirect("/v2/{id}?lang=en", true);
        assert_eq!(
            location(&r.respond(&params, Some("x=1")).unwrap()),
            "/v2/42?lang=en&x=1"
        );
        let r = redirect("/v2/{id}", false);
        assert_eq!(
            location(&r.respond(&params, Some("x=1")).unwrap()),
            "/v2/42"
        );
    }

    #[test]
    fn a_value_that_cannot_be_a_header_is_an_error_not_a_panic() {
        let params = vec![("id".to_owned(), "a\r\nx: y".to_owned())];
        let r = redirect("/v2/{id}", false);
        assert!(r.respond(&params, None).is_err());
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(
            content_type_for("maintenance.HTML".as_ref()),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type_for("x.bin".as_ref()),
            "application/octet-stream"
        );
        assert_eq!(
            content_type_for("noext".as_ref()),
            "application/octet-stream"
        );
    }
}
