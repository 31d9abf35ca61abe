//! Watching the plugins directory: debounced file events become loads, swaps and removals.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use sha2::Digest;
use tokio::sync::mpsc;

use super::loader::{Loader, Source};
use super::registry::PluginRegistry;
use super::rollout::Canary;
use crate::fswatch::may_change_content;
use crate::plugins::runtime::engine::{hex, Flavor, Tier};
use crate::plugins::runtime::error::LoadError;
use crate::plugins::PluginName;

/// Why the plugins directory cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The directory cannot be created or listed.
    #[error("plugins directory {dir}: {source}")]
    Dir {
        /// The directory.
        dir: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The OS file watcher failed.
    #[error("cannot watch plugins directory {dir}: {source}")]
    Notify {
        /// The directory.
        dir: String,
        /// The watcher error.
        source: notify::Error,
    },
}

/// The plugin name for `path`, if it is a plugin file: `<name>.wasm` with a valid name.
/// Editor backups and temp files (`.x.wasm.swp`, `x.wasm~`, `x.wasm.tmp`, `.#x.wasm`) are not.
pub fn plugin_name(path: &Path) -> Option<PluginName> {
    let file = path.file_name()?.to_str()?;
    let stem = file.strip_suffix(".wasm")?;
    PluginName::new(stem).ok()
}

/// Load (or reload) the plugin file at `path`, or deactivate it if the file is gone.
/// A file whose content is unchanged is not recompiled. A version that went live as a
/// baseline build is optimized in the background and swapped in when ready.
pub async fn sync_path(loader: &Arc<Loader>, registry: &Arc<PluginRegistry>, path: &Path) {
    let Some(name) = plugin_name(path) else {
        return;
    };
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if registry.get(&name).is_some() {
                registry.remove(&name);
                tracing::info!(plugin = %name, "plugin file removed; plugin unloaded");
            }
            return;
        }
        Err(source) => {
            let error = LoadError::Read {
                path: path.display().to_string(),
                source,
            };
            tracing::error!(plugin = %name, error = %error, "cannot read plugin file; keeping the previous version");
            registry.reject(&name, None, &error);
            registry.count_load(&name, false);
            return;
        }
    };
    let hash = hex(&sha2::Sha256::digest(&bytes));
    if registry
        .canary(&name)
        .is_some_and(|c| c.version.load().hash == hash)
    {
        return; // already being rolled out
    }
    if registry.get(&name).is_some_and(|p| p.hash == hash) {
        // The serving bytes are back (e.g. a bad build replaced by the good one again).
        registry.clear_failure(&name);
        return;
    }
    match loader.load_read(name.clone(), path, bytes).await {
        Ok(plugin) => {
            registry.count_load(&name, true);
            tracing::info!(plugin = %name, hash = %plugin.hash, from_cache = plugin.from_cache,
                tier = plugin.tier.as_str(), load_ms = plugin.load_time.as_millis() as u64,
                "plugin loaded");
            let optimize =
                (plugin.tier == Tier::Baseline).then(|| (plugin.hash.clone(), plugin.flavor));
            let policy = registry.rollout_policy();
            if policy.staged() && registry.get(&name).is_some() {
                let first = policy.steps.first().copied().unwrap_or(100);
                let canary = registry.begin_rollout(plugin, first);
                tracing::info!(plugin = %name, hash = %hash, share = first,
                    "rolling the new plugin version out beside the serving one");
                roll_out(registry.clone(), name.clone(), canary);
            } else {
                registry.install(plugin);
            }
            if let Some((hash, flavor)) = optimize {
                let source = Source::File(path.to_owned());
                optimize_later(loader.clone(), registry.clone(), name, hash, flavor, source);
            }
        }
        Err(error) => {
            let serving = registry.get(&name).map(|p| p.hash.clone());
            tracing::error!(plugin = %name, hash = %hash, error = %error,
                serving = serving.as_deref().unwrap_or("none"),
                "plugin rejected; the previous version keeps serving");
            registry.reject(&name, Some(hash), &error);
            registry.count_load(&name, false);
        }
    }
}

/// Compile the optimized build of the baseline version `hash` of `name` in the background
/// and swap it in, unless a newer version replaced it first.
fn optimize_later(
    loader: Arc<Loader>,
    registry: Arc<PluginRegistry>,
    name: PluginName,
    hash: String,
    flavor: Flavor,
    source: Source,
) {
    let serving = {
        let (registry, name, hash) = (registry.clone(), name.clone(), hash.clone());
        move || registry.get(&name).is_some_and(|p| p.hash == hash)
    };
    tokio::spawn(async move {
        match loader
            .optimize(name.clone(), hash.clone(), flavor, source, serving)
            .await
        {
            Ok(Some(optimized)) => {
                let load_ms = optimized.load_time.as_millis() as u64;
                if registry.upgrade(optimized) {
                    tracing::info!(plugin = %name, hash = %hash, load_ms,
                        "optimized build of the plugin now serving");
                }
            }
            Ok(None) => {}
            // The baseline build stays: slower, but correct.
            Err(error) => tracing::warn!(plugin = %name, hash = %hash, error = %error,
                "optimized compile failed; the baseline build keeps serving"),
        }
    });
}

/// How often a rollout's failure ratio is judged within a step.
const ROLLOUT_CHECK: Duration = Duration::from_millis(100);

/// Drive the rollout of `canary`: each step of the policy for `step_interval`, judged every
/// [`ROLLOUT_CHECK`]; rolled back as soon as its failure ratio is over the threshold,
/// promoted after the last step. Stops when the candidate is no longer the current one
/// (promoted or rolled back by hand, replaced by a newer file, removed).
fn roll_out(registry: Arc<PluginRegistry>, name: PluginName, canary: Arc<Canary>) {
    let policy = registry.rollout_policy().clone();
    tokio::spawn(async move {
        let current = || {
            registry
                .canary(&name)
                .is_some_and(|c| Arc::ptr_eq(&c, &canary))
        };
        let hash = canary.version.load().hash.clone();
        for &share in &policy.steps {
            canary.set_share(share);
            let step_end = tokio::time::Instant::now() + policy.step_interval;
            loop {
                if !current() {
                    return;
                }
                if let Some(reason) = canary.verdict(&policy) {
                    if registry.rollback(&name, &reason).is_ok() {
                        tracing::warn!(plugin = %name, hash = %hash, "{reason}; the previous version keeps serving");
                    }
                    return;
                }
                let now = tokio::time::Instant::now();
                if now >= step_end {
                    break;
                }
                tokio::time::sleep(ROLLOUT_CHECK.min(step_end - now)).await;
            }
        }
        if current() && registry.promote(&name).is_ok() {
            let (invocations, failures) = canary.counts();
            tracing::info!(plugin = %name, hash = %hash, invocations, failures,
                "new plugin version promoted after its rollout");
        }
    });
}

/// Load every plugin file in `dir` (creating the directory if missing).
pub async fn load_dir(
    loader: &Arc<Loader>,
    registry: &Arc<PluginRegistry>,
    dir: &Path,
) -> Result<(), WatchError> {
    let err = |source| WatchError::Dir {
        dir: dir.display().to_string(),
        source,
    };
    tokio::fs::create_dir_all(dir).await.map_err(err)?;
    let mut entries = tokio::fs::read_dir(dir).await.map_err(err)?;
    let mut paths = BTreeSet::new();
    while let Some(entry) = entries.next_entry().await.map_err(err)? {
        paths.insert(entry.path());
    }
    for path in paths {
        sync_path(loader, registry, &path).await;
    }
    Ok(())
}

/// A running watcher; dropping it stops watching.
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The paths of `dir`'s entries whose content may have changed, in batches as notify reports
/// them; events stop when the returned watcher is dropped.
fn content_events(
    dir: &Path,
) -> Result<
    (
        notify::RecommendedWatcher,
        mpsc::UnboundedReceiver<Vec<PathBuf>>,
    ),
    WatchError,
> {
    let notify_error = |source| WatchError::Notify {
        dir: dir.display().to_string(),
        source,
    };
    let (tx, rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(event) if may_change_content(&event.kind) => {
                // The receiver is gone only when the watcher is being dropped.
                let _ = tx.send(event.paths);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "plugins directory watch error"),
        }
    })
    .map_err(notify_error)?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(notify_error)?;
    Ok((watcher, rx))
}

/// Watch `dir`: after `debounce` without further events, reload each changed plugin file.
pub fn watch(
    loader: Arc<Loader>,
    registry: Arc<PluginRegistry>,
    dir: &Path,
    debounce: Duration,
) -> Result<PluginWatcher, WatchError> {
    let (watcher, mut rx) = content_events(dir)?;
    let task = tokio::spawn(async move {
        let mut pending = BTreeSet::new();
        while let Some(paths) = rx.recv().await {
            pending.extend(paths.into_iter().filter(|p| plugin_name(p).is_some()));
            // Debounce: wait until the directory has been quiet for `debounce`.
            loop {
                match tokio::time::timeout(debounce, rx.recv()).await {
                    Ok(Some(paths)) => {
                        pending.extend(paths.into_iter().filter(|p| plugin_name(p).is_some()))
                    }
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            for path in std::mem::take(&mut pending) {
                sync_path(&loader, &registry, &path).await;
            }
        }
    });
    Ok(PluginWatcher {
        _watcher: watcher,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plugin_files_have_names() {
        assert_eq!(
            plugin_name(Path::new("/p/auth-jwt.wasm")).map(|n| n.to_string()),
            Some("auth-jwt".to_string())
        );
        for temp in [
            ".auth.wasm.swp",
            "auth.wasm~",
            "auth.wasm.tmp",
            ".#auth.wasm",
            "4913",
            "a b.wasm",
        ] {
            assert!(
                plugin_name(Path::new(temp)).is_none(),
                "{temp} is not a plugin"
            );
        }
    }

    /// Reading a plugin file (as the watcher itself does to hash it) is not a change; writing
    /// one is. inotify reports events in order, so once the write to `b` arrives, an event for
    /// the read of `a` would already have arrived before it.
    #[tokio::test]
    async fn reading_a_plugin_file_is_not_a_change() {
        let dir = std::env::temp_dir().join(format!("gatehouse-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.wasm"), dir.join("b.wasm"));
        std::fs::write(&a, b"a").unwrap();
        let (_watcher, mut rx) = content_events(&dir).unwrap();

        std::fs::read(&a).unwrap();
        std::fs::write(&b, b"b").unwrap();

        let mut before_b = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let paths = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("no event for the write to b.wasm")
                .expect("watcher stopped");
            if paths.contains(&b) {
                break;
            }
            before_b.extend(paths);
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            !before_b.contains(&a),
            "reading a.wasm was reported as a change: {before_b:?}"
        );
    }
}
