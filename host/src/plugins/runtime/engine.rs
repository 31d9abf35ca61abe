//! The wasmtime engines of the process (plain, and concurrent for components that need
//! component-model async; each in a baseline tier compiled by Winch and an optimized tier
//! compiled by Cranelift): pooling allocators, epoch ticker, and the linkers with every host
//! import plugins may use.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Strategy,
};

use super::bindings::Plugin;
use super::host_impl::PluginCtx;
use super::ticker::{EpochTicker, TickerHandle, IDLE_AFTER, IDLE_TICK};

/// Limits applied to every plugin invocation. Defaults are in [`PluginLimits::default`].
#[derive(Debug, Clone)]
pub struct PluginLimits {
    /// How long one hook invocation (or instantiation) may run in wasm: its own running
    /// time, checked every `epoch_tick`, where it also yields to the worker's other requests;
    /// time awaiting host calls or waiting to be polled again is excluded (`clock.rs`).
    /// Default 100 ms.
    pub deadline: Duration,
    /// Linear memory one instance may grow to. Default 64 MiB.
    pub memory: usize,
    /// Largest body handed to (or accepted from) a plugin. Default 1 MiB.
    pub body_cap: usize,
    /// Plugin instances alive at once (one per plugin per in-flight request); the pool is
    /// sized for this (each engine flavor has a pool of this size). Past it, requests
    /// needing a plugin get 503. Default 1000.
    pub max_instances: u32,
    /// Granularity of the CPU deadline, and the slice a running plugin gets before it
    /// yields to the worker's other requests. Default 2 ms. (After a second
    /// without plugin calls the ticker slows to 100 ms until the next call wakes it:
    /// `ticker.rs`.)
    pub epoch_tick: Duration,
    /// Bytes (namespaces, keys and values) the shared plugin cache holds at most.
    /// Default 16 MiB.
    pub cache_bytes: u64,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            deadline: Duration::from_millis(100),
            memory: 64 << 20,
            body_cap: 1 << 20,
            max_instances: 1000,
            epoch_tick: Duration::from_millis(2),
            cache_bytes: 16 << 20,
        }
    }
}

/// The limits one plugin entry of a route runs under: the entry's own `deadline`,
/// `memory_limit_mib` and `body_limit_kib` where it sets them, else the `[plugins]` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EntryLimits {
    /// See [`PluginLimits::deadline`].
    #[serde(serialize_with = "crate::serialize::as_humantime")]
    pub deadline: Duration,
    /// See [`PluginLimits::memory`]; at most the global one, which sizes the pool's slots.
    pub memory: usize,
    /// See [`PluginLimits::body_cap`].
    pub body_cap: usize,
}

impl PluginLimits {
    /// The limits of an entry overriding some of these (`None`: the global value). A memory
    /// limit over the global one is cut to it: a pool slot holds no more.
    pub fn entry(
        &self,
        deadline: Option<Duration>,
        memory: Option<usize>,
        body_cap: Option<usize>,
    ) -> EntryLimits {
        EntryLimits {
            deadline: deadline.unwrap_or(self.deadline),
            memory: memory.map_or(self.memory, |m| m.min(self.memory)),
            body_cap: body_cap.unwrap_or(self.body_cap),
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

/// Which of the two wasmtime engines a component runs on.
///
/// Components that use the component model's async builtins (jco/componentize-js output
/// does) need wasmtime's concurrent call machinery, which costs a few microseconds per hook
/// call even when nothing is concurrent (measured: a no-op hook pair 2.5 us plain vs 7.9 us
/// concurrent). Every other component (Rust SDK plugins, for one) runs on the plain engine,
/// where a hook call goes straight onto a fiber. The loader tries plain first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Component-model async off: the fast path.
    Plain,
    /// Component-model async on, for components that need it. Built on first use.
    Concurrent,
}

impl Flavor {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Plain => "plain",
            Flavor::Concurrent => "concurrent",
        }
    }
}

/// Which compiler made a component's code.
///
/// A new plugin file is compiled first by Winch, wasmtime's baseline compiler (one pass, no
/// optimisation: several times faster to compile, slower to run), so it serves within about
/// a second of the drop whatever its size; Cranelift then compiles it again in the
/// background and the optimized build replaces the baseline one when ready. Code made by
/// one compiler runs only on an engine configured for it, so each tier has engines of its
/// own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Compiled by Winch: serving while the optimized build compiles.
    Baseline,
    /// Compiled by Cranelift: the steady state.
    Optimized,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Baseline => "baseline",
            Tier::Optimized => "optimized",
        }
    }
}

/// The four engines by (flavor, tier).
const KINDS: [(Flavor, Tier); 4] = [
    (Flavor::Plain, Tier::Optimized),
    (Flavor::Concurrent, Tier::Optimized),
    (Flavor::Plain, Tier::Baseline),
    (Flavor::Concurrent, Tier::Baseline),
];

fn kind_index(flavor: Flavor, tier: Tier) -> usize {
    match (flavor, tier) {
        (Flavor::Plain, Tier::Optimized) => 0,
        (Flavor::Concurrent, Tier::Optimized) => 1,
        (Flavor::Plain, Tier::Baseline) => 2,
        (Flavor::Concurrent, Tier::Baseline) => 3,
    }
}

/// One wasmtime engine with the linker holding every host import.
pub struct Runtime {
    engine: Engine,
    linker: Linker<PluginCtx>,
}

impl Runtime {
    fn new(limits: &PluginLimits, flavor: Flavor, tier: Tier) -> Result<Self, EngineError> {
        let engine = Engine::new(&wasm_config(limits, flavor, tier))
            .map_err(|e| EngineError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::<PluginCtx>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| EngineError::Linker(format!("{e:#}")))?;
        Plugin::add_to_linker::<PluginCtx, HasSelf<PluginCtx>>(&mut linker, |c| c)
            .map_err(|e| EngineError::Linker(format!("{e:#}")))?;
        Ok(Runtime { engine, linker })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker holding the host imports.
    pub fn linker(&self) -> &Linker<PluginCtx> {
        &self.linker
    }
}

/// The wasmtime engines shared by every plugin, and the thread that advances their epochs
/// so CPU deadlines fire. Dropping it stops the ticker.
pub struct PluginEngine {
    /// By [`kind_index`]; the plain optimized one is built at start, the others when a
    /// component first needs them (each reserves a pool of its own).
    runtimes: Arc<[OnceLock<Runtime>; 4]>,
    limits: PluginLimits,
    ticker: EpochTicker,
}

impl PluginEngine {
    /// Build the plain engine with the pooling allocator sized from `limits` (the others,
    /// with pools of their own, are built when a component first needs them).
    pub fn new(limits: PluginLimits) -> Result<Self, EngineError> {
        let runtimes: Arc<[OnceLock<Runtime>; 4]> = Arc::default();
        let plain = Runtime::new(&limits, Flavor::Plain, Tier::Optimized)?;
        let _ = runtimes[kind_index(Flavor::Plain, Tier::Optimized)].set(plain);
        let ticking = runtimes.clone();
        let ticker = EpochTicker::start(limits.epoch_tick, IDLE_AFTER, IDLE_TICK, move || {
            for r in ticking.iter().filter_map(OnceLock::get) {
                r.engine.increment_epoch();
            }
        })
        .map_err(EngineError::Ticker)?;
        Ok(PluginEngine {
            runtimes,
            limits,
            ticker,
        })
    }

    /// The optimized engine and linker of `flavor`, building it on first use.
    pub fn runtime(&self, flavor: Flavor) -> Result<&Runtime, EngineError> {
        self.runtime_of(flavor, Tier::Optimized)
    }

    /// The engine and linker of `flavor` in `tier`, building it on first use.
    pub fn runtime_of(&self, flavor: Flavor, tier: Tier) -> Result<&Runtime, EngineError> {
        let slot = &self.runtimes[kind_index(flavor, tier)];
        if let Some(r) = slot.get() {
            return Ok(r);
        }
        let built = Runtime::new(&self.limits, flavor, tier)?;
        // A racing builder may have won; either engine is equivalent, keep the first.
        Ok(slot.get_or_init(|| built))
    }

    /// The flavor and tier of the engine that compiled `component`.
    pub fn kind_of(&self, component: &Component) -> (Flavor, Tier) {
        KINDS
            .into_iter()
            .find(|&(flavor, tier)| {
                self.runtimes[kind_index(flavor, tier)]
                    .get()
                    .is_some_and(|r| Engine::same(component.engine(), &r.engine))
            })
            .unwrap_or((Flavor::Plain, Tier::Optimized))
    }

    /// The flavor whose engine compiled `component`.
    pub fn flavor_of(&self, component: &Component) -> Flavor {
        self.kind_of(component).0
    }

    /// The linker for `component`'s engine.
    pub fn linker_for(&self, component: &Component) -> Result<&Linker<PluginCtx>, EngineError> {
        let (flavor, tier) = self.kind_of(component);
        Ok(self.runtime_of(flavor, tier)?.linker())
    }

    /// The limits every invocation runs under.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// The epoch ticker, which each invocation wakes as it starts.
    pub fn ticker(&self) -> TickerHandle {
        self.ticker.handle()
    }

    /// A hex digest identifying the plain engine's compiled-code compatibility (wasmtime
    /// version, target, settings): part of the key of the on-disk artifact cache. Artifacts
    /// of the concurrent engine are told apart by a suffix; wasmtime checks an artifact's
    /// engine settings again when loading it.
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
        self.runtimes[kind_index(Flavor::Plain, Tier::Optimized)]
            .get()
            .map(|r| r.engine.precompile_compatibility_hash())
            .hash(&mut h);
        hex(&h.0.finalize()[..16])
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

fn wasm_config(limits: &PluginLimits, flavor: Flavor, tier: Tier) -> Config {
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
        .linear_memory_keep_resident(memory_keep_resident())
        .table_keep_resident(16 << 10)
        .pagemap_scan(Enabled::Auto);
    let concurrent = flavor == Flavor::Concurrent;
    let mut cfg = Config::new();
    cfg.epoch_interruption(true)
        .wasm_component_model(true)
        .wasm_component_model_async(concurrent)
        .concurrency_support(concurrent)
        // Reserve only what the memory limit allows, so a pool of many slots stays within
        // a sane amount of address space.
        .memory_reservation(memory as u64)
        .memory_reservation_for_growth(0)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if tier == Tier::Baseline {
        // Winch lacks tail calls (on by default with Cranelift); a component that uses them
        // is refused at compile and goes straight to Cranelift.
        cfg.strategy(Strategy::Winch).wasm_tail_call(false);
    }
    cfg
}

/// How much of a recycled memory slot is reset in place (kept resident) rather than handed
/// back to the kernel. Pages given back fault in again on the next instance's first touch,
/// which made up most of a fresh instance's cost.
///
/// With the kernel's `PAGEMAP_SCAN` (Linux 6.7+) wasmtime finds the pages an instance dirtied
/// and copies only those back from the image, so a window covering a Rust guest's whole
/// working set (its 1 MiB stack sits below data and heap) is cheap: measured 34 -> 23 us
/// per fresh no-op request. Without the scan the window is reset with `memset` whole, so it
/// stays small and covers only the lowest pages.
fn memory_keep_resident() -> usize {
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        4 << 20
    } else {
        64 << 10
    }
}
