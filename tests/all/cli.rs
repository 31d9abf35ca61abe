//! The `gatehouse` binary: `check`, `--help`, and `run` with SIGTERM draining a request.

use std::process::Command;
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
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 service, 0 routes)"));

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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/file.toml: cannot read"), "{err}");
    // The cause is said once, not once by the error and again by its source.
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
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
    let mut child = support::spawn_gatehouse(&config, admin, false).await;

    let in_flight = tokio::spawn(async move { get(&format!("http://{public}/x"), &[]).await });
    tokio::time::timeout(Duration::from_secs(5), arrived.notified())
        .await
        .expect("request reached the origin");
    support::signal(&child, "-TERM");

    let got = in_flight.await.expect("client task");
    assert_eq!((got.status, got.text().as_str()), (200, "drained"));
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("gatehouse exits after draining")
        .expect("wait");
    assert!(status.success(), "exit status {status}");
}

/// Starts the binary on `config_tail` (appended to listeners, one service and one route),
/// sends one request with a known id, stops it with SIGTERM and returns what it logged.
async fn run_one_request(name: &str, log: &str) -> String {
    let backend = origin::start(|_req| async { origin::text(200, "ok") }).await;
    let public = origin::closed_port().await;
    let admin = origin::closed_port().await;
    let config = write_temp(
        name,
        &format!(
            "[listen]\npublic = \"{public}\"\nadmin = \"{admin}\"\n{log}\n[[services]]\nname = \"s\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nservice = \"s\"\n",
            backend.addr
        ),
    );
    let child = support::spawn_gatehouse(&config, admin, true).await;
    let got = get(
        &format!("http://{public}/items/7?x=1"),
        &[("x-request-id", "trace-me-1")],
    )
    .await;
    assert_eq!(got.status, 200);
    support::signal(&child, "-TERM");
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("gatehouse exits")
        .expect("output");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn access_log_writes_one_json_line_per_request() {
    let logs = run_one_request(
        "log-json.toml",
        "[log]\nlevel = \"info\"\nformat = \"json\"",
    )
    .await;
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["target"] == "gatehouse::access")
        .collect();
    assert_eq!(lines.len(), 1, "one access line expected in:\n{logs}");
    let line = &lines[0];
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/items/7");
    assert_eq!(line["route"], "r");
    assert_eq!(line["status"], 200);
    assert_eq!(line["request_id"], "trace-me-1");
    assert!(line["upstream"]
        .as_str()
        .is_some_and(|u| u.starts_with("127.0.0.1:")));
    assert!(line["duration_us"].is_u64());
}

#[tokio::test]
async fn access_log_is_silent_above_info() {
    let logs = run_one_request("log-warn.toml", "[log]\nlevel = \"warn\"").await;
    assert!(
        !logs.contains("gatehouse::access") && !logs.contains("trace-me-1"),
        "no access line at level warn:\n{logs}"
    );
}
