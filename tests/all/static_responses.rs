//! Routes that answer by themselves (`[routes.respond]`, `[routes.redirect]`): status, headers
//! and body inline or from a file beside the config, redirects filled from path parameters,
//! no service contacted, the file re-read on reload, and the config errors for each mistake.

use std::path::PathBuf;

use bytes::Bytes;
use gatehouse::config;
use gatehouse::gateway::{self, RunningGateway};

use crate::plugins::guests::TempDir;
use crate::support::{self, get, http1, origin, send};

async fn start_from(dir: &TempDir, text: &str) -> (RunningGateway, PathBuf) {
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, text).expect("write config");
    let config = config::load_file(&path).expect("valid config");
    (gateway::start(config).await.expect("gateway starts"), path)
}

fn header<'a>(got: &'a support::Got, name: &str) -> &'a str {
    got.headers
        .get(name)
        .map(|v| v.to_str().expect("ascii header"))
        .unwrap_or_else(|| panic!("no {name} header in {:?}", got.headers))
}

#[tokio::test]
async fn inline_answers_need_no_service_and_the_origin_never_sees_them() {
    let origin = origin::echo("origin").await;
    let gw = support::gateway(&format!(
        r#"
[[services]]
name = "api"
endpoints = ["{}"]

[[routes]]
name = "api"
service = "api"
match = {{ prefix = "/" }}

[[routes]]
name = "health"
match = {{ path = "/healthz" }}
[routes.respond]
body = '{{"status":"ok"}}'
headers = {{ "content-type" = "application/json", "cache-control" = "no-store" }}

[[routes]]
name = "maintenance"
match = {{ prefix = "/orders" }}
[routes.respond]
status = 503
body = "down for maintenance"
headers = {{ "retry-after" = "120" }}
"#,
        origin.addr
    ))
    .await;
    let base = format!("http://{}", gw.public_addr);

    let got = get(&format!("{base}/healthz"), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), serde_json::json!({"status": "ok"}));
    assert_eq!(header(&got, "content-type"), "application/json");
    assert_eq!(header(&got, "cache-control"), "no-store");
    assert_eq!(header(&got, "content-length"), "15");
    assert!(got.headers.contains_key("x-request-id"));

    // The default content type of an inline body; any method, any depth under the prefix.
    let got = send(
        &http1(),
        "POST",
        &format!("{base}/orders/17"),
        &[],
        Bytes::from_static(b"{\"order\": 1}"),
    )
    .await;
    assert_eq!(got.status, 503);
    assert_eq!(got.text(), "down for maintenance");
    assert_eq!(header(&got, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(header(&got, "retry-after"), "120");

    // HEAD: the head of the answer, no body.
    let got = send(
        &http1(),
        "HEAD",
        &format!("{base}/healthz"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(header(&got, "content-length"), "15");
    assert!(got.body.is_empty());

    // Over HTTP/2 too.
    let got = send(
        &support::h2c(),
        "GET",
        &format!("{base}/healthz"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), r#"{"status":"ok"}"#);

    assert_eq!(origin.accepted(), 0, "no static answer reached the origin");
    assert_eq!(get(&format!("{base}/other"), &[]).await.status, 200);
    assert_eq!(origin.accepted(), 1);
}

#[tokio::test]
async fn redirects_fill_path_parameters_and_keep_the_query() {
    let gw = support::gateway(
        r#"
[[routes]]
name = "moved"
match = { path = "/v1/users/{id}/{*rest}" }
[routes.redirect]
location = "https://api.example.com/v2/users/{id}/{rest}"
status = 308

[[routes]]
name = "home"
match = { path = "/" }
[routes.redirect]
location = "/docs/?from=root"

[[routes]]
name = "drop-query"
match = { path = "/old" }
[routes.redirect]
location = "/new"
status = 301
keep_query = false
"#,
    )
    .await;
    let base = format!("http://{}", gw.public_addr);

    let got = get(
        &format!("{base}/v1/users/42/orders/7%20x?page=2&x=%2F"),
        &[],
    )
    .await;
    assert_eq!(got.status, 308);
    assert_eq!(
        header(&got, "location"),
        "https://api.example.com/v2/users/42/orders/7%20x?page=2&x=%2F",
        "parameters stay percent-encoded as sent; the query is appended"
    );
    assert!(got.body.is_empty());

    // The default status is 302; the request's query joins the template's own.
    let got = get(&format!("{base}/?lang=en"), &[]).await;
    assert_eq!(got.status, 302);
    assert_eq!(header(&got, "location"), "/docs/?from=root&lang=en");
    let got = get(&format!("{base}/"), &[]).await;
    assert_eq!(header(&got, "location"), "/docs/?from=root");

    let got = get(&format!("{base}/old?a=1"), &[]).await;
    assert_eq!(got.status, 301);
    assert_eq!(header(&got, "location"), "/new");

    // The path is canonical before the redirect is made: `..` cannot leak into the location.
    let got = get(&format!("{base}/v1/users/x/../42/a"), &[]).await;
    assert_eq!(got.status, 308);
    assert_eq!(
        header(&got, "location"),
        "https://api.example.com/v2/users/42/a"
    );
}

#[tokio::test]
async fn body_files_are_read_beside_the_config_at_load_and_again_on_reload() {
    let dir = TempDir::new("static-body-file");
    std::fs::create_dir_all(dir.join("pages")).expect("mkdir");
    std::fs::write(dir.join("pages/maintenance.html"), "<h1>back soon</h1>").expect("write");
    let text = r#"
[listen]
public = "127.0.0.1:0"
admin = "127.0.0.1:0"
[admin]
token = "s3cret"

[[routes]]
name = "maintenance"
match = { prefix = "/" }
[routes.respond]
status = 503
body_file = "pages/maintenance.html"
"#;
    let (gw, _path) = start_from(&dir, text).await;
    let url = format!("http://{}/anything", gw.public_addr);
    let got = get(&url, &[]).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.text(), "<h1>back soon</h1>");
    assert_eq!(header(&got, "content-type"), "text/html; charset=utf-8");

    // Read at load: a changed file shows only after a reload.
    std::fs::write(dir.join("pages/maintenance.html"), "<h1>almost there</h1>").expect("write");
    assert_eq!(get(&url, &[]).await.text(), "<h1>back soon</h1>");
    let reloaded = send(
        &http1(),
        "POST",
        &format!("http://{}/admin/reload", gw.admin_addr),
        &[("authorization", "Bearer s3cret")],
        Bytes::new(),
    )
    .await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    assert_eq!(get(&url, &[]).await.text(), "<h1>almost there</h1>");

    // A file grown past the cap is refused on reload, and the running answer stays.
    std::fs::write(
        dir.join("pages/maintenance.html"),
        vec![b'x'; gatehouse::routing::MAX_STATIC_BODY + 1],
    )
    .expect("write");
    let refused = send(
        &http1(),
        "POST",
        &format!("http://{}/admin/reload", gw.admin_addr),
        &[("authorization", "Bearer s3cret")],
        Bytes::new(),
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused.text().contains("routes[0].respond.body_file")
            && refused.text().contains("at most 1048576"),
        "{}",
        refused.text()
    );
    assert_eq!(get(&url, &[]).await.text(), "<h1>almost there</h1>");
}

#[test]
fn a_missing_or_oversized_body_file_names_file_line_and_key() {
    let dir = TempDir::new("static-bad-file");
    std::fs::write(dir.join("big.html"), vec![b'x'; 2 * 1024 * 1024]).expect("write");
    let path = dir.join("gatehouse.toml");
    std::fs::write(
        &path,
        r#"[[routes]]
name = "a"
match = { path = "/a" }
respond = { body_file = "missing.html" }

[[routes]]
name = "b"
match = { path = "/b" }
respond = { body_file = "big.html" }
"#,
    )
    .expect("write config");
    let error = config::load_file(&path).expect_err("refused").to_string();
    let file = path.display().to_string();
    assert!(
        error.contains(&format!("{file}:4"))
            && error.contains("routes[0].respond.body_file")
            && error.contains("missing.html")
            && error.contains("No such file"),
        "{error}"
    );
    assert!(
        error.contains(&format!("{file}:9"))
            && error.contains("routes[1].respond.body_file")
            && error.contains("the body is 2097152 bytes"),
        "{error}"
    );
}

#[tokio::test]
async fn the_admin_split_api_leaves_static_routes_alone() {
    let gw = support::gateway(
        r#"
[[services]]
name = "api"
endpoints = ["127.0.0.1:9"]

[[routes]]
name = "health"
match = { path = "/healthz" }
respond = { body = "ok" }
"#,
    )
    .await;
    let got = send(
        &http1(),
        "PUT",
        &format!("http://{}/admin/routes/health/split", gw.admin_addr),
        &[("content-type", "application/json")],
        Bytes::from_static(br#"{"split": [{"service": "api", "weight": 1}]}"#),
    )
    .await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert!(got.text().contains("answers by itself"), "{}", got.text());
    let got = get(&format!("http://{}/healthz", gw.public_addr), &[]).await;
    assert_eq!(got.text(), "ok");
    let config = get(&format!("http://{}/admin/config", gw.admin_addr), &[]).await;
    let route = &config.json()["routes"][0];
    assert_eq!(route["respond"]["status"], 200, "{route}");
    assert_eq!(route["respond"]["body_bytes"], 2, "{route}");
}
