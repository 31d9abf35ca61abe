//! `Vary` (RFC 9110 §12.5.5): naming a request header the response depends on, once.

use http::header::{HeaderMap, HeaderName, HeaderValue, VARY};

/// Adds `name` to the response's `Vary`, unless a `Vary` value already lists it (any case)
/// or is `*` (which already covers every header). Appends a field rather than rewriting an
/// existing one, so the upstream's values stay as they were.
pub fn add_vary(headers: &mut HeaderMap, name: &HeaderName) {
    let listed = headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|token| token == "*" || token.eq_ignore_ascii_case(name.as_str()));
    if !listed {
        headers.append(VARY, HeaderValue::from_name(name.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vary(headers: &HeaderMap) -> Vec<&str> {
        headers
            .get_all(VARY)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn appends_once_and_keeps_existing_values() {
        let mut h = HeaderMap::new();
        h.insert(VARY, HeaderValue::from_static("Cookie, accept-encoding"));
        add_vary(&mut h, &http::header::ACCEPT_ENCODING);
        add_vary(&mut h, &http::header::ORIGIN);
        add_vary(&mut h, &http::header::ORIGIN);
        assert_eq!(vary(&h), ["Cookie, accept-encoding", "origin"]);
    }

    #[test]
    fn a_star_covers_everything() {
        let mut h = HeaderMap::new();
        h.insert(VARY, HeaderValue::from_static("*"));
        add_vary(&mut h, &http::header::ORIGIN);
        assert_eq!(vary(&h), ["*"]);
    }
}
