//! Graceful shutdown: in-flight requests finish, new connections are refused, the drain
//! timeout bounds the wait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::support::{self, get, origin};

async fn slow_origin(delay: Duration, arrived: Arc<Notify>) -> origin::Origin {
    origin::start(move |_req| {
        let arrived = arrived.clone();
        async move {
            arrived.notify_one();
            tokio::time::sleep(delay).await;
            origin::text(200, "finished")
        }
    })
    .await
}

#[tokio::test]
async fn in_flight_request_finishes_during_shutdown() {
    let arrived = Arc::new(Notify::new());
    let slow = slow_origin(Duration::from_millis(600), arrived.clone()).await;
    let gw = support::gateway(&format!(
        "[[services]]\nname = \"s\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nservice = \"s\"\n",
        slow.addr
    ))
    .await;
    let addr = gw.public_addr;
    let in_flight = tokio::spawn(async move { get(&format!("http://{addr}/slow"), &[]).await });
    tokio::time::timeout(Duration::from_secs(5), arrived.notified())
        .await
        .expect("request reached the origin");

    let report = gw.shutdown().await;
    assert_eq!(report.cut_connections, 0, "the drain finished cleanly");
    let got = in_flight.await.expect("client task");
    assert_eq!((got.status, got.text().as_str()), (200, "finished"));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn drain_timeout_bounds_shutdown() {
    let arrived = Arc::new(Notify::new());
    let slow = slow_origin(Duration::from_secs(30), arrived.clone()).await;
    let gw = support::gateway(&format!(
        "[shutdown]\ndrain_timeout = \"300ms\"\n[[services]]\nname = \"s\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nservice = \"s\"\n",
        slow.addr
    ))
    .await;
    let addr = gw.public_addr;
    let _in_flight = tokio::spawn(async move { get(&format!("http://{addr}/stuck"), &[]).await });
    tokio::time::timeout(Duration::from_secs(5), arrived.notified())
        .await
        .expect("request reached the origin");
    let started = Instant::now();
    let report = gw.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?}",
        started.elapsed()
    );
    assert_eq!(report.cut_connections, 1);
}

#[tokio::test]
async fn every_worker_drains_its_in_flight_requests() {
    const REQUESTS: usize = 6;
    let arrived = Arc::new(tokio::sync::Semaphore::new(0));
    let slow = origin::start({
        let arrived = arrived.clone();
        move |_req| {
            let arrived = arrived.clone();
            async move {
                arrived.add_permits(1);
                tokio::time::sleep(Duration::from_millis(600)).await;
                origin::text(200, "finished")
            }
        }
    })
    .await;
    let gw = support::gateway(&format!(
        "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nworkers = 3\n[[services]]\nname = \"s\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nservice = \"s\"\n",
        slow.addr
    ))
    .await;
    let addr = gw.public_addr;
    // One connection each, so the three workers share them out.
    let in_flight: Vec<_> = (0..REQUESTS)
        .map(|i| tokio::spawn(async move { get(&format!("http://{addr}/slow/{i}"), &[]).await }))
        .collect();
    let all_arrived = arrived.acquire_many(REQUESTS as u32);
    tokio::time::timeout(Duration::from_secs(5), all_arrived)
        .await
        .expect("every request reached the origin")
        .expect("semaphore open")
        .forget();

    let report = gw.shutdown().await;
    assert_eq!(report.cut_connections, 0, "every worker drained cleanly");
    for request in in_flight {
        let got = request.await.expect("client task");
        assert_eq!((got.status, got.text().as_str()), (200, "finished"));
    }
}
