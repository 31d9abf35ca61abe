//! The two ways a request can fail this plugin: the operator's config is unusable (500), or
//! the client's token is not acceptable (401).

/// The plugin's config cannot be used; the message names the key path and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Why a token was rejected. Each maps to a 401 with `error="invalid_token"`, except
/// [`TokenError::Missing`], which carries no error code (RFC 6750 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// No bearer token in the request.
    Missing,
    /// Not three base64url parts with JSON header and claims; the detail says what.
    Malformed(&'static str),
    /// `alg` is absent, `none`, or not one this plugin verifies.
    UnsupportedAlg(String),
    /// The header lists critical extensions (`crit`) this plugin does not understand.
    Critical,
    /// No configured key fits the token's `alg` (and `kid`).
    NoKey,
    /// The signature does not verify.
    BadSignature,
    /// `exp` has passed (beyond the clock skew).
    Expired,
    /// `nbf` is still in the future (beyond the clock skew).
    NotYetValid,
    /// A time claim is not a number.
    BadTimeClaim(&'static str),
    /// `exp` is required but absent.
    MissingExp,
    /// `iss` is absent or not an accepted issuer.
    Issuer,
    /// `aud` is absent or names none of the accepted audiences.
    Audience,
}

impl TokenError {
    /// The `message` (and the challenge's `error_description`) sent to the client.
    pub fn description(&self) -> String {
        match self {
            TokenError::Missing => "no bearer token".into(),
            TokenError::Malformed(what) => format!("malformed token: {what}"),
            TokenError::UnsupportedAlg(alg) => format!("unsupported algorithm {alg}"),
            TokenError::Critical => "unsupported critical header parameters".into(),
            TokenError::NoKey => "no key for this token's algorithm and key id".into(),
            TokenError::BadSignature => "signature verification failed".into(),
            TokenError::Expired => "token expired".into(),
            TokenError::NotYetValid => "token not yet valid".into(),
            TokenError::BadTimeClaim(claim) => format!("claim {claim} is not a number"),
            TokenError::MissingExp => "token has no exp claim".into(),
            TokenError::Issuer => "issuer not accepted".into(),
            TokenError::Audience => "audience not accepted".into(),
        }
    }
}
