//! `[compression]` and `[routes.compression]` (docs/compression.md); converts into
//! `compression::CompressionPolicy`.

use serde::Deserialize;
use toml::Spanned;

use super::validate::Validator;
use crate::compression::{CompressionPolicy, Encoding, TypePattern};

/// `[compression]`, or a route's `[routes.compression]`: the table's presence turns
/// compression on (`enabled = false` turns it off); in a route's table, every key left out
/// takes the global table's value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    /// Default true where the table is written; compression is off without any table.
    pub enabled: Option<Spanned<bool>>,
    /// Codings offered, the server's preference first. Default `["br", "zstd", "gzip"]`.
    pub algorithms: Option<Spanned<Vec<Spanned<String>>>>,
    /// 1-9. Default 5.
    pub gzip_level: Option<Spanned<i64>>,
    /// 0-11. Default 4.
    pub brotli_level: Option<Spanned<i64>>,
    /// 1-22. Default 3.
    pub zstd_level: Option<Spanned<i64>>,
    /// Responses declaring a smaller Content-Length are sent as they are. Default 1024.
    pub min_bytes: Option<Spanned<i64>>,
    /// `type/subtype`, `type/*` or `*/*+suffix`. Default: text and text-based API types.
    pub content_types: Option<Spanned<Vec<Spanned<String>>>>,
}

/// The global table as a base for the routes: its policy (defaults filled in) and whether
/// it turns compression on for every route.
pub(super) fn global(
    v: &mut Validator<'_>,
    raw: Option<&RawCompression>,
) -> (CompressionPolicy, bool) {
    let base = CompressionPolicy::default();
    match raw {
        None => (base, false),
        Some(raw) => {
            let policy = overlay(v, raw, base, "compression");
            let enabled = raw.enabled.as_ref().is_none_or(|e| *e.get_ref());
            (policy, enabled)
        }
    }
}

/// A route's policy: its own table over the global one, or the global one if it is on.
pub(super) fn route(
    v: &mut Validator<'_>,
    raw: Option<&RawCompression>,
    at: &str,
    global: &(CompressionPolicy, bool),
) -> Option<CompressionPolicy> {
    let (base, globally_on) = global;
    let Some(raw) = raw else {
        return globally_on.then(|| base.clone());
    };
    let policy = overlay(v, raw, base.clone(), &format!("{at}.compression"));
    raw.enabled
        .as_ref()
        .is_none_or(|e| *e.get_ref())
        .then_some(policy)
}

/// `base` with the keys `raw` sets replaced; problems reported under `at`.
fn overlay(
    v: &mut Validator<'_>,
    raw: &RawCompression,
    mut policy: CompressionPolicy,
    at: &str,
) -> CompressionPolicy {
    if let Some(list) = &raw.algorithms {
        let mut algorithms = Vec::new();
        for (j, name) in list.get_ref().iter().enumerate() {
            let field = format!("{at}.algorithms[{j}]");
            match Encoding::parse(name.get_ref()) {
                Some(e) if algorithms.contains(&e) => v.problem(
                    name.span(),
                    field,
                    format!("{:?} is listed twice", name.get_ref()),
                ),
                Some(e) => algorithms.push(e),
                None => v.problem(
                    name.span(),
                    field,
                    format!(
                        "{:?} is not a coding the gateway produces; expected {}",
                        name.get_ref(),
                        Encoding::NAMES
                    ),
                ),
            }
        }
        if list.get_ref().is_empty() {
            v.problem(
                list.span(),
                format!("{at}.algorithms"),
                format!(
                    "lists no coding; name one or more of {}, or set enabled = false",
                    Encoding::NAMES
                ),
            );
        }
        if !algorithms.is_empty() {
            policy.algorithms = algorithms;
        }
    }
    for (value, encoding, slot) in [
        (&raw.gzip_level, Encoding::Gzip, &mut policy.gzip_level),
        (
            &raw.brotli_level,
            Encoding::Brotli,
            &mut policy.brotli_level,
        ),
        (&raw.zstd_level, Encoding::Zstd, &mut policy.zstd_level),
    ] {
        let Some(level) = value else { continue };
        let range = encoding.levels();
        match u32::try_from(*level.get_ref()) {
            Ok(n) if range.contains(&n) => *slot = n,
            _ => v.problem(
                level.span(),
                format!("{at}.{}_level", level_key(encoding)),
                format!(
                    "{} is not a {} level; expected {} to {}",
                    level.get_ref(),
                    level_key(encoding),
                    range.start(),
                    range.end()
                ),
            ),
        }
    }
    if let Some(min) = &raw.min_bytes {
        match u64::try_from(*min.get_ref()) {
            Ok(n) => policy.min_bytes = n,
            Err(_) => v.problem(
                min.span(),
                format!("{at}.min_bytes"),
                format!(
                    "{} is not a size; expected a number of bytes, 0 or more",
                    min.get_ref()
                ),
            ),
        }
    }
    if let Some(list) = &raw.content_types {
        let mut types = Vec::new();
        for (j, t) in list.get_ref().iter().enumerate() {
            match TypePattern::parse(t.get_ref()) {
                Some(p) => types.push(p),
                None => v.problem(
                    t.span(),
                    format!("{at}.content_types[{j}]"),
                    format!(
                        "{:?} is not a media type pattern; expected \"type/subtype\", \
                         \"type/*\" or \"*/*+suffix\" (e.g. \"application/json\", \"text/*\", \
                         \"*/*+json\")",
                        t.get_ref()
                    ),
                ),
            }
        }
        policy.content_types = types;
    }
    policy
}

fn level_key(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Gzip => "gzip",
        Encoding::Brotli => "brotli",
        Encoding::Zstd => "zstd",
    }
}
