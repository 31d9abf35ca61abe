//! A coarse timer for hyper's HTTP/1.1 header-read timeout (slowloris protection).
//!
//! hyper arms that timeout before every request head on a keep-alive connection and drops it
//! once the head is parsed, so with tokio's timer each request paid for a boxed `Sleep`, its
//! insertion into the runtime's timer wheel and its removal (~1.7k instructions, callgrind,
//! benches/README.md). Here a sleep is one slot in a per-worker table, and a ticker task
//! fires the expired ones once per `tick`: a 30 s timeout closes a silent connection up to
//! one tick late, which is all slowloris protection needs.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// How often a worker's ticker fires expired sleeps: the timeout's slack.
pub const TICK: Duration = Duration::from_secs(1);

/// A [`Timer`] whose sleeps fire on the next tick after their deadline. Cheap to clone.
#[derive(Clone)]
pub struct CoarseTimer {
    table: Arc<Table>,
}

#[derive(Default)]
struct Table {
    slots: Mutex<Slots>,
}

/// A free-list slab: a sleep keeps its index for life, so arming and disarming are O(1).
#[derive(Default)]
struct Slots {
    entries: Vec<Slot>,
    free: Vec<usize>,
}

enum Slot {
    Free,
    Armed {
        deadline: Instant,
        waker: Option<Waker>,
    },
    Fired,
}

impl Slots {
    fn insert(&mut self, deadline: Instant) -> usize {
        let slot = Slot::Armed {
            deadline,
            waker: None,
        };
        match self.free.pop() {
            Some(index) => {
                self.entries[index] = slot;
                index
            }
            None => {
                self.entries.push(slot);
                self.entries.len() - 1
            }
        }
    }

    fn remove(&mut self, index: usize) {
        if let Some(slot) = self.entries.get_mut(index) {
            *slot = Slot::Free;
            self.free.push(index);
        }
    }
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        // Nothing panics while holding it; a poisoned table is still consistent.
        self.slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Marks every sleep due by `now` fired and wakes its task (outside the lock).
    fn fire(&self, now: Instant) {
        let mut due = Vec::new();
        {
            let mut slots = self.lock();
            for slot in slots.entries.iter_mut() {
                if let Slot::Armed { deadline, .. } = slot {
                    if *deadline <= now {
                        if let Slot::Armed {
                            waker: Some(waker), ..
                        } = std::mem::replace(slot, Slot::Fired)
                        {
                            due.push(waker);
                        }
                    }
                }
            }
        }
        due.into_iter().for_each(Waker::wake);
    }
}

impl CoarseTimer {
    /// A timer whose ticker runs on the current tokio runtime every `tick`, until the last
    /// clone of the timer is dropped.
    pub fn start(tick: Duration) -> Self {
        let table = Arc::new(Table::default());
        let weak: Weak<Table> = Arc::downgrade(&table);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(tick);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(table) = weak.upgrade() else {
                    return;
                };
                table.fire(Instant::now());
            }
        });
        CoarseTimer { table }
    }

    fn sleep_at(&self, deadline: Instant) -> CoarseSleep {
        let index = self.table.lock().insert(deadline);
        CoarseSleep {
            table: Arc::clone(&self.table),
            index,
        }
    }
}

impl Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(self.sleep_at(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(mine) => {
                let index = mine.index;
                if let Some(slot) = mine.table.lock().entries.get_mut(index) {
                    let waker = match std::mem::replace(slot, Slot::Free) {
                        Slot::Armed { waker, .. } => waker,
                        Slot::Free | Slot::Fired => None,
                    };
                    *slot = Slot::Armed {
                        deadline: new_deadline,
                        waker,
                    };
                }
            }
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// One armed deadline; frees its slot when dropped.
struct CoarseSleep {
    table: Arc<Table>,
    index: usize,
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut slots = self.table.lock();
        match slots.entries.get_mut(self.index) {
            Some(Slot::Armed { waker, .. }) => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            // Fired (or, impossibly, gone): the deadline has passed.
            _ => Poll::Ready(()),
        }
    }
}

impl Sleep for CoarseSleep {}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        self.table.lock().remove(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// hyper's header-read timeout on this timer: a keep-alive connection that answered one
    /// request and then sends half a head is closed (slowloris), the timer re-armed for the
    /// second head on the same connection.
    #[tokio::test]
    async fn the_header_read_timeout_closes_a_slow_keep_alive_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let timer = CoarseTimer::start(Duration::from_millis(10));
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                    bytes::Bytes,
                >::new()))
            });
            hyper::server::conn::http1::Builder::new()
                .timer(timer)
                .header_read_timeout(Duration::from_millis(200))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = client.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "first request answered"
        );
        client.write_all(b"GET / HTTP/1.1\r\nhost:").await.unwrap();
        // Bounded so a broken timer fails the test instead of hanging it.
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the slow connection was closed");
        let error = server
            .await
            .unwrap()
            .expect_err("hyper reports the timeout");
        assert!(error.is_timeout(), "{error}");
    }

    #[tokio::test]
    async fn a_sleep_fires_on_the_tick_after_its_deadline() {
        let timer = CoarseTimer::start(Duration::from_millis(10));
        let started = Instant::now();
        timer.sleep(Duration::from_millis(30)).await;
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn a_dropped_sleep_frees_its_slot_for_the_next() {
        let timer = CoarseTimer::start(Duration::from_millis(10));
        drop(timer.sleep(Duration::from_secs(60)));
        let _second = timer.sleep(Duration::from_secs(60));
        let slots = timer.table.lock();
        assert_eq!(slots.entries.len(), 1, "the freed slot was reused");
    }

    #[tokio::test]
    async fn reset_moves_the_deadline_of_an_armed_sleep() {
        let timer = CoarseTimer::start(Duration::from_millis(10));
        let mut sleep = timer.sleep(Duration::from_secs(3600));
        timer.reset(&mut sleep, Instant::now() + Duration::from_millis(20));
        tokio::time::timeout(Duration::from_secs(10), sleep)
            .await
            .expect("the reset deadline fired");
    }
}
