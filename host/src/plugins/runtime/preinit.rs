//! Pre-initialised plugin instances: a plugin's `init` export (WIT 0.1.3) runs once per
//! loaded version and route entry, the instance's memory and globals are snapshotted into a
//! component of their own (wizer's component snapshot: the memory becomes data segments,
//! which wasmtime maps copy-on-write), and every fresh instance of that entry starts from the
//! snapshot. Isolation stays per request: each instance gets its own copy-on-write image.
//!
//! The snapshot is built in the background on the first request that needs it; until it is
//! ready (and for plugins it cannot be made for, e.g. components needing component-model
//! async) each fresh instance runs `init` itself before its first hook, so a plugin sees the
//! same state either way, only at a higher cost. A compiled snapshot is cached on disk keyed by
//! the plugin's content hash, the entry's config and granted files, the engine and the tier.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use sha2::Digest;
use wasmtime::component::{Component, Lift, WasmList};
use wasmtime::Store;
use wasmtime_wizer::{ComponentInstanceState, Wizer};

use super::capabilities::{PluginEnv, RequestMeta};
use super::engine::{hex, Flavor, PluginEngine, Tier};
use super::error::InvokeError;
use super::host_impl::PluginCtx;
use super::instance::{PluginInstance, PluginPre, SpareCtx};
use crate::plugins::reload::loader::{compile_with, deserialize, LoadedPlugin};

/// Where one version's snapshot for one entry stands.
#[derive(Clone)]
enum State {
    /// Being made; instances run `init` themselves meanwhile.
    Building,
    /// Ready: instances start from it.
    Ready(Arc<PluginPre>),
    /// `init` said there is nothing to set up: instances start from the plugin as loaded and
    /// `init` is not called again.
    Nothing,
    /// `init` refused the entry's config: every request fails with this reason.
    Refused(String),
    /// No snapshot can be made (see the log line): instances run `init` themselves.
    Unavailable,
}

struct Entry {
    version: Weak<LoadedPlugin>,
    state: State,
}

/// The snapshots of the plugin versions serving one route entry (one `PluginEnv`): usually
/// one; two during a staged rollout (stable and canary). A new version (hot reload, or the
/// optimized build replacing the baseline) starts a new one; versions no longer loaded are
/// dropped.
#[derive(Default)]
pub struct Snapshots(Mutex<Vec<Entry>>);

impl Snapshots {
    /// Versions remembered per entry; past it the oldest is forgotten (and made again if it
    /// serves again, from the disk cache when there is one).
    const MAX: usize = 4;

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state for `version`, and whether the caller must start building it (first asker).
    fn state(&self, version: &Arc<LoadedPlugin>) -> (State, bool) {
        let mut entries = self.lock();
        if entries.len() > 1 {
            // A version replaced (reload, or its optimized build) is forgotten once its last
            // instance is gone, and with it its snapshot's compiled code.
            entries.retain(|e| e.version.strong_count() > 0);
        }
        if let Some(e) = entries.iter().find(|e| is(e, version)) {
            return (e.state.clone(), false);
        }
        entries.retain(|e| e.version.strong_count() > 0);
        if entries.len() >= Self::MAX {
            entries.remove(0);
        }
        entries.push(Entry {
            version: Arc::downgrade(version),
            state: State::Building,
        });
        (State::Building, true)
    }

    fn set(&self, version: &Arc<LoadedPlugin>, state: State) {
        if let Some(e) = self.lock().iter_mut().find(|e| is(e, version)) {
            e.state = state;
        }
    }

    /// Versions remembered (a replaced one until its last instance is gone).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether instances of `version` start from a ready snapshot.
    pub fn ready_for(&self, version: &Arc<LoadedPlugin>) -> bool {
        self.lock()
            .iter()
            .any(|e| is(e, version) && matches!(e.state, State::Ready(_)))
    }
}

fn is(entry: &Entry, version: &Arc<LoadedPlugin>) -> bool {
    std::ptr::eq(entry.version.as_ptr(), Arc::as_ptr(version))
}

/// A fresh instance of `version` for `env`, ready for its first hook: from the entry's
/// snapshot when there is one, else from the plugin as loaded with `init` run on it (and the
/// snapshot's building started in the background). `spare`: host state a torn-down
/// instance of `env` left, renewed for this one (`PluginPre::instantiate_in`).
pub async fn instantiate(
    engine: &Arc<PluginEngine>,
    env: &Arc<PluginEnv>,
    version: &Arc<LoadedPlugin>,
    meta: Arc<RequestMeta>,
    spare: Option<SpareCtx>,
) -> Result<PluginInstance, InvokeError> {
    if !version.pre.has_init() {
        return version
            .pre
            .instantiate_in(engine, env.clone(), meta, spare)
            .await;
    }
    let (state, build) = env.snapshots.state(version);
    if build {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(build_snapshot(engine.clone(), env.clone(), version.clone()));
        } else {
            env.snapshots.set(version, State::Unavailable);
        }
    }
    match state {
        State::Ready(pre) => pre.instantiate_in(engine, env.clone(), meta, spare).await,
        State::Nothing => {
            version
                .pre
                .instantiate_in(engine, env.clone(), meta, spare)
                .await
        }
        State::Refused(reason) => Err(InvokeError::Init(reason)),
        State::Building | State::Unavailable => {
            let mut instance = version.pre.instantiate(engine, env.clone(), meta).await?;
            instance.init().await?;
            Ok(instance)
        }
    }
}

/// Why no snapshot was made.
#[derive(Debug, thiserror::Error)]
enum SnapshotError {
    #[error("{0}")]
    Refused(String),
    #[error("init has nothing to set up")]
    Nothing,
    #[error("cannot snapshot: {0}")]
    Failed(String),
}

async fn build_snapshot(
    engine: Arc<PluginEngine>,
    env: Arc<PluginEnv>,
    version: Arc<LoadedPlugin>,
) {
    let state = match make(&engine, &env, &version).await {
        Ok(pre) => {
            tracing::info!(plugin = %env.name, route = %env.route, version = %version.pre.version(),
                "plugin pre-initialised: instances start from the snapshot");
            State::Ready(Arc::new(pre))
        }
        Err(SnapshotError::Nothing) => {
            tracing::info!(plugin = %env.name, route = %env.route, version = %version.pre.version(),
                "plugin init has nothing to set up: instances start from the plugin as loaded");
            State::Nothing
        }
        Err(SnapshotError::Refused(reason)) => {
            tracing::error!(plugin = %env.name, route = %env.route, version = %version.pre.version(),
                "plugin init refused the route's config: {reason}; its requests fail");
            State::Refused(reason)
        }
        Err(e) => {
            tracing::warn!(plugin = %env.name, route = %env.route, version = %version.pre.version(),
                "{e}; each instance runs init itself");
            State::Unavailable
        }
    };
    env.snapshots.set(&version, state);
}

/// The cache file of the snapshot of `version` for `env`'s config and files.
fn artifact_path(env: &PluginEnv, version: &LoadedPlugin) -> Option<PathBuf> {
    let (dir, compat) = version.snapshot_cache.as_ref()?;
    let mut h = sha2::Sha256::new();
    h.update(version.hash.as_bytes());
    h.update((env.config.len() as u64).to_le_bytes());
    h.update(env.config.as_bytes());
    let mut files: Vec<_> = env.grants.files.iter().collect();
    files.sort_by(|a, b| a.0.cmp(b.0));
    for (name, bytes) in files {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let tier = match version.tier {
        Tier::Baseline => "winch",
        Tier::Optimized => "cranelift",
    };
    Some(dir.join(format!(
        "snapshot-{}-{compat}.{tier}.cwasm",
        hex(&h.finalize()[..16])
    )))
}

async fn make(
    engine: &Arc<PluginEngine>,
    env: &Arc<PluginEnv>,
    version: &Arc<LoadedPlugin>,
) -> Result<PluginPre, SnapshotError> {
    let failed = |e: &dyn std::fmt::Display| SnapshotError::Failed(e.to_string());
    if version.flavor != Flavor::Plain {
        return Err(SnapshotError::Failed(
            "components needing component-model async are not snapshotted".into(),
        ));
    }
    let source = version
        .source
        .clone()
        .ok_or_else(|| failed(&"no source to snapshot from"))?;
    let artifact = artifact_path(env, version);
    let tier = version.tier;

    // A snapshot made before (same plugin, config, files, engine, tier): init said yes then.
    if let Some(path) = artifact.clone().filter(|p| p.exists()) {
        let engine2 = engine.clone();
        let loaded =
            tokio::task::spawn_blocking(move || deserialize(&engine2, Flavor::Plain, tier, &path))
                .await
                .map_err(|e| failed(&e))?;
        match loaded {
            Ok(component) => return ready(engine, env, version, &component).await,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cached plugin snapshot unusable; making it again")
            }
        }
    }

    // Ask `init` on a plain instance first: most plugins have nothing to set up (the SDK's
    // default) or refuse the config, and instrumenting and compiling the whole component for
    // that one call cost ~2 MiB of heap per route entry (benches/README.md, Session 12).
    // `init` is deterministic (no time, randomness or host handles), so asking twice is sound.
    let mut probe = version
        .pre
        .instantiate(engine, env.clone(), Arc::new(RequestMeta::default()))
        .await
        .map_err(|e| failed(&e))?;
    init_says(probe.init().await)?;
    drop(probe);

    let bytes = source.read(&version.hash).await.map_err(|e| failed(&e))?;
    let wizer = Wizer::new();
    let (cx, instrumented) = wizer
        .instrument_component(&bytes)
        .map_err(|e| failed(&format!("{e:#}")))?;
    // The instrumented component runs once: the baseline compiler makes it soonest.
    let engine2 = engine.clone();
    let component = tokio::task::spawn_blocking(move || {
        compile_with(&engine2, &instrumented, Flavor::Plain, Tier::Baseline, None).or_else(|_| {
            compile_with(
                &engine2,
                &instrumented,
                Flavor::Plain,
                Tier::Optimized,
                None,
            )
        })
    })
    .await
    .map_err(|e| failed(&e))?
    .map_err(|e| failed(&e))?;
    let pre = PluginPre::new(engine, &component, &version.hash).map_err(|e| failed(&e))?;
    let mut instance = pre
        .instantiate(engine, env.clone(), Arc::new(RequestMeta::default()))
        .await
        .map_err(|e| failed(&e))?;
    init_says(instance.init().await)?;
    let (store, handle) = instance.parts();
    let mut state = Access {
        store,
        instance: handle,
        failed: None,
    };
    let snapshot = wizer
        .snapshot_component(&cx, &mut state)
        .await
        .map_err(|e| failed(&format!("{e:#}")))?;
    if let Some(e) = state.failed {
        return Err(failed(&e));
    }
    drop(instance);

    let engine2 = engine.clone();
    let component = tokio::task::spawn_blocking(move || {
        compile_with(
            &engine2,
            &snapshot,
            Flavor::Plain,
            tier,
            artifact.as_deref(),
        )
    })
    .await
    .map_err(|e| failed(&e))?
    .map_err(|e| failed(&e))?;
    ready(engine, env, version, &component).await
}

/// What `init`'s answer means for the snapshot: go on only when there was set-up.
fn init_says(answer: Result<bool, InvokeError>) -> Result<(), SnapshotError> {
    match answer {
        Ok(true) => Ok(()),
        Ok(false) => Err(SnapshotError::Nothing),
        Err(InvokeError::Init(reason)) => Err(SnapshotError::Refused(reason)),
        Err(e) => Err(SnapshotError::Refused(e.to_string())),
    }
}

/// Link the snapshot and instantiate it once, so one that cannot start is never used.
async fn ready(
    engine: &Arc<PluginEngine>,
    env: &Arc<PluginEnv>,
    version: &Arc<LoadedPlugin>,
    component: &Component,
) -> Result<PluginPre, SnapshotError> {
    let failed = |e: &dyn std::fmt::Display| SnapshotError::Failed(e.to_string());
    let pre = PluginPre::new(engine, component, &version.hash).map_err(|e| failed(&e))?;
    pre.instantiate(engine, env.clone(), Arc::new(RequestMeta::default()))
        .await
        .map_err(|e| failed(&e))?;
    Ok(pre)
}

/// Wizer's view of the initialised instance: the accessors its instrumentation exported.
struct Access<'a> {
    store: &'a mut Store<PluginCtx>,
    instance: wasmtime::component::Instance,
    failed: Option<String>,
}

impl Access<'_> {
    async fn call<R: Lift + Send + Sync + 'static, Out: Default>(
        &mut self,
        instance: &str,
        func: &str,
        use_ret: impl FnOnce(&mut Store<PluginCtx>, R) -> Out,
    ) -> Out {
        let found = (|| {
            let (_, parent) = self.instance.get_export(&mut *self.store, None, instance)?;
            let (_, export) = self
                .instance
                .get_export(&mut *self.store, Some(&parent), func)?;
            self.instance
                .get_typed_func::<(), (R,)>(&mut *self.store, export)
                .ok()
        })();
        let Some(f) = found else {
            self.failed
                .get_or_insert_with(|| format!("no accessor {instance}#{func}"));
            return Out::default();
        };
        match f.call_async(&mut *self.store, ()).await {
            Ok((r,)) => use_ret(&mut *self.store, r),
            Err(e) => {
                self.failed.get_or_insert_with(|| format!("{e:#}"));
                Out::default()
            }
        }
    }
}

impl ComponentInstanceState for Access<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        self.call(instance, func, |store, list: WasmList<u8>| {
            contents(list.as_le_slice(&store));
        })
        .await
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func, |_, r| r).await
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func, |_, r| r).await
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call(instance, func, |_, r: f32| r.to_bits()).await
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call(instance, func, |_, r: f64| r.to_bits()).await
    }
}
