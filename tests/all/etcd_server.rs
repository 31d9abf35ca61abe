//! The test etcd itself (tests/all/support/etcd.rs): it serves the v3 API through the
//! gateway's own connection code, and a restart keeps its keys, as the scale-out tests assume.

use crate::support::etcd::EtcdServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_etcd_keeps_its_keys_across_a_restart() {
    let mut etcd = EtcdServer::start();
    let mut client = etcd.client().await;
    client.put("/probe", "1", None).await.expect("put");
    etcd.restart();
    // The client's channel reconnects by itself; poll until etcd serves again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match client.get("/probe", None).await {
            Ok(reply) => {
                let kv = reply.kvs().first().expect("the key survived the restart");
                assert_eq!(kv.value(), b"1");
                break;
            }
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "etcd did not serve after its restart: {e}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
