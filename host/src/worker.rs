//! Which public listener worker the current thread is: set by `listener::workers` when a worker
//! starts, read by whatever shards per-worker state (the upstream connection pools).

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker running on this thread, or `None` off the workers (the control
/// runtime, tests). Per-worker state such as upstream connection pools is sharded by it.
pub fn current() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// Marks this thread as worker `index` (called once, when the worker's thread starts).
pub(crate) fn set_current(index: usize) {
    WORKER.with(|w| w.set(Some(index)));
}
