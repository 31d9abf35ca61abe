//! Minting the demo's HS256 JWT, the kind the route's `jwt-auth` plugin verifies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// A compact JWS over `claims`, signed with HS256 and `secret`.
pub fn sign_hs256(secret: &[u8], claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({ "alg": "HS256", "typ": "JWT" }).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// A token for user `sub`, valid for `ttl` from now, with the demo's issuer and audience,
/// signed with the demo secret: what `curl -H "authorization: Bearer …"` needs.
pub fn demo_token(sub: &str, ttl: Duration) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = json!({
        "sub": sub,
        "iss": crate::JWT_ISSUER,
        "aud": crate::JWT_AUDIENCE,
        "iat": now,
        "exp": now + ttl.as_secs(),
    });
    sign_hs256(crate::JWT_SECRET.as_bytes(), &claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_has_three_parts_and_the_demo_claims() {
        let t = demo_token("alice", Duration::from_secs(60));
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url"))
                .expect("json");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["iss"], crate::JWT_ISSUER);
        assert_eq!(
            claims["exp"]
                .as_u64()
                .zip(claims["iat"].as_u64())
                .map(|(e, i)| e - i),
            Some(60)
        );
    }

    #[test]
    fn signatures_depend_on_the_key() {
        // Same input, same key → same signature; another key → another one.
        let claims = json!({ "sub": "x" });
        assert_eq!(sign_hs256(b"k1", &claims), sign_hs256(b"k1", &claims));
        assert_ne!(sign_hs256(b"k1", &claims), sign_hs256(b"k2", &claims));
    }
}
