use std::time::Duration;

use http::header::*;
use http::{HeaderMap, HeaderValue, Method};

use super::*;

fn policy(origins: &[&str], credentials: bool, allow_headers: AllowHeaders) -> CorsPolicy {
    let origins = origins
        .iter()
        .map(|o| (OriginPattern::parse(o).unwrap(), (*o).to_owned()))
        .collect();
    CorsPolicy::new(
        AllowedOrigins::new(origins),
        vec![Method::GET, Method::PUT],
        allow_headers,
        vec![HeaderName::from_static("x-total")],
        credentials,
        Some(Duration::from_secs(600)),
        false,
    )
}

fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
        .collect()
}

#[test]
fn preflight_allowed() {
    let p = policy(
        &["https://app.test"],
        true,
        AllowHeaders::List(vec![HeaderName::from_static("x-api-key")]),
    );
    let h = request(&[
        ("origin", "https://app.test"),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "X-Api-Key"),
    ]);
    let r = p.preflight("r", &h).unwrap();
    assert_eq!(r.status(), 204);
    let out = r.headers();
    assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.test");
    assert_eq!(out[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    assert_eq!(out[ACCESS_CONTROL_ALLOW_METHODS], "GET, PUT");
    assert_eq!(out[ACCESS_CONTROL_ALLOW_HEADERS], "x-api-key");
    assert_eq!(out[ACCESS_CONTROL_MAX_AGE], "600");
    assert_eq!(out[VARY], "origin");
}

#[test]
fn preflight_refusals() {
    let p = policy(&["https://app.test"], false, AllowHeaders::List(vec![]));
    let refused = |pairs| p.preflight("r", &request(pairs)).unwrap_err();
    assert!(matches!(
        refused(&[
            ("origin", "https://evil.test"),
            ("access-control-request-method", "GET")
        ]),
        PreflightRefusal::Origin(..)
    ));
    assert!(matches!(
        refused(&[
            ("origin", "https://app.test"),
            ("access-control-request-method", "DELETE")
        ]),
        PreflightRefusal::Method(..)
    ));
    assert!(matches!(
        refused(&[
            ("origin", "https://app.test"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "x-other")
        ]),
        PreflightRefusal::Header(..)
    ));
}

#[test]
fn mirror_echoes_the_requested_headers() {
    let p = policy(&["*"], false, AllowHeaders::Mirror);
    let h = request(&[
        ("origin", "https://any.test"),
        ("access-control-request-method", "GET"),
        ("access-control-request-headers", "x-a, x-b"),
    ]);
    let r = p.preflight("r", &h).unwrap();
    assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_HEADERS], "x-a, x-b");
    assert_eq!(r.headers()[VARY], "access-control-request-headers");
}

#[test]
fn actual_responses() {
    let p = policy(&["https://app.test"], false, AllowHeaders::List(vec![]));
    let mut out = request(&[
        ("access-control-allow-origin", "*"),
        ("access-control-allow-methods", "DELETE"),
        ("vary", "Accept-Encoding"),
    ]);
    p.apply(
        Some(&HeaderValue::from_static("https://app.test")),
        &mut out,
    );
    assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.test");
    assert_eq!(out[ACCESS_CONTROL_EXPOSE_HEADERS], "x-total");
    assert!(!out.contains_key(ACCESS_CONTROL_ALLOW_METHODS));
    assert!(!out.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
    let vary: Vec<_> = out.get_all(VARY).iter().collect();
    assert_eq!(vary, ["Accept-Encoding", "origin"]);

    let mut out = request(&[("access-control-allow-origin", "*")]);
    p.apply(
        Some(&HeaderValue::from_static("https://evil.test")),
        &mut out,
    );
    assert!(!out.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    assert_eq!(out[VARY], "origin");
}

#[test]
fn preflight_detection() {
    let h = request(&[
        ("origin", "https://a.test"),
        ("access-control-request-method", "PUT"),
    ]);
    assert_eq!(preflight_method(&Method::OPTIONS, &h), Some(Method::PUT));
    assert_eq!(preflight_method(&Method::GET, &h), None);
    let h = request(&[("access-control-request-method", "PUT")]);
    assert_eq!(preflight_method(&Method::OPTIONS, &h), None);
}

#[test]
fn safelisted_methods_pass_a_preflight_whatever_allow_methods_says() {
    // allow_methods is GET and PUT here: POST and HEAD are allowed by the Fetch standard.
    let p = policy(
        &["https://app.test"],
        false,
        AllowHeaders::List(vec![HeaderName::from_static("x-api-key")]),
    );
    for method in ["POST", "HEAD"] {
        let h: HeaderMap = [
            (ORIGIN, HeaderValue::from_static("https://app.test")),
            (
                ACCESS_CONTROL_REQUEST_METHOD,
                HeaderValue::from_static(method),
            ),
            (
                ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_static("x-api-key"),
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(p.preflight("r", &h).unwrap().status(), 204, "{method}");
    }
}
