//! `--record`: write the observed outcome into a case file as its `[expect]` table.
//!
//! The toml crate in the tree does not keep comments when it rewrites a document, so the file
//! is edited as text: the old `[expect]` table (with its `[expect.*]` sub-tables) is cut out
//! and a freshly written one is put at the end. Everything else in the file, comments
//! included, stays as it was; comments inside the old `[expect]` are lost.

use std::path::Path;

use serde::Serialize;

use super::case::Expect;
use super::KitError;

/// `[expect]` as a document of its own.
#[derive(Serialize)]
pub struct ExpectTable {
    /// The table.
    pub expect: Expect,
}

/// Replace the `[expect]` of the case file at `path` with `expect`.
pub fn write(path: &Path, expect: &Expect) -> Result<(), KitError> {
    let text = std::fs::read_to_string(path).map_err(|source| KitError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table = toml::to_string(&ExpectTable {
        expect: expect.clone(),
    })
    .map_err(|e| KitError::Case {
        path: path.to_path_buf(),
        message: format!("cannot write the observed outcome: {e}"),
    })?;
    let mut kept = without_expect(&text).trim_end().to_string();
    kept.push_str("\n\n");
    kept.push_str(&table);
    std::fs::write(path, kept).map_err(|source| KitError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The header of a table line (`[a.b]` or `[[a]]`) without brackets, if `line` is one.
fn table_header(line: &str) -> Option<&str> {
    let line = line.trim();
    let line = line.split('#').next().unwrap_or(line).trim();
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    Some(
        inner
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim()
            .trim_matches('"'),
    )
}

fn is_expect(header: &str) -> bool {
    header == "expect" || header.starts_with("expect.")
}

/// `text` without the lines of its `[expect]` table and sub-tables.
fn without_expect(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for line in text.lines() {
        if let Some(header) = table_header(line) {
            inside = is_expect(header);
        }
        if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expect_table_and_its_subtables_are_cut_and_the_rest_kept() {
        let text = "# a case\n[request]\npath = \"/x\" # why\n\n[expect]\noutcome = \"respond\"\n\n[expect.response]\nstatus = 401\n\n[[services]]\nname = \"a\"\n";
        assert_eq!(
            without_expect(text),
            "# a case\n[request]\npath = \"/x\" # why\n\n[[services]]\nname = \"a\"\n"
        );
    }
}
