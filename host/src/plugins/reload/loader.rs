//! Turning a `.wasm` file into a loaded plugin: check, compile (or load the cached
//! artifact), link against the world, and trial-instantiate it — all off the request path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::Digest;
use wasmtime::component::Component;

use crate::plugins::runtime::cache::PluginCache;
use crate::plugins::runtime::capabilities::{Grants, NoServices, PluginEnv, RequestMeta};
use crate::plugins::runtime::engine::{hex, Flavor, PluginEngine};
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
    /// Time to compile (or deserialize), link and trial-instantiate.
    pub load_time: Duration,
    /// Ready to instantiate per request.
    pub pre: PluginPre,
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

/// Compiles plugins, with an optional on-disk cache of compiled artifacts keyed by content
/// hash and engine compatibility hash.
pub struct Loader {
    engine: Arc<PluginEngine>,
    cache_dir: Option<PathBuf>,
    compat: String,
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
        }
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
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| LoadError::Read {
                path: path.display().to_string(),
                source,
            })?;
        self.load_bytes(name, bytes).await
    }

    /// Load a plugin from its bytes.
    pub async fn load_bytes(
        &self,
        name: PluginName,
        bytes: Vec<u8>,
    ) -> Result<LoadedPlugin, LoadError> {
        let started = Instant::now();
        check_header(&bytes)?;
        let hash = hex(&sha2::Sha256::digest(&bytes));
        let engine = self.engine.clone();
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{hash}-{}.cwasm", self.compat)));
        let (component, from_cache) =
            tokio::task::spawn_blocking(move || compile(&engine, &bytes, cached))
                .await
                .map_err(|e| LoadError::Compile(format!("compiler task failed: {e}")))??;
        let pre = PluginPre::new(&self.engine, &component)?;
        self.trial(&name, &pre).await?;
        Ok(LoadedPlugin {
            flavor: self.engine.flavor_of(&component),
            name,
            hash,
            loaded_at: SystemTime::now(),
            hooks: pre.hooks(),
            defaults: DefaultHooks::default(),
            from_cache,
            load_time: started.elapsed(),
            pre,
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
        });
        pre.instantiate(&self.engine, env, Arc::new(RequestMeta::default()))
            .await
            .map(drop)
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

fn compile(
    engine: &PluginEngine,
    bytes: &[u8],
    cached: Option<PathBuf>,
) -> Result<(Component, bool), LoadError> {
    let artifact = |flavor: Flavor| {
        cached.as_ref().map(|p| match flavor {
            Flavor::Plain => p.clone(),
            Flavor::Concurrent => p.with_extension("concurrent.cwasm"),
        })
    };
    for flavor in [Flavor::Plain, Flavor::Concurrent] {
        let Some(path) = artifact(flavor).filter(|p| p.exists()) else {
            continue;
        };
        match deserialize(engine, flavor, &path) {
            Ok(c) => return Ok((c, true)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"),
                    "cached plugin artifact unusable; recompiling");
            }
        }
    }
    // Plain first (the fast engine); only a component that needs component-model async
    // (or is invalid) falls through to the concurrent engine, whose error is the one shown.
    let component = match Component::new(engine.runtime(Flavor::Plain)?.engine(), bytes) {
        Ok(c) => c,
        Err(plain) => {
            let concurrent = engine.runtime(Flavor::Concurrent)?.engine();
            Component::new(concurrent, bytes).map_err(|e| {
                tracing::debug!(error = %format!("{plain:#}"), "not loadable on the plain engine");
                LoadError::Compile(format!("{e:#}"))
            })?
        }
    };
    if let Some(path) = artifact(engine.flavor_of(&component)) {
        if let Err(e) = store_artifact(&component, &path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compiled plugin artifact to the cache");
        }
    }
    Ok((component, false))
}

/// Load a compiled artifact from the cache.
#[allow(unsafe_code)]
fn deserialize(engine: &PluginEngine, flavor: Flavor, path: &Path) -> wasmtime::Result<Component> {
    let engine = engine
        .runtime(flavor)
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
}
