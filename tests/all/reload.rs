//! Config reload: `POST /admin/reload` and SIGHUP re-read the config file and swap routes,
//! services and plugin chains in whole, or refuse and keep the running config.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use gatehouse::config;
use gatehouse::gateway::{self, RunningGateway};

use crate::plugins::guests::TempDir;
use crate::support::{self, get, origin};

/// A config with the given routes, each `(name, prefix, origin)` with its own service.
fn config_text(routes: &[(&str, &str, std::net::SocketAddr)]) -> String {
    let mut text = String::from(
        "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[admin]\ntoken = \"s3cret\"\n",
    );
    for (name, prefix, addr) in routes {
        text.push_str(&format!(
            "[[services]]\nname = \"{name}\"\nendpoints = [\"{addr}\"]\n\
             [[routes]]\nname = \"{name}\"\nservice = \"{name}\"\nmatch = {{ prefix = \"{prefix}\" }}\n"
        ));
    }
    text
}

async fn start_from(dir: &TempDir, text: &str) -> (RunningGateway, PathBuf) {
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, text).expect("write config");
    let config = config::load_file(&path).expect("valid config");
    (gateway::start(config).await.expect("gateway starts"), path)
}

async fn reload(gw: &RunningGateway, token: &str) -> support::Got {
    support::send(
        &support::http1(),
        "POST",
        &format!("http://{}/admin/reload", gw.admin_addr),
        &[("authorization", &format!("Bearer {token}"))],
        Bytes::new(),
    )
    .await
}

#[tokio::test]
async fn admin_reload_swaps_routes_and_services() {
    let one = origin::start(|_req| async { origin::text(200, "one") }).await;
    let two = origin::start(|_req| async { origin::text(200, "two") }).await;
    let dir = TempDir::new("reload-swap");
    let (gw, path) = start_from(&dir, &config_text(&[("a", "/a", one.addr)])).await;
    let public = gw.public_addr;
    assert_eq!(
        get(&format!("http://{public}/a/x"), &[]).await.text(),
        "one"
    );

    std::fs::write(&path, config_text(&[("b", "/b", two.addr)])).expect("rewrite config");
    assert_eq!(
        reload(&gw, "wrong").await.status,
        401,
        "reload needs the admin token"
    );
    let done = reload(&gw, "s3cret").await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["config"]["routes"], 1);

    assert_eq!(
        get(&format!("http://{public}/b/x"), &[]).await.text(),
        "two"
    );
    assert_eq!(get(&format!("http://{public}/a/x"), &[]).await.status, 404);
    let active = support::send(
        &support::http1(),
        "GET",
        &format!("http://{}/admin/config", gw.admin_addr),
        &[("authorization", "Bearer s3cret")],
        Bytes::new(),
    )
    .await
    .json();
    assert_eq!(active["routes"][0]["name"], "b");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_bad_file_or_a_restart_only_change_leaves_the_running_config() {
    let one = origin::start(|_req| async { origin::text(200, "one") }).await;
    let two = origin::start(|_req| async { origin::text(200, "two") }).await;
    let dir = TempDir::new("reload-refused");
    let (gw, path) = start_from(&dir, &config_text(&[("a", "/a", one.addr)])).await;
    let public = gw.public_addr;

    // Invalid: a route naming a missing service. 400 naming file, line and field.
    let broken = format!(
        "{}[[routes]]\nname = \"c\"\nservice = \"nowhere\"\n",
        config_text(&[("b", "/b", two.addr)])
    );
    std::fs::write(&path, broken).expect("rewrite config");
    let refused = reload(&gw, "s3cret").await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    let message = refused.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("gatehouse.toml:") && message.contains("nowhere"),
        "{message}"
    );

    // Valid, but it moves the public listener: only a restart can do that.
    let moved = config_text(&[("b", "/b", two.addr)])
        .replace("public = \"127.0.0.1:0\"", "public = \"127.0.0.1:1\"");
    std::fs::write(&path, moved).expect("rewrite config");
    let refused = reload(&gw, "s3cret").await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert!(refused.text().contains("[listen]"), "{}", refused.text());

    // Neither attempt changed anything: the old route serves, the new one does not exist.
    assert_eq!(
        get(&format!("http://{public}/a/x"), &[]).await.text(),
        "one"
    );
    assert_eq!(get(&format!("http://{public}/b/x"), &[]).await.status, 404);
    gw.shutdown().await;
}

#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    let one = origin::start(|_req| async { origin::text(200, "one") }).await;
    let two = origin::start(|_req| async { origin::text(200, "two") }).await;
    let public = origin::closed_port().await;
    let admin = origin::closed_port().await;
    let text = |routes: &[(&str, &str, std::net::SocketAddr)]| {
        config_text(routes)
            .replace("127.0.0.1:0\"\nadmin", &format!("{public}\"\nadmin"))
            .replace("admin = \"127.0.0.1:0\"", &format!("admin = \"{admin}\""))
    };
    let dir = TempDir::new("reload-sighup");
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, text(&[("a", "/a", one.addr)])).expect("write config");
    let child = support::spawn_gatehouse(&path, admin, false).await;
    let url = |p: &str| format!("http://{public}{p}");
    support::eventually(
        "the gateway serves /a",
        Duration::from_secs(20),
        async || {
            support::http1()
                .get(url("/a/x").parse().expect("uri"))
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;

    std::fs::write(&path, text(&[("b", "/b", two.addr)])).expect("rewrite config");
    support::signal(&child, "-HUP");
    support::eventually(
        "/b serves after SIGHUP",
        Duration::from_secs(10),
        async || get(&url("/b/x"), &[]).await.text() == "two",
    )
    .await;
    assert_eq!(get(&url("/a/x"), &[]).await.status, 404);
}
