//! The test-case file of `gatehouse plugin test`: one TOML file per case, giving the plugin's
//! config and grants, the request, canned answers for the services it may call, the upstream's
//! answer for the later phases, and the expected outcome (docs/plugins.md, "Case files").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::KitError;

/// One test case, as read from its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case checks, shown in the report.
    #[serde(default)]
    pub description: Option<String>,
    /// The plugin's route entry: config and grants.
    #[serde(default)]
    pub plugin: PluginEntry,
    /// Limits for this case; each defaults to the gateway's `[plugins]` default.
    #[serde(default)]
    pub limits: CaseLimits,
    /// The client's request.
    #[serde(default)]
    pub request: CaseRequest,
    /// Canned answers for service calls, matched in order (first match wins).
    #[serde(default)]
    pub services: Vec<CannedService>,
    /// What the upstream does if the request goes on; default: 200 with an empty body.
    #[serde(default)]
    pub upstream: Upstream,
    /// The expected outcome; `None` until recorded (`--record`), and such a case fails.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// The plugin's entry in a route's `plugins = [...]`, as far as the plugin can tell.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// The route's `config` table for the plugin (the plugin reads it as JSON).
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// Services it may call (`calls`).
    #[serde(default)]
    pub calls: Vec<String>,
    /// Its cache namespace (`cache`); empty for each case.
    #[serde(default)]
    pub cache: Option<String>,
    /// Granted data files (`files`), by grant name: paths relative to the case file.
    #[serde(default)]
    pub files: BTreeMap<String, PathBuf>,
    /// The route name the plugin sees. Default `test-route`.
    #[serde(default)]
    pub route: Option<String>,
}

/// Per-case limits; unset ones are the gateway's defaults.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct CaseLimits {
    /// The CPU deadline of one hook call, in milliseconds (default 100).
    pub deadline_ms: Option<u64>,
    /// The memory limit of the instance, in bytes (default 64 MiB).
    pub memory_bytes: Option<usize>,
    /// The body cap, in bytes (default 1 MiB).
    pub body_cap_bytes: Option<usize>,
}

/// The client's request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseRequest {
    /// Default `GET`.
    #[serde(default = "get")]
    pub method: String,
    /// Path and query, e.g. `/users/7?full=1`. Default `/`.
    #[serde(default = "root")]
    pub path: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body, as text.
    #[serde(default)]
    pub body: String,
    /// The client address the plugin sees. Default `127.0.0.1:40000`.
    #[serde(default)]
    pub client_addr: Option<String>,
    /// The request id the plugin sees. Default `plugin-test`.
    #[serde(default)]
    pub request_id: Option<String>,
}

fn get() -> String {
    "GET".into()
}
fn root() -> String {
    "/".into()
}

impl Default for CaseRequest {
    fn default() -> Self {
        CaseRequest {
            method: get(),
            path: root(),
            headers: BTreeMap::new(),
            body: String::new(),
            client_addr: None,
            request_id: None,
        }
    }
}

/// A canned answer for calls to one service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CannedService {
    /// The service name the plugin calls.
    pub name: String,
    /// Answer only calls whose path and query start with this. Default: every call.
    #[serde(default)]
    pub path: Option<String>,
    /// The status. Default 200.
    #[serde(default = "ok")]
    pub status: u16,
    /// Response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Response body, as text.
    #[serde(default)]
    pub body: String,
    /// Response body as hex, for binary bodies (a gRPC frame); replaces `body`.
    #[serde(default)]
    pub body_hex: Option<String>,
    /// Wait this long before answering (real time; not counted in the plugin's CPU deadline).
    #[serde(default)]
    pub delay_ms: u64,
    /// Fail the call instead of answering: `timeout`, `failed` or `unknown-service`.
    #[serde(default)]
    pub failure: Option<CallFailure>,
}

fn ok() -> u16 {
    200
}

/// How a canned service call fails.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CallFailure {
    /// The host's timeout fired.
    Timeout,
    /// Connect, protocol or no healthy endpoint.
    Failed,
    /// No such service configured.
    UnknownService,
}

/// What the upstream does: answer, or fail (the failure phase then runs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Default 200.
    #[serde(default = "ok")]
    pub status: u16,
    /// Response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Response body, as text.
    #[serde(default)]
    pub body: String,
    /// Fail instead of answering: `kind` is `timeout`, `connect`, `unavailable`,
    /// `circuit-open`, `protocol` or `other`.
    #[serde(default)]
    pub failure: Option<UpstreamFailureSpec>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            status: ok(),
            headers: BTreeMap::new(),
            body: String::new(),
            failure: None,
        }
    }
}

/// An upstream failure handed to the failure phase.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFailureSpec {
    /// The kind, as the gateway names it.
    pub kind: String,
    /// The message. Default: the kind.
    #[serde(default)]
    pub message: Option<String>,
}

/// The expected outcome (and what `--record` writes).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `continue` (the request went upstream), `respond` (the request phase answered),
    /// `fallback` (the failure phase answered), `pass-on` (the upstream failed and no plugin
    /// answered), `trap`, `deadline`, `out-of-memory` or `error` (any other plugin failure).
    pub outcome: String,
    /// For a plugin failure: the phase it failed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// For a plugin failure: text the error message contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `continue`: what the request phase changed in the request sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestChanges>,
    /// For `continue`, `respond` and `fallback`: the response the client gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ExpectResponse>,
}

/// What the request phase changed. Compared exactly: an unexpected change fails the case.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestChanges {
    /// The new method, if changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The new path and query, if changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Headers added or changed, with their new value (several values joined by `, `).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set_headers: BTreeMap<String, String>,
    /// Headers removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_headers: Vec<String>,
    /// The new body, if changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// The response the client gets. `status` and `body` are compared when given; `headers`
/// lists the headers that must be present with these values (others are not checked).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExpectResponse {
    /// The status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Headers that must be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The whole body, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// A case read from its file.
#[derive(Debug, Clone)]
pub struct CaseFile {
    /// The case's name: its file name without `.toml`.
    pub name: String,
    /// Where it was read from.
    pub path: PathBuf,
    /// The case.
    pub case: Case,
}

impl CaseFile {
    /// Read and parse one case file.
    pub fn read(path: &Path) -> Result<Self, KitError> {
        let text = std::fs::read_to_string(path).map_err(|source| KitError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let case: Case = toml::from_str(&text).map_err(|e| KitError::Case {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Ok(CaseFile {
            name,
            path: path.to_path_buf(),
            case,
        })
    }
}

/// Every case file named by `paths` (files, or directories whose `*.toml` files are read, in
/// name order).
pub fn collect(paths: &[PathBuf]) -> Result<Vec<CaseFile>, KitError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| KitError::Read {
                path: path.clone(),
                source,
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    if files.is_empty() {
        return Err(KitError::NoCases(
            paths.iter().map(|p| p.display().to_string()).collect(),
        ));
    }
    files.iter().map(|p| CaseFile::read(p)).collect()
}
