//! A route's plugin chain: which plugin runs at which phase, in what order, and what a
//! plugin failure does to the request (fail-closed or fail-open).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::Serialize;

use super::reload::loader::LoadedPlugin;
use super::reload::registry::{CanarySet, PluginRegistry, PluginSet};
use super::reload::rollout::Canary;
use super::runtime::bindings::types::{Decision, UpstreamFailure};
use super::runtime::capabilities::{PluginEnv, RequestMeta};
use super::runtime::engine::PluginEngine;
use super::runtime::error::{InvokeError, Phase, PluginFailure};
use super::runtime::instance::PluginInstance;
use super::runtime::message::{
    from_full_response, stamp_request_id, PluginRequest, PluginResponse,
};
use super::runtime::shelf::Recycler;
use super::Body;
use crate::telemetry::trace::ChildSpan;
use crate::telemetry::Metrics;

/// One hook call being watched (see `ChainRun::watch`).
struct HookWatch {
    span: Option<ChildSpan>,
    phase: Phase,
    started: Instant,
}

/// A failed hook's outcome in its span.
fn hook_failure(error: &InvokeError) -> &'static str {
    match error {
        InvokeError::OutOfMemory(_) => "oom",
        other => other.kind(),
    }
}

/// What a plugin failure does to the request (a route's `on_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// The request fails with the plugin's error (500/503 + JSON). The default.
    #[default]
    FailClosed,
    /// The failing plugin is skipped (logged) and the request goes on as the plugin left it.
    FailOpen,
}

/// The result of the request phase.
pub enum RequestOutcome {
    /// Send this (possibly changed) request upstream.
    Continue(http::Request<Body>),
    /// A plugin answered; send this to the client. The upstream and the response phase are
    /// skipped.
    Respond(http::Response<Body>),
}

/// The plugins of one route, in order, with their config and grants.
pub struct PluginChain {
    entries: Vec<Arc<PluginEnv>>,
    on_error: OnError,
    engine: Arc<PluginEngine>,
    registry: Arc<PluginRegistry>,
    recycler: Recycler,
    /// Where hook calls, failures and instance creation are counted (set once, by the
    /// gateway, right after the chain is built).
    metrics: OnceLock<Arc<Metrics>>,
}

impl Drop for PluginChain {
    /// The route is gone (config reload): its shelved instances go too, with the plugin
    /// versions and snapshots they hold (`InstanceShelf::close`).
    fn drop(&mut self) {
        for entry in &self.entries {
            entry.shelf.close();
        }
    }
}

impl PluginChain {
    /// Counts this chain's plugin calls in `metrics`.
    pub fn count_in(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// A chain running `entries` in order.
    pub fn new(
        entries: Vec<Arc<PluginEnv>>,
        on_error: OnError,
        engine: Arc<PluginEngine>,
        registry: Arc<PluginRegistry>,
        recycler: Recycler,
    ) -> Self {
        PluginChain {
            entries,
            on_error,
            engine,
            registry,
            recycler,
            metrics: OnceLock::new(),
        }
    }

    /// Whether the chain has no plugins (the request path can skip it entirely).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Instances waiting on this chain's shelves (prepared fresh ones, or kept ones with
    /// `reuse_instances`).
    pub fn shelved(&self) -> usize {
        self.entries.iter().map(|e| e.shelf.len()).sum()
    }

    /// Plugin versions whose snapshot state this chain's entries still remember (each may
    /// hold a compiled snapshot): one per entry once a replaced version is gone.
    pub fn snapshots_held(&self) -> usize {
        self.entries.iter().map(|e| e.snapshots.len()).sum()
    }

    /// Start running the chain for one request. The set of active plugin versions is fixed
    /// now: a reload during the request does not affect it.
    pub fn start(self: &Arc<Self>, meta: RequestMeta) -> ChainRun {
        ChainRun {
            chain: self.clone(),
            set: self.registry.snapshot(),
            canaries: self.registry.canaries(),
            canary: self.entries.iter().map(|_| None).collect(),
            meta: Arc::new(meta),
            instances: self.entries.iter().map(|_| None).collect(),
            failed: vec![false; self.entries.len()],
            failed_memory_peak: 0,
        }
    }
}

/// One request's pass through a chain. It holds each plugin's instance from the request
/// phase to the response or failure phase.
pub struct ChainRun {
    chain: Arc<PluginChain>,
    set: Arc<PluginSet>,
    /// Candidates being rolled out when the request started.
    canaries: Arc<CanarySet>,
    /// The candidate each plugin's instance came from, if it did: its outcome is counted.
    canary: Vec<Option<Arc<Canary>>>,
    meta: Arc<RequestMeta>,
    /// Each plugin's instance for this request, with the version it was made from.
    instances: Vec<Option<(Arc<LoadedPlugin>, PluginInstance)>>,
    failed: Vec<bool>,
    /// The memory peak of instances dropped because they failed (see `memory_peak`).
    failed_memory_peak: usize,
}

impl Drop for ChainRun {
    /// Hooks an instance declared to do nothing are remembered for its plugin version, so
    /// later requests skip them. Instances go to the recycler: fresh ones are torn down and
    /// replaced off the request path, reused ones go back on their shelf. An instance that
    /// failed was already dropped (`fail`), so a broken one never serves again.
    fn drop(&mut self) {
        for (canary, failed) in self.canary.iter().zip(&self.failed) {
            if let Some(canary) = canary {
                if !failed {
                    canary.record(false);
                }
            }
        }
        for (env, slot) in self.chain.entries.iter().zip(&mut self.instances) {
            if let Some((version, instance)) = slot.take() {
                version.defaults.learn(instance.default_hooks());
                self.chain.recycler.after_request(env, version, instance);
            }
        }
    }
}

impl ChainRun {
    fn body_cap(&self) -> usize {
        self.chain.engine.limits().body_cap
    }

    /// The most linear memory any one of this request's plugin instances held, in bytes.
    pub fn memory_peak(&self) -> usize {
        self.instances
            .iter()
            .flatten()
            .map(|(_, instance)| instance.memory_peak())
            .fold(self.failed_memory_peak, usize::max)
    }

    /// Handle a failure of plugin `i`: log it, then either swallow it (fail-open) or
    /// return it (fail-closed).
    fn fail(&mut self, i: usize, phase: Phase, error: InvokeError) -> Result<(), PluginFailure> {
        if let Some(canary) = self.canary[i].take() {
            // Only what the version itself did counts against it.
            canary.record(matches!(
                error,
                InvokeError::Trap(_) | InvokeError::Deadline(_) | InvokeError::OutOfMemory(_)
            ));
        }
        self.failed[i] = true;
        if let Some((_, instance)) = self.instances[i].take() {
            self.failed_memory_peak = self.failed_memory_peak.max(instance.memory_peak());
        }
        let env = &self.chain.entries[i];
        let failure = PluginFailure {
            plugin: env.name.clone(),
            phase,
            error,
        };
        let fail_open = self.chain.on_error == OnError::FailOpen;
        if let (true, Some(metrics)) = (fail_open, self.chain.metrics.get()) {
            metrics.plugin_fail_open(env.name.arc());
        }
        tracing::error!(plugin = %env.name, route = %env.route, phase = %phase,
            kind = failure.error.kind(), request_id = %self.meta.request_id, fail_open,
            "{failure}");
        if fail_open {
            Ok(())
        } else {
            Err(failure)
        }
    }

    /// The host could not get the message back from plugin `i`'s store (only a resource
    /// table overflow does that). There is nothing to forward, so even fail-open fails.
    fn lost(&mut self, i: usize, phase: Phase, error: Option<InvokeError>) -> PluginFailure {
        let error = error.unwrap_or_else(|| InvokeError::Instantiate("message lost".into()));
        match self.fail(i, phase, error) {
            Err(failure) => failure,
            Ok(()) => PluginFailure {
                plugin: self.chain.entries[i].name.clone(),
                phase,
                error: InvokeError::Instantiate("message lost in a fail-open plugin".into()),
            },
        }
    }

    /// The instance of plugin `i` for this request, created on first use. `Ok(None)` when
    /// the plugin lacks the hook for `phase` or already failed in this request.
    async fn instance(&mut self, i: usize, phase: Phase) -> Result<Option<usize>, InvokeError> {
        if self.failed[i] {
            return Ok(None);
        }
        if let Some((loaded, _)) = &self.instances[i] {
            // The instance from an earlier phase; its hook for this phase may be a default.
            return Ok(loaded.runs(phase).then_some(i));
        }
        let env = self.chain.entries[i].clone();
        let canary = self
            .canaries
            .get(&env.name)
            .filter(|c| c.picks(&self.meta.request_id));
        let loaded = match canary {
            Some(c) => {
                self.canary[i] = Some(c.clone());
                c.version.load_full()
            }
            None => match self.set.get(&env.name) {
                Some(l) => l.clone(),
                None => return Err(InvokeError::NotLoaded),
            },
        };
        if !loaded.runs(phase) {
            return Ok(None);
        }
        let inst = match env.shelf.take(&loaded) {
            Some(mut inst) => {
                inst.recycle(self.meta.clone());
                inst
            }
            None => {
                if let Some(metrics) = self.chain.metrics.get() {
                    metrics.plugin_instance_created(env.name.arc());
                }
                crate::plugins::runtime::preinit::instantiate(
                    &self.chain.engine,
                    &env,
                    &loaded,
                    self.meta.clone(),
                    None,
                )
                .await?
            }
        };
        self.instances[i] = Some((loaded, inst));
        Ok(Some(i))
    }

    /// Starts watching plugin `slot`'s hook in `phase`: its clock, and a span when the
    /// request is traced.
    fn watch(&self, slot: usize, phase: Phase) -> HookWatch {
        let span = self.meta.trace.as_ref().and_then(|scope| {
            let (loaded, _) = self.instances[slot].as_ref()?;
            Some(scope.plugin_hook(
                self.chain.entries[slot].name.as_str(),
                loaded.pre.version(),
                phase.as_str(),
            ))
        });
        HookWatch {
            span,
            phase,
            started: Instant::now(),
        }
    }

    /// The hook `watch` watched ended with `outcome`: counted, and its span ended.
    fn observed(&self, slot: usize, watch: HookWatch, outcome: &'static str) {
        if let (Some(metrics), Some((loaded, _))) =
            (self.chain.metrics.get(), self.instances[slot].as_ref())
        {
            metrics.plugin_hook(
                self.chain.entries[slot].name.arc(),
                loaded.pre.version(),
                watch.phase.as_str(),
                outcome,
                watch.started.elapsed(),
            );
        }
        if let Some(span) = watch.span {
            span.end_hook(outcome);
        }
    }

    /// The request phase: each plugin in order may change the request or answer it.
    pub async fn on_request(
        &mut self,
        req: http::Request<Body>,
    ) -> Result<RequestOutcome, PluginFailure> {
        let mut req = PluginRequest::new(req, self.body_cap());
        for i in 0..self.chain.entries.len() {
            let cap = self.chain.entries[i].limits.body_cap;
            let slot = match self.instance(i, Phase::Request).await {
                Ok(Some(slot)) => slot,
                Ok(None) => continue,
                Err(e) => {
                    self.fail(i, Phase::Request, e)?;
                    continue;
                }
            };
            let watch = self.watch(slot, Phase::Request);
            let Some((_, inst)) = self.instances[slot].as_mut() else {
                continue;
            };
            req.set_body_cap(cap);
            let (back, result) = inst.on_request(req).await;
            self.observed(
                slot,
                watch,
                match &result {
                    Ok(Decision::Continue) => "continue",
                    Ok(Decision::Respond(_)) => "respond",
                    Err(e) => hook_failure(e),
                },
            );
            let Some(back) = back else {
                return Err(self.lost(i, Phase::Request, result.err()));
            };
            req = back;
            match result {
                Ok(Decision::Continue) => {}
                Ok(Decision::Respond(mut full)) => {
                    stamp_request_id(&mut full, &self.meta.request_id);
                    match from_full_response(full, cap) {
                        Ok(resp) => return Ok(RequestOutcome::Respond(resp)),
                        Err(e) => self.fail(i, Phase::Request, e)?,
                    }
                }
                Err(e) => self.fail(i, Phase::Request, e)?,
            }
        }
        Ok(RequestOutcome::Continue(req.into_request()))
    }

    /// The response phase: each plugin, last to first, may change the upstream response.
    pub async fn on_response(
        &mut self,
        resp: http::Response<Body>,
    ) -> Result<http::Response<Body>, PluginFailure> {
        let mut resp = PluginResponse::new(resp, self.body_cap());
        for i in (0..self.chain.entries.len()).rev() {
            let slot = match self.instance(i, Phase::Response).await {
                Ok(Some(slot)) => slot,
                Ok(None) => continue,
                Err(e) => {
                    self.fail(i, Phase::Response, e)?;
                    continue;
                }
            };
            let watch = self.watch(slot, Phase::Response);
            let Some((_, inst)) = self.instances[slot].as_mut() else {
                continue;
            };
            resp.set_body_cap(self.chain.entries[i].limits.body_cap);
            let (back, result) = inst.on_response(resp).await;
            self.observed(
                slot,
                watch,
                match &result {
                    Ok(()) => "continue",
                    Err(e) => hook_failure(e),
                },
            );
            let Some(back) = back else {
                return Err(self.lost(i, Phase::Response, result.err()));
            };
            resp = back;
            if let Err(e) = result {
                self.fail(i, Phase::Response, e)?;
            }
        }
        Ok(resp.into_response())
    }

    /// The failure phase: each plugin, last to first, may turn the upstream failure into a
    /// fallback response. `Ok(None)`: no plugin did; the host answers with its error.
    pub async fn on_failure(
        &mut self,
        failure: UpstreamFailure,
    ) -> Result<Option<http::Response<Body>>, PluginFailure> {
        for i in (0..self.chain.entries.len()).rev() {
            let cap = self.chain.entries[i].limits.body_cap;
            let slot = match self.instance(i, Phase::Failure).await {
                Ok(Some(slot)) => slot,
                Ok(None) => continue,
                Err(e) => {
                    self.fail(i, Phase::Failure, e)?;
                    continue;
                }
            };
            let watch = self.watch(slot, Phase::Failure);
            let Some((_, inst)) = self.instances[slot].as_mut() else {
                continue;
            };
            let result = inst.on_failure(failure.clone()).await;
            self.observed(
                slot,
                watch,
                match &result {
                    Ok(None) => "continue",
                    Ok(Some(_)) => "respond",
                    Err(e) => hook_failure(e),
                },
            );
            match result {
                Ok(None) => {}
                Ok(Some(mut full)) => {
                    stamp_request_id(&mut full, &self.meta.request_id);
                    match from_full_response(full, cap) {
                        Ok(resp) => return Ok(Some(resp)),
                        Err(e) => self.fail(i, Phase::Failure, e)?,
                    }
                }
                Err(e) => self.fail(i, Phase::Failure, e)?,
            }
        }
        Ok(None)
    }
}
