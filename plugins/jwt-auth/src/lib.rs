//! `jwt-auth`: verifies a bearer JWT (HS256, RS256, ES256) on the request phase, checks
//! `exp`, `nbf`, `iss` and `aud`, forwards selected claims upstream as headers, and answers
//! 401 with `WWW-Authenticate` otherwise. Config reference: docs/shipped-plugins.md.

pub mod clock;
pub mod config;
pub mod error;
pub mod keys;
pub mod token;

#[cfg(test)]
mod tests;

use gatehouse_sdk::prelude::*;
use serde_json::Value;

use crate::config::Settings;
use gatehouse_sdk::{query_param, strip_query_param};

use crate::error::TokenError;

/// The plugin.
pub struct JwtAuth;

/// Where the token came from, so it can be stripped before forwarding.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    /// The configured header.
    Header,
    /// The configured query parameter.
    Query,
}

/// The token in an `Authorization`-style header value: `<scheme> <token>`, scheme
/// case-insensitive; a bare token when `scheme` is empty. `None` when the header does not use
/// the scheme (another auth method), which counts as no token at all.
pub fn token_from_header(value: &str, scheme: &str) -> Option<Result<String, TokenError>> {
    let value = value.trim();
    let token = if scheme.is_empty() {
        value
    } else {
        let (got, rest) = value.split_once(' ')?;
        if !got.eq_ignore_ascii_case(scheme) {
            return None;
        }
        rest.trim()
    };
    if token.is_empty() {
        return Some(Err(TokenError::Malformed("empty token")));
    }
    Some(Ok(token.to_string()))
}

/// A claim's value as header text: strings as they are, numbers and booleans as JSON,
/// arrays of strings joined with `,`, anything else as compact JSON.
pub fn claim_header_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// The 401 response for `error`.
pub fn unauthorized(realm: &str, error: &TokenError) -> FullResponse {
    // The description goes inside a quoted-string: keep it to safe characters.
    let description: String = error
        .description()
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '\''
            } else {
                c
            }
        })
        .collect();
    let (challenge, body) = match error {
        // RFC 6750 §3.1: a request without credentials gets the challenge without an error
        // code, so a client learns how to authenticate without being told it failed.
        TokenError::Missing => (
            format!("Bearer realm=\"{realm}\""),
            gatehouse_sdk::error_body("unauthorized", &description),
        ),
        _ => (
            format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{description}\""
            ),
            gatehouse_sdk::error_body("invalid_token", &description),
        ),
    };
    gatehouse_sdk::unauthorized(&challenge, &body)
}

fn find_token(req: &Request, s: &Settings) -> Result<(String, Source), TokenError> {
    if let Some(value) = req.header(&s.header) {
        let text = String::from_utf8(value).map_err(|_| TokenError::Malformed("not UTF-8"))?;
        if let Some(found) = token_from_header(&text, &s.scheme) {
            return found.map(|t| (t, Source::Header));
        }
    }
    if let (Some(name), Some(query)) = (&s.query, req.query()) {
        if let Some(token) = query_param(&query, name) {
            if token.is_empty() {
                return Err(TokenError::Malformed("empty token"));
            }
            return Ok((token, Source::Query));
        }
    }
    Err(TokenError::Missing)
}

/// The route's settings, parsed and keys decoded once: in `init` when the gateway
/// pre-initialises the plugin, else on the first request of the instance.
static SETTINGS: Prepared<Settings> = Prepared::new();

fn load_settings() -> Result<Settings, String> {
    config::parse(&context::config(), files::get).map_err(|e| e.0)
}

impl Plugin for JwtAuth {
    fn init() -> Result<bool, String> {
        // An unusable config is kept too: each request then gets the plugin's own 500
        // `plugin_misconfigured` answer naming the key, as before `init` existed.
        match SETTINGS.get(load_settings) {
            Ok(settings) => {
                for why in &settings.skipped {
                    log::debug(&format!("jwt-auth: skipped {why}"));
                }
            }
            Err(e) => log::error(&format!("jwt-auth: {e}")),
        }
        Ok(true)
    }

    fn on_request(req: &Request) -> Decision {
        let settings = match SETTINGS.get(load_settings) {
            Ok(s) => s,
            Err(e) => {
                log::error(&format!("jwt-auth: {e}"));
                return Decision::Respond(misconfigured("jwt-auth", e));
            }
        };
        // A client must never be able to send the headers this plugin vouches for.
        for header in settings.forward_claims.values() {
            req.remove_header(header);
        }
        let verified = find_token(req, settings).and_then(|(token, source)| {
            token::verify(
                &token,
                &settings.keys,
                &settings.policy,
                clock::now_secs(),
                |claim| settings.forward_claims.contains_key(claim),
            )
            .map(|claims| (claims, source))
        });
        let (claims, source) = match verified {
            Ok(ok) => ok,
            Err(e) => {
                log::debug(&format!("jwt-auth: rejected: {}", e.description()));
                return Decision::Respond(unauthorized(&settings.realm, &e));
            }
        };
        for (claim, header) in &settings.forward_claims {
            if let Some(value) = claims.get(claim) {
                if req
                    .set_header_str(header, &claim_header_value(value))
                    .is_err()
                {
                    log::warn(&format!(
                        "jwt-auth: claim {claim} cannot be sent as header {header}"
                    ));
                }
            }
        }
        if settings.strip_token {
            match source {
                Source::Header => req.remove_header(&settings.header),
                Source::Query => {
                    if let Some(name) = &settings.query {
                        if let Err(e) = strip_query_param(req, name) {
                            log::warn(&format!("jwt-auth: cannot strip the token: {e}"));
                        }
                    }
                }
            }
        }
        Decision::Continue
    }
}

// Exported only for the wasm target: natively (unit tests) the component export names,
// which contain `:` and `/`, break the linker's version script for a cdylib.
#[cfg(target_arch = "wasm32")]
export_plugin!(JwtAuth);
