//! Pre-instantiated plugins (`PluginPre`) and the fresh per-request instances made from
//! them (`PluginInstance`), with limits applied and failures classified.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wasmtime::component::{Component, InstancePre, Resource};
use wasmtime::{Store, Trap};

use super::bindings::{
    failure_hook, init, request_hook, response_hook, types, FAILURE_HOOK, INIT, REQUEST_HOOK,
    RESPONSE_HOOK,
};
use super::capabilities::{PluginEnv, RequestMeta};
use super::engine::PluginEngine;
use super::error::{InvokeError, LoadError, Phase};
use super::host_impl::PluginCtx;
use super::message::{PluginRequest, PluginResponse};

/// Which hooks a component exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HookSet {
    /// Exports `request-hook`.
    pub request: bool,
    /// Exports `response-hook`.
    pub response: bool,
    /// Exports `failure-hook`.
    pub failure: bool,
}

impl HookSet {
    /// Whether the set holds `phase`'s hook.
    pub fn has(&self, phase: Phase) -> bool {
        match phase {
            Phase::Request => self.request,
            Phase::Response => self.response,
            Phase::Failure => self.failure,
        }
    }
}

/// The hooks one plugin version declared to do nothing (`context.default-hook`, called by the
/// Rust SDK's default hooks), learned from its first calls. The chain skips them from then on:
/// a plugin that implements only `on_request` stops paying for a response-phase call.
#[derive(Debug, Default)]
pub struct DefaultHooks {
    request: AtomicBool,
    response: AtomicBool,
    failure: AtomicBool,
}

impl DefaultHooks {
    /// Remember the hooks an instance `declared` to do nothing.
    pub fn learn(&self, declared: HookSet) {
        let flags = [
            (declared.request, &self.request),
            (declared.response, &self.response),
            (declared.failure, &self.failure),
        ];
        for (declared, flag) in flags {
            if declared {
                flag.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The hooks declared so far.
    pub fn get(&self) -> HookSet {
        HookSet {
            request: self.request.load(Ordering::Relaxed),
            response: self.response.load(Ordering::Relaxed),
            failure: self.failure.load(Ordering::Relaxed),
        }
    }
}

/// A compiled, linked plugin, ready to be instantiated cheaply for each request.
pub struct PluginPre {
    pre: InstancePre<PluginCtx>,
    /// The version's content hash, shortened, for log lines.
    version: Arc<str>,
    request: Option<request_hook::GuestIndices>,
    response: Option<response_hook::GuestIndices>,
    failure: Option<failure_hook::GuestIndices>,
    init: Option<init::GuestIndices>,
}

fn shape(hook: &'static str) -> impl Fn(wasmtime::Error) -> LoadError {
    move |e| LoadError::HookShape {
        hook,
        reason: format!("{e:#}"),
    }
}

impl PluginPre {
    /// Link `component` against the host imports and find its hooks. Fails if it imports
    /// anything the host does not provide or exports no hook.
    /// `hash` is the version's content hash; log lines carry its first 12 digits.
    pub fn new(
        engine: &PluginEngine,
        component: &Component,
        hash: &str,
    ) -> Result<Self, LoadError> {
        let pre = engine
            .linker_for(component)
            .map_err(|e| LoadError::World(e.to_string()))?
            .instantiate_pre(component)
            .map_err(|e| LoadError::World(format!("{e:#}")))?;
        let has = |name: &str| component.get_export_index(None, name).is_some();
        let request = has(REQUEST_HOOK)
            .then(|| request_hook::GuestIndices::new(&pre).map_err(shape("request-hook")))
            .transpose()?;
        let response = has(RESPONSE_HOOK)
            .then(|| response_hook::GuestIndices::new(&pre).map_err(shape("response-hook")))
            .transpose()?;
        let failure = has(FAILURE_HOOK)
            .then(|| failure_hook::GuestIndices::new(&pre).map_err(shape("failure-hook")))
            .transpose()?;
        if request.is_none() && response.is_none() && failure.is_none() {
            return Err(LoadError::NoHooks);
        }
        let init = has(INIT)
            .then(|| init::GuestIndices::new(&pre).map_err(shape("init")))
            .transpose()?;
        Ok(PluginPre {
            pre,
            version: hash.get(..12).unwrap_or(hash).into(),
            request,
            response,
            failure,
            init,
        })
    }

    /// The version as log lines, spans and metric labels show it: the first 12 hex digits of
    /// its content hash, made once at load.
    pub fn version(&self) -> &Arc<str> {
        &self.version
    }

    /// Whether the plugin exports `init` (WIT 0.1.3): set-up to run, and snapshot, once per
    /// route entry.
    pub fn has_init(&self) -> bool {
        self.init.is_some()
    }

    /// The component this was made from.
    pub fn component(&self) -> &Component {
        self.pre.component()
    }

    /// The hooks this plugin exports.
    pub fn hooks(&self) -> HookSet {
        HookSet {
            request: self.request.is_some(),
            response: self.response.is_some(),
            failure: self.failure.is_some(),
        }
    }

    /// A fresh instance for one request, under its entry's limits.
    pub async fn instantiate(
        &self,
        engine: &PluginEngine,
        env: Arc<PluginEnv>,
        meta: Arc<RequestMeta>,
    ) -> Result<PluginInstance, InvokeError> {
        self.instantiate_in(engine, env, meta, None).await
    }

    /// [`Self::instantiate`], in the host state a torn-down instance of the same route entry
    /// left (`spare`, see [`PluginInstance::into_spare`]) when there is one: renewed, it is
    /// as new to the plugin, and cheaper than building one.
    pub async fn instantiate_in(
        &self,
        engine: &PluginEngine,
        env: Arc<PluginEnv>,
        meta: Arc<RequestMeta>,
        spare: Option<SpareCtx>,
    ) -> Result<PluginInstance, InvokeError> {
        let limits = env.limits;
        let ctx = match spare {
            Some(SpareCtx(mut ctx)) if Arc::ptr_eq(&ctx.env, &env) => {
                ctx.renew(
                    env,
                    meta,
                    self.version.clone(),
                    limits.memory,
                    limits.deadline,
                    limits.body_cap,
                );
                ctx
            }
            _ => PluginCtx::new(
                env,
                meta,
                self.version.clone(),
                limits.memory,
                limits.deadline,
                engine.ticker(),
                limits.body_cap,
            ),
        };
        let mut store = Store::new(self.pre.component().engine(), ctx);
        store.limiter(|c| &mut c.memory);
        // At each tick while wasm runs: past the budget, trap; otherwise yield to the
        // worker's other requests and go on when polled again (clock.rs).
        store.epoch_deadline_callback(|mut cx| Ok(cx.data_mut().clock.on_tick()));
        store.set_epoch_deadline(1);
        store.data_mut().clock.restart();
        let instance = match self.pre.instantiate_async(&mut store).await {
            Ok(i) => i,
            Err(e) => {
                let trapped = e.downcast_ref::<Trap>().is_some();
                let err = classify(store.data(), e);
                // A trap in a start function is the plugin's; anything else is resources.
                return Err(match err {
                    InvokeError::Trap(m) if !trapped => InvokeError::Instantiate(m),
                    other => other,
                });
            }
        };
        // Each hook is typed on its first call: most instances call one or two of them, and
        // typing one costs ~500-900 instructions (a fresh no-op request typed all four).
        Ok(PluginInstance {
            store,
            instance,
            in_call: false,
            request: Hook::new(&self.request),
            response: Hook::new(&self.response),
            failure: Hook::new(&self.failure),
            init: Hook::new(&self.init),
        })
    }
}

/// The host state of a torn-down instance, for the next fresh instance of its route entry
/// ([`PluginPre::instantiate_in`]). Only an instance whose every hook call ran to its end
/// leaves one; the plugin's memory and instance are gone with the store.
pub struct SpareCtx(PluginCtx);

/// One hook export of an instance: absent, its index (found at load), or the typed function
/// made from it on the first call.
enum Hook<I, G> {
    Absent,
    Index(I),
    Typed(G),
}

impl<I: Clone, G: Clone> Hook<I, G> {
    fn new(index: &Option<I>) -> Self {
        index.clone().map_or(Hook::Absent, Hook::Index)
    }

    fn exists(&self) -> bool {
        !matches!(self, Hook::Absent)
    }

    /// The typed function, made now if this is the first call. An export whose type does not
    /// match fails the call (the loader checked the types at load, so only a broken build does).
    fn get(
        &mut self,
        name: &str,
        make: impl FnOnce(&I) -> wasmtime::Result<G>,
    ) -> Result<Option<G>, InvokeError> {
        if let Hook::Index(index) = self {
            let typed = make(index).map_err(|e| {
                InvokeError::Instantiate(format!("hook `{name}` has the wrong shape: {e:#}"))
            })?;
            *self = Hook::Typed(typed);
        }
        Ok(match self {
            Hook::Typed(g) => Some(g.clone()),
            _ => None,
        })
    }
}

/// One plugin instance serving one request: request phase, then response or failure phase.
pub struct PluginInstance {
    store: Store<PluginCtx>,
    /// The component instance, for the snapshot taken after `init` (`preinit`).
    instance: wasmtime::component::Instance,
    /// Set while a hook runs: if the request is dropped mid-call (client gone), the store is
    /// left inside the guest and must not serve again.
    in_call: bool,
    request: Hook<request_hook::GuestIndices, request_hook::Guest>,
    response: Hook<response_hook::GuestIndices, response_hook::Guest>,
    failure: Hook<failure_hook::GuestIndices, failure_hook::Guest>,
    init: Hook<init::GuestIndices, init::Guest>,
}

/// Turn a wasmtime error into the failure the client and the log see.
fn classify(ctx: &PluginCtx, err: wasmtime::Error) -> InvokeError {
    let trap = err.downcast_ref::<Trap>().copied();
    if ctx.clock.hit || trap == Some(Trap::Interrupt) {
        return InvokeError::Deadline(ctx.clock.budget.as_millis() as u64);
    }
    if ctx.memory.hit {
        return InvokeError::OutOfMemory(ctx.memory_limit() as u64);
    }
    if err.is::<wasmtime::PoolConcurrencyLimitError>() {
        return InvokeError::Instantiate(format!("{err}"));
    }
    let mut message = match trap {
        Some(t) => t.to_string(),
        None => format!("{err:#}"),
    };
    let stderr = ctx.stderr_text();
    if !stderr.is_empty() {
        message.push_str("; stderr: ");
        message.push_str(&stderr);
    }
    if let Some((i, _)) = message.char_indices().nth(1000) {
        message.truncate(i);
    }
    InvokeError::Trap(message)
}

impl PluginInstance {
    /// The hooks this instance has.
    pub fn hooks(&self) -> HookSet {
        HookSet {
            request: self.request.exists(),
            response: self.response.exists(),
            failure: self.failure.exists(),
        }
    }

    /// Prepare a shelved instance (prepared ahead, or kept with `reuse_instances`; see
    /// `shelf`) for its request: new request metadata; the limits' per-invocation state
    /// resets in each hook call.
    pub fn recycle(&mut self, meta: Arc<RequestMeta>) {
        self.store.data_mut().recycle(meta);
    }

    /// The hooks this instance declared to do nothing so far.
    pub fn default_hooks(&self) -> HookSet {
        self.store.data().default_hooks
    }

    /// The most linear memory this instance held so far, in bytes.
    pub fn memory_peak(&self) -> usize {
        self.store.data().memory.peak()
    }

    /// Whether this instance may serve another request: no hook was cut off mid-call.
    pub fn reusable(&self) -> bool {
        !self.in_call
    }

    /// Type every hook the instance exports now (instances otherwise type a hook on its first
    /// call): the loader's check that a new version's hooks have the shapes the host calls.
    pub fn check_hooks(&mut self) -> Result<(), InvokeError> {
        let (store, instance) = (&mut self.store, &self.instance);
        self.request
            .get("request-hook", |i| i.load(&mut *store, instance))?;
        self.response
            .get("response-hook", |i| i.load(&mut *store, instance))?;
        self.failure
            .get("failure-hook", |i| i.load(&mut *store, instance))?;
        self.init.get("init", |i| i.load(&mut *store, instance))?;
        Ok(())
    }

    /// Tear the instance down (its store, memory and tables go back to the pool) and keep
    /// its host state for the next fresh instance, unless a hook was cut off mid-call.
    pub fn into_spare(self) -> Option<SpareCtx> {
        if !self.reusable() {
            return None;
        }
        Some(SpareCtx(self.store.into_data()))
    }

    fn begin(&mut self) {
        self.store.data_mut().clock.restart();
        self.store.set_epoch_deadline(1);
        self.in_call = true;
    }

    /// Run `init` (if exported): `Ok(true)` when the plugin set state up, `Ok(false)` when it
    /// had nothing to do (or exports no `init`), [`InvokeError::Init`] with the plugin's reason
    /// when it refused its config.
    pub async fn init(&mut self) -> Result<bool, InvokeError> {
        let (store, instance) = (&mut self.store, &self.instance);
        let Some(hook) = self.init.get("init", |i| i.load(&mut *store, instance))? else {
            return Ok(false);
        };
        self.begin();
        let out = hook.call_init(&mut self.store).await;
        self.in_call = false;
        match out {
            Ok(Ok(set_up)) => Ok(set_up),
            Ok(Err(reason)) => Err(InvokeError::Init(reason)),
            Err(e) => Err(classify(self.store.data(), e)),
        }
    }

    /// The store and the component instance, for taking a snapshot (`preinit`).
    pub(super) fn parts(&mut self) -> (&mut Store<PluginCtx>, wasmtime::component::Instance) {
        (&mut self.store, self.instance)
    }

    /// Run `on-request`. The request comes back (changed in place) whatever happened,
    /// except if the host could not store it at all (`None`).
    pub async fn on_request(
        &mut self,
        req: PluginRequest,
    ) -> (Option<PluginRequest>, Result<types::Decision, InvokeError>) {
        let (store, instance) = (&mut self.store, &self.instance);
        let hook = match self
            .request
            .get("request-hook", |i| i.load(&mut *store, instance))
        {
            Ok(Some(hook)) => hook,
            Ok(None) => return (Some(req), Ok(types::Decision::Continue)),
            Err(e) => return (Some(req), Err(e)),
        };
        let rep = match self.store.data_mut().table.push(req) {
            Ok(r) => r.rep(),
            Err(e) => return (None, Err(InvokeError::Instantiate(e.to_string()))),
        };
        self.begin();
        let out = hook
            .call_on_request(&mut self.store, Resource::new_own(rep))
            .await;
        self.in_call = false;
        let req = self
            .store
            .data_mut()
            .table
            .delete(Resource::<PluginRequest>::new_own(rep))
            .ok();
        (req, out.map_err(|e| classify(self.store.data(), e)))
    }

    /// Run `on-response`. The response comes back (changed in place) whatever happened,
    /// except if the host could not store it at all (`None`).
    pub async fn on_response(
        &mut self,
        resp: PluginResponse,
    ) -> (Option<PluginResponse>, Result<(), InvokeError>) {
        let (store, instance) = (&mut self.store, &self.instance);
        let hook = match self
            .response
            .get("response-hook", |i| i.load(&mut *store, instance))
        {
            Ok(Some(hook)) => hook,
            Ok(None) => return (Some(resp), Ok(())),
            Err(e) => return (Some(resp), Err(e)),
        };
        let rep = match self.store.data_mut().table.push(resp) {
            Ok(r) => r.rep(),
            Err(e) => return (None, Err(InvokeError::Instantiate(e.to_string()))),
        };
        self.begin();
        let out = hook
            .call_on_response(&mut self.store, Resource::new_own(rep))
            .await;
        self.in_call = false;
        let resp = self
            .store
            .data_mut()
            .table
            .delete(Resource::<PluginResponse>::new_own(rep))
            .ok();
        (resp, out.map_err(|e| classify(self.store.data(), e)))
    }

    /// Run `on-failure`: a fallback response, or `None` to pass the error on.
    pub async fn on_failure(
        &mut self,
        failure: types::UpstreamFailure,
    ) -> Result<Option<types::FullResponse>, InvokeError> {
        let (store, instance) = (&mut self.store, &self.instance);
        let Some(hook) = self
            .failure
            .get("failure-hook", |i| i.load(&mut *store, instance))?
        else {
            return Ok(None);
        };
        self.begin();
        let out = hook.call_on_failure(&mut self.store, &failure).await;
        self.in_call = false;
        out.map_err(|e| classify(self.store.data(), e))
    }
}
