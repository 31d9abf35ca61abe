//! A real `redis-server` for the scale-out tests: a child process on an ephemeral
//! 127.0.0.1 port with a temp data dir and no persistence, ready once it answers PING,
//! stopped by PID (on drop too).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "redis-server";

/// A running (or stopped, between `stop` and `start`) Redis server.
pub struct RedisServer {
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts Redis on a free port. Panics with the install command if the binary is missing.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-redis-{}-{}",
            std::process::id(),
            next_id()
        ));
        std::fs::create_dir_all(&dir).expect("redis temp dir");
        // A port from the kernel, released for Redis: another process may take it between
        // the two, so a server that does not come up is retried on a fresh port.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("an ephemeral port")
                .port();
            let mut server = RedisServer {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir: dir.clone(),
                child: None,
            };
            if server.try_start() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 ports");
    }

    /// The URL for `[redis] url`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills the server (SIGKILL by PID: a crash, not a clean shutdown) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty (no persistence).
    pub fn restart(&mut self) {
        self.stop();
        let start = Instant::now();
        while !self.try_start() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not restart on {}",
                self.addr
            );
        }
    }

    fn try_start(&mut self) -> bool {
        let spawned = Command::new(BINARY)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "{BINARY} not found: install it with `apt-get install -y redis-server` \
                 (.ci/run does)"
            ),
            Err(e) => panic!("cannot start {BINARY}: {e}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: most likely the port was taken
            }
            if self
                .command(&["PING"])
                .is_some_and(|r| r.starts_with("+PONG"))
            {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// One command over a fresh connection (RESP), the raw reply; `None` if Redis is not
    /// reachable.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(out.as_bytes()).ok()?;
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).ok()?;
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for RedisServer {
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
