//! Minting the demo's HS256 JWT, the kind the route's `jwt-auth` plugin verifies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A compact JWS over `claims`, signed with HS256 and `secret`.
pub fn sign_hs256(secret: &[u8], claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({ "alg": "HS256", "typ": "JWT" }).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(hmac_sha256(secret, signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

/// HMAC-SHA256 (RFC 2104) on `sha2` alone. Not the `hmac` crate: it turns on `digest`'s `mac`
/// feature, and since cranelift depends on `sha2` too, a release build with this demo would
/// then compile wasmtime differently from `cargo build -p gatehouse` alone: the README's two
/// commands would each compile it (.ci/run checks the feature sets stay equal).
fn hmac_sha256(secret: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut key = [0u8; BLOCK];
    if secret.len() > BLOCK {
        key[..32].copy_from_slice(&Sha256::digest(secret));
    } else {
        key[..secret.len()].copy_from_slice(secret);
    }
    let pad = |byte: u8| key.map(|k| k ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
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

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // Test cases 2 (short key) and 6 (a key longer than the block).
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

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
