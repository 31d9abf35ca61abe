//! Plugin configuration: the `[plugins]` table, and each route's `plugins = [...]` chain and
//! `on_error`. Raw serde types, validated types, and their validation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::load::line_col;
use super::model::RawRoute;
use super::Problem;
pub use crate::plugins::{OnError as OnErrorConfig, PluginFile, RolloutPolicy, RoutePlugin};

/// `[plugins]`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugins {
    /// Directory of `.wasm` plugins, watched for changes. Default `plugins`.
    pub dir: Option<String>,
    /// Directory of compiled-artifact cache files. Default `<dir>/.cache`.
    pub cache_dir: Option<String>,
    /// Keep compiled artifacts on disk so restarts skip compilation. Default true.
    pub artifact_cache: Option<bool>,
    /// Hot-reload plugins when files in `dir` change. Default true.
    pub watch: Option<bool>,
    /// Serve a new plugin from a quick baseline (Winch) build while the optimized one
    /// compiles. Default true.
    pub tiered_compile: Option<bool>,
    /// How long one plugin hook may run (wall time in wasm, waiting on the host excluded).
    /// Default `100ms`.
    pub deadline: Option<Spanned<String>>,
    /// Linear memory one plugin instance may use, in MiB. Default 64.
    pub memory_limit_mib: Option<Spanned<i64>>,
    /// Largest body handed to or accepted from a plugin, in KiB. Default 1024.
    pub body_limit_kib: Option<Spanned<i64>>,
    /// Plugin instances alive at once (one per plugin per in-flight request). Default 1000.
    pub max_instances: Option<Spanned<i64>>,
    /// `[plugins.cache]`: where the `cache` import keeps entries (docs/scale-out.md).
    pub cache: Option<super::scale_out::RawStoreChoice>,
    /// How a new version of a serving plugin goes live. Default: at once.
    #[serde(default)]
    pub rollout: RawRollout,
}

/// `[plugins.rollout]`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    /// Percent of invocations the new version gets, step by step. Default `[100]` (at once).
    pub steps: Option<Spanned<Vec<i64>>>,
    /// How long each step lasts. Default `30s`.
    pub step_interval: Option<Spanned<String>>,
    /// Failed share of the new version's invocations past which it is rolled back.
    /// Default 0.05.
    pub max_failure_ratio: Option<Spanned<f64>>,
    /// Invocations before the ratio is judged. Default 20.
    pub min_invocations: Option<Spanned<i64>>,
}

/// One entry of a route's `plugins = [...]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoutePlugin {
    /// The plugin: its file name in the plugins directory without `.wasm`.
    pub name: Spanned<String>,
    /// The plugin's own config table, handed to it as JSON text. Default `{}`.
    #[serde(default)]
    pub config: toml::Table,
    /// Services the plugin may call. Default: none.
    #[serde(default)]
    pub calls: Vec<Spanned<String>>,
    /// The plugin's cache namespace. Default: no cache access.
    pub cache: Option<Spanned<String>>,
    /// Reuse instances across requests on this route instead of a fresh one per request:
    /// faster, but state a plugin keeps in memory survives into later requests. Default false.
    #[serde(default)]
    pub reuse_instances: bool,
    /// Read-only data files the plugin may read, by grant name: `{ descriptors = "x.pb" }`.
    /// Paths are relative to the config file's directory. Default: none.
    #[serde(default)]
    pub files: BTreeMap<String, Spanned<String>>,
    /// Rate limits of the route (`key = "plugin"`) the plugin may charge. Default: none.
    #[serde(default)]
    pub limits: Vec<Spanned<String>>,
    /// This entry's hook deadline. Default `plugins.deadline`.
    pub deadline: Option<Spanned<String>>,
    /// This entry's memory limit in MiB, at most `plugins.memory_limit_mib`. Default that.
    pub memory_limit_mib: Option<Spanned<i64>>,
    /// This entry's body cap in KiB. Default `plugins.body_limit_kib`.
    pub body_limit_kib: Option<Spanned<i64>>,
}

/// The largest data file a plugin may be granted. Files are held in memory for the life of
/// the config and copied into the plugin on each read, so they are meant to be small.
pub const PLUGIN_FILE_MAX_BYTES: u64 = 4 << 20;

/// The validated `[plugins]` table.
#[derive(Debug, Clone, Serialize)]
pub struct PluginsConfig {
    pub dir: PathBuf,
    /// `None`: no artifact cache.
    pub cache_dir: Option<PathBuf>,
    pub watch: bool,
    pub tiered_compile: bool,
    #[serde(serialize_with = "super::as_humantime")]
    pub deadline: Duration,
    pub memory_limit_mib: usize,
    pub body_limit_kib: usize,
    pub max_instances: u32,
    pub rollout: RolloutPolicy,
}

fn problem(
    text: &str,
    problems: &mut Vec<Problem>,
    span: std::ops::Range<usize>,
    field: String,
    message: String,
) {
    let (line, column) = line_col(text, span.start);
    problems.push(Problem {
        line,
        column,
        field,
        message,
    });
}

fn bounded(
    value: &Option<Spanned<i64>>,
    field: &str,
    default: usize,
    max: usize,
    text: &str,
    problems: &mut Vec<Problem>,
) -> usize {
    let Some(v) = value else { return default };
    match usize::try_from(*v.get_ref()) {
        Ok(n) if n > 0 && n <= max => n,
        _ => {
            problem(
                text,
                problems,
                v.span(),
                field.to_owned(),
                format!("{} must be an integer from 1 to {max}", v.get_ref()),
            );
            default
        }
    }
}

/// A hook deadline: from 1 ms to 60 s.
fn deadline(
    d: &Spanned<String>,
    field: String,
    text: &str,
    problems: &mut Vec<Problem>,
) -> Option<Duration> {
    match humantime::parse_duration(d.get_ref()) {
        Ok(v) if v >= Duration::from_millis(1) && v <= Duration::from_secs(60) => Some(v),
        _ => {
            problem(
                text,
                problems,
                d.span(),
                field,
                format!(
                    "{:?} is not a duration from 1ms to 60s, e.g. \"100ms\"",
                    d.get_ref()
                ),
            );
            None
        }
    }
}

/// Validate `[plugins]`; relative directories resolve against `base`, the config file's
/// directory.
pub(super) fn validate(
    raw: &RawPlugins,
    base: &Path,
    text: &str,
    problems: &mut Vec<Problem>,
) -> PluginsConfig {
    let dir = base.join(raw.dir.as_deref().unwrap_or("plugins"));
    let cache_dir = match (raw.artifact_cache.unwrap_or(true), &raw.cache_dir) {
        (false, _) => None,
        (true, Some(d)) => Some(base.join(d)),
        (true, None) => Some(dir.join(".cache")),
    };
    let deadline = raw
        .deadline
        .as_ref()
        .and_then(|d| deadline(d, "plugins.deadline".to_owned(), text, problems))
        .unwrap_or(Duration::from_millis(100));
    let rollout = rollout(&raw.rollout, text, problems);
    PluginsConfig {
        rollout,
        dir,
        cache_dir,
        watch: raw.watch.unwrap_or(true),
        tiered_compile: raw.tiered_compile.unwrap_or(true),
        deadline,
        memory_limit_mib: bounded(
            &raw.memory_limit_mib,
            "plugins.memory_limit_mib",
            64,
            4096,
            text,
            problems,
        ),
        body_limit_kib: bounded(
            &raw.body_limit_kib,
            "plugins.body_limit_kib",
            1024,
            1 << 20,
            text,
            problems,
        ),
        max_instances: bounded(
            &raw.max_instances,
            "plugins.max_instances",
            1000,
            100_000,
            text,
            problems,
        ) as u32,
    }
}

/// Validate `[plugins.rollout]`.
fn rollout(raw: &RawRollout, text: &str, problems: &mut Vec<Problem>) -> RolloutPolicy {
    let mut policy = RolloutPolicy::default();
    if let Some(steps) = &raw.steps {
        let v = steps.get_ref();
        let valid = !v.is_empty()
            && v.iter().all(|s| (1..=100).contains(s))
            && v.windows(2).all(|w| w[0] < w[1])
            && v.last() == Some(&100);
        if valid {
            policy.steps = v.iter().map(|&s| s as u8).collect();
        } else {
            problem(text, problems, steps.span(), "plugins.rollout.steps".to_owned(),
                format!("{v:?} is not a list of increasing percentages from 1 to 100 ending in 100, e.g. [5, 25, 100]"));
        }
    }
    if let Some(d) = &raw.step_interval {
        match humantime::parse_duration(d.get_ref()) {
            Ok(v) if v >= Duration::from_millis(100) && v <= Duration::from_secs(86_400) => {
                policy.step_interval = v
            }
            _ => problem(
                text,
                problems,
                d.span(),
                "plugins.rollout.step_interval".to_owned(),
                format!(
                    "{:?} is not a duration from 100ms to 24h, e.g. \"30s\"",
                    d.get_ref()
                ),
            ),
        }
    }
    if let Some(r) = &raw.max_failure_ratio {
        let v = *r.get_ref();
        if (0.0..=1.0).contains(&v) {
            policy.max_failure_ratio = v;
        } else {
            problem(
                text,
                problems,
                r.span(),
                "plugins.rollout.max_failure_ratio".to_owned(),
                format!("{v} is not a ratio from 0.0 to 1.0"),
            );
        }
    }
    if let Some(n) = &raw.min_invocations {
        match u64::try_from(*n.get_ref()) {
            Ok(v) if v >= 1 => policy.min_invocations = v,
            _ => problem(
                text,
                problems,
                n.span(),
                "plugins.rollout.min_invocations".to_owned(),
                format!("{} must be a positive integer", n.get_ref()),
            ),
        }
    }
    policy
}

fn is_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Read one granted data file (`base` is the config file's directory).
fn read_file(base: &Path, written: &str) -> Result<PluginFile, String> {
    let path = base.join(written);
    let meta = std::fs::metadata(&path).map_err(|e| format!("cannot read {written:?}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{written:?} is not a file"));
    }
    if meta.len() > PLUGIN_FILE_MAX_BYTES {
        return Err(format!(
            "{written:?} is {} bytes; granted files may be at most {PLUGIN_FILE_MAX_BYTES}",
            meta.len()
        ));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {written:?}: {e}"))?;
    Ok(PluginFile {
        path,
        bytes: Bytes::from(bytes),
    })
}

/// Validate one route's `plugins = [...]`; `base` is the directory `files` paths are relative to.
pub(super) fn validate_route(
    r: &RawRoute,
    at: &str,
    services: &BTreeSet<&str>,
    base: &Path,
    text: &str,
    problems: &mut Vec<Problem>,
) -> Vec<RoutePlugin> {
    let mut out = Vec::with_capacity(r.plugins.len());
    for (j, p) in r.plugins.iter().enumerate() {
        let here = format!("{at}.plugins[{j}]");
        let name = p.name.get_ref();
        if !is_name(name) {
            problem(text, problems, p.name.span(), format!("{here}.name"),
                format!("{name:?} is not a plugin name; use the file name without .wasm (ASCII letters, digits, '-', '_')"));
        }
        for c in &p.calls {
            if !services.contains(c.get_ref().as_str()) {
                problem(
                    text,
                    problems,
                    c.span(),
                    format!("{here}.calls"),
                    format!(
                        "no service named {:?} {}",
                        c.get_ref(),
                        super::validate::known_services(services)
                    ),
                );
            }
        }
        if let Some(ns) = &p.cache {
            if !is_name(ns.get_ref()) {
                problem(
                    text,
                    problems,
                    ns.span(),
                    format!("{here}.cache"),
                    format!(
                        "{:?} is not a cache namespace; use ASCII letters, digits, '-', '_'",
                        ns.get_ref()
                    ),
                );
            }
        }
        let mut files = BTreeMap::new();
        for (grant, path) in &p.files {
            let field = format!("{here}.files.{grant}");
            if !is_name(grant) {
                problem(
                    text,
                    problems,
                    path.span(),
                    field,
                    format!(
                        "{grant:?} is not a file grant name; use ASCII letters, digits, '-', '_'"
                    ),
                );
                continue;
            }
            match read_file(base, path.get_ref()) {
                Ok(file) => {
                    files.insert(grant.clone(), file);
                }
                Err(message) => problem(text, problems, path.span(), field, message),
            }
        }
        let deadline = p
            .deadline
            .as_ref()
            .and_then(|d| deadline(d, format!("{here}.deadline"), text, problems));
        let memory_limit_mib = p.memory_limit_mib.as_ref().map(|_| {
            bounded(
                &p.memory_limit_mib,
                &format!("{here}.memory_limit_mib"),
                64,
                4096,
                text,
                problems,
            )
        });
        let body_limit_kib = p.body_limit_kib.as_ref().map(|_| {
            bounded(
                &p.body_limit_kib,
                &format!("{here}.body_limit_kib"),
                1024,
                1 << 20,
                text,
                problems,
            )
        });
        out.push(RoutePlugin {
            deadline,
            memory_limit_mib,
            body_limit_kib,
            name: name.clone(),
            config: serde_json::to_value(&p.config).unwrap_or_else(|_| serde_json::json!({})),
            calls: p.calls.iter().map(|c| c.get_ref().clone()).collect(),
            cache: p.cache.as_ref().map(|c| c.get_ref().clone()),
            reuse_instances: p.reuse_instances,
            files,
            limits: p.limits.iter().map(|l| l.get_ref().clone()).collect(),
        });
    }
    out
}

/// Check each route entry's `memory_limit_mib` against `plugins.memory_limit_mib`: the
/// global value sizes the instance pool's memory slots, so an entry can only lower it.
pub(super) fn check_entry_memory(
    raw: &[RawRoute],
    global: &PluginsConfig,
    text: &str,
    problems: &mut Vec<Problem>,
) {
    for (i, r) in raw.iter().enumerate() {
        for (j, p) in r.plugins.iter().enumerate() {
            let Some(m) = &p.memory_limit_mib else {
                continue;
            };
            if usize::try_from(*m.get_ref()).is_ok_and(|m| m > global.memory_limit_mib) {
                problem(
                    text,
                    problems,
                    m.span(),
                    format!("routes[{i}].plugins[{j}].memory_limit_mib"),
                    format!(
                        "{} is over plugins.memory_limit_mib ({}); a plugin entry can only lower the global limit",
                        m.get_ref(),
                        global.memory_limit_mib
                    ),
                );
            }
        }
    }
}

/// Validate one route's `on_error`.
pub(super) fn on_error(
    r: &RawRoute,
    at: &str,
    text: &str,
    problems: &mut Vec<Problem>,
) -> OnErrorConfig {
    match r
        .on_error
        .as_ref()
        .map(|v| (v.get_ref().as_str(), v.span()))
    {
        None | Some(("fail-closed", _)) => OnErrorConfig::FailClosed,
        Some(("fail-open", _)) => OnErrorConfig::FailOpen,
        Some((other, span)) => {
            problem(
                text,
                problems,
                span,
                format!("{at}.on_error"),
                format!(
                    "{other:?} is not an error policy; expected \"fail-closed\" or \"fail-open\""
                ),
            );
            OnErrorConfig::FailClosed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_files_are_read_relative_to_the_config_and_capped() {
        let dir = std::env::temp_dir().join(format!("gatehouse-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("small.pb"), b"abc").expect("write small file");
        let big = vec![0u8; PLUGIN_FILE_MAX_BYTES as usize + 1];
        std::fs::write(dir.join("big.pb"), big).expect("write big file");
        let file = read_file(&dir, "small.pb").expect("small file is granted");
        assert_eq!(&file.bytes[..], b"abc");
        let err = read_file(&dir, "big.pb").expect_err("big file is refused");
        assert!(err.contains("at most 4194304"), "{err}");
        let err = read_file(&dir, ".").expect_err("a directory is refused");
        assert!(err.contains("not a file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir); // best effort: it is a temp dir
    }
}
