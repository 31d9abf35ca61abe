//! Run a gatehouse plugin's test cases from `cargo test`, with the same runner as
//! `gatehouse plugin test`: the gateway's own plugin runtime (engine, CPU deadline, memory
//! limit, body cap, loader checks), and canned services and upstream from the case files
//! (docs/plugins.md, "Case files").
//!
//! ```no_run
//! // tests/cases.rs of a plugin crate, after `cargo build --release --target wasm32-wasip2`:
//! #[test]
//! fn cases_pass() {
//!     gatehouse_plugin_test::assert_cases_pass(
//!         "target/wasm32-wasip2/release/my_plugin.wasm",
//!         "cases",
//!     );
//! }
//! ```
//!
//! Call these from a plain `#[test]` (not inside a tokio runtime): the runner starts its own.
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

pub use gatehouse::plugin_kit::{render, CaseReport, KitError, Report, RunOptions};

/// Run every case in `cases` (a case file, or a directory of them) against the plugin
/// component `wasm`. Compiled plugins are not cached between runs.
pub fn run_cases(wasm: impl AsRef<Path>, cases: impl AsRef<Path>) -> Result<Report, KitError> {
    gatehouse::plugin_kit::run_cases(
        wasm.as_ref(),
        &[PathBuf::from(cases.as_ref())],
        RunOptions::default(),
    )
}

/// Run the cases and panic with the readable report (diffs, calls, log lines) if one fails
/// or the run cannot start.
pub fn assert_cases_pass(wasm: impl AsRef<Path>, cases: impl AsRef<Path>) -> Report {
    let wasm = wasm.as_ref();
    let report = run_cases(wasm, cases)
        .unwrap_or_else(|e| panic!("cannot run the cases of {}: {e}", wasm.display()));
    assert!(report.ok(), "{}", render::text(&report));
    report
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_case_directory_is_an_error_naming_it() {
        let err =
            super::run_cases("nowhere.wasm", "no-such-cases-dir").expect_err("nothing to run");
        assert!(err.to_string().contains("no-such-cases-dir"), "{err}");
    }
}
