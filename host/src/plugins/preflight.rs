//! `gatehouse check` for plugins: every plugin a route names is loaded as the gateway would
//! load it (file present, a component, compiles, fits the world, exports a hook,
//! instantiates), so a typo in a name or a wrong world shows before `run`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::reload::loader::Loader;
use super::runtime::engine::{EngineError, PluginEngine, PluginLimits};
use super::PluginName;

/// One plugin a config names that would not serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginProblem {
    /// The plugin's name.
    pub plugin: String,
    /// The routes naming it.
    pub routes: Vec<String>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for PluginProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "plugin {:?} (route {}): {}",
            self.plugin,
            self.routes.join(", "),
            self.message
        )
    }
}

/// The plugins of `uses` (route name, plugin name) whose file in `dir` is missing: cheap,
/// for the warning `run` logs at start.
pub fn missing_files<'a>(
    dir: &Path,
    uses: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<PluginProblem> {
    by_plugin(uses)
        .into_iter()
        .filter(|(plugin, _)| !dir.join(format!("{plugin}.wasm")).is_file())
        .map(|(plugin, routes)| PluginProblem {
            message: format!("no file {}", dir.join(format!("{plugin}.wasm")).display()),
            plugin: plugin.to_owned(),
            routes,
        })
        .collect()
}

/// Load every plugin of `uses` from `dir` with a throwaway engine (baseline compiler, no
/// artifact cache): the problems found, by plugin.
pub async fn check<'a>(
    dir: &Path,
    limits: &PluginLimits,
    uses: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<PluginProblem>, EngineError> {
    let wanted = by_plugin(uses);
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    // A small pool: one instance at a time is all a check makes.
    let limits = PluginLimits {
        max_instances: 4,
        ..limits.clone()
    };
    let loader = Loader::new(Arc::new(PluginEngine::new(limits)?), None);
    let mut problems = Vec::new();
    for (plugin, routes) in wanted {
        let path = dir.join(format!("{plugin}.wasm"));
        let problem = |message: String| PluginProblem {
            plugin: plugin.to_owned(),
            routes: routes.clone(),
            message,
        };
        let Ok(name) = PluginName::new(plugin) else {
            continue; // config validation reported the name already
        };
        if !path.is_file() {
            problems.push(problem(format!("no file {}", path.display())));
            continue;
        }
        if let Err(e) = loader.load_file(name, &path).await {
            problems.push(problem(format!("{}: {e}", path.display())));
        }
    }
    Ok(problems)
}

fn by_plugin<'a>(
    uses: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<&'a str, Vec<String>> {
    let mut out: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (route, plugin) in uses {
        let routes = out.entry(plugin).or_default();
        if !routes.iter().any(|r| r == route) {
            routes.push(route.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_plugin_and_every_route_once() {
        let dir = std::env::temp_dir().join(format!("gatehouse-preflight-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("here.wasm"), b"x").expect("write");
        let missing = missing_files(
            &dir,
            [("a", "here"), ("a", "gone"), ("b", "gone"), ("b", "gone")],
        );
        let _ = std::fs::remove_dir_all(&dir); // best effort: it is a temp dir
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(missing[0].plugin, "gone");
        assert_eq!(missing[0].routes, ["a", "b"]);
        assert!(
            missing[0].to_string().contains("gone.wasm"),
            "{}",
            missing[0]
        );
    }
}
