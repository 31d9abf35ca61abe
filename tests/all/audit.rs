//! The real binary's logs: every admin and registry write is audited once as a JSON line
//! (even with `log.format = "text"`), heartbeats are not; the access log carries the
//! request's trace and span ids when tracing is on.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use crate::plugins::guests::TempDir;
use crate::support::otlp::Collector;
use crate::support::{self, origin};

const ADMIN_TOKEN: &str = "s3cret";
const REGISTRY_TOKEN: &str = "reg-token";

async fn send(method: &str, url: &str, token: Option<&str>, body: &str) -> support::Got {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    support::send(
        &support::http1(),
        method,
        url,
        &headers,
        Bytes::from(body.to_owned()),
    )
    .await
}

/// Stops the process and returns every JSON line it wrote, and all its lines.
async fn logs(child: tokio::process::Child) -> (Vec<Value>, Vec<String>) {
    support::signal(&child, "-TERM");
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("gatehouse exits")
        .expect("output");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .map(str::to_owned)
        .collect();
    let json = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (json, lines)
}

#[tokio::test]
async fn admin_and_registry_writes_are_audited_once_as_json_lines() {
    let (public, admin) = (origin::closed_port().await, origin::closed_port().await);
    let dir = TempDir::new("audit");
    let path = dir.join("gatehouse.toml");
    std::fs::write(
        &path,
        format!(
            "[listen]\npublic = \"{public}\"\nadmin = \"{admin}\"\n[log]\nformat = \"text\"\n\
             [admin]\ntoken = \"{ADMIN_TOKEN}\"\n[registry]\ntoken = \"{REGISTRY_TOKEN}\"\n\
             [[services]]\nname = \"orders\"\ndiscovery = \"registry\"\n\
             [[routes]]\nname = \"orders\"\nservice = \"orders\"\nmatch = {{ prefix = \"/\" }}\n"
        ),
    )
    .expect("write config");
    let child = support::spawn_gatehouse(&path, admin, true).await;
    let base = format!("http://{admin}");
    let reload = send(
        "POST",
        &format!("{base}/admin/reload"),
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(reload.status, 200, "{}", reload.text());
    let refused = send("POST", &format!("{base}/admin/reload"), Some("guess"), "").await;
    assert_eq!(refused.status, 401);
    let instances = format!("{base}/registry/services/orders/instances");
    let register = send(
        "POST",
        &instances,
        Some(REGISTRY_TOKEN),
        r#"{"id":"o1","address":"127.0.0.1","port":9999}"#,
    )
    .await;
    assert!(register.status < 300, "{}", register.text());
    let renew = send("PUT", &format!("{instances}/o1"), Some(REGISTRY_TOKEN), "").await;
    assert!(renew.status < 300, "{}", renew.text());
    let read = send(
        "GET",
        &format!("{base}/admin/config"),
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(read.status, 200);
    let gone = send(
        "DELETE",
        &format!("{instances}/o1"),
        Some(REGISTRY_TOKEN),
        "",
    )
    .await;
    assert!(gone.status < 300, "{}", gone.text());

    let (json, lines) = logs(child).await;
    let audit: Vec<&Value> = json.iter().filter(|l| l["target"] == "audit").collect();
    let actions: Vec<&str> = audit.iter().filter_map(|l| l["action"].as_str()).collect();
    assert_eq!(
        actions,
        ["config_reload", "config_reload", "register", "deregister"],
        "one line per write, none for the heartbeat or the read: {audit:#?}"
    );
    let line = |i: usize| audit[i];
    assert_eq!(line(0)["token"], "admin");
    assert_eq!(line(0)["result"], "ok");
    assert_eq!(line(0)["status"], 200);
    assert_eq!(line(0)["method"], "POST");
    assert_eq!(line(0)["path"], "/admin/reload");
    assert!(line(0)["client"]
        .as_str()
        .is_some_and(|c| c.starts_with("127.0.0.1:")));
    assert!(line(0)["request_id"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    assert_eq!(line(1)["token"], "unknown");
    assert_eq!(line(1)["result"], "refused");
    assert_eq!(line(2)["token"], "registry");
    assert_eq!(line(3)["result"], "ok");
    let text = lines.join("\n");
    assert!(
        !text.contains(ADMIN_TOKEN) && !text.contains(REGISTRY_TOKEN),
        "no token is logged"
    );
    // The main log stays text: only audit lines are JSON.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("gatehouse started") && !l.starts_with('{')),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_carries_trace_and_span_ids() {
    for format in ["json", "text"] {
        access_log_in(format).await;
    }
}

async fn access_log_in(format: &str) {
    let collector = Collector::start().await;
    let upstream = origin::echo("a").await;
    let (public, admin) = (origin::closed_port().await, origin::closed_port().await);
    let dir = TempDir::new("access-trace");
    let path = dir.join("gatehouse.toml");
    std::fs::write(
        &path,
        format!(
            "[listen]\npublic = \"{public}\"\nadmin = \"{admin}\"\n[log]\nformat = \"{format}\"\n\
             [tracing]\nendpoint = \"{}\"\nflush_interval = \"50ms\"\n\
             [[services]]\nname = \"a\"\nendpoints = [\"{}\"]\n\
             [[routes]]\nname = \"all\"\nservice = \"a\"\nmatch = {{ prefix = \"/\" }}\n",
            collector.endpoint(),
            upstream.addr
        ),
    )
    .expect("write config");
    let child = support::spawn_gatehouse(&path, admin, true).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let got = support::get(
        &format!("http://{public}/x"),
        &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))],
    )
    .await;
    assert_eq!(got.status, 200);
    support::eventually(
        "the server span is exported",
        Duration::from_secs(30), // beside the whole suite on a loaded machine,
        async || collector.trace(trace).iter().any(|s| s.kind == 2),
    )
    .await;
    let server = collector
        .trace(trace)
        .into_iter()
        .find(|s| s.kind == 2)
        .expect("server span");
    let (json, lines) = logs(child).await;
    if format == "text" {
        let access = lines
            .iter()
            .find(|l| l.contains("gatehouse::access"))
            .unwrap_or_else(|| panic!("an access line: {lines:#?}"));
        assert!(
            access.contains(&format!("trace_id=\"{trace}\"")),
            "{access}"
        );
        assert!(
            access.contains(&format!("span_id=\"{}\"", server.span_id)),
            "{access}"
        );
        return;
    }
    let access = json
        .iter()
        .find(|l| l["target"] == "gatehouse::access")
        .unwrap_or_else(|| panic!("an access line: {json:#?}"));
    assert_eq!(access["trace_id"], trace);
    assert_eq!(access["span_id"], server.span_id.as_str());
}
