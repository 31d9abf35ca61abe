//! A plugin written in JavaScript (componentize-js, `request-filter` world) against the
//! same WIT. Built by `examples/js-plugin/build.sh`, which `.ci/run` runs first.

use gatehouse::plugins::{OnError, RequestMeta, RequestOutcome};
use serde_json::json;

use super::guests;
use super::runtime::{get, kit, plugin};

/// The built JS component. A missing one fails the test with the command that builds it: a
/// test that passes without its guest would prove nothing.
pub fn js_plugin() -> Vec<u8> {
    let path = guests::workspace().join("examples/js-plugin/js-auth.wasm");
    match std::fs::read(&path) {
        Ok(b) => b,
        Err(error) => panic!(
            "the JavaScript plugin {} is missing ({error}): build it with \
             examples/js-plugin/build.sh (needs node + npm), as README's test command does",
            path.display()
        ),
    }
}

#[tokio::test]
async fn javascript_plugin_authenticates_requests() {
    let bytes = js_plugin();
    let kit = kit(&[("js-auth", bytes)]).await;
    let status = kit
        .manager
        .status()
        .into_iter()
        .find(|s| s.name == "js-auth")
        .expect("status");
    assert_eq!(status.status, "loaded", "{status:?}");
    assert_eq!(
        status.engine,
        Some("concurrent"),
        "jco output uses component-model async builtins"
    );
    assert_eq!(
        status.hooks,
        vec!["request"],
        "request-filter exports only request-hook"
    );

    let chain = kit.chain(
        &[plugin("js-auth", json!({ "keys": ["alpha", "beta"] }))],
        OnError::FailClosed,
    );
    match chain
        .start(RequestMeta::default())
        .on_request(get("/x"))
        .await
    {
        Ok(RequestOutcome::Respond(resp)) => {
            let status = resp.status().as_u16();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .expect("body")
                .to_bytes();
            assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
            let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(body["error"], "invalid API key");
        }
        Ok(RequestOutcome::Continue(_)) => panic!("a request without a key must be refused"),
        Err(e) => panic!("js plugin failed: {e}"),
    }
    let mut req = get("/x");
    req.headers_mut()
        .insert("x-api-key", http::HeaderValue::from_static("beta"));
    match chain.start(RequestMeta::default()).on_request(req).await {
        Ok(RequestOutcome::Continue(req)) => assert_eq!(req.headers()["x-js-auth"], "1"),
        Ok(RequestOutcome::Respond(r)) => panic!("a valid key must pass, got {}", r.status()),
        Err(e) => panic!("js plugin failed: {e}"),
    }
}

#[tokio::test]
async fn javascript_plugin_artifacts_are_cached_for_the_concurrent_engine() {
    let bytes = js_plugin();
    let (cold, warm, artifacts) = super::load::load_twice_with_a_cache(bytes).await;
    assert_eq!((cold.status, warm.status), ("loaded", "loaded"), "{warm:?}");
    assert_eq!(cold.from_cache, Some(false));
    assert_eq!(warm.from_cache, Some(true), "restart must not recompile");
    assert_eq!(warm.engine, Some("concurrent"));
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    assert!(
        artifacts[0].ends_with(".concurrent.cwasm"),
        "concurrent-engine artifacts are told apart by name: {artifacts:?}"
    );
}
