//! Reading a configuration: file → TOML → raw serde types → validated [`Config`].

use std::path::Path;

use super::model::RawConfig;
use super::{validate, Config, ConfigError};

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
    let raw = parse(text, file)?;
    validate::validate(raw, text, file)
}

fn parse(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
    let located = |field: String, message: &str, span: Option<std::ops::Range<usize>>| {
        let (line, column) = line_col(text, span.map_or(0, |s| s.start));
        ConfigError::Parse {
            file: file.to_owned(),
            line,
            column,
            field,
            message: message.to_owned(),
        }
    };
    let deserializer = toml::Deserializer::parse(text)
        .map_err(|e| located("(syntax)".to_owned(), e.message(), e.span()))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
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
        located(field, inner.message(), inner.span())
    })
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
