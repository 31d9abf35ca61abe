//! Turning a `.wasm` file into a loaded plugin: check, compile (or load the cached
//! artifact), link against the world, and trial-instantiate it — all off the request path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::Digest;
use wasmtime::component::Component;

use crate::plugins::runtime::cache::PluginCache;
use crate::plugins::runtime::capabilities::{Grants, NoServices, PluginEnv, RequestMeta};
use crate::plugins::runtime::engine::{hex, Flavor, PluginEngine, Tier};
use crate::plugins::runtime::error::{InvokeError, LoadError, Phase};
use crate::plugins::runtime::instance::{DefaultHooks, HookSet, PluginPre};
use crate::plugins::PluginName;

/// A plugin that compiled, fits the world and instantiated once.
pub struct LoadedPlugin {
    /// Its name (the file name without `.wasm`).
    pub name: PluginName,
    /// SHA-256 of the file, hex.
    pub hash: String,
    /// When this version became active.
    pub loaded_at: SystemTime,
    /// The hooks it exports.
    pub hooks: HookSet,
    /// Exported hooks it declared to do nothing; the chain skips those.
    pub defaults: DefaultHooks,
    /// Whether the compiled artifact came from the on-disk cache.
    pub from_cache: bool,
    /// The engine it was compiled for.
    pub flavor: Flavor,
    /// Which compiler made its code: a baseline version is replaced by its optimized build
    /// when that is ready (see [`Tier`]).
    pub tier: Tier,
    /// Time to compile (or deserialize), link and trial-instantiate.
    pub load_time: Duration,
    /// Ready to instantiate per request.
    pub pre: PluginPre,
    /// Where the component's bytes are read again to make a route entry's pre-initialised
    /// snapshot (`runtime::preinit`); only for plugins that export `init`.
    pub source: Option<Source>,
    /// Where compiled snapshots are cached, with the engine compatibility key in the names.
    pub snapshot_cache: Option<(PathBuf, String)>,
}

impl LoadedPlugin {
    /// Whether the chain calls this plugin in `phase`: it exports the hook and has not
    /// declared it a do-nothing default.
    pub fn runs(&self, phase: Phase) -> bool {
        self.hooks.has(phase) && !self.defaults.get().has(phase)
    }

    /// Exported hooks the chain no longer calls (declared do-nothing defaults).
    pub fn skipped_hooks(&self) -> HookSet {
        let defaults = self.defaults.get();
        HookSet {
            request: self.hooks.request && defaults.request,
            response: self.hooks.response && defaults.response,
            failure: self.hooks.failure && defaults.failure,
        }
    }
}

/// Where a version's component bytes can be read again: a route entry's snapshot and the
/// optimized compile need them after the load, so they are not held in memory meanwhile
/// (an SDK plugin is ~3 MiB; 20 of them held 58 MiB of heap, benches/README.md).
#[derive(Debug, Clone)]
pub enum Source {
    /// The plugin file, read again and checked against the version's content hash.
    File(PathBuf),
    /// Bytes handed to the loader, with no file to read them from again.
    Memory(Arc<Vec<u8>>),
}

impl Source {
    /// The bytes whose SHA-256 (hex) is `hash`: [`LoadError::Changed`] if the file now holds
    /// others.
    pub async fn read(&self, hash: &str) -> Result<Arc<Vec<u8>>, LoadError> {
        match self {
            Source::Memory(bytes) => Ok(bytes.clone()),
            Source::File(path) => {
                let bytes = read_file(path).await?;
                if hex(&sha2::Sha256::digest(&bytes)) != hash {
                    return Err(LoadError::Changed {
                        path: path.display().to_string(),
                    });
                }
                Ok(Arc::new(bytes))
            }
        }
    }
}

/// A plugin file's bytes, or [`LoadError::Read`] naming it.
async fn read_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })
}

/// Compiles plugins, with an optional on-disk cache of compiled artifacts keyed by content
/// hash, engine compatibility hash and compiler tier.
pub struct Loader {
    engine: Arc<PluginEngine>,
    cache_dir: Option<PathBuf>,
    compat: String,
    tiered: bool,
    /// One optimizing compile at a time: it runs beside the serving baseline version, and
    /// on a small machine several at once would starve the request workers.
    optimizing: tokio::sync::Semaphore,
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];

impl Loader {
    /// A loader compiling with `engine`, caching artifacts in `cache_dir` if given.
    pub fn new(engine: Arc<PluginEngine>, cache_dir: Option<PathBuf>) -> Self {
        let compat = engine.compatibility_key();
        Loader {
            engine,
            cache_dir,
            compat,
            tiered: true,
            optimizing: tokio::sync::Semaphore::new(1),
        }
    }

    /// Whether a plugin not in the artifact cache is first compiled by the baseline
    /// compiler (serving sooner, optimized later) or by Cranelift alone. Default true.
    pub fn tiered(mut self, tiered: bool) -> Self {
        self.tiered = tiered;
        self
    }

    /// The engine plugins are compiled for.
    pub fn engine(&self) -> &Arc<PluginEngine> {
        &self.engine
    }

    /// Load the plugin in `path`.
    pub async fn load_file(
        &self,
        name: PluginName,
        path: &Path,
    ) -> Result<LoadedPlugin, LoadError> {
        let bytes = read_file(path).await?;
        self.load_read(name, path, bytes).await
    }

    /// Load the plugin whose file `path` was just read as `bytes`. The bytes are dropped once
    /// compiled; a snapshot or the optimized build reads the file again.
    pub async fn load_read(
        &self,
        name: PluginName,
        path: &Path,
        bytes: Vec<u8>,
    ) -> Result<LoadedPlugin, LoadError> {
        self.load(name, Arc::new(bytes), Source::File(path.to_owned()))
            .await
    }

    /// Load a plugin from its bytes (kept in memory for its snapshots): its cached optimized
    /// build if there is one, else (when tiered) a baseline build to serve until
    /// [`Loader::optimize`] has made the optimized one.
    pub async fn load_bytes(
        &self,
        name: PluginName,
        bytes: Vec<u8>,
    ) -> Result<LoadedPlugin, LoadError> {
        let bytes = Arc::new(bytes);
        self.load(name, bytes.clone(), Source::Memory(bytes)).await
    }

    async fn load(
        &self,
        name: PluginName,
        bytes: Arc<Vec<u8>>,
        source: Source,
    ) -> Result<LoadedPlugin, LoadError> {
        let started = Instant::now();
        check_header(&bytes)?;
        let hash = hex(&sha2::Sha256::digest(&*bytes));
        let engine = self.engine.clone();
        let artifacts = self.artifacts(&hash);
        let tiered = self.tiered;
        let (component, from_cache) =
            tokio::task::spawn_blocking(move || compile(&engine, &bytes, artifacts, tiered))
                .await
                .map_err(|e| LoadError::Compile(format!("compiler task failed: {e}")))??;
        self.finish(name, hash, component, from_cache, started, source)
            .await
    }

    /// The optimized build of a plugin loaded as baseline (`name`, content `hash`, `flavor`):
    /// compiled by Cranelift for the same flavor, one compile at a time, cached like the
    /// others. `Ok(None)` if `wanted` says, when its turn comes, that it is no longer needed
    /// (a newer file replaced the version). The bytes are read from `source` only then, so
    /// plugins queued behind others hold none.
    pub async fn optimize(
        &self,
        name: PluginName,
        hash: String,
        flavor: Flavor,
        source: Source,
        wanted: impl Fn() -> bool,
    ) -> Result<Option<LoadedPlugin>, LoadError> {
        let _turn = self
            .optimizing
            .acquire()
            .await
            .map_err(|e| LoadError::Compile(format!("optimizer closed: {e}")))?;
        if !wanted() {
            return Ok(None);
        }
        let started = Instant::now();
        let bytes = source.read(&hash).await?;
        let engine = self.engine.clone();
        let artifact = self
            .artifacts(&hash)
            .map(|a| a.path(flavor, Tier::Optimized));
        let component = tokio::task::spawn_blocking(move || {
            compile_with(
                &engine,
                &bytes,
                flavor,
                Tier::Optimized,
                artifact.as_deref(),
            )
        })
        .await
        .map_err(|e| LoadError::Compile(format!("compiler task failed: {e}")))??;
        self.finish(name, hash, component, false, started, source)
            .await
            .map(Some)
    }

    fn artifacts(&self, hash: &str) -> Option<Artifacts> {
        self.cache_dir
            .as_ref()
            .map(|d| Artifacts(d.join(format!("{hash}-{}", self.compat))))
    }

    async fn finish(
        &self,
        name: PluginName,
        hash: String,
        component: Component,
        from_cache: bool,
        started: Instant,
        source: Source,
    ) -> Result<LoadedPlugin, LoadError> {
        let pre = PluginPre::new(&self.engine, &component, &hash)?;
        let source = pre.has_init().then_some(source);
        self.trial(&name, &pre).await?;
        let (flavor, tier) = self.engine.kind_of(&component);
        Ok(LoadedPlugin {
            flavor,
            tier,
            name,
            hash,
            loaded_at: SystemTime::now(),
            hooks: pre.hooks(),
            defaults: DefaultHooks::default(),
            from_cache,
            load_time: started.elapsed(),
            pre,
            source,
            snapshot_cache: self.cache_dir.clone().map(|d| (d, self.compat.clone())),
        })
    }

    /// Instantiate once with no grants, so a plugin that cannot start (type mismatch, start
    /// function trap, memory over the limit) is rejected at load, not on a request.
    async fn trial(&self, name: &PluginName, pre: &PluginPre) -> Result<(), LoadError> {
        let env = Arc::new(PluginEnv {
            name: name.clone(),
            route: "(load check)".into(),
            config: "{}".into(),
            grants: Grants::default(),
            services: Arc::new(NoServices),
            cache: Arc::new(PluginCache::new(1024)),
            shelf: Default::default(),
            snapshots: Default::default(),
            limits: self.engine.limits().entry(None, None, None),
        });
        pre.instantiate(&self.engine, env, Arc::new(RequestMeta::default()))
            .await
            .and_then(|mut instance| instance.check_hooks())
            .map_err(|e| {
                LoadError::World(format!(
                    "cannot instantiate: {}",
                    match e {
                        InvokeError::Instantiate(m) => m,
                        other => other.to_string(),
                    }
                ))
            })
    }
}

/// Tell a core module, a component and garbage apart before compiling.
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        return Err(LoadError::NotWasm(format!(
            "{} bytes without the WebAssembly header",
            bytes.len()
        )));
    }
    if bytes[4..8] == CORE_VERSION {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

/// Where a plugin's compiled artifacts are cached: one file per (flavor, tier), named from
/// the content hash and the engine compatibility hash.
struct Artifacts(PathBuf);

impl Artifacts {
    fn path(&self, flavor: Flavor, tier: Tier) -> PathBuf {
        let suffix = match (flavor, tier) {
            (Flavor::Plain, Tier::Optimized) => "cwasm",
            (Flavor::Concurrent, Tier::Optimized) => "concurrent.cwasm",
            (Flavor::Plain, Tier::Baseline) => "winch.cwasm",
            (Flavor::Concurrent, Tier::Baseline) => "winch-concurrent.cwasm",
        };
        let mut path = self.0.clone().into_os_string();
        path.push(".");
        path.push(suffix);
        PathBuf::from(path)
    }
}

/// The plugin's component: a cached optimized artifact; else, when `tiered`, a cached or
/// fresh baseline build; else (or when the baseline compiler refuses it) a Cranelift build.
/// Plain before concurrent in each step. The flag says whether it came from the cache.
fn compile(
    engine: &PluginEngine,
    bytes: &[u8],
    artifacts: Option<Artifacts>,
    tiered: bool,
) -> Result<(Component, bool), LoadError> {
    let tiers: &[Tier] = if tiered {
        &[Tier::Optimized, Tier::Baseline]
    } else {
        &[Tier::Optimized]
    };
    for &tier in tiers {
        for flavor in [Flavor::Plain, Flavor::Concurrent] {
            let Some(path) = artifacts
                .as_ref()
                .map(|a| a.path(flavor, tier))
                .filter(|p| p.exists())
            else {
                continue;
            };
            match deserialize(engine, flavor, tier, &path) {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %format!("{e:#}"),
                        "cached plugin artifact unusable; recompiling");
                }
            }
        }
    }
    let path = |flavor, tier| artifacts.as_ref().map(|a| a.path(flavor, tier));
    if tiered {
        match compile_either(engine, bytes, Tier::Baseline, &path) {
            Ok(c) => return Ok((c, false)),
            // Winch lacks some proposals (tail calls, exceptions, relaxed SIMD, parts of
            // SIMD): such a component waits for Cranelift.
            Err(e) => {
                tracing::debug!(error = %e, "baseline compiler refused the plugin; compiling with Cranelift")
            }
        }
    }
    Ok((
        compile_either(engine, bytes, Tier::Optimized, &path)?,
        false,
    ))
}

/// Compile on the plain engine of `tier`, or, for a component that needs component-model
/// async (or is invalid), on the concurrent one, whose error is the one shown.
fn compile_either(
    engine: &PluginEngine,
    bytes: &[u8],
    tier: Tier,
    path: &dyn Fn(Flavor, Tier) -> Option<PathBuf>,
) -> Result<Component, LoadError> {
    match compile_with(
        engine,
        bytes,
        Flavor::Plain,
        tier,
        path(Flavor::Plain, tier).as_deref(),
    ) {
        Ok(c) => Ok(c),
        Err(plain) => {
            tracing::debug!(error = %plain, tier = tier.as_str(), "not loadable on the plain engine");
            let concurrent = path(Flavor::Concurrent, tier);
            compile_with(
                engine,
                bytes,
                Flavor::Concurrent,
                tier,
                concurrent.as_deref(),
            )
        }
    }
}

/// Compile on one engine and store the artifact at `artifact`, if given.
pub(crate) fn compile_with(
    engine: &PluginEngine,
    bytes: &[u8],
    flavor: Flavor,
    tier: Tier,
    artifact: Option<&Path>,
) -> Result<Component, LoadError> {
    let component = Component::new(engine.runtime_of(flavor, tier)?.engine(), bytes)
        .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
    if let Some(path) = artifact {
        if let Err(e) = store_artifact(&component, path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compiled plugin artifact to the cache");
        }
    }
    Ok(component)
}

/// Load a compiled artifact from the cache.
#[allow(unsafe_code)]
pub(crate) fn deserialize(
    engine: &PluginEngine,
    flavor: Flavor,
    tier: Tier,
    path: &Path,
) -> wasmtime::Result<Component> {
    let engine = engine
        .runtime_of(flavor, tier)
        .map_err(|e| wasmtime::format_err!("{e}"))?
        .engine();
    // SAFETY: `deserialize_file` trusts the file to be an artifact wasmtime produced. Only
    // this loader writes into the cache directory, atomically (temp file + rename), under a
    // name derived from the SHA-256 of the source and the engine's compatibility hash;
    // wasmtime itself also checks the artifact's header and engine settings. The cache
    // directory must not be writable by anyone the gateway does not trust.
    unsafe { Component::deserialize_file(engine, path) }
}

fn store_artifact(component: &Component, path: &Path) -> std::io::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        assert!(matches!(check_header(b"hello"), Err(LoadError::NotWasm(_))));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[tokio::test]
    async fn a_source_file_is_read_again_only_while_it_holds_the_version() {
        let dir = std::env::temp_dir().join(format!("gatehouse-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("p.wasm");
        std::fs::write(&path, b"version one").expect("write");
        let hash = hex(&sha2::Sha256::digest(b"version one"));
        let source = Source::File(path.clone());
        let bytes = source.read(&hash).await.expect("same bytes");
        assert_eq!(bytes.as_slice(), b"version one");
        std::fs::write(&path, b"version two").expect("write");
        let changed = source.read(&hash).await;
        assert!(
            matches!(changed, Err(LoadError::Changed { .. })),
            "{changed:?}"
        );
        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(
            source.read(&hash).await,
            Err(LoadError::Read { .. })
        ));
        let _ = std::fs::remove_dir(&dir);
    }
}
