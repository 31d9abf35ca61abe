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
}
