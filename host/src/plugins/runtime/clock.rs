//! The time budget of one plugin invocation: how long its wasm has run on the worker thread,
//! and the yield to the worker's event loop at each epoch tick.
//!
//! A worker thread serves many requests; a plugin that computes for its whole deadline must
//! not hold the thread meanwhile. So at each epoch tick (every `epoch_tick`, 2 ms) a running
//! plugin yields: its request goes to the back of the worker's queue, the other requests on
//! the worker progress, and the plugin runs again when the worker polls it next.
//!
//! The budget therefore counts the plugin's own running time, in *slices*. A slice starts
//! when the hook call starts, when a host call the plugin awaited returns, or when the worker
//! polls the plugin again after a yield; it ends at the next tick or host call. Time between
//! slices (awaiting the host, or waiting in the worker's queue behind other requests) is not
//! the plugin's.
//!
//! A slice that starts at a resume is measured in the thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`: fibers run on the worker's own thread), so time the OS
//! deschedules the worker does not count either. The first slice of a call and the slice
//! after a host call are measured on the monotonic clock instead: they last at most one tick,
//! and most hook calls end inside their first slice, which then costs one cheap clock read
//! rather than a system call.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::UpdateDeadline;

use super::ticker::TickerHandle;

/// Where the running slice started.
#[derive(Debug, Clone, Copy)]
enum SliceStart {
    /// On the monotonic clock.
    Wall(Instant),
    /// On this thread's CPU clock.
    Cpu(Duration),
}

impl SliceStart {
    fn elapsed(self) -> Duration {
        match self {
            SliceStart::Wall(at) => at.elapsed(),
            SliceStart::Cpu(at) => thread_cpu().saturating_sub(at),
        }
    }
}

/// CPU time this thread has used. Read through glibc rather than rustix: rustix locates the
/// vDSO from the kernel's aux vector, which under valgrind (benches/proxy-instructions.sh)
/// names a vDSO the process does not have mapped, and the first read crashes.
#[allow(unsafe_code)]
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// The budget of one invocation (see the module doc for what it counts).
pub struct CpuClock {
    ticker: TickerHandle,
    /// Running time of the slices that ended.
    used: Duration,
    /// The running slice; `None` while the plugin awaits the host or waits to run again.
    slice: Option<SliceStart>,
    /// Set by the yield future when the worker polls the plugin again: the thread's CPU time
    /// then, in nanoseconds plus one (0: no resume since the slice was last read).
    resumed: Arc<AtomicU64>,
    pub(crate) budget: Duration,
    pub(crate) hit: bool,
}

impl CpuClock {
    /// A clock for invocations of `budget` each.
    pub fn new(budget: Duration, ticker: TickerHandle) -> Self {
        CpuClock {
            ticker,
            used: Duration::ZERO,
            slice: None,
            resumed: Arc::default(),
            budget,
            hit: false,
        }
    }

    /// The clock of a new instance with a budget of `budget` per invocation (the state a
    /// torn-down instance left is dropped; its ticker handle stays).
    pub fn renew(&mut self, budget: Duration) {
        self.used = Duration::ZERO;
        self.slice = None;
        self.resumed.store(0, Relaxed);
        self.budget = budget;
        self.hit = false;
    }

    /// Start counting a new invocation (and keep the epoch ticker that enforces the budget
    /// at full speed).
    pub fn restart(&mut self) {
        self.keep_ticking();
        self.used = Duration::ZERO;
        self.resumed.store(0, Relaxed);
        self.slice = Some(SliceStart::Wall(Instant::now()));
    }

    /// Keep the epoch ticker at full speed: wasm is running.
    pub fn keep_ticking(&self) {
        self.ticker.wake();
    }

    /// The running slice, picking up a resume the yield future recorded.
    fn slice(&mut self) -> Option<SliceStart> {
        let resumed = self.resumed.swap(0, Relaxed);
        if resumed != 0 {
            self.slice = Some(SliceStart::Cpu(Duration::from_nanos(resumed - 1)));
        }
        self.slice
    }

    /// The running slice ends: the plugin yields or awaits the host.
    fn end_slice(&mut self) {
        if let Some(start) = self.slice() {
            self.used += start.elapsed();
        }
        self.slice = None;
    }

    /// The plugin starts awaiting a host call: that time is not its own.
    pub fn host_call_starts(&mut self) {
        self.end_slice();
    }

    /// The host call returned: the plugin runs again.
    pub fn host_call_returned(&mut self) {
        self.slice = Some(SliceStart::Wall(Instant::now()));
    }

    /// At an epoch tick while wasm runs: trap if the budget is used up, otherwise yield to
    /// the worker's event loop and run again (until the next tick) when polled.
    pub fn on_tick(&mut self) -> UpdateDeadline {
        self.keep_ticking();
        self.end_slice();
        if self.used > self.budget {
            self.hit = true;
            return UpdateDeadline::Interrupt;
        }
        let resumed = Arc::clone(&self.resumed);
        UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                tokio::task::yield_now().await;
                let now = u64::try_from(thread_cpu().as_nanos()).unwrap_or(u64::MAX - 1);
                resumed.store(now + 1, Relaxed);
            }),
        )
    }
}
