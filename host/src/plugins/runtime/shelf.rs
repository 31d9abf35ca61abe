//! Plugin instances made or kept outside the request that uses them.
//!
//! By default every request gets a fresh instance, used for that one request and then thrown
//! away. Making one (~5 us) and tearing it down (~4 us, resetting its memory slot) need not
//! happen while the request waits: after a request, a [`Recycler`] task tears the used
//! instance down and prepares a fresh replacement on the route entry's [`InstanceShelf`], so
//! the next request starts with an instance that has never run a hook. Isolation is the same
//! as making it inline; only the timing moves. The shelf fills to the route's recent
//! concurrency (capped), and an empty shelf just means the request instantiates inline.
//!
//! With `reuse_instances = true` the shelf instead keeps used instances for later requests
//! (no isolation between requests, see docs/plugins.md).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::capabilities::{PluginEnv, RequestMeta};
use super::engine::PluginEngine;
use super::instance::PluginInstance;
use crate::plugins::reload::loader::LoadedPlugin;

/// What a route entry's instances are for after their first request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifetime {
    /// One request each (the default): the shelf holds only never-used instances.
    #[default]
    Fresh,
    /// Kept for later requests (`reuse_instances = true`).
    Reuse,
}

/// A count of things held, at most `max`, each released by dropping its [`Reservation`]:
/// instances on all shelves together (the budget) and teardowns queued (the backlog).
#[derive(Debug)]
struct Limit {
    held: Arc<AtomicUsize>,
    max: usize,
}

impl Limit {
    fn new(max: usize) -> Self {
        Limit {
            held: Arc::new(AtomicUsize::new(0)),
            max: max.max(1),
        }
    }

    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn reserve(&self) -> Option<Reservation> {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        Some(Reservation(self.held.clone()))
    }
}

/// One place in a [`Limit`], released on drop: when an instance leaves its shelf, or when a
/// teardown is done (or its task dropped unrun, as when a runtime shuts down).
struct Reservation(Arc<AtomicUsize>);

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Shelved {
    version: Arc<LoadedPlugin>,
    instance: PluginInstance,
    _place: Reservation,
}

/// The instances of one plugin on one route waiting for a request.
#[derive(Default)]
pub struct InstanceShelf {
    lifetime: Lifetime,
    slots: Mutex<Vec<Shelved>>,
    /// Set when the route's chain is gone: nothing is shelved any more.
    closed: AtomicBool,
}

impl InstanceShelf {
    /// Instances kept per plugin per route. A shelf smaller than the route's concurrency
    /// turns reuse into churn: with 50 requests in flight and 16 places, 34 instances a round
    /// were torn down and made again (measured: a reused no-op cost +13 µs CPU per request
    /// instead of +3). The shared budget (a quarter of `max_instances`) bounds all shelves
    /// together; this cap only keeps one busy route from taking all of it.
    pub const MAX: usize = 128;

    pub fn new(lifetime: Lifetime) -> Self {
        InstanceShelf {
            lifetime,
            slots: Mutex::default(),
            closed: AtomicBool::new(false),
        }
    }

    pub fn lifetime(&self) -> Lifetime {
        self.lifetime
    }

    /// Instances on the shelf now.
    pub fn len(&self) -> usize {
        self.slots().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slots(&self) -> MutexGuard<'_, Vec<Shelved>> {
        // Pushes and pops leave the list consistent even if a holder panicked.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An instance of `version`, if one waits. Instances of older versions are dropped: a
    /// reload retires them as they are met.
    pub fn take(&self, version: &Arc<LoadedPlugin>) -> Option<PluginInstance> {
        let mut slots = self.slots();
        slots.retain(|s| Arc::ptr_eq(&s.version, version));
        slots.pop().map(|s| s.instance)
    }

    /// Drop the instances waiting and shelve none from now on: the route's chain is gone.
    /// A shelved instance's context holds the route entry, which holds the shelf, so without
    /// this an entry and its instances (pool slots, and the plugin version they were made
    /// from) would keep each other alive after a config or plugin reload.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let drained = std::mem::take(&mut *self.slots());
        drop(drained);
    }

    /// Put `instance` (made from `version`) on the shelf, unless the shelf or the budget is
    /// full or the shelf is closed; then it is dropped.
    fn put(&self, budget: &Limit, version: Arc<LoadedPlugin>, instance: PluginInstance) {
        let mut slots = self.slots();
        if slots.len() >= Self::MAX || self.closed.load(Ordering::Relaxed) {
            return;
        }
        if let Some(place) = budget.reserve() {
            slots.push(Shelved {
                version,
                instance,
                _place: place,
            });
        }
    }

    fn has_room(&self, budget: &Limit) -> bool {
        self.len() < Self::MAX && budget.held() < budget.max
    }
}

/// Hands instances whose request is over to the background: reused ones go back on their
/// shelf at once; a fresh one is torn down in a task of its own and replaced by a prepared
/// instance. The task runs on the runtime of the request that used the instance, so on a
/// public listener worker it stays on that worker's thread: no cross-thread wake-up, and the
/// work waits only until that worker's current requests have had their turn.
#[derive(Clone)]
pub struct Recycler {
    engine: Arc<PluginEngine>,
    /// Instances on all shelves together. Each holds a slot of the engine's pool
    /// (`plugins.max_instances`), so shelves take at most a quarter of it and requests always
    /// have the rest.
    budget: Arc<Limit>,
    /// Teardowns queued and not yet done.
    backlog: Arc<Limit>,
}

impl Recycler {
    /// Instances waiting for teardown. Each still holds a pool slot, so when teardown falls
    /// behind this far, requests tear their instances down themselves (as without a
    /// recycler) rather than queue more.
    const BACKLOG: usize = 64;

    pub fn new(engine: Arc<PluginEngine>) -> Self {
        let budget = Arc::new(Limit::new(engine.limits().max_instances as usize / 4));
        Recycler {
            engine,
            budget,
            backlog: Arc::new(Limit::new(Self::BACKLOG)),
        }
    }

    /// The request using `instance` (made from `version` for `env`) is over.
    pub fn after_request(
        &self,
        env: &Arc<PluginEnv>,
        version: Arc<LoadedPlugin>,
        instance: PluginInstance,
    ) {
        match env.shelf.lifetime() {
            Lifetime::Reuse => {
                if instance.reusable() {
                    env.shelf.put(&self.budget, version, instance);
                }
            }
            Lifetime::Fresh => {
                // Outside a runtime, or too far behind: drop it here, as if there were no
                // recycler.
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let Some(queued) = self.backlog.reserve() else {
                    return;
                };
                let recycle = self.clone().recycle(env.clone(), version, instance, queued);
                runtime.spawn(recycle);
            }
        }
    }

    /// Tears `instance` down, then prepares a never-used replacement unless teardown is
    /// falling behind: under a burst the slots are better freed first.
    async fn recycle(
        self,
        env: Arc<PluginEnv>,
        version: Arc<LoadedPlugin>,
        instance: PluginInstance,
        queued: Reservation,
    ) {
        // The teardown; the host state stays for the replacement.
        let spare = instance.into_spare();
        drop(queued);
        if self.backlog.held() > Self::BACKLOG / 8 || !env.shelf.has_room(&self.budget) {
            return;
        }
        let meta = Arc::new(RequestMeta::default());
        match super::preinit::instantiate(&self.engine, &env, &version, meta, spare).await {
            Ok(fresh) => env.shelf.put(&self.budget, version, fresh),
            // The request path instantiates again and reports the error there.
            Err(e) => tracing::debug!(plugin = %env.name, route = %env.route,
                "preparing a plugin instance failed: {e}"),
        }
    }
}
