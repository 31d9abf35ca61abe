//! The thread that advances the wasm engines' epochs, so plugin deadlines fire.
//!
//! It ticks every `epoch_tick` (2 ms) while plugins run: each invocation wakes it as it
//! starts, and each tick that finds wasm running (the epoch callback) keeps it awake. After a
//! second with neither it slows to one tick per 100 ms, so an idle gateway is not woken 500
//! times a second. The wake-up is best-effort (a call that starts just as the ticker slows
//! down may miss it), so the slow tick also bounds how late a deadline can fire: by one slow
//! tick, once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::Thread;
use std::time::Duration;

/// How long without a new plugin call before the ticker slows down.
pub const IDLE_AFTER: Duration = Duration::from_secs(1);
/// The tick while idle.
pub const IDLE_TICK: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Shared {
    /// A call started since the last tick.
    called: AtomicBool,
    /// The ticker is on its slow tick.
    idle: AtomicBool,
    stop: AtomicBool,
    ticks: AtomicU64,
}

/// The running ticker; dropping it stops the thread.
pub struct EpochTicker {
    handle: TickerHandle,
}

/// What a plugin invocation uses to keep the ticker at full speed.
#[derive(Clone)]
pub struct TickerHandle {
    shared: Arc<Shared>,
    thread: Thread,
}

impl EpochTicker {
    /// Start a thread that calls `advance` every `tick`, or every `idle_tick` once no call
    /// has started for `idle_after`.
    pub fn start(
        tick: Duration,
        idle_after: Duration,
        idle_tick: Duration,
        advance: impl Fn() + Send + 'static,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("gatehouse-epoch".into())
            .spawn(move || {
                let mut quiet = Duration::ZERO;
                while !state.stop.load(Relaxed) {
                    if quiet < idle_after {
                        std::thread::sleep(tick);
                    } else {
                        state.idle.store(true, Relaxed);
                        std::thread::park_timeout(idle_tick);
                        state.idle.store(false, Relaxed);
                    }
                    advance();
                    state.ticks.fetch_add(1, Relaxed);
                    if state.called.swap(false, Relaxed) {
                        quiet = Duration::ZERO;
                    } else {
                        quiet = quiet.saturating_add(tick);
                    }
                }
            })?
            .thread()
            .clone();
        Ok(EpochTicker {
            handle: TickerHandle { shared, thread },
        })
    }

    /// A handle for invocations to wake the ticker with.
    pub fn handle(&self) -> TickerHandle {
        self.handle.clone()
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.handle.shared.stop.store(true, Relaxed);
        self.handle.thread.unpark();
    }
}

impl TickerHandle {
    /// Plugin code is about to run or running: keep ticking at full speed, waking the
    /// ticker if it is idle.
    /// Costs one relaxed load when the ticker is already running.
    pub fn wake(&self) {
        let shared = &self.shared;
        if !shared.called.load(Relaxed) {
            shared.called.store(true, Relaxed);
            if shared.idle.load(Relaxed) {
                self.thread.unpark();
            }
        }
    }

    /// Whether the ticker is on its slow tick.
    pub fn is_idle(&self) -> bool {
        self.shared.idle.load(Relaxed)
    }

    /// Ticks so far.
    pub fn ticks(&self) -> u64 {
        self.shared.ticks.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The idle tick here is a minute: only the wake-up can bring ticks back within the
    /// test's deadline.
    #[test]
    fn slows_down_without_calls_and_a_call_wakes_it() {
        let ticker = EpochTicker::start(
            Duration::from_millis(1),
            Duration::from_millis(20),
            Duration::from_secs(60),
            || {},
        )
        .unwrap();
        let handle = ticker.handle();
        wait_until("the ticker is idle", || handle.is_idle());
        let before = handle.ticks();

        handle.wake();
        wait_until("ticks resume", || handle.ticks() >= before + 5);
    }
}
