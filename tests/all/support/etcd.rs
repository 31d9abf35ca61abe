//! A real `etcd` for the scale-out tests: a single-member cluster as a child process on
//! ephemeral 127.0.0.1 ports (client and peer) with a temp data dir, ready once `/health`
//! says so, stopped by PID (on drop too). `restart` keeps the data dir, as a real etcd
//! restart does, so leases and keys survive it. [`EtcdServer::start_tls`] serves the client
//! API over TLS, with client certificates required; health is read on a plain metrics port
//! either way.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse::etcd::EtcdSettings;

const BINARY: &str = "etcd";

/// A running (or stopped, between `stop` and `restart`) etcd.
pub struct EtcdServer {
    pub client_addr: SocketAddr,
    peer_addr: SocketAddr,
    /// Plain HTTP `/health` (and metrics), so readiness needs no client certificate.
    metrics_addr: SocketAddr,
    dir: PathBuf,
    tls: Option<ServerTls>,
    child: Option<Child>,
}

/// TLS on etcd's client port: its certificate, and the CA its clients' certificates must
/// chain to (`--client-cert-auth`).
#[derive(Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl EtcdServer {
    /// Starts etcd on free ports. Panics with the install command if the binary is missing.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts etcd with its client API on TLS only, requiring client certificates.
    pub fn start_tls(tls: ServerTls) -> Self {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<ServerTls>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-etcd-{}-{}",
            std::process::id(),
            next_id()
        ));
        // Ports from the kernel, released for etcd: another process may take one between the
        // two, so a server that does not come up is retried on fresh ports (and a fresh dir).
        for attempt in 0..5 {
            let mut server = EtcdServer {
                client_addr: super::free_addr(),
                peer_addr: super::free_addr(),
                metrics_addr: super::free_addr(),
                dir: dir.join(attempt.to_string()),
                tls: tls.clone(),
                child: None,
            };
            std::fs::create_dir_all(&server.dir).expect("etcd temp dir");
            if server.try_start() {
                return server;
            }
        }
        panic!("etcd did not start on any of 5 port pairs");
    }

    /// `http://127.0.0.1:port` (`https://` with TLS), for `[etcd] endpoints` and `--etcd`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.client_addr)
    }

    /// Settings for `gatehouse::etcd::connect` (a test's own client).
    pub fn settings(&self) -> EtcdSettings {
        EtcdSettings::new(vec![self.url()])
    }

    /// A connected client, for a test to read and write keys directly.
    pub async fn client(&self) -> etcd_client::Client {
        gatehouse::etcd::connect(&self.settings())
            .await
            .expect("a client for the test etcd")
    }

    /// Kills etcd (SIGKILL by PID: a crash, not a clean shutdown) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.stop();
        let start = Instant::now();
        while !self.try_start() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "etcd did not restart on {}",
                self.client_addr
            );
        }
    }

    /// Whether etcd answers `/health` with `"health":"true"` (on its plain metrics port).
    pub fn healthy(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.metrics_addr, Duration::from_secs(1))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!(
            "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics_addr
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        reply.contains("\"health\":\"true\"")
    }

    fn try_start(&mut self) -> bool {
        let client = self.url();
        let peer = format!("http://{}", self.peer_addr);
        let metrics = format!("http://{}", self.metrics_addr);
        let mut command = Command::new(BINARY);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.client_ca)
                .arg("--client-cert-auth");
        }
        let spawned = command
            .args(["--name", "test", "--data-dir"])
            .arg(&self.dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .arg("--initial-cluster")
            .arg(format!("test={peer}"))
            .args(["--listen-metrics-urls", &metrics])
            .args(["--log-level", "error", "--logger", "zap"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "{BINARY} not found: install it with `apt-get install -y etcd-server` (.ci/run does)"
            ),
            Err(e) => panic!("cannot start {BINARY}: {e}"),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: most likely a port was taken
            }
            if self.healthy() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn next_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}
