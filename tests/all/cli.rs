//! The `gatehouse` binary: `check`, `--help`, and `run` with SIGTERM draining a request.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::support::{self, get, origin};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gatehouse-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn check_accepts_a_valid_file_and_rejects_a_bad_one() {
    let good = write_temp(
        "good.toml",
        "[[services]]\nname = \"s\"\nendpoints = [\"127.0.0.1:1\"]\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 services, 0 routes)"));

    let bad = write_temp(
        "bad.toml",
        "[[services]]\nname = \"s\"\nendpoints = [\"nowhere\"]\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3:14: services[0].endpoints[0]"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["check", "--config", "/no/such/file.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.toml: cannot read"));
}

#[test]
fn help_lists_the_commands() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("run") && help.contains("check"), "{help}");
    let out = Command::new(BIN)
        .args(["run", "--help"])
        .output()
        .expect("run run --help");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config <FILE>"));
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let arrived = Arc::new(Notify::new());
    let slow = origin::start({
        let arrived = arrived.clone();
        move |_req| {
            let arrived = arrived.clone();
            async move {
                arrived.notify_one();
                tokio::time::sleep(Duration::from_millis(500)).await;
                origin::text(200, "drained")
            }
        }
    })
    .await;
    let public = origin::closed_port().await;
    let admin = origin::closed_port().await;
    let config = write_temp(
        "run.toml",
        &format!(
            "[listen]\npublic = \"{public}\"\nadmin = \"{admin}\"\n[[services]]\nname = \"s\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nservice = \"s\"\n",
            slow.addr
        ),
    );
    let mut child = tokio::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn gatehouse");
    support::eventually(
        "the gateway is ready",
        Duration::from_secs(20),
        async || {
            support::http1()
                .get(format!("http://{admin}/readyz").parse().expect("uri"))
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;

    let in_flight = tokio::spawn(async move { get(&format!("http://{public}/x"), &[]).await });
    tokio::time::timeout(Duration::from_secs(5), arrived.notified())
        .await
        .expect("request reached the origin");
    let pid = child.id().expect("pid").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());

    let got = in_flight.await.expect("client task");
    assert_eq!((got.status, got.text().as_str()), (200, "drained"));
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("gatehouse exits after draining")
        .expect("wait");
    assert!(status.success(), "exit status {status}");
}
