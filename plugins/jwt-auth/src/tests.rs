//! Unit tests of token verification and config validation, with fixed test keys.

use base64::Engine as _;
use p256::pkcs8::DecodePrivateKey as _;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use serde_json::{json, Value};

use crate::config;
use crate::error::TokenError;
use crate::token::{self, B64URL};

const RSA_PRIVATE: &str = include_str!("../testdata/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../testdata/rsa-public.pem");
const RSA_OTHER: &str = include_str!("../testdata/rsa-other-private.pem");
const EC_PRIVATE: &str = include_str!("../testdata/ec-private.pem");
const EC_PUBLIC: &str = include_str!("../testdata/ec-public.pem");
const EC_OTHER: &str = include_str!("../testdata/ec-other-private.pem");
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_800_000_000;

fn enc(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

enum Signer<'a> {
    Hs(&'a [u8]),
    Rs(&'a str),
    Es(&'a str),
    None,
}

fn sign(header: Value, claims: Value, signer: Signer) -> String {
    let input = format!("{}.{}", enc(&header), enc(&claims));
    let sig = match signer {
        Signer::Hs(secret) => {
            use hmac::Mac as _;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any length");
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Signer::Rs(pem) => {
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).expect("test RSA key");
            let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key);
            signer.sign(input.as_bytes()).to_vec()
        }
        Signer::Es(pem) => {
            let key = p256::ecdsa::SigningKey::from_pkcs8_pem(pem).expect("test EC key");
            let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
            sig.to_bytes().to_vec()
        }
        Signer::None => Vec::new(),
    };
    format!("{input}.{}", b64(&sig))
}

fn claims() -> Value {
    json!({ "sub": "alice", "iss": "shop", "aud": "mobile", "exp": NOW + 300, "nbf": NOW - 10 })
}

fn settings(cfg: Value) -> config::Settings {
    match config::parse(&cfg.to_string(), |_| None) {
        Ok(s) => s,
        Err(e) => panic!("config should be valid: {e}"),
    }
}

fn check(cfg: &config::Settings, token: &str) -> Result<token::Claims, TokenError> {
    token::verify(token, &cfg.keys, &cfg.policy, NOW, |_| true)
}

fn hs_cfg() -> config::Settings {
    settings(json!({ "keys": [{ "secret": SECRET }], "issuer": "shop", "audience": "mobile" }))
}

#[test]
fn hs256_valid_and_forged() {
    let cfg = hs_cfg();
    let good = sign(
        json!({"alg":"HS256","typ":"JWT"}),
        claims(),
        Signer::Hs(SECRET.as_bytes()),
    );
    assert_eq!(
        check(&cfg, &good).expect("valid").get("sub"),
        Some(&json!("alice"))
    );
    let forged = sign(
        json!({"alg":"HS256"}),
        claims(),
        Signer::Hs(b"another-secret-another-secret-xx"),
    );
    assert_eq!(check(&cfg, &forged), Err(TokenError::BadSignature));
    // A valid signature over other claims: change the claims, keep the signature.
    let mut parts: Vec<&str> = good.split('.').collect();
    let evil = enc(&json!({ "sub": "mallory", "iss": "shop", "aud": "mobile", "exp": NOW + 300 }));
    parts[1] = &evil;
    assert_eq!(check(&cfg, &parts.join(".")), Err(TokenError::BadSignature));
}

#[test]
fn alg_none_and_unknown_algs_are_rejected() {
    let cfg = hs_cfg();
    for alg in ["none", "None", "NONE", "HS512", "PS256"] {
        let t = sign(json!({ "alg": alg }), claims(), Signer::None);
        assert_eq!(
            check(&cfg, &t),
            Err(TokenError::UnsupportedAlg(alg.into())),
            "{alg}"
        );
    }
    let t = sign(json!({ "typ": "JWT" }), claims(), Signer::None);
    assert!(matches!(
        check(&cfg, &t),
        Err(TokenError::UnsupportedAlg(_))
    ));
}

#[test]
fn rs256_from_pem_and_jwk() {
    let cfg = settings(json!({ "keys": [{ "pem": RSA_PUBLIC }] }));
    let good = sign(json!({"alg":"RS256"}), claims(), Signer::Rs(RSA_PRIVATE));
    assert!(check(&cfg, &good).is_ok());
    let forged = sign(json!({"alg":"RS256"}), claims(), Signer::Rs(RSA_OTHER));
    assert_eq!(check(&cfg, &forged), Err(TokenError::BadSignature));

    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::traits::PublicKeyParts as _;
    let public = rsa::RsaPublicKey::from_public_key_pem(RSA_PUBLIC).expect("pem");
    let jwks = json!({ "keys": [
        { "kty": "EC", "crv": "P-384", "x": "AA", "y": "AA" },
        { "kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB" },
        { "kty": "RSA", "kid": "r1", "alg": "RS256", "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be()) },
    ]});
    let cfg = settings(json!({ "jwks": jwks.to_string() }));
    assert_eq!(cfg.keys.len(), 1);
    assert_eq!(cfg.skipped.len(), 2);
    let with_kid = sign(
        json!({"alg":"RS256","kid":"r1"}),
        claims(),
        Signer::Rs(RSA_PRIVATE),
    );
    assert!(check(&cfg, &with_kid).is_ok());
    let other_kid = sign(
        json!({"alg":"RS256","kid":"r2"}),
        claims(),
        Signer::Rs(RSA_PRIVATE),
    );
    assert_eq!(check(&cfg, &other_kid), Err(TokenError::NoKey));
}

#[test]
fn es256_from_pem_and_jwk() {
    let cfg = settings(json!({ "keys": [{ "pem": EC_PUBLIC, "alg": "ES256" }] }));
    let good = sign(json!({"alg":"ES256"}), claims(), Signer::Es(EC_PRIVATE));
    assert!(check(&cfg, &good).is_ok());
    let forged = sign(json!({"alg":"ES256"}), claims(), Signer::Es(EC_OTHER));
    assert_eq!(check(&cfg, &forged), Err(TokenError::BadSignature));

    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    use p256::pkcs8::DecodePublicKey as _;
    let public = p256::PublicKey::from_public_key_pem(EC_PUBLIC).expect("pem");
    let point = public.to_encoded_point(false);
    let jwks = json!({ "keys": [{ "kty": "EC", "crv": "P-256",
        "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y")) }] });
    let cfg = settings(json!({ "jwks": jwks }));
    assert!(check(&cfg, &good).is_ok());
}

#[test]
fn key_type_must_match_alg() {
    // Classic confusion: an HS256 token "signed" with the RSA public key text as secret.
    let cfg = settings(json!({ "keys": [{ "pem": RSA_PUBLIC }] }));
    let t = sign(
        json!({"alg":"HS256"}),
        claims(),
        Signer::Hs(RSA_PUBLIC.as_bytes()),
    );
    assert_eq!(check(&cfg, &t), Err(TokenError::NoKey));
    // An ES256 token against RSA-only keys, and an RS256 token against an HMAC secret.
    let t = sign(json!({"alg":"ES256"}), claims(), Signer::Es(EC_PRIVATE));
    assert_eq!(check(&cfg, &t), Err(TokenError::NoKey));
    let t = sign(json!({"alg":"RS256"}), claims(), Signer::Rs(RSA_PRIVATE));
    assert_eq!(check(&hs_cfg(), &t), Err(TokenError::NoKey));
    // An allow-list narrower than the keys.
    let cfg = settings(json!({ "keys": [{ "secret": SECRET }], "algorithms": ["RS256"] }));
    let t = sign(
        json!({"alg":"HS256"}),
        claims(),
        Signer::Hs(SECRET.as_bytes()),
    );
    assert_eq!(
        check(&cfg, &t),
        Err(TokenError::UnsupportedAlg("HS256".into()))
    );
}

#[test]
fn time_claims_with_skew() {
    let cfg = hs_cfg(); // default skew 60 s
    let with = |exp: u64, nbf: u64| {
        let mut c = claims();
        c["exp"] = json!(exp);
        c["nbf"] = json!(nbf);
        sign(json!({"alg":"HS256"}), c, Signer::Hs(SECRET.as_bytes()))
    };
    assert_eq!(
        check(&cfg, &with(NOW - 61, NOW - 100)),
        Err(TokenError::Expired)
    );
    assert!(
        check(&cfg, &with(NOW - 59, NOW - 100)).is_ok(),
        "inside the skew"
    );
    assert_eq!(
        check(&cfg, &with(NOW + 100, NOW + 61)),
        Err(TokenError::NotYetValid)
    );
    assert!(
        check(&cfg, &with(NOW + 100, NOW + 59)).is_ok(),
        "inside the skew"
    );

    let strict = settings(json!({ "keys": [{ "secret": SECRET }], "clock_skew_secs": 0 }));
    assert_eq!(
        check(&strict, &with(NOW, NOW - 100)),
        Err(TokenError::Expired)
    );

    let no_exp = sign(
        json!({"alg":"HS256"}),
        json!({"sub":"a"}),
        Signer::Hs(SECRET.as_bytes()),
    );
    assert_eq!(check(&strict, &no_exp), Err(TokenError::MissingExp));
    let lax = settings(json!({ "keys": [{ "secret": SECRET }], "require_exp": false }));
    assert!(check(&lax, &no_exp).is_ok());
    let bad = sign(
        json!({"alg":"HS256"}),
        json!({"exp":"soon"}),
        Signer::Hs(SECRET.as_bytes()),
    );
    assert_eq!(check(&lax, &bad), Err(TokenError::BadTimeClaim("exp")));
}

#[test]
fn issuer_and_audience() {
    let cfg = settings(json!({ "keys": [{ "secret": SECRET }],
        "issuer": ["shop", "auth"], "audience": ["mobile", "web"] }));
    let with = |c: Value| sign(json!({"alg":"HS256"}), c, Signer::Hs(SECRET.as_bytes()));
    let exp = NOW + 100;
    assert!(check(
        &cfg,
        &with(json!({"exp":exp,"iss":"auth","aud":["x","web"]}))
    )
    .is_ok());
    assert_eq!(
        check(&cfg, &with(json!({"exp":exp,"iss":"evil","aud":"web"}))),
        Err(TokenError::Issuer)
    );
    assert_eq!(
        check(&cfg, &with(json!({"exp":exp,"aud":"web"}))),
        Err(TokenError::Issuer)
    );
    assert_eq!(
        check(&cfg, &with(json!({"exp":exp,"iss":"shop","aud":"tv"}))),
        Err(TokenError::Audience)
    );
    assert_eq!(
        check(&cfg, &with(json!({"exp":exp,"iss":"shop"}))),
        Err(TokenError::Audience)
    );
}

#[test]
fn malformed_tokens() {
    let cfg = hs_cfg();
    for t in [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!.e30.AA",
        "e30.e30.AA",
        "bnVsbA.e30.AA",
    ] {
        assert!(
            matches!(
                check(&cfg, t),
                Err(TokenError::Malformed(_) | TokenError::UnsupportedAlg(_))
            ),
            "{t:?} -> {:?}",
            check(&cfg, t)
        );
    }
    let long = "a".repeat(token::MAX_TOKEN_LEN + 1);
    assert_eq!(check(&cfg, &long), Err(TokenError::Malformed("too long")));
    let crit = sign(
        json!({"alg":"HS256","crit":["exp"]}),
        claims(),
        Signer::Hs(SECRET.as_bytes()),
    );
    assert_eq!(check(&cfg, &crit), Err(TokenError::Critical));
    // Padding on the signature is tolerated (header and claims are signed as sent).
    let good = sign(
        json!({"alg":"HS256"}),
        claims(),
        Signer::Hs(SECRET.as_bytes()),
    );
    let padded = format!("{good}=");
    assert!(B64URL.decode("YQ==").is_ok());
    assert!(check(&cfg, &padded).is_ok());
}

/// A token signed over exactly `header` and `claims` as given (raw JSON text, so members can
/// repeat or use escapes).
fn sign_raw(header: &str, claims: &str) -> String {
    use hmac::Mac as _;
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

#[test]
fn header_and_claims_members_read_as_json_objects() {
    let cfg = hs_cfg();
    let exp = NOW + 300;
    let ok = format!(r#"{{"iss":"shop","aud":"mobile","exp":{exp}}}"#);
    // Escaped strings are read like plain ones.
    let t = sign_raw(
        r#"{"alg":"HS\u0032\u0035\u0036"}"#,
        r#"{"iss":"sh\u006fp","aud":["x","mob\u0069le"],"exp":1800000300}"#,
    );
    assert!(check(&cfg, &t).is_ok());
    // A repeated member counts with its last value, as in a JSON object read into a map.
    let t = sign_raw(r#"{"alg":"none","alg":"HS256"}"#, &ok);
    assert!(check(&cfg, &t).is_ok());
    let t = sign_raw(r#"{"alg":"HS256","alg":"none"}"#, &ok);
    assert_eq!(
        check(&cfg, &t),
        Err(TokenError::UnsupportedAlg("none".into()))
    );
    let t = sign_raw(
        r#"{"alg":"HS256"}"#,
        &format!(
            r#"{{"iss":"shop","aud":"mobile","exp":{exp},"exp":{}}}"#,
            NOW - 100
        ),
    );
    assert_eq!(check(&cfg, &t), Err(TokenError::Expired));
    // Members present with a value of the wrong kind.
    let t = sign_raw(r#"{"alg":"HS256","kid":null}"#, &ok);
    assert_eq!(
        check(&cfg, &t),
        Err(TokenError::Malformed("kid is not a string"))
    );
    let t = sign_raw(r#"{"alg":"HS256","crit":null}"#, &ok);
    assert_eq!(check(&cfg, &t), Err(TokenError::Critical));
    let t = sign_raw(r#"{"alg":["HS256"]}"#, &ok);
    assert_eq!(
        check(&cfg, &t),
        Err(TokenError::UnsupportedAlg("(missing)".into()))
    );
    let t = sign_raw(
        r#"{"alg":"HS256"}"#,
        r#"{"iss":"shop","aud":"mobile","exp":"soon"}"#,
    );
    assert_eq!(check(&cfg, &t), Err(TokenError::BadTimeClaim("exp")));
    let t = sign_raw(
        r#"{"alg":"HS256"}"#,
        &format!(r#"{{"iss":["shop"],"aud":"mobile","exp":{exp}}}"#),
    );
    assert_eq!(check(&cfg, &t), Err(TokenError::Issuer));
    // Not an object, or trailing text.
    for claims in ["[1]", "null", r#"{"exp":1} x"#] {
        let t = sign_raw(r#"{"alg":"HS256"}"#, claims);
        assert!(
            matches!(check(&cfg, &t), Err(TokenError::Malformed(_))),
            "{claims}"
        );
    }
    // Only the claims asked for are kept, a registered one included, with their last value.
    let t = sign_raw(
        r#"{"alg":"HS256"}"#,
        &format!(
            r#"{{"sub":"a","sub":"b","iss":"shop","aud":"mobile","exp":{exp},"role":["x","y"]}}"#
        ),
    );
    let kept = token::verify(&t, &cfg.keys, &cfg.policy, NOW, |c| {
        c == "sub" || c == "iss"
    })
    .expect("valid");
    assert_eq!(kept.get("sub"), Some(&json!("b")));
    assert_eq!(kept.get("iss"), Some(&json!("shop")));
    assert_eq!(kept.get("role"), None);
}

#[test]
fn config_errors_name_the_key() {
    let err = |cfg: Value| match config::parse(&cfg.to_string(), |_| None) {
        Ok(_) => panic!("should be rejected: {cfg}"),
        Err(e) => e.0,
    };
    assert!(err(json!({})).contains("no usable key"));
    assert!(
        err(json!({ "keys": [{ "secret": "short" }] })).contains("keys[0]: HMAC secret is 5 bytes")
    );
    assert!(err(json!({ "keys": [{ "pem": RSA_PRIVATE }] })).contains("private key"));
    assert!(
        err(json!({ "keys": [{ "pem": RSA_PUBLIC, "alg": "ES256" }] })).contains("does not fit")
    );
    assert!(err(json!({ "keys": [{ "pem": "junk" }] })).contains("keys[0].pem"));
    assert!(
        err(json!({ "keys": [{ "secret": SECRET, "pem": RSA_PUBLIC }] })).contains("exactly one")
    );
    assert!(
        err(json!({ "keys": [{ "secret": SECRET }], "algorithms": ["none"] }))
            .contains("algorithms")
    );
    assert!(err(
        json!({ "keys": [{ "secret": SECRET }], "forward_claims": { "sub": "bad header" } })
    )
    .contains("forward_claims.sub"));
    assert!(err(json!({ "keys": [{ "secret": SECRET }], "typo": 1 })).contains("unknown field"));
    assert!(err(json!({ "jwks": { "nokeys": [] } })).contains("jwks"));
}

#[test]
fn header_helpers() {
    use crate::{claim_header_value, token_from_header};
    assert_eq!(
        token_from_header("Bearer abc", "Bearer"),
        Some(Ok("abc".into()))
    );
    assert_eq!(
        token_from_header("bearer   abc ", "Bearer"),
        Some(Ok("abc".into()))
    );
    assert_eq!(token_from_header("Basic abc", "Bearer"), None);
    assert_eq!(token_from_header("Bearer", "Bearer"), None);
    assert_eq!(token_from_header("Bearer  ", "Bearer"), None);
    assert_eq!(token_from_header("abc", ""), Some(Ok("abc".into())));
    assert_eq!(claim_header_value(&json!("alice")), "alice");
    assert_eq!(claim_header_value(&json!(42)), "42");
    assert_eq!(claim_header_value(&json!(["a", "b"])), "a,b");
    assert_eq!(claim_header_value(&json!({"k": 1})), "{\"k\":1}");
}

#[test]
fn unauthorized_challenges() {
    let r = crate::unauthorized("gatehouse", &TokenError::Expired);
    assert_eq!(r.status, 401);
    let www = r
        .headers
        .iter()
        .find(|(n, _)| n == "www-authenticate")
        .expect("challenge");
    assert_eq!(
        String::from_utf8_lossy(&www.1),
        "Bearer realm=\"gatehouse\", error=\"invalid_token\", error_description=\"token expired\""
    );
    let r = crate::unauthorized("gatehouse", &TokenError::Missing);
    let www = r
        .headers
        .iter()
        .find(|(n, _)| n == "www-authenticate")
        .expect("challenge");
    assert_eq!(
        String::from_utf8_lossy(&www.1),
        "Bearer realm=\"gatehouse\""
    );
    let r = crate::unauthorized("gatehouse", &TokenError::UnsupportedAlg("a\"b\\c".into()));
    let www = String::from_utf8_lossy(&r.headers[1].1).into_owned();
    assert!(
        www.ends_with("error_description=\"unsupported algorithm a'b'c\""),
        "{www}"
    );
}

#[test]
fn jwks_from_a_granted_file() {
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::traits::PublicKeyParts as _;
    let public = rsa::RsaPublicKey::from_public_key_pem(RSA_PUBLIC).expect("pem");
    let jwks = json!({ "keys": [
        { "kty": "RSA", "kid": "f1", "alg": "RS256", "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be()) },
    ]})
    .to_string();
    let granted = |name: &str| (name == "keys").then(|| jwks.clone().into_bytes());
    let cfg = config::parse(&json!({ "jwks_file": "keys" }).to_string(), granted)
        .unwrap_or_else(|e| panic!("{}", e.0));
    assert_eq!(cfg.keys.len(), 1);
    let good = sign(
        json!({"alg":"RS256","kid":"f1"}),
        claims(),
        Signer::Rs(RSA_PRIVATE),
    );
    assert!(check(&cfg, &good).is_ok());

    let missing = config::parse(&json!({ "jwks_file": "other" }).to_string(), granted)
        .err()
        .expect("not granted");
    assert!(
        missing.0.contains("no file granted as \"other\""),
        "{}",
        missing.0
    );
    let not_json = config::parse(&json!({ "jwks_file": "keys" }).to_string(), |_| {
        Some(b"{oops".to_vec())
    })
    .err()
    .expect("not JSON");
    assert!(not_json.0.contains("not JSON"), "{}", not_json.0);
}
