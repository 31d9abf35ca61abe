//! Bodies stream both ways: the upstream sees bytes before the client has finished sending,
//! and 1 GiB each way passes with flat memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use gatehouse::body::{self, Body, BoxError};
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, Notify};

use crate::support::{self, origin};

const GIB: u64 = 1 << 30;
const CHUNK: usize = 256 * 1024;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Samples RSS every 10 ms until dropped; `peak` keeps the highest value seen.
fn sample_rss(peak: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            peak.fetch_max(rss_bytes(), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

async fn gateway_to(addr: std::net::SocketAddr) -> gatehouse::gateway::RunningGateway {
    support::gateway(&format!(
        "[[services]]\nname = \"s\"\nendpoints = [\"{addr}\"]\n[[routes]]\nname = \"r\"\nservice = \"s\"\ntimeout = \"60s\"\n\
         # The 1 GiB upload goes past the default body limit.\nmax_body_bytes = 2147483648\n"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_streams_before_the_client_finishes_and_memory_stays_flat() {
    let received = Arc::new(AtomicU64::new(0));
    let first_bytes = Arc::new(Notify::new());
    let upstream = origin::start({
        let (received, first_bytes) = (received.clone(), first_bytes.clone());
        move |req: Request<hyper::body::Incoming>| {
            let (received, first_bytes) = (received.clone(), first_bytes.clone());
            async move {
                let mut body = req.into_body();
                while let Some(frame) = body.frame().await {
                    let Ok(frame) = frame else { break };
                    if let Some(data) = frame.data_ref() {
                        if received.fetch_add(data.len() as u64, Ordering::Relaxed) == 0 {
                            first_bytes.notify_one();
                        }
                    }
                }
                origin::text(200, &received.load(Ordering::Relaxed).to_string())
            }
        }
    })
    .await;
    let gw = gateway_to(upstream.addr).await;

    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let stream = tokio_stream_from(rx).map(|b| Ok::<_, BoxError>(Frame::data(b)));
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{}/upload", gw.public_addr))
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .expect("request");
    let in_flight = tokio::spawn(async move {
        support::collect(client.request(req).await.expect("response")).await
    });

    let chunk = Bytes::from(vec![7u8; CHUNK]);
    tx.send(chunk.clone()).await.expect("first chunk");
    tokio::time::timeout(Duration::from_secs(10), first_bytes.notified())
        .await
        .expect("the upstream saw the first bytes while the client was still sending");

    let baseline = rss_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = sample_rss(peak.clone());
    for _ in 1..(GIB / CHUNK as u64) {
        tx.send(chunk.clone()).await.expect("chunk");
    }
    drop(tx);
    let got = in_flight.await.expect("client task");
    sampler.abort();
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), GIB.to_string(), "every byte arrived");
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(
        growth < 128 << 20,
        "memory grew by {} MiB while streaming 1 GiB",
        growth >> 20
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_of_one_gib_streams_with_flat_memory() {
    let upstream = origin::start(|_req| async {
        let chunk = Bytes::from(vec![1u8; CHUNK]);
        let chunks = futures::stream::iter(
            (0..GIB / CHUNK as u64).map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone()))),
        );
        Response::new(body::streaming(StreamBody::new(chunks)))
    })
    .await;
    let gw = gateway_to(upstream.addr).await;

    let baseline = rss_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = sample_rss(peak.clone());
    let response = support::http1()
        .get(
            format!("http://{}/download", gw.public_addr)
                .parse()
                .expect("uri"),
        )
        .await
        .expect("response head");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.expect("frame").data_ref() {
            total += data.len() as u64;
        }
    }
    sampler.abort();
    assert_eq!(total, GIB);
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(
        growth < 128 << 20,
        "memory grew by {} MiB while streaming 1 GiB",
        growth >> 20
    );
    gw.shutdown().await;
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Bytes>) -> impl futures::Stream<Item = Bytes> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
