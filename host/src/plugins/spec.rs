//! A route's plugin chain entries, as config hands them over (validated, files read).

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use serde::Serialize;

/// A data file granted to a plugin, read when the config was loaded.
#[derive(Debug, Clone, Serialize)]
pub struct PluginFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its contents (not shown in `/admin/config`).
    #[serde(skip)]
    pub bytes: Bytes,
}

/// A validated chain entry.
#[derive(Debug, Clone, Serialize)]
pub struct RoutePlugin {
    pub name: String,
    /// The plugin's config as JSON.
    pub config: serde_json::Value,
    pub calls: Vec<String>,
    pub cache: Option<String>,
    pub reuse_instances: bool,
    /// Granted data files by name.
    pub files: BTreeMap<String, PluginFile>,
    /// Granted rate limits (`key = "plugin"` limits of the route), by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<String>,
    /// This entry's hook deadline, if it overrides `plugins.deadline`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::serialize::as_humantime_opt"
    )]
    pub deadline: Option<std::time::Duration>,
    /// This entry's memory limit, if it lowers `plugins.memory_limit_mib`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_mib: Option<usize>,
    /// This entry's body cap, if it overrides `plugins.body_limit_kib`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_limit_kib: Option<usize>,
}
