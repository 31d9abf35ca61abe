//! `jwt-auth` through the gateway: valid HS256, RS256 and ES256 tokens pass with claims
//! forwarded; missing, expired, not-yet-valid, forged, wrong-issuer, wrong-audience,
//! `alg: none` and algorithm-confusion tokens get 401 and never reach the origin.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use rsa::signature::{SignatureEncoding as _, Signer as _};
use serde_json::{json, Value};

use super::kit::{self, header, plugin, url, PluginsDir};
use crate::support;

const RSA_PRIVATE: &str = include_str!("../../../plugins/jwt-auth/testdata/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../../../plugins/jwt-auth/testdata/rsa-public.pem");
const RSA_OTHER: &str = include_str!("../../../plugins/jwt-auth/testdata/rsa-other-private.pem");
const EC_PRIVATE: &str = include_str!("../../../plugins/jwt-auth/testdata/ec-private.pem");
const EC_PUBLIC: &str = include_str!("../../../plugins/jwt-auth/testdata/ec-public.pem");
const EC_OTHER: &str = include_str!("../../../plugins/jwt-auth/testdata/ec-other-private.pem");
const SECRET: &str = "test-secret-that-is-at-least-32-bytes!";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub enum Key<'a> {
    Hs(&'a [u8]),
    Rs(&'a str),
    Es(&'a str),
    Unsigned,
}

/// A compact JWS over `header` and `claims`.
pub fn sign(header: Value, claims: Value, key: Key) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = match key {
        Key::Hs(secret) => {
            use hmac::Mac as _;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any length");
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Key::Rs(pem) => {
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).expect("test RSA key");
            rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key)
                .sign(input.as_bytes())
                .to_vec()
        }
        Key::Es(pem) => {
            let key = p256::ecdsa::SigningKey::from_pkcs8_pem(pem).expect("test EC key");
            let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
            sig.to_bytes().to_vec()
        }
        Key::Unsigned => Vec::new(),
    };
    format!("{input}.{}", b64(&sig))
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Claims valid now for issuer `shop` and audience `mobile`.
pub fn good_claims() -> Value {
    json!({ "sub": "alice", "iss": "shop", "aud": ["web", "mobile"], "roles": ["admin", "dev"],
            "exp": now() + 600, "nbf": now() - 10, "iat": now() - 10 })
}

/// The P-256 test key as a JWK set.
fn ec_jwks() -> Value {
    let public = p256::PublicKey::from_public_key_pem(EC_PUBLIC).expect("EC public key");
    let point = public.to_encoded_point(false);
    json!({ "keys": [{ "kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig",
        "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y")) }] })
}

/// The jwt-auth config used by these tests: one key of each kind.
pub fn config() -> Value {
    json!({
        "issuer": "shop",
        "audience": "mobile",
        "clock_skew_secs": 5,
        "keys": [ { "kid": "hs-1", "secret": SECRET }, { "pem": RSA_PUBLIC } ],
        "jwks": ec_jwks(),
        "forward_claims": { "sub": "x-user-id", "roles": "x-user-roles" },
    })
}

fn route(entry: &str, origin: std::net::SocketAddr) -> String {
    format!(
        r#"
[[services]]
name = "api"
endpoints = ["{origin}"]

[[routes]]
name = "api"
service = "api"
match = {{ prefix = "/" }}
plugins = [{entry}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_of_each_algorithm_pass_with_claims_forwarded() {
    let (origin, hits) = kit::counting_echo().await;
    let dir = PluginsDir::new();
    let gw = kit::gateway(
        &dir,
        &route(&plugin("jwt-auth", config(), &[], None), origin.addr),
    )
    .await;

    let tokens = [
        (
            "HS256",
            sign(
                json!({"alg":"HS256","typ":"JWT","kid":"hs-1"}),
                good_claims(),
                Key::Hs(SECRET.as_bytes()),
            ),
        ),
        (
            "RS256",
            sign(
                json!({"alg":"RS256","typ":"JWT"}),
                good_claims(),
                Key::Rs(RSA_PRIVATE),
            ),
        ),
        (
            "ES256",
            sign(
                json!({"alg":"ES256","kid":"ec-1"}),
                good_claims(),
                Key::Es(EC_PRIVATE),
            ),
        ),
    ];
    for (alg, token) in tokens {
        let auth = format!("Bearer {token}");
        // The client tries to claim another identity through the forwarded header.
        let got = support::get(
            &url(&gw, "/orders?x=1"),
            &[("authorization", &auth), ("x-user-id", "mallory")],
        )
        .await;
        assert_eq!(got.status, 200, "{alg}: {}", got.text());
        let seen = got.json();
        assert_eq!(
            seen["headers"]["x-user-id"], "alice",
            "{alg}: claim forwarded, spoof replaced"
        );
        assert_eq!(seen["headers"]["x-user-roles"], "admin,dev", "{alg}");
        assert_eq!(
            seen["headers"]["authorization"],
            auth.as_str(),
            "{alg}: token kept by default"
        );
        assert_eq!(seen["path"], "/orders");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_rejected_with_401_and_never_reach_the_origin() {
    let (origin, hits) = kit::counting_echo().await;
    let dir = PluginsDir::new();
    let gw = kit::gateway(
        &dir,
        &route(&plugin("jwt-auth", config(), &[], None), origin.addr),
    )
    .await;

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good_claims();
        f(&mut c);
        c
    };
    let hs = |claims: Value| sign(json!({"alg":"HS256"}), claims, Key::Hs(SECRET.as_bytes()));
    let t = now();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            hs(with(&|c| c["exp"] = json!(t - 60))),
            "token expired",
        ),
        (
            "not yet valid",
            hs(with(&|c| c["nbf"] = json!(t + 3600))),
            "token not yet valid",
        ),
        (
            "wrong issuer",
            hs(with(&|c| c["iss"] = json!("evil"))),
            "issuer not accepted",
        ),
        (
            "wrong audience",
            hs(with(&|c| c["aud"] = json!("tv"))),
            "audience not accepted",
        ),
        (
            "HS256 wrongly signed",
            sign(
                json!({"alg":"HS256"}),
                good_claims(),
                Key::Hs(b"some-other-secret-also-32-bytes-long"),
            ),
            "signature verification failed",
        ),
        (
            "RS256 wrongly signed",
            sign(json!({"alg":"RS256"}), good_claims(), Key::Rs(RSA_OTHER)),
            "signature verification failed",
        ),
        (
            "ES256 wrongly signed",
            sign(json!({"alg":"ES256"}), good_claims(), Key::Es(EC_OTHER)),
            "signature verification failed",
        ),
        (
            "claims changed after signing",
            {
                let good = hs(good_claims());
                let parts: Vec<&str> = good.split('.').collect();
                let evil = b64(with(&|c| c["sub"] = json!("root")).to_string().as_bytes());
                format!("{}.{evil}.{}", parts[0], parts[2])
            },
            "signature verification failed",
        ),
        (
            "alg none",
            sign(json!({"alg":"none"}), good_claims(), Key::Unsigned),
            "unsupported algorithm none",
        ),
        (
            "alg none with a signature",
            sign(
                json!({"alg":"none"}),
                good_claims(),
                Key::Hs(SECRET.as_bytes()),
            ),
            "unsupported algorithm none",
        ),
        (
            // Algorithm confusion: HS256 "signed" with the RSA public key as the secret.
            "HS256 with the RSA public key as secret",
            sign(
                json!({"alg":"HS256"}),
                good_claims(),
                Key::Hs(RSA_PUBLIC.as_bytes()),
            ),
            "signature verification failed",
        ),
        (
            "garbage",
            "not-a-jwt".to_string(),
            "malformed token: expected three dot-separated parts",
        ),
    ];
    for (case, token, description) in &cases {
        let auth = format!("Bearer {token}");
        let got = support::get(&url(&gw, "/orders"), &[("authorization", &auth)]).await;
        assert_eq!(got.status, 401, "{case}: {}", got.text());
        assert_eq!(
            header(&got, "www-authenticate").as_deref(),
            Some(format!("Bearer realm=\"gatehouse\", error=\"invalid_token\", error_description=\"{description}\"").as_str()),
            "{case}"
        );
        assert_eq!(
            header(&got, "content-type").as_deref(),
            Some("application/json"),
            "{case}"
        );
        let body = crate::first_hour::assert_error_schema(&got);
        assert_eq!(body["error"], "invalid_token", "{case}");
        assert_eq!(body["message"], *description, "{case}");
    }

    // No token at all, and another auth scheme: the bare challenge (RFC 6750 §3.1).
    for headers in [vec![], vec![("authorization", "Basic YWxpY2U6c2VjcmV0")]] {
        let got = support::get(&url(&gw, "/orders"), &headers).await;
        assert_eq!(got.status, 401);
        assert_eq!(
            header(&got, "www-authenticate").as_deref(),
            Some("Bearer realm=\"gatehouse\"")
        );
        let body = crate::first_hour::assert_error_schema(&got);
        assert_eq!(body["error"], "unauthorized");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "no rejected request reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_the_query_is_stripped_before_forwarding() {
    let (origin, _hits) = kit::counting_echo().await;
    let dir = PluginsDir::new();
    let mut cfg = config();
    cfg["query"] = json!("access_token");
    cfg["strip_token"] = json!(true);
    let gw = kit::gateway(
        &dir,
        &route(&plugin("jwt-auth", cfg, &[], None), origin.addr),
    )
    .await;

    let token = sign(json!({"alg":"RS256"}), good_claims(), Key::Rs(RSA_PRIVATE));
    let got = support::get(
        &url(&gw, &format!("/search?q=a%20b&access_token={token}&page=2")),
        &[],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = got.json();
    assert_eq!(seen["query"], "q=a%20b&page=2");
    assert_eq!(seen["headers"]["x-user-id"], "alice");

    let auth = format!("Bearer {token}");
    let got = support::get(&url(&gw, "/search"), &[("authorization", &auth)]).await;
    assert_eq!(got.status, 200);
    assert!(
        got.json()["headers"].get("authorization").is_none(),
        "header token stripped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_config_fails_closed_with_500_naming_the_key() {
    let (origin, hits) = kit::counting_echo().await;
    let dir = PluginsDir::new();
    let cfg = json!({ "keys": [{ "secret": "too-short" }] });
    let gw = kit::gateway(
        &dir,
        &route(&plugin("jwt-auth", cfg, &[], None), origin.addr),
    )
    .await;
    let got = support::get(&url(&gw, "/orders"), &[]).await;
    assert_eq!(got.status, 500);
    let body = crate::first_hour::assert_error_schema(&got);
    assert_eq!(body["error"], "plugin_misconfigured");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("keys[0]: HMAC secret is 9 bytes")),
        "{body}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_a_granted_jwks_file() {
    let (origin, hits) = kit::counting_echo().await;
    let dir = PluginsDir::new();
    let jwks = dir.0.join("jwks.json");
    std::fs::write(&jwks, ec_jwks().to_string()).expect("write jwks");
    let entry = format!(
        "{{ name = \"jwt-auth\", config = {}, files = {{ keys = {} }} }}",
        kit::toml_inline(&json!({ "jwks_file": "keys", "issuer": "shop", "audience": "mobile" })),
        kit::toml_inline(&json!(jwks.display().to_string())),
    );
    let gw = kit::gateway(&dir, &route(&entry, origin.addr)).await;

    let token = sign(
        json!({"alg":"ES256","kid":"ec-1"}),
        good_claims(),
        Key::Es(EC_PRIVATE),
    );
    let got = support::get(
        &url(&gw, "/orders"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    // A key the file does not hold is refused.
    let hs = sign(
        json!({"alg":"HS256","kid":"hs-1"}),
        good_claims(),
        Key::Hs(SECRET.as_bytes()),
    );
    let refused = support::get(
        &url(&gw, "/orders"),
        &[("authorization", &format!("Bearer {hs}"))],
    )
    .await;
    assert_eq!(refused.status, 401);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
