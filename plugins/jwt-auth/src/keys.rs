//! Verification keys: HMAC secrets, RSA and P-256 public keys, from config entries (secret or
//! PEM) or from a JWK set, each bound to the one algorithm it may verify.

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs8::DecodePublicKey as _;
use serde::Deserialize;
use sha2::Sha256;

use crate::error::ConfigError;

/// The algorithms this plugin verifies. Anything else (notably `none`) is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// HMAC with SHA-256 (a shared secret).
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
}

impl Alg {
    /// The algorithm named `name` exactly as in a JOSE header (`HS256`, `RS256`, `ES256`).
    pub fn parse(name: &str) -> Option<Alg> {
        match name {
            "HS256" => Some(Alg::Hs256),
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }
}

/// Key material. Each kind verifies exactly one algorithm: this is what stops algorithm
/// confusion (an RSA public key is never used as an HMAC secret, whatever the token says).
pub enum KeyMaterial {
    /// An HMAC secret (HS256), kept as the keyed MAC state (the secret's inner and outer pads
    /// already absorbed), which each verification clones: two SHA-256 blocks fewer per token
    /// than keying from the secret every time.
    Hmac(Box<hmac::Hmac<Sha256>>),
    /// An RSA public key (RS256).
    Rsa(Box<rsa::pkcs1v15::VerifyingKey<Sha256>>),
    /// A P-256 public key (ES256).
    Ec(Box<p256::ecdsa::VerifyingKey>),
}

impl KeyMaterial {
    /// The one algorithm this key verifies.
    pub fn alg(&self) -> Alg {
        match self {
            KeyMaterial::Hmac(_) => Alg::Hs256,
            KeyMaterial::Rsa(_) => Alg::Rs256,
            KeyMaterial::Ec(_) => Alg::Es256,
        }
    }

    /// Whether `signature` is valid for `signing_input` under this key.
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match self {
            KeyMaterial::Hmac(keyed) => {
                use hmac::Mac as _;
                let mut mac = (**keyed).clone();
                mac.update(signing_input);
                // Constant-time comparison.
                mac.verify_slice(signature).is_ok()
            }
            KeyMaterial::Rsa(key) => {
                let Ok(sig) = rsa::pkcs1v15::Signature::try_from(signature) else {
                    return false;
                };
                key.verify(signing_input, &sig).is_ok()
            }
            KeyMaterial::Ec(key) => {
                // JWS carries ECDSA signatures as the raw 64-byte r || s, never DER.
                if signature.len() != 64 {
                    return false;
                }
                let Ok(sig) = p256::ecdsa::Signature::from_slice(signature) else {
                    return false;
                };
                key.verify(signing_input, &sig).is_ok()
            }
        }
    }
}

/// A usable key: its material and, if known, its key id.
pub struct Key {
    /// The `kid` to match against the token header; `None` matches any token of the alg.
    pub kid: Option<String>,
    /// The key itself.
    pub material: KeyMaterial,
}

/// The smallest HMAC secret accepted, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_HMAC_SECRET: usize = 32;
/// The smallest RSA modulus accepted, in bits (RFC 7518 §3.3).
pub const MIN_RSA_BITS: usize = 2048;

/// One entry of the `keys` config list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Key id; tokens carrying a `kid` only match keys with the same id.
    #[serde(default)]
    pub kid: Option<String>,
    /// The algorithm; must agree with the key kind when given. Inferred otherwise.
    #[serde(default)]
    pub alg: Option<String>,
    /// An HMAC secret as text (HS256).
    #[serde(default)]
    pub secret: Option<String>,
    /// An HMAC secret as base64 or base64url (HS256).
    #[serde(default)]
    pub secret_base64: Option<String>,
    /// A PEM public key: `BEGIN PUBLIC KEY` (RSA or P-256) or `BEGIN RSA PUBLIC KEY`.
    #[serde(default)]
    pub pem: Option<String>,
}

fn b64url(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    crate::token::B64URL.decode(text.trim())
}

fn b64any(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let t = text.trim();
    let standard = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    standard.decode(t).or_else(|_| b64url(t))
}

fn hmac_key(what: &str, secret: Vec<u8>) -> Result<KeyMaterial, ConfigError> {
    if secret.len() < MIN_HMAC_SECRET {
        return Err(ConfigError(format!(
            "{what}: HMAC secret is {} bytes; HS256 needs at least {MIN_HMAC_SECRET}",
            secret.len()
        )));
    }
    use hmac::Mac as _;
    let keyed = hmac::Hmac::<Sha256>::new_from_slice(&secret)
        .map_err(|_| ConfigError(format!("{what}: unusable HMAC secret")))?;
    Ok(KeyMaterial::Hmac(Box::new(keyed)))
}

fn rsa_key(what: &str, key: rsa::RsaPublicKey) -> Result<KeyMaterial, ConfigError> {
    use rsa::traits::PublicKeyParts as _;
    let bits = key.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(ConfigError(format!(
            "{what}: RSA key is {bits} bits; RS256 needs at least {MIN_RSA_BITS}"
        )));
    }
    Ok(KeyMaterial::Rsa(Box::new(rsa::pkcs1v15::VerifyingKey::<
        Sha256,
    >::new(key))))
}

fn check_alg(
    what: &str,
    declared: Option<&str>,
    material: KeyMaterial,
) -> Result<Key, ConfigError> {
    if let Some(name) = declared {
        let alg = Alg::parse(name).ok_or_else(|| {
            ConfigError(format!(
                "{what}.alg = {name:?}: unsupported (accepted: HS256, RS256, ES256)"
            ))
        })?;
        if alg != material.alg() {
            return Err(ConfigError(format!(
                "{what}.alg = {name:?} does not fit the key, which is a {} key",
                material.alg().name()
            )));
        }
    }
    Ok(Key {
        kid: None,
        material,
    })
}

/// Turn the config entry `keys[index]` into a key.
pub fn from_config(index: usize, cfg: &KeyConfig) -> Result<Key, ConfigError> {
    let what = format!("keys[{index}]");
    let given = [
        cfg.secret.is_some(),
        cfg.secret_base64.is_some(),
        cfg.pem.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return Err(ConfigError(format!(
            "{what}: give exactly one of `secret`, `secret_base64`, `pem` (got {given})"
        )));
    }
    let material = if let Some(secret) = &cfg.secret {
        hmac_key(&what, secret.as_bytes().to_vec())?
    } else if let Some(secret) = &cfg.secret_base64 {
        let bytes = b64any(secret)
            .map_err(|e| ConfigError(format!("{what}.secret_base64: not base64: {e}")))?;
        hmac_key(&what, bytes)?
    } else if let Some(pem) = &cfg.pem {
        pem_key(&what, pem)?
    } else {
        return Err(ConfigError(format!("{what}: no key material")));
    };
    let mut key = check_alg(&what, cfg.alg.as_deref(), material)?;
    key.kid = cfg.kid.clone();
    Ok(key)
}

fn pem_key(what: &str, pem: &str) -> Result<KeyMaterial, ConfigError> {
    let pem = pem.trim();
    if pem.contains("PRIVATE KEY") {
        return Err(ConfigError(format!(
            "{what}.pem: this is a private key; configure the public key only"
        )));
    }
    if pem.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        let key = rsa::RsaPublicKey::from_pkcs1_pem(pem)
            .map_err(|e| ConfigError(format!("{what}.pem: bad PKCS#1 RSA public key: {e}")))?;
        return rsa_key(what, key);
    }
    if let Ok(key) = rsa::RsaPublicKey::from_public_key_pem(pem) {
        return rsa_key(what, key);
    }
    if let Ok(key) = p256::PublicKey::from_public_key_pem(pem) {
        return Ok(KeyMaterial::Ec(Box::new(key.into())));
    }
    Err(ConfigError(format!(
        "{what}.pem: not an RSA or P-256 public key in PEM (`-----BEGIN PUBLIC KEY-----`)"
    )))
}

/// One JWK, with the members this plugin reads.
#[derive(Debug, Deserialize)]
pub struct Jwk {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    k: Option<String>,
}

/// A JWK set: `{ "keys": [ ... ] }`.
#[derive(Debug, Deserialize)]
pub struct JwkSet {
    keys: Vec<Jwk>,
}

/// What became of one JWK.
pub enum JwkOutcome {
    /// A usable signature key.
    Key(Key),
    /// A key this plugin does not use (encryption key, other curve or type); the reason.
    Skipped(String),
}

fn member<'a>(what: &str, value: &'a Option<String>, name: &str) -> Result<&'a str, ConfigError> {
    value
        .as_deref()
        .ok_or_else(|| ConfigError(format!("{what}: missing member `{name}`")))
}

fn member_bytes(what: &str, value: &Option<String>, name: &str) -> Result<Vec<u8>, ConfigError> {
    b64url(member(what, value, name)?)
        .map_err(|e| ConfigError(format!("{what}.{name}: not base64url: {e}")))
}

/// Turn `jwks.keys[index]` into a key, or say why it is skipped.
pub fn from_jwk(index: usize, jwk: &Jwk) -> Result<JwkOutcome, ConfigError> {
    let what = format!("jwks.keys[{index}]");
    if let Some(u) = jwk.use_.as_deref() {
        if u != "sig" {
            return Ok(JwkOutcome::Skipped(format!(
                "{what}: use = {u:?}, not \"sig\""
            )));
        }
    }
    let kty = member(&what, &jwk.kty, "kty")?;
    let material = match kty {
        "oct" => hmac_key(&what, member_bytes(&what, &jwk.k, "k")?)?,
        "RSA" => {
            let n = rsa::BigUint::from_bytes_be(&member_bytes(&what, &jwk.n, "n")?);
            let e = rsa::BigUint::from_bytes_be(&member_bytes(&what, &jwk.e, "e")?);
            let key = rsa::RsaPublicKey::new(n, e)
                .map_err(|e| ConfigError(format!("{what}: bad RSA key: {e}")))?;
            rsa_key(&what, key)?
        }
        "EC" => {
            let crv = member(&what, &jwk.crv, "crv")?;
            if crv != "P-256" {
                return Ok(JwkOutcome::Skipped(format!(
                    "{what}: curve {crv:?} is not supported (only P-256)"
                )));
            }
            let x = member_bytes(&what, &jwk.x, "x")?;
            let y = member_bytes(&what, &jwk.y, "y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err(ConfigError(format!(
                    "{what}: P-256 coordinates must be 32 bytes each"
                )));
            }
            let point = p256::EncodedPoint::from_affine_coordinates(
                p256::FieldBytes::from_slice(&x),
                p256::FieldBytes::from_slice(&y),
                false,
            );
            let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                .map_err(|_| ConfigError(format!("{what}: point is not on P-256")))?;
            KeyMaterial::Ec(Box::new(key))
        }
        other => {
            return Ok(JwkOutcome::Skipped(format!(
                "{what}: kty {other:?} is not supported (oct, RSA, EC)"
            )))
        }
    };
    if let Some(alg) = jwk.alg.as_deref() {
        if Alg::parse(alg).is_none() {
            return Ok(JwkOutcome::Skipped(format!(
                "{what}: alg {alg:?} is not supported (HS256, RS256, ES256)"
            )));
        }
    }
    let mut key = check_alg(&what, jwk.alg.as_deref(), material)?;
    key.kid = jwk.kid.clone();
    Ok(JwkOutcome::Key(key))
}

/// Parse a JWK set given as JSON text or as a JSON value.
pub fn parse_jwks(value: &serde_json::Value) -> Result<JwkSet, ConfigError> {
    let parsed = match value {
        serde_json::Value::String(text) => serde_json::from_str(text),
        other => serde_json::from_value(other.clone()),
    };
    parsed.map_err(|e| ConfigError(format!("jwks: not a JWK set ({{\"keys\": [...]}}): {e}")))
}

impl JwkSet {
    /// The JWKs, in order.
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }
}
