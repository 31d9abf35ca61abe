//! The public listener's workers: one thread per worker, each running its own single-threaded
//! tokio runtime, all accepting from one shared listening socket.
//!
//! This is nginx's worker model, for the same reason: a connection, its request, the
//! upstream connection it uses and the tasks that drive them all stay on one thread, so a
//! request never waits for a wake-up from another CPU and nothing on its path is shared
//! between threads but the config snapshot, counters and the pools' short locks. On one
//! core, tokio's work-stealing runtime proxied ~12% fewer requests (benches/README.md).
//! The workers share one socket rather than `SO_REUSEPORT` copies so that binding stays
//! exclusive (a second gateway on the same port fails to start instead of splitting the
//! traffic) and an idle worker, being the first awake, takes the next connection.
//!
//! Everything else (admin API, health checks, discovery, plugin compiles and reloads) runs
//! on the caller's runtime.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::{oneshot, watch};

use super::server;
use super::shedding::ListenerBudget;
use super::tls::TlsTerminator;
use super::Limits;
use crate::body::Body;

/// Running workers; [`Workers::join`] waits for them to drain after the stop signal.
pub struct Workers {
    done: Vec<oneshot::Receiver<usize>>,
}

/// Starts `count` workers serving `listener` with `handler` until `stop` flips to true (or
/// its sender is dropped); each then drains its own connections for up to `drain`. The workers
/// share the listener's `budget` (its connection and in-flight caps).
// One argument per thing each worker gets; a struct for them would only be unpacked again.
#[allow(clippy::too_many_arguments)]
pub fn spawn<H, F>(
    listener: std::net::TcpListener,
    count: usize,
    limits: &Limits,
    budget: &Arc<ListenerBudget>,
    tls: Option<&Arc<TlsTerminator>>,
    handler: H,
    stop: &watch::Receiver<bool>,
    drain: Duration,
) -> io::Result<Workers>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send + 'static,
{
    listener.set_nonblocking(true)?;
    let mut done = Vec::with_capacity(count);
    for index in 0..count {
        // Everything that can fail happens here, before any thread starts serving.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener.try_clone()?)?
        };
        let (limits, handler, stop) = (limits.clone(), handler.clone(), stop.clone());
        let budget = Arc::clone(budget);
        let tls = tls.cloned();
        let (finished, finished_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("gatehouse-worker-{index}"))
            .spawn(move || {
                crate::worker::set_current(index);
                // Every log line from this thread names its worker.
                let _span = tracing::info_span!("worker", id = index).entered();
                let serve = server::serve(listener, &limits, budget, tls, handler, stop, drain);
                let cut = runtime.block_on(serve);
                // Dropping the runtime ends this worker's upstream connections and other
                // background tasks; only then is the worker done.
                drop(runtime);
                let _ = finished.send(cut);
            })?;
        done.push(finished_rx);
    }
    Ok(Workers { done })
}

impl Workers {
    /// Waits for every worker to stop; returns how many connections the drain timeout cut.
    pub async fn join(self) -> usize {
        let mut cut = 0;
        for (index, finished) in self.done.into_iter().enumerate() {
            match finished.await {
                Ok(n) => cut += n,
                Err(_) => tracing::error!(worker = index, "a public listener worker panicked"),
            }
        }
        cut
    }
}
