//! The set of active plugins, swapped atomically on reload, and the status of every plugin
//! file for `GET /admin/plugins`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::loader::LoadedPlugin;
use super::rollout::{Canary, RolloutPolicy, RolloutStatus};
use crate::plugins::runtime::error::LoadError;
use crate::plugins::runtime::instance::HookSet;
use crate::plugins::PluginName;
use crate::telemetry::Metrics;

/// The active plugins at one moment. Requests take one snapshot when they start and keep
/// it, so in-flight requests finish on the version they started with.
pub type PluginSet = HashMap<PluginName, Arc<LoadedPlugin>>;

/// The candidates being rolled out, by plugin.
pub type CanarySet = HashMap<PluginName, Arc<Canary>>;

/// Why a manual promote or rollback was refused.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// No candidate of that plugin is being rolled out.
    #[error("plugin {0} has no rollout in progress")]
    NoRollout(String),
}

/// What the admin API reports for one plugin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    /// The plugin's name.
    pub name: String,
    /// `loaded` (serving), `failed` (the newest file was rejected; `hash` still serving, if
    /// any), or `removed` (file deleted).
    pub status: &'static str,
    /// SHA-256 of the version serving, if any.
    pub hash: Option<String>,
    /// When the serving version was loaded (RFC 3339).
    pub loaded_at: Option<String>,
    /// Hooks of the serving version.
    pub hooks: Vec<&'static str>,
    /// Hooks of the serving version that declared they do nothing (the Rust SDK's defaults
    /// do), so the chain no longer calls them. Learned from calls, so it fills as requests
    /// come.
    pub skipped_hooks: Vec<&'static str>,
    /// Whether the serving version came from the compiled-artifact cache.
    pub from_cache: Option<bool>,
    /// The engine the serving version runs on: `plain`, or `concurrent` for components that
    /// need component-model async (slower hook calls).
    pub engine: Option<&'static str>,
    /// The compiler of the serving version's code: `baseline` (Winch, serving while the
    /// optimized build compiles in the background) or `optimized` (Cranelift).
    pub tier: Option<&'static str>,
    /// Milliseconds it took to load the serving version.
    pub load_ms: Option<f64>,
    /// Why the newest file was rejected, if it was.
    pub last_error: Option<String>,
    /// SHA-256 of the rejected file, if any.
    pub failed_hash: Option<String>,
    /// The new version being rolled out beside the serving one, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// Active plugins behind an `ArcSwap`, and their statuses.
pub struct PluginRegistry {
    active: ArcSwap<PluginSet>,
    canaries: ArcSwap<CanarySet>,
    status: Mutex<BTreeMap<PluginName, PluginStatus>>,
    rollout: RolloutPolicy,
    /// Where load attempts are counted (`gatehouse_plugin_reloads_total`), if anywhere.
    metrics: Option<Arc<Metrics>>,
}

impl Default for PluginRegistry {
    fn default() -> Self {
        PluginRegistry {
            active: ArcSwap::from_pointee(HashMap::new()),
            canaries: ArcSwap::from_pointee(HashMap::new()),
            status: Mutex::new(BTreeMap::new()),
            rollout: RolloutPolicy::default(),
            metrics: None,
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl PluginRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry rolling new versions out under `policy`.
    pub fn with_rollout(policy: RolloutPolicy) -> Self {
        PluginRegistry {
            rollout: policy,
            ..Self::default()
        }
    }

    /// Counts every load attempt of a plugin file in `metrics`.
    pub fn counted_in(mut self, metrics: Option<Arc<Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// One version of `name` was loaded from its file, or was not (`loaded` false).
    pub fn count_load(&self, name: &PluginName, loaded: bool) {
        if let Some(metrics) = &self.metrics {
            metrics.plugin_reload(name.as_str(), loaded);
        }
    }

    /// How new versions of serving plugins go live.
    pub fn rollout_policy(&self) -> &RolloutPolicy {
        &self.rollout
    }

    /// The candidates being rolled out right now.
    pub fn canaries(&self) -> Arc<CanarySet> {
        self.canaries.load_full()
    }

    /// The candidate of `name` being rolled out, if any.
    pub fn canary(&self, name: &PluginName) -> Option<Arc<Canary>> {
        self.canaries.load().get(name).cloned()
    }

    fn set_canary(&self, name: &PluginName, canary: Option<Arc<Canary>>) {
        self.canaries.rcu(|set| {
            let mut set = CanarySet::clone(set);
            match &canary {
                Some(c) => set.insert(name.clone(), c.clone()),
                None => set.remove(name),
            };
            set
        });
    }

    /// Start rolling `candidate` out beside the serving version, at `share` percent of its
    /// invocations (replacing any candidate before it).
    pub fn begin_rollout(&self, candidate: LoadedPlugin, share: u8) -> Arc<Canary> {
        let _statuses = self.statuses();
        let name = candidate.name.clone();
        let canary = Arc::new(Canary::new(Arc::new(candidate), share));
        self.set_canary(&name, Some(canary.clone()));
        canary
    }

    /// Make the candidate of `name` the serving version. Its hash.
    pub fn promote(&self, name: &PluginName) -> Result<String, RolloutError> {
        let canary = self
            .canary(name)
            .ok_or_else(|| RolloutError::NoRollout(name.to_string()))?;
        let version = canary.version.load_full();
        self.install_arc(version.clone());
        Ok(version.hash.clone())
    }

    /// Drop the candidate of `name`, `reason` recorded as its failure; the serving version
    /// stays. The candidate's hash.
    pub fn rollback(&self, name: &PluginName, reason: &str) -> Result<String, RolloutError> {
        let mut statuses = self.statuses();
        let canary = self
            .canary(name)
            .ok_or_else(|| RolloutError::NoRollout(name.to_string()))?;
        self.set_canary(name, None);
        let hash = canary.version.load().hash.clone();
        if let Some(status) = statuses.get_mut(name) {
            status.status = "failed";
            status.last_error = Some(reason.to_owned());
            status.failed_hash = Some(hash.clone());
        }
        Ok(hash)
    }
    /// The active set right now.
    pub fn snapshot(&self) -> Arc<PluginSet> {
        self.active.load_full()
    }

    /// The active version of `name`.
    pub fn get(&self, name: &PluginName) -> Option<Arc<LoadedPlugin>> {
        self.active.load().get(name).cloned()
    }

    fn statuses(&self) -> std::sync::MutexGuard<'_, BTreeMap<PluginName, PluginStatus>> {
        // Each update replaces one whole entry, so a poisoned lock holds consistent data.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make `plugin` the active version of its name (ending any rollout of that name).
    pub fn install(&self, plugin: LoadedPlugin) {
        self.install_arc(Arc::new(plugin));
    }

    fn install_arc(&self, plugin: Arc<LoadedPlugin>) {
        let hooks = hook_names(plugin.hooks);
        // Held across the swap, so `upgrade` sees status and active set agree.
        let mut statuses = self.statuses();
        statuses.insert(
            plugin.name.clone(),
            PluginStatus {
                name: plugin.name.to_string(),
                status: "loaded",
                hash: Some(plugin.hash.clone()),
                loaded_at: Some(rfc3339(plugin.loaded_at)),
                hooks,
                skipped_hooks: Vec::new(),
                from_cache: Some(plugin.from_cache),
                engine: Some(plugin.flavor.as_str()),
                tier: Some(plugin.tier.as_str()),
                load_ms: Some(plugin.load_time.as_secs_f64() * 1000.0),
                last_error: None,
                failed_hash: None,
                rollout: None,
            },
        );
        self.active.rcu(|set| {
            let mut set = PluginSet::clone(set);
            set.insert(plugin.name.clone(), plugin.clone());
            set
        });
        self.set_canary(&plugin.name, None);
    }

    /// Put the optimized build of the serving version in its place, unless a newer version
    /// replaced it meanwhile. Whether it did. Requests already running keep the baseline
    /// instances they hold.
    pub fn upgrade(&self, optimized: LoadedPlugin) -> bool {
        let mut statuses = self.statuses();
        if let Some(canary) = self
            .canary(&optimized.name)
            .filter(|c| c.version.load().hash == optimized.hash)
        {
            canary.version.store(Arc::new(optimized));
            return true;
        }
        let serving = self.get(&optimized.name);
        if serving.is_none_or(|s| s.hash != optimized.hash) {
            return false;
        }
        let optimized = Arc::new(optimized);
        if let Some(status) = statuses.get_mut(&optimized.name) {
            status.tier = Some(optimized.tier.as_str());
            status.engine = Some(optimized.flavor.as_str());
        }
        // Under the status lock, so an `install` of a newer version cannot slip in between
        // the check and the swap.
        self.active.rcu(|set| {
            let mut set = PluginSet::clone(set);
            set.insert(optimized.name.clone(), optimized.clone());
            set
        });
        true
    }

    /// The file of `name` now holds the bytes already serving: a failure recorded for a
    /// newer file no longer applies.
    pub fn clear_failure(&self, name: &PluginName) {
        if let Some(status) = self.statuses().get_mut(name) {
            if status.hash.is_some() && status.status == "failed" {
                status.status = "loaded";
                status.last_error = None;
                status.failed_hash = None;
            }
        }
    }

    /// Record that the newest file for `name` was rejected; the serving version (if any)
    /// stays active.
    pub fn reject(&self, name: &PluginName, hash: Option<String>, error: &LoadError) {
        let mut statuses = self.statuses();
        let entry = statuses
            .entry(name.clone())
            .or_insert_with(|| PluginStatus {
                name: name.to_string(),
                status: "failed",
                hash: None,
                loaded_at: None,
                hooks: Vec::new(),
                skipped_hooks: Vec::new(),
                from_cache: None,
                engine: None,
                tier: None,
                load_ms: None,
                last_error: None,
                failed_hash: None,
                rollout: None,
            });
        entry.status = "failed";
        entry.last_error = Some(error.to_string());
        entry.failed_hash = hash;
    }

    /// Deactivate `name` (its file was removed).
    pub fn remove(&self, name: &PluginName) {
        self.set_canary(name, None);
        self.active.rcu(|set| {
            let mut set = PluginSet::clone(set);
            set.remove(name);
            set
        });
        if let Some(s) = self.statuses().get_mut(name) {
            s.status = "removed";
            s.hash = None;
            s.hooks.clear();
            s.skipped_hooks.clear();
        }
    }

    /// Every plugin's status, by name.
    pub fn status(&self) -> Vec<PluginStatus> {
        let active = self.snapshot();
        let canaries = self.canaries();
        let statuses = self.statuses();
        let with_skipped = |(name, status): (&PluginName, &PluginStatus)| {
            let mut status = status.clone();
            status.rollout = canaries.get(name).map(|c| {
                let (invocations, failures) = c.counts();
                RolloutStatus {
                    hash: c.version.load().hash.clone(),
                    share: c.share(),
                    invocations,
                    failures,
                }
            });
            let serving = active
                .get(name)
                .filter(|p| Some(&p.hash) == status.hash.as_ref());
            if let Some(plugin) = serving {
                status.skipped_hooks = hook_names(plugin.skipped_hooks());
            }
            status
        };
        statuses.iter().map(with_skipped).collect()
    }
}

fn hook_names(hooks: HookSet) -> Vec<&'static str> {
    [
        (hooks.request, "request"),
        (hooks.response, "response"),
        (hooks.failure, "failure"),
    ]
    .into_iter()
    .filter_map(|(has, name)| has.then_some(name))
    .collect()
}
