//! Decoding and verifying a compact JWS (JWT): structure, algorithm, signature, then the
//! registered claims `exp`, `nbf`, `iss` and `aud`. Pure logic: the time is a parameter.

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::error::TokenError;
use crate::keys::{Alg, Key};

/// base64url, padding tolerated but not required.
pub const B64URL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// The longest token accepted, in bytes; longer ones are rejected before any decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// What a valid token must satisfy besides its signature.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Accepted `iss` values; empty means `iss` is not checked.
    pub issuers: Vec<String>,
    /// Accepted audiences; the token's `aud` must name one. Empty means not checked.
    pub audiences: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub skew_secs: u64,
    /// Whether a token without `exp` is rejected.
    pub require_exp: bool,
    /// Algorithms accepted; empty means every algorithm a configured key supports.
    pub algorithms: Vec<Alg>,
}

fn json_part(part: &str, what: &'static str) -> Result<Map<String, Value>, TokenError> {
    let bytes = B64URL
        .decode(part)
        .map_err(|_| TokenError::Malformed(what))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::Malformed(what)),
    }
}

fn time_claim(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(TokenError::BadTimeClaim(name)),
        Some(_) => Err(TokenError::BadTimeClaim(name)),
    }
}

/// Verify `token` against `keys` and `policy` at time `now` (seconds since the Unix epoch).
/// Returns the claims of a valid token.
pub fn verify(
    token: &str,
    keys: &[Key],
    policy: &Policy,
    now: u64,
) -> Result<Map<String, Value>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };
    let header = json_part(h, "header is not base64url JSON")?;
    let alg_name = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        _ => return Err(TokenError::UnsupportedAlg("(missing)".into())),
    };
    // `none` and every other name fall out here: only the three algorithms have keys.
    let alg = Alg::parse(&alg_name).ok_or_else(|| TokenError::UnsupportedAlg(alg_name.clone()))?;
    if !policy.algorithms.is_empty() && !policy.algorithms.contains(&alg) {
        return Err(TokenError::UnsupportedAlg(alg_name));
    }
    if header.contains_key("crit") {
        return Err(TokenError::Critical);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(TokenError::Malformed("kid is not a string")),
    };
    let signature = B64URL
        .decode(s)
        .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    if signature.is_empty() {
        return Err(TokenError::BadSignature);
    }

    // Candidate keys: the key kind must match the algorithm (no confusion), and a token
    // naming a key id only matches keys with that id.
    let candidates = keys.iter().filter(|k| {
        k.material.alg() == alg
            && match (kid, k.kid.as_deref()) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => true,
                (None, _) => true,
            }
    });
    let signing_input = &token.as_bytes()[..h.len() + 1 + c.len()];
    let mut any = false;
    let mut ok = false;
    for key in candidates {
        any = true;
        if key.material.verify(signing_input, &signature) {
            ok = true;
            break;
        }
    }
    if !any {
        return Err(TokenError::NoKey);
    }
    if !ok {
        return Err(TokenError::BadSignature);
    }

    // Only a token with a valid signature gets its claims looked at.
    let claims = json_part(c, "claims are not base64url JSON")?;
    let now = now as f64;
    let skew = policy.skew_secs as f64;
    match time_claim(&claims, "exp")? {
        Some(exp) if now >= exp + skew => return Err(TokenError::Expired),
        None if policy.require_exp => return Err(TokenError::MissingExp),
        _ => {}
    }
    if let Some(nbf) = time_claim(&claims, "nbf")? {
        if now + skew < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    if !policy.issuers.is_empty() {
        match claims.get("iss") {
            Some(Value::String(iss)) if policy.issuers.iter().any(|i| i == iss) => {}
            _ => return Err(TokenError::Issuer),
        }
    }
    if !policy.audiences.is_empty() {
        let accepted = |a: &Value| {
            a.as_str()
                .is_some_and(|a| policy.audiences.iter().any(|want| want == a))
        };
        let ok = match claims.get("aud") {
            Some(Value::Array(list)) => list.iter().any(accepted),
            Some(one) => accepted(one),
            None => false,
        };
        if !ok {
            return Err(TokenError::Audience);
        }
    }
    Ok(claims)
}
