//! WIT versions: the host provides `gatehouse:plugin@0.1.2` and keeps loading components
//! built against 0.1.0 (`wit/0.1.0/plugin.wit`, guest `plugins/wit-0-1-0`, built with
//! wit-bindgen directly): wasmtime links their `@0.1.0` imports and exports to the host's
//! semver-compatible `@0.1.2`.

use super::guests::{self, TempDir};
use crate::shipped_plugins::kit;
use crate::support::{self, origin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_wit_0_1_0_still_loads_and_runs() {
    let wasm = guests::bytes("wit-0-1-0");
    // It really is a 0.1.0 component: its hooks and imports carry the old version.
    let text = String::from_utf8_lossy(&wasm);
    assert!(text.contains("gatehouse:plugin/request-hook@0.1.0"));
    assert!(text.contains("gatehouse:plugin/context@0.1.0"));
    assert!(!text.contains("@0.1.1") && !text.contains("@0.1.2"));

    let echo = origin::echo("echo").await;
    let dir = TempDir::new("wit-versions");
    std::fs::write(dir.join("old.wasm"), &wasm).expect("write plugin");
    let cache = guests::workspace().join("target/guests/artifact-cache");
    let gw = support::gateway(&format!(
        r#"[plugins]
dir = {}
cache_dir = {}
watch = false

[[services]]
name = "echo"
endpoints = ["{}"]

[[routes]]
name = "old-plugin"
service = "echo"
plugins = [{{ name = "old" }}]
"#,
        kit::toml_inline(&serde_json::json!(dir.0.display().to_string())),
        kit::toml_inline(&serde_json::json!(cache.display().to_string())),
        echo.addr
    ))
    .await;
    let got = support::get(&format!("http://{}/x", gw.public_addr), &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = &got.json()["headers"];
    assert_eq!(seen["x-wit-version"], "0.1.0", "its request hook ran");
    assert_eq!(
        seen["x-wit-route"], "old-plugin",
        "its context import works"
    );
    assert_eq!(
        got.headers["x-wit-response"], "0.1.0",
        "its response hook ran"
    );
    gw.shutdown().await;
}
