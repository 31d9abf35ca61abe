//! Decoding and verifying a compact JWS (JWT): structure, algorithm, signature, then the
//! registered claims `exp`, `nbf`, `iss` and `aud`. Pure logic: the time is a parameter.

use std::borrow::Cow;

use base64::Engine as _;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

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

/// A JSON value as far as verification looks at it: strings (borrowed from the decoded part
/// when they have no escapes), numbers, lists; anything else only as "something else".
/// Reading the header and claims into these, instead of a `serde_json::Map` of `Value`s,
/// skips building a map and owned copies of every member on each request.
#[derive(Debug, Clone, PartialEq)]
enum Member<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    List(Vec<Member<'a>>),
    Other,
}

impl<'a> Member<'a> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Member::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The member of a claim that is also forwarded (read as a whole `Value` for that).
    fn from_value(value: &Value) -> Member<'a> {
        match value {
            Value::String(s) => Member::Str(Cow::Owned(s.clone())),
            Value::Number(n) => n.as_f64().map_or(Member::Other, Member::Num),
            Value::Array(items) => Member::List(items.iter().map(Member::from_value).collect()),
            _ => Member::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Member<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Member<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Member::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Member::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Member::Str(Cow::Owned(v)))
            }
            // As `serde_json::Number::as_f64` converts them.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Member::Num(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Member::Num(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Member::Num(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Member::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Member::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Member::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Member::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// An object member's name, borrowed when it has no escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The JOSE header members this plugin reads. A repeated member counts with its last value,
/// as a JSON object parsed into a map would.
#[derive(Default)]
struct JoseHeader<'a> {
    alg: Option<Member<'a>>,
    kid: Option<Member<'a>>,
    /// Whether `crit` is present, whatever its value.
    crit: bool,
}

impl<'de> Deserialize<'de> for JoseHeader<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JoseHeader<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut h = JoseHeader::default();
                while let Some(Name(name)) = map.next_key()? {
                    match &*name {
                        "alg" => h.alg = Some(map.next_value()?),
                        "kid" => h.kid = Some(map.next_value()?),
                        "crit" => {
                            map.next_value::<IgnoredAny>()?;
                            h.crit = true;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(h)
            }
        }
        d.deserialize_map(V)
    }
}

/// The claims of a valid token: the registered ones checked here, and those asked for by
/// name (to forward), as JSON values. A repeated claim counts with its last value.
#[derive(Debug, Default, PartialEq)]
pub struct Claims {
    kept: Vec<(String, Value)>,
}

impl Claims {
    /// The claim `name`, if the token has it and it was asked for.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.kept.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// The registered claims read during verification, plus the kept ones.
#[derive(Default)]
struct ClaimSet<'a> {
    exp: Option<Member<'a>>,
    nbf: Option<Member<'a>>,
    iss: Option<Member<'a>>,
    aud: Option<Member<'a>>,
    kept: Claims,
}

/// Reads a claims object, keeping the claims `keep` asks for.
struct ClaimsSeed<'k, K>(&'k K);

impl<'de, K: Fn(&str) -> bool> de::DeserializeSeed<'de> for ClaimsSeed<'_, K> {
    type Value = ClaimSet<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, K: Fn(&str) -> bool> Visitor<'de> for ClaimsSeed<'_, K> {
    type Value = ClaimSet<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut c = ClaimSet::default();
        while let Some(Name(name)) = map.next_key()? {
            let slot = match &*name {
                "exp" => Some(&mut c.exp),
                "nbf" => Some(&mut c.nbf),
                "iss" => Some(&mut c.iss),
                "aud" => Some(&mut c.aud),
                _ => None,
            };
            if (self.0)(&name) {
                let value: Value = map.next_value()?;
                if let Some(slot) = slot {
                    *slot = Some(Member::from_value(&value));
                }
                c.kept.kept.retain(|(n, _)| *n != *name);
                c.kept.kept.push((name.into_owned(), value));
            } else if let Some(slot) = slot {
                *slot = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(c)
    }
}

fn decode_part(part: &str, what: &'static str) -> Result<Vec<u8>, TokenError> {
    B64URL.decode(part).map_err(|_| TokenError::Malformed(what))
}

fn time_claim(claim: &Option<Member>, name: &'static str) -> Result<Option<f64>, TokenError> {
    match claim {
        None => Ok(None),
        Some(Member::Num(n)) => Ok(Some(*n)),
        Some(_) => Err(TokenError::BadTimeClaim(name)),
    }
}

/// Verify `token` against `keys` and `policy` at time `now` (seconds since the Unix epoch).
/// Returns the claims of a valid token that `keep` asks for by name.
pub fn verify(
    token: &str,
    keys: &[Key],
    policy: &Policy,
    now: u64,
    keep: impl Fn(&str) -> bool,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };
    const BAD_HEADER: &str = "header is not base64url JSON";
    let header_json = decode_part(h, BAD_HEADER)?;
    let header: JoseHeader =
        serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed(BAD_HEADER))?;
    let alg_name = match &header.alg {
        Some(Member::Str(a)) => a,
        _ => return Err(TokenError::UnsupportedAlg("(missing)".into())),
    };
    // `none` and every other name fall out here: only the three algorithms have keys.
    let alg =
        Alg::parse(alg_name).ok_or_else(|| TokenError::UnsupportedAlg(alg_name.to_string()))?;
    if !policy.algorithms.is_empty() && !policy.algorithms.contains(&alg) {
        return Err(TokenError::UnsupportedAlg(alg_name.to_string()));
    }
    if header.crit {
        return Err(TokenError::Critical);
    }
    let kid = match &header.kid {
        None => None,
        Some(Member::Str(k)) => Some(&**k),
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
    const BAD_CLAIMS: &str = "claims are not base64url JSON";
    let claims_json = decode_part(c, BAD_CLAIMS)?;
    let mut reader = serde_json::Deserializer::from_slice(&claims_json);
    let claims = de::DeserializeSeed::deserialize(ClaimsSeed(&keep), &mut reader)
        .and_then(|c| reader.end().map(|()| c))
        .map_err(|_| TokenError::Malformed(BAD_CLAIMS))?;
    let now = now as f64;
    let skew = policy.skew_secs as f64;
    match time_claim(&claims.exp, "exp")? {
        Some(exp) if now >= exp + skew => return Err(TokenError::Expired),
        None if policy.require_exp => return Err(TokenError::MissingExp),
        _ => {}
    }
    if let Some(nbf) = time_claim(&claims.nbf, "nbf")? {
        if now + skew < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    if !policy.issuers.is_empty() {
        match &claims.iss {
            Some(Member::Str(iss)) if policy.issuers.iter().any(|i| i == iss) => {}
            _ => return Err(TokenError::Issuer),
        }
    }
    if !policy.audiences.is_empty() {
        let accepted = |a: &Member| {
            a.as_str()
                .is_some_and(|a| policy.audiences.iter().any(|want| want == a))
        };
        let ok = match &claims.aud {
            Some(Member::List(list)) => list.iter().any(accepted),
            Some(one) => accepted(one),
            None => false,
        };
        if !ok {
            return Err(TokenError::Audience);
        }
    }
    Ok(claims.kept)
}
