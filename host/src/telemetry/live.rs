//! Live per-route figures for the dashboard: requests, 5xx errors and p99 latency per
//! second over the last [`WINDOW_SECONDS`].
//!
//! Each route has a ring of per-second slots. A finished request adds to its second's slot
//! with a few relaxed atomic adds: no lock, no allocation (a route's ring is allocated by its
//! first request, so idle routes cost a pointer). Latency goes into half-octave buckets
//! (64 µs, 96 µs, 128 µs, 192 µs, ... 50 s), enough for a p99 within ~1.5×.
//!
//! A slot is reused every [`WINDOW_SECONDS`]: the first request of a new second claims it
//! (compare-and-swap on its second) and zeroes it. A request of that same second that lands
//! between the claim and the zeroing is lost: a dashboard may miss one in a million, the
//! request path never waits. Routes are the config's (by index, like `ratelimit::Limits`),
//! never raw paths, so the memory is bounded by the config.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::metrics::RouteMeters;

/// How many seconds each route keeps.
pub const WINDOW_SECONDS: usize = 300;

const LATENCY_BUCKETS: usize = 40;
/// The lower bound of bucket 1, as a power of two (64 µs): bucket 0 holds anything faster.
const FIRST_OCTAVE: u32 = 6;

/// Second numbers count from here, so every route's ring agrees on what "now" is.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The second `at` falls in; starts at 1, so a slot's 0 means "never used".
fn second_of(at: Instant) -> u64 {
    at.saturating_duration_since(*EPOCH).as_secs() + 1
}

/// The latency bucket of `micros`: 0 below 64 µs, then two buckets per doubling.
fn bucket_of(micros: u64) -> usize {
    let value = micros.max(1);
    let octave = 63 - value.leading_zeros();
    if octave < FIRST_OCTAVE {
        return 0;
    }
    let half = (value >> (octave - 1)) & 1;
    let index = (octave - FIRST_OCTAVE) as usize * 2 + half as usize + 1;
    index.min(LATENCY_BUCKETS - 1)
}

/// The lowest latency (µs) bucket `index` holds.
fn bucket_floor(index: usize) -> u64 {
    if index == 0 {
        return 0;
    }
    let octave = FIRST_OCTAVE as usize + (index - 1) / 2;
    let half = ((index - 1) % 2) as u64;
    (1u64 << octave) * (2 + half) / 2
}

/// One second of one route.
#[derive(Debug)]
struct Slot {
    /// The second ([`second_of`]) the counters belong to; 0 when never used.
    second: AtomicU64,
    requests: AtomicU32,
    errors: AtomicU32,
    latency: [AtomicU32; LATENCY_BUCKETS],
}

impl Slot {
    fn new() -> Self {
        Slot {
            second: AtomicU64::new(0),
            requests: AtomicU32::new(0),
            errors: AtomicU32::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    fn clear(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        for bucket in &self.latency {
            bucket.store(0, Ordering::Relaxed);
        }
    }
}

/// One route's last [`WINDOW_SECONDS`], and its Prometheus handles (kept here because this
/// is the per-route, per-snapshot place on the request path, found by the route's index).
#[derive(Debug, Default)]
pub struct RouteWindow {
    slots: OnceLock<Box<[Slot]>>,
    meters: RouteMeters,
}

impl RouteWindow {
    /// Counts one finished request: its status, how long it took, and when it finished.
    pub fn record(&self, status: u16, elapsed: Duration, finished: Instant) {
        let slots = self
            .slots
            .get_or_init(|| (0..WINDOW_SECONDS).map(|_| Slot::new()).collect());
        let second = second_of(finished);
        let slot = &slots[(second % WINDOW_SECONDS as u64) as usize];
        let held = slot.second.load(Ordering::Acquire);
        if held != second {
            if held > second {
                // Finished more than a window ago by the time it is counted: too late.
                return;
            }
            if slot
                .second
                .compare_exchange(held, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                slot.clear();
            }
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        slot.latency[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// The `seconds` full seconds before `now`'s, oldest first.
    fn series(&self, now: Instant, seconds: usize) -> Series {
        let seconds = seconds.min(WINDOW_SECONDS - 1);
        let mut series = Series {
            requests: vec![0; seconds],
            errors: vec![0; seconds],
            p99_ms: vec![None; seconds],
        };
        let Some(slots) = self.slots.get() else {
            return series;
        };
        let current = second_of(now);
        for (i, back) in (1..=seconds as u64).rev().enumerate() {
            let Some(second) = current.checked_sub(back).filter(|s| *s > 0) else {
                continue;
            };
            let slot = &slots[(second % WINDOW_SECONDS as u64) as usize];
            if slot.second.load(Ordering::Acquire) != second {
                continue;
            }
            let latency: [u32; LATENCY_BUCKETS] =
                std::array::from_fn(|b| slot.latency[b].load(Ordering::Relaxed));
            let requests = slot.requests.load(Ordering::Relaxed);
            let errors = slot.errors.load(Ordering::Relaxed);
            // Reused while read: the figures may mix two seconds, so show none.
            if slot.second.load(Ordering::Acquire) != second {
                continue;
            }
            series.requests[i] = requests;
            series.errors[i] = errors;
            series.p99_ms[i] = p99_ms(&latency);
        }
        series
    }
}

/// The 99th percentile of a latency histogram, as its bucket's upper bound (ms); `None`
/// without requests.
fn p99_ms(latency: &[u32; LATENCY_BUCKETS]) -> Option<f64> {
    let total: u64 = latency.iter().map(|&n| u64::from(n)).sum();
    if total == 0 {
        return None;
    }
    // The rank of the 99th percentile, rounded up: of 10 requests, the slowest.
    let rank = (total * 99).div_ceil(100);
    let mut seen = 0;
    for (index, &n) in latency.iter().enumerate() {
        seen += u64::from(n);
        if seen >= rank {
            // The last bucket has no upper bound: its floor is what is known.
            let bound = if index + 1 < LATENCY_BUCKETS {
                bucket_floor(index + 1)
            } else {
                bucket_floor(index)
            };
            return Some(bound as f64 / 1000.0);
        }
    }
    None
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Series {
    requests: Vec<u32>,
    errors: Vec<u32>,
    /// `null` for a second without requests.
    p99_ms: Vec<Option<f64>>,
}

/// One route's figures, as the dashboard reads them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteSeries {
    #[serde(serialize_with = "as_str")]
    pub route: Arc<String>,
    #[serde(flatten)]
    series: Series,
}

fn as_str<S: serde::Serializer>(name: &Arc<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(name)
}

/// What [`LiveRoutes::series`] answers: each route's figures over the same seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveSeries {
    /// Seconds per point.
    pub step_seconds: u32,
    /// The Unix time (seconds) of the last point's second.
    pub end_unix: u64,
    pub routes: Vec<RouteSeries>,
}

/// Every route's window in one snapshot, by route index (the order of `routes` in the
/// config, which is also `routing::RouteId`).
#[derive(Debug, Default, Clone)]
pub struct LiveRoutes {
    routes: Arc<[(Arc<String>, Arc<RouteWindow>)]>,
}

impl LiveRoutes {
    /// Windows for `routes` (names, in config order). A route `previous` also had keeps its
    /// window: a reload does not blank the charts.
    pub fn build<'a>(routes: impl IntoIterator<Item = &'a str>, previous: &LiveRoutes) -> Self {
        // Before any request finishes, so that none finishes before the epoch.
        LazyLock::force(&EPOCH);
        let before: HashMap<&str, &Arc<RouteWindow>> = previous
            .routes
            .iter()
            .map(|(name, window)| (name.as_str(), window))
            .collect();
        let routes = routes
            .into_iter()
            .map(|name| {
                let window = before
                    .get(name)
                    .map_or_else(Arc::default, |w| Arc::clone(w));
                (Arc::new(name.to_owned()), window)
            })
            .collect();
        LiveRoutes { routes }
    }

    /// The cached metric handles of route `route` (its index).
    pub fn meters(&self, route: usize) -> Option<&RouteMeters> {
        self.routes.get(route).map(|(_, window)| &window.meters)
    }

    /// Counts one finished request of route `route` (its index); an unknown index is ignored.
    pub fn record(&self, route: usize, status: u16, elapsed: Duration, finished: Instant) {
        if let Some((_, window)) = self.routes.get(route) {
            window.record(status, elapsed, finished);
        }
    }

    /// Every route's last `seconds` full seconds (at most [`WINDOW_SECONDS`] - 1).
    pub fn series(&self, seconds: usize) -> LiveSeries {
        let now = Instant::now();
        let end_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(1);
        LiveSeries {
            step_seconds: 1,
            end_unix,
            routes: self
                .routes
                .iter()
                .map(|(route, window)| RouteSeries {
                    route: Arc::clone(route),
                    series: window.series(now, seconds),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_half_octaves_from_64_microseconds() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(63), 0);
        assert_eq!(bucket_of(64), 1);
        assert_eq!(bucket_of(95), 1);
        assert_eq!(bucket_of(96), 2);
        assert_eq!(bucket_of(128), 3);
        assert_eq!(bucket_of(u64::MAX), LATENCY_BUCKETS - 1);
        for index in 1..LATENCY_BUCKETS {
            assert_eq!(bucket_of(bucket_floor(index)), index, "floor of {index}");
            assert_eq!(
                bucket_of(bucket_floor(index) - 1),
                index - 1,
                "below {index}"
            );
        }
    }

    #[test]
    fn p99_is_the_slowest_of_a_hundred() {
        let window = RouteWindow::default();
        // Far enough from the epoch that the 3 s look-back stays after it.
        let at = *EPOCH + Duration::from_secs(10);
        for _ in 0..99 {
            window.record(200, Duration::from_micros(100), at);
        }
        window.record(503, Duration::from_millis(40), at);
        let series = window.series(at + Duration::from_secs(1), 3);
        assert_eq!(series.requests, [0, 0, 100]);
        assert_eq!(series.errors, [0, 0, 1]);
        // 99 of 100 at 100 µs: the 99th is in [96, 128) µs, shown as its upper bound.
        assert_eq!(series.p99_ms, [None, None, Some(0.128)]);
        window.record(200, Duration::from_secs(1), at);
        let p99 = window.series(at + Duration::from_secs(1), 1).p99_ms[0];
        // 2 of 101 are slow now: the 99th is the 40 ms one, in [32.768, 49.152) ms.
        assert_eq!(p99, Some(49.152));
    }

    #[test]
    fn a_slot_is_reused_a_window_later_and_late_records_are_dropped() {
        let window = RouteWindow::default();
        let at = *EPOCH + Duration::from_secs(10);
        window.record(200, Duration::from_millis(1), at);
        let later = at + Duration::from_secs(WINDOW_SECONDS as u64);
        window.record(500, Duration::from_millis(1), later);
        // The old second is out of the window; the new one counts alone.
        let series = window.series(later + Duration::from_secs(1), 1);
        assert_eq!((series.requests[0], series.errors[0]), (1, 1));
        window.record(200, Duration::from_millis(1), at);
        let series = window.series(later + Duration::from_secs(1), 1);
        assert_eq!(
            series.requests[0], 1,
            "a record from a window ago is dropped"
        );
        // Seconds without traffic read as zero, not as what the slot held before.
        let empty = window.series(later + Duration::from_secs(3), 1);
        assert_eq!(empty.requests, [0]);
    }

    #[test]
    fn a_reload_keeps_the_windows_of_routes_it_keeps() {
        let first = LiveRoutes::build(["a", "b"], &LiveRoutes::default());
        first.record(1, 200, Duration::from_millis(1), Instant::now());
        first.record(7, 200, Duration::from_millis(1), Instant::now());
        let second = LiveRoutes::build(["b", "c"], &first);
        assert!(Arc::ptr_eq(&first.routes[1].1, &second.routes[0].1));
        assert!(!Arc::ptr_eq(&first.routes[0].1, &second.routes[1].1));
        let names: Vec<&str> = second.routes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
    }
}
