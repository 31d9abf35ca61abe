//! The one wasmtime `Engine` of the process: pooling allocator, epoch ticker, and the
//! linker with every host import plugins may use.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::Plugin;
use super::host_impl::PluginCtx;

/// Limits applied to every plugin invocation. Defaults are in [`PluginLimits::default`].
#[derive(Debug, Clone)]
pub struct PluginLimits {
    /// How long one hook invocation (or instantiation) may run in wasm: wall-clock time,
    /// checked every `epoch_tick`, with time spent waiting on host calls (service calls, body
    /// reads) excluded. Under CPU contention it also counts time the thread was descheduled.
    /// Default 100 ms.
    pub deadline: Duration,
    /// Linear memory one instance may grow to. Default 64 MiB.
    pub memory: usize,
    /// Largest body handed to (or accepted from) a plugin. Default 1 MiB.
    pub body_cap: usize,
    /// Plugin instances alive at once (one per plugin per in-flight request); the pool is
    /// sized for this. Past it, requests needing a plugin get 503. Default 1000.
    pub max_instances: u32,
    /// Granularity of the CPU deadline. Default 2 ms.
    pub epoch_tick: Duration,
    /// Entries in the shared plugin cache. Default 10 000.
    pub cache_entries: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            deadline: Duration::from_millis(100),
            memory: 64 << 20,
            body_cap: 1 << 20,
            max_instances: 1000,
            epoch_tick: Duration::from_millis(2),
            cache_entries: 10_000,
        }
    }
}

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime rejected the configuration (e.g. the pool cannot be reserved).
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
    /// The host imports could not be registered.
    #[error("cannot register plugin host functions: {0}")]
    Linker(String),
    /// The epoch ticker thread could not start.
    #[error("cannot start the epoch ticker: {0}")]
    Ticker(std::io::Error),
}

/// The wasmtime engine and linker shared by every plugin, and the thread that advances
/// the epoch so CPU deadlines fire. Dropping it stops the ticker.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<PluginCtx>,
    limits: PluginLimits,
    stop: Arc<AtomicBool>,
}

impl PluginEngine {
    /// Build the engine with the pooling allocator sized from `limits`.
    pub fn new(limits: PluginLimits) -> Result<Self, EngineError> {
        let engine = Engine::new(&wasm_config(&limits))
            .map_err(|e| EngineError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::<PluginCtx>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| EngineError::Linker(format!("{e:#}")))?;
        Plugin::add_to_linker::<PluginCtx, HasSelf<PluginCtx>>(&mut linker, |c| c)
            .map_err(|e| EngineError::Linker(format!("{e:#}")))?;

        let stop = Arc::new(AtomicBool::new(false));
        let (ticking, flag, tick) = (engine.clone(), stop.clone(), limits.epoch_tick);
        std::thread::Builder::new()
            .name("gatehouse-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    ticking.increment_epoch();
                }
            })
            .map_err(EngineError::Ticker)?;
        Ok(PluginEngine {
            engine,
            linker,
            limits,
            stop,
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker holding the host imports.
    pub fn linker(&self) -> &Linker<PluginCtx> {
        &self.linker
    }

    /// The limits every invocation runs under.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// A hex digest identifying this engine's compiled-code compatibility (wasmtime version,
    /// target, settings): part of the key of the on-disk artifact cache.
    pub fn compatibility_key(&self) -> String {
        use sha2::Digest;
        use std::hash::{Hash, Hasher};
        struct ShaHasher(sha2::Sha256);
        impl Hasher for ShaHasher {
            fn finish(&self) -> u64 {
                0
            }
            fn write(&mut self, bytes: &[u8]) {
                self.0.update(bytes);
            }
        }
        let mut h = ShaHasher(sha2::Sha256::new());
        self.engine.precompile_compatibility_hash().hash(&mut h);
        hex(&h.0.finalize()[..16])
    }
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn wasm_config(limits: &PluginLimits) -> Config {
    let n = limits.max_instances.max(1);
    let memory = limits.memory.max(1 << 16);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(8))
        .max_core_instances_per_component(64)
        .total_memories(n.saturating_mul(2))
        .max_memories_per_component(4)
        .total_tables(n.saturating_mul(4))
        .max_tables_per_component(16)
        .max_tables_per_module(4)
        .total_stacks(n)
        .max_memory_size(memory)
        .table_elements(100_000)
        // Keeping the first pages of a reused slot resident avoids page faults on every
        // fresh instance (measured: 14-18 us per instance without, 9-12 us with).
        .linear_memory_keep_resident(64 << 10)
        .table_keep_resident(16 << 10);
    let mut cfg = Config::new();
    cfg.epoch_interruption(true)
        .wasm_component_model(true)
        // jco/componentize-js output uses component-model-async builtins.
        .wasm_component_model_async(true)
        // Reserve only what the memory limit allows, so a pool of many slots stays within
        // a sane amount of address space.
        .memory_reservation(memory as u64)
        .memory_reservation_for_growth(0)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    cfg
}
