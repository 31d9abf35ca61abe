//! CORS as a real browser enforces it: headless Chromium loads a page from one origin
//! (127.0.0.1, port A) whose script calls `fetch()` on the gateway (127.0.0.1, port B, another
//! origin), and writes what the page could read into the DOM, which the test reads back with
//! `--dump-dom`.
//!
//! Needs Chromium: `apt-get install -y chromium` (Debian; `.ci/run` installs it), or set
//! `GATEHOUSE_CHROMIUM` to a Chrome/Chromium binary. Without one the test fails, saying so.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;

use crate::support::{self, origin};

fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("GATEHOUSE_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "this test needs Chromium to check CORS the way a browser enforces it, and none was \
         found on PATH (chromium, chromium-browser, google-chrome). Install it with \
         `apt-get install -y chromium` (Debian/Ubuntu), or set GATEHOUSE_CHROMIUM to a \
         Chrome or Chromium binary"
    );
}

/// The page served from origin A: each case is a `fetch()` to the gateway; its outcome is
/// `name=status:body` when the page could read the response, `name=blocked` when the browser
/// refused (a TypeError: CORS failure).
fn page(gateway: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>cors</title></head><body><pre id="out">pending</pre>
<script>
const B = "{gateway}";
async function run(name, url, init) {{
  try {{
    const r = await fetch(url, init);
    const body = await r.text();
    const exposed = r.headers.get("x-total");
    return name + "=" + r.status + ":" + body + (exposed ? ":x-total=" + exposed : "");
  }} catch (e) {{
    return name + "=blocked";
  }}
}}
(async () => {{
  const out = [];
  out.push(await run("simple", B + "/api/simple"));
  out.push(await run("other-origin-only", B + "/other/simple"));
  out.push(await run("preflighted", B + "/api/put", {{
    method: "PUT", credentials: "include", headers: {{ "x-api-key": "k1" }}, body: "x" }}));
  out.push(await run("header-not-allowed", B + "/api/put", {{
    method: "PUT", headers: {{ "x-secret": "1" }}, body: "x" }}));
  out.push(await run("method-not-allowed", B + "/api/delete", {{ method: "DELETE" }}));
  out.push(await run("gateway-error", B + "/api/denied"));
  document.getElementById("out").textContent = out.join("\n");
}})();
</script></body></html>"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_reads_what_the_policy_allows_and_nothing_else() {
    let browser = chromium();
    // The service behind the gateway: counts what reaches it, by method.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let service = origin::start({
        let seen = Arc::clone(&seen);
        move |req| {
            seen.lock()
                .expect("lock")
                .push(format!("{} {}", req.method(), req.uri().path()));
            async move {
                let mut r = Response::new(gatehouse::body::full("served"));
                r.headers_mut().insert("x-total", "7".parse().expect("v"));
                r
            }
        }
    })
    .await;
    // Origin A serves the page; its address is only known once it listens, and the page
    // needs the gateway's: the handler reads it from here.
    let gateway_url: Arc<Mutex<String>> = Arc::default();
    let pages = Arc::new(AtomicUsize::new(0));
    let page_origin = origin::start({
        let gateway_url = Arc::clone(&gateway_url);
        let pages = Arc::clone(&pages);
        move |_req| {
            pages.fetch_add(1, Ordering::SeqCst);
            let html = page(&gateway_url.lock().expect("lock"));
            async move {
                let mut r = Response::new(gatehouse::body::full(html));
                r.headers_mut().insert(
                    "content-type",
                    "text/html; charset=utf-8".parse().expect("v"),
                );
                r
            }
        }
    })
    .await;
    let a = format!("http://{}", page_origin.addr);
    let gw = support::gateway(&format!(
        r#"
[[services]]
name = "s"
endpoints = ["{service}"]

[[routes]]
name = "denied"
service = "s"
match = {{ path = "/api/denied" }}
deny = 401
[routes.cors]
allow_origins = ["{a}"]

[[routes]]
name = "api"
service = "s"
match = {{ prefix = "/api", methods = ["GET", "PUT", "DELETE"] }}
[routes.cors]
allow_origins = ["{a}"]
allow_methods = ["GET", "PUT"]
allow_headers = ["x-api-key"]
expose_headers = ["x-total"]
allow_credentials = true
max_age = "1m"

[[routes]]
name = "other"
service = "s"
match = {{ prefix = "/other" }}
[routes.cors]
allow_origins = ["https://somewhere-else.example.com"]
"#,
        service = service.addr
    ))
    .await;
    *gateway_url.lock().expect("lock") = format!("http://{}", gw.public_addr);

    let profile = std::env::temp_dir().join(format!(
        "gatehouse-cors-chromium-{}-{}",
        std::process::id(),
        page_origin.addr.port()
    ));
    let run = tokio::process::Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("{a}/page"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("chromium finished within 90 s")
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", browser.display()));
    // The profile is scratch; a leftover only costs disk.
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && pages.load(Ordering::SeqCst) > 0,
        "chromium failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<&str> = dom
        .split("<pre id=\"out\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or_else(|| panic!("no results in the page: {dom}"))
        .lines()
        .collect();
    // Each outcome as the page saw it (the 401's body ends with a request id, so: prefixes).
    let expected = [
        // Allowed origin: the page reads the body, and the exposed header.
        "simple=200:served:x-total=7",
        // Served, but without CORS headers: the browser keeps it from the page.
        "other-origin-only=blocked",
        // Preflight (custom header, credentials) answered by the gateway, then the PUT.
        "preflighted=200:served:x-total=7",
        // The gateway refuses the preflight: the PUT is never sent.
        "header-not-allowed=blocked",
        "method-not-allowed=blocked",
        // A gateway error answer carries the CORS headers: the page can read the 401.
        r#"gateway-error=401:{"error":"route_denied""#,
    ];
    assert_eq!(results.len(), expected.len(), "outcomes: {results:#?}");
    for (got, expected) in results.iter().zip(expected) {
        assert!(
            got.starts_with(expected),
            "expected {expected:?}, the page saw {got:?}\nall: {results:#?}"
        );
    }
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        ["GET /api/simple", "GET /other/simple", "PUT /api/put"],
        "the service saw no preflight and no refused request"
    );
}
