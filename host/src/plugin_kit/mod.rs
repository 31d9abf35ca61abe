//! The plugin author's kit: `gatehouse plugin test` (run a plugin against TOML test cases on
//! the gateway's own runtime, with the outside world canned) and `gatehouse plugin new`
//! (write a ready project from templates embedded in the binary). docs/plugins.md describes
//! both and the case-file format.
//!
//! ```text
//! case.toml ─▶ case (model) ─▶ runner: PluginManager + PluginChain (as the gateway)
//!                                 ├─ canned: the services the plugin calls
//!                                 └─ logs: the plugin's log lines
//!            ◀─ record (--record) ◀─ outcome: observed vs expected ─▶ render (text, JSON)
//! ```

pub mod canned;
pub mod case;
pub mod logs;
pub mod outcome;
pub mod record;
pub mod render;
pub mod runner;
pub mod scaffold;

use std::path::{Path, PathBuf};

pub use case::{Case, CaseFile, Expect};
pub use runner::{CaseReport, Harness, Report, RunOptions};

/// Why a plugin test run or a scaffold could not go on.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A case file is not valid TOML or has unknown or mistyped keys.
    #[error("{}: {message}", path.display())]
    Case {
        /// The case file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// No case files where the run looked.
    #[error("no test cases (*.toml) found in {}", .0.join(", "))]
    NoCases(Vec<String>),
    /// The gateway would not load the plugin.
    #[error("{}: the gateway cannot load this plugin: {message}", path.display())]
    Plugin {
        /// The plugin file.
        path: PathBuf,
        /// The loader's error.
        message: String,
    },
    /// A scaffold request was invalid.
    #[error("{0}")]
    Scaffold(String),
}

/// Where a run looks for cases when none are named: `cases/` in the working directory (a
/// project written by `gatehouse plugin new`), else `cases/` beside the plugin file.
pub fn default_cases(wasm: &Path) -> PathBuf {
    let here = PathBuf::from("cases");
    if here.is_dir() {
        return here;
    }
    wasm.parent().unwrap_or(Path::new(".")).join("cases")
}

/// Load `wasm` as the gateway would and run the cases in `cases` (files or directories) on
/// a runtime of its own. For `cargo test` (the `gatehouse-plugin-test` crate) and the CLI;
/// call it outside any tokio runtime.
pub fn run_cases(wasm: &Path, cases: &[PathBuf], options: RunOptions) -> Result<Report, KitError> {
    let cases = case::collect(cases)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| KitError::Read {
            path: wasm.to_path_buf(),
            source,
        })?;
    runtime.block_on(async {
        let mut harness = Harness::load(wasm, options).await?;
        Ok(harness.run(&cases).await)
    })
}
