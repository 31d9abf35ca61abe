//! Reading a configuration: file → TOML → raw serde types → validated [`Config`].

use std::path::Path;

use super::model::RawConfig;
use super::{validate, Config, ConfigError, Problem};

/// The configuration `gatehouse run` uses when given no `--config`.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// The `source` of a config loaded from [`EMBEDDED_DEFAULT`].
pub const EMBEDDED_SOURCE: &str = "<embedded default>";

/// Reads, parses and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    load_str(&text, &file)
}

/// Parses and validates configuration text; `file` names it in errors, and relative paths in
/// it (plugin `files`) resolve against `file`'s directory (the working directory for a bare
/// name such as `<embedded default>`).
pub fn load_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    load_text(
        text,
        file,
        Path::new(file).parent().unwrap_or(Path::new("")),
    )
}

/// Parses and validates configuration text that is not a file (an etcd key's value): `name`
/// names it in errors and becomes [`Config::source`]; relative paths in it (plugins.dir,
/// certificates, plugin `files`) resolve against `base`.
///
/// Every problem is reported at once: serde stops at the first unknown key, so each one found
/// is blanked out of the text (offsets and lines unchanged) and the text parsed again; what
/// then parses is validated too.
pub fn load_text(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
    let mut text = text.to_owned();
    let mut problems: Vec<Problem> = Vec::new();
    let mut blanked_at = None;
    let raw = loop {
        match parse(&text, file)? {
            Ok(raw) => break raw,
            Err(Rejected { problem, cut }) => {
                // A required key blanked for its bad value is not missing as well.
                if problems
                    .iter()
                    .any(|p| problem.missing_key().as_ref() == Some(&p.field))
                {
                    return Err(invalid(file, problems));
                }
                problems.push(problem);
                // Go on past anything that can be cut out cleanly, once.
                let next = cut
                    .filter(|&at| blanked_at != Some(at) && problems.len() < MAX_PROBLEMS)
                    .and_then(|at| Some((at, blank_key(&text, at)?)));
                let Some((at, next)) = next else {
                    return Err(invalid(file, problems));
                };
                blanked_at = Some(at);
                text = next;
            }
        }
    };
    match validate::validate(raw, &text, file, base) {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(invalid(file, problems)),
        Err(ConfigError::Invalid { problems: more, .. }) => {
            problems.extend(more);
            Err(invalid(file, problems))
        }
        Err(other) => Err(other),
    }
}

/// Enough to list every typo in a real file, few enough that a pathological one ends quickly.
const MAX_PROBLEMS: usize = 64;

fn invalid(file: &str, mut problems: Vec<Problem>) -> ConfigError {
    // In file order, whichever step found them.
    problems.sort_by_key(|p| (p.line, p.column));
    ConfigError::Invalid {
        file: file.to_owned(),
        problems,
    }
}

/// A TOML document that does not fit the config's shape.
struct Rejected {
    problem: Problem,
    /// Where the offending key (unknown) or value (wrong type) starts: cutting that key out
    /// lets parsing go on to the next problem.
    cut: Option<usize>,
}

impl Problem {
    /// `routes[0].name` for "missing key `name`" at `routes[0]`.
    fn missing_key(&self) -> Option<String> {
        let key = self
            .message
            .strip_prefix("missing key `")?
            .strip_suffix('`')?;
        Some(format!("{}.{key}", self.field))
    }
}

/// TOML syntax errors end loading (`Err`); a document that parses but does not fit the
/// shape is `Ok(Err(..))`, so the caller can go on looking for more problems.
fn parse(text: &str, file: &str) -> Result<Result<RawConfig, Rejected>, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| {
        let (line, column) = line_col(text, e.span().map_or(0, |s| s.start));
        ConfigError::Parse {
            file: file.to_owned(),
            line,
            column,
            field: "(syntax)".to_owned(),
            message: e.message().to_owned(),
        }
    })?;
    Ok(serde_path_to_error::deserialize(deserializer).map_err(|e| {
        // `Spanned` values add a private segment to the path; it means nothing to a user.
        let path = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "");
        let field = if path == "." {
            "(top level)".to_owned()
        } else {
            path
        };
        let inner = e.into_inner();
        let offset = inner.span().map_or(0, |s| s.start);
        let (line, column) = line_col(text, offset);
        let message = inner.message();
        let cuttable = [
            "unknown field",
            "invalid type",
            "invalid value",
            "invalid length",
        ]
        .iter()
        .any(|m| message.starts_with(m));
        Rejected {
            problem: Problem {
                line,
                column,
                field,
                message: in_toml_terms(message),
            },
            cut: (cuttable && inner.span().is_some()).then_some(offset),
        }
    }))
}

/// serde's messages in the words of a TOML file: keys, tables, arrays and integers rather than
/// fields, maps, sequences and `i64`.
fn in_toml_terms(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return match rest.split_once(", ") {
            Some((key, "there are no fields")) => {
                format!("unknown key {key}; this table takes none")
            }
            Some((key, expected)) => format!("unknown key {key}; {expected}"),
            None => format!("unknown key {rest}"),
        };
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("missing key {rest}");
    }
    let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|m| m.split_once(", expected "))
    else {
        return message.to_owned();
    };
    let expected = match expected {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "isize" => {
            "an integer"
        }
        "f32" | "f64" => "a number",
        "a sequence" => "an array",
        "a map" => "a table",
        e if e.starts_with("struct ") => "a table",
        e => e,
    };
    format!("expected {expected}, found {found}")
}

/// `text` with the key whose key or value starts at byte `at`, and that value, replaced by spaces (line breaks
/// kept, so every other offset, line and column stays the same), or `None` when no key starts
/// there or the result would not parse.
fn blank_key(text: &str, at: usize) -> Option<String> {
    let table = toml::de::DeTable::parse(text).ok()?;
    let (key, value) = find_key(table.get_ref(), at)?;
    let mut bytes = text.as_bytes().to_vec();
    let mut range = key.start..value.end;
    // In an inline table the key's comma goes too: `{ a = 1, typo = 2 }` → `{ a = 1 }`.
    let after = text[range.end..].find(|c: char| !c.is_whitespace());
    if let Some(i) = after.filter(|&i| text[range.end + i..].starts_with(',')) {
        range.end += i + 1;
    } else if let Some(i) = text[..range.start].rfind(|c: char| !c.is_whitespace()) {
        let closes = after.is_some_and(|a| text[range.end + a..].starts_with('}'));
        if closes && text[i..].starts_with(',') {
            range.start = i;
        }
    }
    for b in &mut bytes[range] {
        if *b != b'\n' && *b != b'\r' {
            *b = b' ';
        }
    }
    let blanked = String::from_utf8(bytes).ok()?;
    toml::de::DeTable::parse(&blanked).ok()?;
    Some(blanked)
}

type Span = std::ops::Range<usize>;

/// The spans of the key whose key or value starts at byte `at`, and of its value, searched
/// through nested tables and arrays.
fn find_key(table: &toml::de::DeTable<'_>, at: usize) -> Option<(Span, Span)> {
    table.iter().find_map(|(key, value)| {
        if key.span().start == at || value.span().start == at {
            Some((key.span(), value.span()))
        } else {
            find_in_value(value.get_ref(), at)
        }
    })
}

fn find_in_value(value: &toml::de::DeValue<'_>, at: usize) -> Option<(Span, Span)> {
    match value {
        toml::de::DeValue::Table(t) => find_key(t, at),
        toml::de::DeValue::Array(items) => {
            items.iter().find_map(|v| find_in_value(v.get_ref(), at))
        }
        _ => None,
    }
}

/// 1-based line and column of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let config = load_str(EMBEDDED_DEFAULT, EMBEDDED_SOURCE).expect("default config");
        assert!(!config.routes.is_empty());
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("a\nbc", 0), (1, 1));
        assert_eq!(line_col("a\nbc", 3), (2, 2));
    }
}
