//! The plugin's config table: raw serde types, then [`Settings`], which holds only usable
//! keys and checks.

use std::collections::BTreeMap;

use gatehouse_sdk::is_header_name;
use serde::Deserialize;

use crate::error::ConfigError;
use crate::keys::{self, Alg, JwkOutcome, Key, KeyConfig};
use crate::token::Policy;

/// One string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The config table as written in the route (see docs/shipped-plugins.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Keys given one by one. Default: none.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// A JWK set, inline: a table `{ keys = [...] }` or its JSON text. Default: none.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// A JWK set from a data file the route grants the plugin, by grant name
    /// (`files = { jwks = "keys/jwks.json" }`, then `jwks_file = "jwks"`). Default: none.
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// Accepted issuers (`iss`). Default: not checked.
    #[serde(default)]
    pub issuer: Option<OneOrMany>,
    /// Accepted audiences (`aud`). Default: not checked.
    #[serde(default)]
    pub audience: Option<OneOrMany>,
    /// Accepted algorithms. Default: all that a configured key supports.
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// Clock skew tolerated on `exp`/`nbf`, seconds. Default 60.
    #[serde(default)]
    pub clock_skew_secs: Option<u64>,
    /// Whether `exp` is required. Default true.
    #[serde(default)]
    pub require_exp: Option<bool>,
    /// The header carrying the token. Default `authorization`.
    #[serde(default)]
    pub header: Option<String>,
    /// The scheme before the token in that header; `""` for a bare token. Default `Bearer`.
    #[serde(default)]
    pub scheme: Option<String>,
    /// A query parameter that may carry the token instead. Default: none.
    #[serde(default)]
    pub query: Option<String>,
    /// Claims forwarded upstream: claim name → header name. Default: none.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Whether to remove the token header before forwarding. Default false.
    #[serde(default)]
    pub strip_token: Option<bool>,
    /// The realm in `WWW-Authenticate`. Default `gatehouse`.
    #[serde(default)]
    pub realm: Option<String>,
}

/// The validated settings.
pub struct Settings {
    /// Keys, in config order (`keys`, then `jwks`, then `jwks_file`).
    pub keys: Vec<Key>,
    /// Claim checks.
    pub policy: Policy,
    /// Token header, lower-case.
    pub header: String,
    /// Scheme expected before the token, e.g. `Bearer`; empty for a bare token.
    pub scheme: String,
    /// Query parameter carrying the token, if any.
    pub query: Option<String>,
    /// Claim → header to forward.
    pub forward_claims: BTreeMap<String, String>,
    /// Remove the token header before forwarding.
    pub strip_token: bool,
    /// The realm in `WWW-Authenticate`.
    pub realm: String,
    /// JWKs that were skipped, and why (logged at debug level).
    pub skipped: Vec<String>,
}

/// The default clock skew in seconds.
pub const DEFAULT_SKEW_SECS: u64 = 60;

/// Parse and validate the config JSON text the host hands the plugin; `file` reads a granted
/// data file by name (the host's `context.file` in the plugin).
pub fn parse(json: &str, file: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Settings, ConfigError> {
    let raw: RawConfig =
        serde_json::from_str(json).map_err(|e| ConfigError(format!("jwt-auth config: {e}")))?;
    validate(raw, file)
}

/// Validate a raw config. Reports the first problem found.
pub fn validate(
    raw: RawConfig,
    file: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<Settings, ConfigError> {
    let mut keys = Vec::new();
    for (i, k) in raw.keys.iter().enumerate() {
        keys.push(keys::from_config(i, k)?);
    }
    let from_file = match &raw.jwks_file {
        None => None,
        Some(name) => {
            let bytes = file(name).ok_or_else(|| {
                ConfigError(format!(
                    "jwks_file: no file granted as {name:?}; add `files = {{ {name} = \"path/to/jwks.json\" }}` to this plugin's entry"
                ))
            })?;
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| ConfigError(format!("jwks_file {name:?}: not JSON: {e}")))?;
            Some(value)
        }
    };
    let mut skipped = Vec::new();
    for jwks in raw.jwks.iter().chain(&from_file) {
        let set = keys::parse_jwks(jwks)?;
        for (i, jwk) in set.keys().iter().enumerate() {
            match keys::from_jwk(i, jwk)? {
                JwkOutcome::Key(k) => keys.push(k),
                JwkOutcome::Skipped(why) => skipped.push(why),
            }
        }
    }
    if keys.is_empty() {
        return Err(ConfigError(
            "jwt-auth config: no usable key; set `keys = [...]`, `jwks = { keys = [...] }` or `jwks_file`"
                .into(),
        ));
    }
    let mut algorithms = Vec::new();
    for name in raw.algorithms.unwrap_or_default() {
        match Alg::parse(&name) {
            Some(a) => algorithms.push(a),
            None => {
                return Err(ConfigError(format!(
                    "algorithms: {name:?} is not supported (accepted: HS256, RS256, ES256)"
                )))
            }
        }
    }
    let header = raw
        .header
        .unwrap_or_else(|| "authorization".into())
        .to_ascii_lowercase();
    if !is_header_name(&header) {
        return Err(ConfigError(format!(
            "header = {header:?}: not a valid header name"
        )));
    }
    for (claim, h) in &raw.forward_claims {
        if !is_header_name(h) {
            return Err(ConfigError(format!(
                "forward_claims.{claim} = {h:?}: not a valid header name"
            )));
        }
    }
    let realm = raw.realm.unwrap_or_else(|| "gatehouse".into());
    if realm.contains(['"', '\\']) || realm.chars().any(char::is_control) {
        return Err(ConfigError(format!(
            "realm = {realm:?}: must not contain quotes, backslashes or control characters"
        )));
    }
    Ok(Settings {
        keys,
        policy: Policy {
            issuers: raw.issuer.map(OneOrMany::into_vec).unwrap_or_default(),
            audiences: raw.audience.map(OneOrMany::into_vec).unwrap_or_default(),
            skew_secs: raw.clock_skew_secs.unwrap_or(DEFAULT_SKEW_SECS),
            require_exp: raw.require_exp.unwrap_or(true),
            algorithms,
        },
        header,
        scheme: raw.scheme.unwrap_or_else(|| "Bearer".into()),
        query: raw.query,
        forward_claims: raw
            .forward_claims
            .into_iter()
            .map(|(c, h)| (c, h.to_ascii_lowercase()))
            .collect(),
        strip_token: raw.strip_token.unwrap_or(false),
        realm,
        skipped,
    })
}
