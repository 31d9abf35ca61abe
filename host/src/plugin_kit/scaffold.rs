//! `gatehouse plugin new`: a ready plugin project from templates embedded in the binary, so it
//! works offline and targets exactly the WIT this binary speaks (written into the project's
//! `wit/`). Every language's template implements the same sample behaviour, so the sample
//! test cases written beside it are the same too.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::KitError;
use crate::plugins::PluginName;

/// The WIT package the host implements, written into every project.
const HOST_WIT: &str = include_str!("../../../wit/plugin.wit");

const README: &str = include_str!("../../templates/common/README.md.tmpl");
const GITIGNORE: &str = include_str!("../../templates/common/gitignore.tmpl");
const RUST_CARGO: &str = include_str!("../../templates/rust/Cargo.toml.tmpl");
const RUST_LIB: &str = include_str!("../../templates/rust/lib.rs.tmpl");
const RUST_BUILD: &str = include_str!("../../templates/rust/build.sh.tmpl");
const JS_PLUGIN: &str = include_str!("../../templates/js/plugin.js.tmpl");
const JS_BUILD: &str = include_str!("../../templates/js/build.sh.tmpl");
const JS_PACKAGE: &str = include_str!("../../templates/js/package.json.tmpl");
const PY_APP: &str = include_str!("../../templates/python/app.py.tmpl");
const PY_BUILD: &str = include_str!("../../templates/python/build.sh.tmpl");

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Rust with `wit-bindgen` (crates.io), built with cargo for wasm32-wasip2.
    Rust,
    /// JavaScript, built with jco/componentize-js (npm).
    Js,
    /// Python, built with componentize-py (PyPI).
    Python,
}

impl FromStr for Language {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rust" => Ok(Language::Rust),
            "js" | "javascript" => Ok(Language::Js),
            "python" | "py" => Ok(Language::Python),
            other => Err(format!(
                "unknown language `{}`: use rust, js or python",
                other.escape_debug()
            )),
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Language::Rust => "Rust",
            Language::Js => "JavaScript",
            Language::Python => "Python",
        })
    }
}

/// The hooks a new plugin exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hooks {
    /// `request-hook`.
    pub request: bool,
    /// `response-hook`.
    pub response: bool,
    /// `failure-hook`.
    pub failure: bool,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            request: true,
            response: false,
            failure: false,
        }
    }
}

impl FromStr for Hooks {
    type Err = String;
    /// A comma-separated list: `request,response,failure`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut hooks = Hooks {
            request: false,
            response: false,
            failure: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "request" => hooks.request = true,
                "response" => hooks.response = true,
                "failure" => hooks.failure = true,
                other => {
                    return Err(format!(
                        "unknown hook `{}`: use request, response or failure",
                        other.escape_debug()
                    ))
                }
            }
        }
        if !(hooks.request || hooks.response || hooks.failure) {
            return Err("name at least one hook: request, response or failure".into());
        }
        Ok(hooks)
    }
}

impl Hooks {
    fn names(&self) -> Vec<&'static str> {
        [
            (self.request, "request"),
            (self.response, "response"),
            (self.failure, "failure"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// What to write.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    /// The plugin's name: its file name in the plugins directory without `.wasm`.
    pub name: String,
    /// Its language.
    pub language: Language,
    /// Its hooks.
    pub hooks: Hooks,
    /// The project directory to create (must not exist or be empty).
    pub dir: PathBuf,
}

/// The version of the host's WIT package (`package gatehouse:plugin@X;`).
pub fn wit_version() -> &'static str {
    HOST_WIT
        .lines()
        .find_map(|l| l.trim().strip_prefix("package gatehouse:plugin@"))
        .and_then(|v| v.strip_suffix(';'))
        .unwrap_or("0.1.2")
}

/// Write the project; returns the files written, relative to the project directory.
pub fn write(new: &NewPlugin) -> Result<Vec<PathBuf>, KitError> {
    PluginName::new(&new.name).map_err(KitError::Scaffold)?;
    if !new.name.starts_with(|c: char| c.is_ascii_lowercase())
        || new.name.bytes().any(|b| b.is_ascii_uppercase())
    {
        return Err(KitError::Scaffold(format!(
            "invalid plugin name `{}`: start with a lower-case letter and use lower-case \
             letters, digits, `-` or `_` (it names the crate or package too)",
            new.name.escape_debug()
        )));
    }
    if new.dir.exists()
        && std::fs::read_dir(&new.dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(KitError::Scaffold(format!(
            "{} already exists and is not empty; pick another directory (--dir)",
            new.dir.display()
        )));
    }
    let files = files(new);
    for (path, text) in &files {
        let full = new.dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|source| KitError::Read {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&full, text).map_err(|source| KitError::Read {
            path: full.clone(),
            source,
        })?;
        if path.extension().is_some_and(|e| e == "sh") {
            make_executable(&full)?;
        }
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<(), KitError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|source| {
        KitError::Read {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> Result<(), KitError> {
    Ok(())
}

/// Every file of the project, with its text.
fn files(new: &NewPlugin) -> Vec<(PathBuf, String)> {
    let hooks = new.hooks;
    let crate_name = new.name.replace('-', "_");
    let version = wit_version();
    let render = |template: &str, build: &str| {
        let mut text = sections(template, hooks);
        for (key, value) in [
            ("{{name}}", new.name.as_str()),
            ("{{crate}}", crate_name.as_str()),
            ("{{hooks}}", &hooks.names().join(", ")),
            ("{{version}}", version),
            ("{{language}}", &new.language.to_string()),
            ("{{build}}", build),
        ] {
            text = text.replace(key, value);
        }
        text
    };
    let mut out: Vec<(PathBuf, String)> = Vec::new();
    let mut add = |path: &str, text: String| out.push((PathBuf::from(path), text));
    let build = match new.language {
        Language::Rust => "rustup target add wasm32-wasip2   # once\n./build.sh                        # cargo build --release --target wasm32-wasip2",
        Language::Js => "./build.sh   # npm install on first use, then jco componentize",
        Language::Python => "pip install componentize-py==0.25.1   # once (a venv is fine)\n./build.sh                            # componentize-py componentize",
    };
    match new.language {
        Language::Rust => {
            add("Cargo.toml", render(RUST_CARGO, build));
            add("src/lib.rs", render(RUST_LIB, build));
            add("build.sh", render(RUST_BUILD, build));
        }
        Language::Js => {
            add("plugin.js", render(JS_PLUGIN, build));
            add("package.json", render(JS_PACKAGE, build));
            add("build.sh", render(JS_BUILD, build));
        }
        Language::Python => {
            add("app.py", render(PY_APP, build));
            add("build.sh", render(PY_BUILD, build));
        }
    }
    add("README.md", render(README, build));
    add(".gitignore", GITIGNORE.to_string());
    add("wit/deps/gatehouse-plugin/plugin.wit", HOST_WIT.to_string());
    add("wit/world.wit", world(hooks, version));
    for (name, text) in cases(new, hooks) {
        add(&format!("cases/{name}.toml"), text);
    }
    out
}

/// Keep the `{{#hook}}...{{/hook}}` sections of the hooks the plugin has, drop the others.
fn sections(template: &str, hooks: Hooks) -> String {
    let mut text = template.to_string();
    for (on, hook) in [
        (hooks.request, "request"),
        (hooks.response, "response"),
        (hooks.failure, "failure"),
    ] {
        let (open, close) = (format!("{{{{#{hook}}}}}"), format!("{{{{/{hook}}}}}"));
        while let Some(start) = text.find(&open) {
            let Some(end) = text[start..].find(&close).map(|e| start + e) else {
                break;
            };
            let inner = text[start + open.len()..end].to_string();
            let replacement = if on { inner } else { String::new() };
            text.replace_range(start..end + close.len(), &replacement);
        }
    }
    text
}

/// The project's world: the host's imports and the chosen hooks.
fn world(hooks: Hooks, version: &str) -> String {
    let mut text = format!(
        "// The world this plugin targets: every import the gateway offers, and its hooks.\n\
         package local:plugin;\n\nworld plugin {{\n  include gatehouse:plugin/imports@{version};\n"
    );
    for hook in hooks.names() {
        text.push_str(&format!(
            "  export gatehouse:plugin/{hook}-hook@{version};\n"
        ));
    }
    text.push_str("}\n");
    text
}

/// Sample test cases for the template's behaviour.
fn cases(new: &NewPlugin, hooks: Hooks) -> Vec<(&'static str, String)> {
    let name = &new.name;
    let mut out = Vec::new();
    let response_header = if hooks.response {
        format!("\n[expect.response.headers]\nx-plugin = \"{name}\"\n")
    } else {
        String::new()
    };
    let request_changes = if hooks.request {
        "\n[expect.request.set_headers]\nx-greeting = \"hi\"\n"
    } else {
        ""
    };
    out.push((
        "passes",
        format!(
            "description = \"an ordinary request goes on upstream{}\"\n\n\
             [plugin]\nconfig = {{ greeting = \"hi\" }}\n\n\
             [request]\nmethod = \"GET\"\npath = \"/hello\"\n\n\
             [upstream]\nstatus = 200\nbody = \"from the origin\"\n\n\
             [expect]\noutcome = \"continue\"\n\n\
             [expect.response]\nstatus = 200\nbody = \"from the origin\"\n{response_header}{request_changes}",
            if hooks.request { ", greeted" } else { "" }
        ),
    ));
    if hooks.request {
        out.push((
            "denies",
            "description = \"a request with x-deny is answered 403 and never goes upstream\"\n\n\
             [request]\npath = \"/hello\"\nheaders = { x-deny = \"1\" }\n\n\
             [expect]\noutcome = \"respond\"\n\n\
             [expect.response]\nstatus = 403\nheaders = { content-type = \"application/json\" }\n"
                .to_string(),
        ));
    }
    if hooks.failure {
        out.push((
            "upstream-down",
            "description = \"an upstream failure is answered 503 with its kind\"\n\n\
             [request]\npath = \"/hello\"\n\n\
             [upstream]\nfailure = { kind = \"connect\", message = \"connection refused\" }\n\n\
             [expect]\noutcome = \"fallback\"\n\n\
             [expect.response]\nstatus = 503\nheaders = { content-type = \"application/json\" }\n"
                .to_string(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_of_missing_hooks_are_dropped() {
        let hooks = Hooks {
            request: true,
            response: false,
            failure: false,
        };
        assert_eq!(
            sections(
                "a{{#request}}R{{/request}}b{{#response}}S{{/response}}c",
                hooks
            ),
            "aRbc"
        );
    }

    #[test]
    fn the_world_exports_the_chosen_hooks() {
        let world = world("request,failure".parse().expect("hooks"), "0.1.2");
        assert!(world.contains("export gatehouse:plugin/request-hook@0.1.2;"));
        assert!(world.contains("export gatehouse:plugin/failure-hook@0.1.2;"));
        assert!(!world.contains("response-hook"));
    }

    #[test]
    fn bad_hooks_and_languages_are_named() {
        assert!("request,bogus"
            .parse::<Hooks>()
            .unwrap_err()
            .contains("bogus"));
        assert!("cobol".parse::<Language>().unwrap_err().contains("cobol"));
    }
}
