//! The dashboard in a real browser: a gateway with an admin token, a registry service with an
//! instance registered through the registry API, a route with a plugin, and steady traffic;
//! `tests/browser/dashboard.mjs` (playwright-core driving the system Chromium) opens the page
//! with `#token=`, and checks that the instance, the plugin and a moving chart appear, that
//! the page loads nothing from elsewhere and raises no CSP or script error, and that without
//! the token it says so and takes one from its form. The screenshot is kept at
//! `target/dashboard.png` (the workspace's `target/`, beside `target/guests`).
//!
//! Needs node, `npm ci` in tests/browser (playwright-core) and Chromium (`.ci/run` installs
//! all three). A missing one fails the test with the command that installs it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::plugins::guests::{self, TempDir};
use crate::support::{self, get, http1, origin, send};

const TOKEN: &str = "browser-s3cret";

fn browser_dir() -> PathBuf {
    guests::workspace().join("tests/browser")
}

/// The tools the browser test needs, or a panic naming the command that installs them.
fn tools() -> (PathBuf, PathBuf) {
    let on_path = |name: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    };
    let node = on_path("node").unwrap_or_else(|| {
        panic!("the dashboard browser test needs node: `apt-get install -y nodejs npm`")
    });
    if !browser_dir()
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        panic!(
            "the dashboard browser test needs playwright-core: `npm ci --prefix {}`",
            browser_dir().display()
        );
    }
    let chromium = std::env::var_os("GATEHOUSE_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| on_path("chromium"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the dashboard browser test needs Chromium: `apt-get install -y chromium`, or \
                 set GATEHOUSE_CHROMIUM to a Chrome or Chromium binary"
            )
        });
    (node, chromium)
}

/// Requests on `paths` one after another until `stop` is set, so the charts keep moving.
fn drive_traffic(public: String, paths: &'static [&'static str], stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let client = http1();
        while !stop.load(Ordering::Relaxed) {
            for path in paths {
                let uri = format!("http://{public}{path}").parse().expect("uri");
                // Only the load matters here; the figures are checked through the page.
                let _ = client.get(uri).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_instances_plugins_and_moving_charts_in_chromium() {
    let (node, chromium) = tools();
    let echo = origin::echo("echo").await;
    let dir = TempDir::new("dashboard-plugins");
    std::fs::write(dir.join("rewrite.wasm"), guests::bytes("header-rewrite")).expect("write");
    let cache = guests::workspace().join("target/guests/artifact-cache");
    let gw = support::gateway(&format!(
        r#"
[admin]
token = "{TOKEN}"

[registry]
token = "{TOKEN}"

[plugins]
dir = {dir:?}
cache_dir = {cache:?}

[[services]]
name = "echo"
endpoints = ["{echo}"]

[[services]]
name = "catalog"
discovery = "registry"

[[routes]]
name = "echo"
service = "echo"
match = {{ prefix = "/echo" }}
plugins = [{{ name = "rewrite", config = {{ response = {{ x-seen = "yes" }} }} }}]

[[routes]]
name = "catalog"
service = "catalog"
match = {{ prefix = "/catalog" }}
"#,
        dir = dir.0.display().to_string(),
        cache = cache.display().to_string(),
        echo = echo.addr,
    ))
    .await;
    let admin = format!("http://{}", gw.admin_addr);

    // The instance registers itself the way a service would.
    let instance = origin::echo("catalog").await;
    let registered = send(
        &http1(),
        "POST",
        &format!("{admin}/registry/services/catalog/instances"),
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/json"),
        ],
        Bytes::from(format!(
            r#"{{"id":"catalog-1","address":"127.0.0.1","port":{}}}"#,
            instance.addr.port()
        )),
    )
    .await;
    assert!(registered.status < 300, "{}", registered.text());
    support::eventually(
        "the registry instance serves",
        Duration::from_secs(10),
        async || {
            get(&format!("http://{}/catalog/x", gw.public_addr), &[])
                .await
                .status
                == 200
        },
    )
    .await;
    let plugin = get(&format!("http://{}/echo/x", gw.public_addr), &[]).await;
    assert_eq!(plugin.headers["x-seen"], "yes", "the plugin runs");

    let stop = Arc::new(AtomicBool::new(false));
    drive_traffic(
        gw.public_addr.to_string(),
        &["/echo/a", "/catalog/b"],
        Arc::clone(&stop),
    );

    let screenshot = guests::workspace().join("target/dashboard.png");
    // A stale screenshot must not pass for this run's.
    let _ = std::fs::remove_file(&screenshot);
    let url = format!("{admin}/admin/dashboard#token={TOKEN}");
    let run = tokio::process::Command::new(&node)
        .current_dir(browser_dir())
        .arg("dashboard.mjs")
        .args([&url, &instance.addr.to_string(), "rewrite", "echo"])
        .arg(&screenshot)
        .env("GATEHOUSE_CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser check finished within 120 s")
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", node.display()));
    stop.store(true, Ordering::Relaxed);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the dashboard check failed in Chromium ({}):\n{}\n{stdout}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let row = report["instanceRow"].as_str().unwrap_or("");
    assert!(
        row.contains(&instance.addr.to_string()) && row.contains("healthy"),
        "{row}"
    );
    assert_ne!(report["first"], report["second"], "the chart moved");
    assert!(
        is_png(&screenshot),
        "a screenshot at {}",
        screenshot.display()
    );
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| bytes.starts_with(b"\x89PNG"))
}
