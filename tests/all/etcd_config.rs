//! The gateway config in one etcd key (docs/scale-out.md, "Config in etcd"): real etcd, real
//! `gatehouse` processes started with `run --etcd`, configs pushed with `gatehouse config push`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use bytes::Bytes;
use gatehouse::etcd::config_key::{Change, ConfigKey};

use crate::plugins::guests::TempDir;
use crate::support::etcd::EtcdServer;
use crate::support::origin::{self, Origin};
use crate::support::{self, eventually, free_addr, get, start_gatehouse_logged};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
const KEY: &str = "/test/gatehouse/config";
const DEADLINE: Duration = Duration::from_secs(20);

/// A `gatehouse run --etcd` process on its own ports; killed on drop.
struct Gateway {
    _child: tokio::process::Child,
    public: SocketAddr,
    admin: SocketAddr,
    log: std::path::PathBuf,
}

impl Gateway {
    async fn start(etcd: &EtcdServer, dir: &TempDir, n: usize) -> Gateway {
        let (public, admin) = (free_addr(), free_addr());
        let log = dir.join(&format!("gateway-{n}.log"));
        let args = [
            "run",
            "--etcd",
            &etcd.url(),
            "--config-key",
            KEY,
            "--config-dir",
            &dir.0.display().to_string(),
            "--listen-public",
            &public.to_string(),
            "--listen-admin",
            &admin.to_string(),
        ]
        .map(String::from);
        let child = start_gatehouse_logged(&args, &[], admin, &log)
            .await
            .unwrap_or_else(|e| panic!("gateway {n} did not start: {e}"));
        Gateway {
            _child: child,
            public,
            admin,
            log,
        }
    }

    async fn text(&self, path: &str) -> (u16, String) {
        let got = get(&format!("http://{}{path}", self.public), &[]).await;
        (got.status, got.text())
    }

    /// `/admin/config`'s `running` block.
    async fn running(&self) -> serde_json::Value {
        let got = get(&format!("http://{}/admin/config", self.admin), &[]).await;
        assert_eq!(got.status, 200, "{}", got.text());
        got.json()["running"].clone()
    }

    async fn metrics(&self) -> String {
        get(&format!("http://{}/metrics", self.admin), &[])
            .await
            .text()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Runs the `gatehouse` binary to the end.
async fn gatehouse(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("run gatehouse")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `gatehouse config push` of `file`, which must succeed: the revision written.
async fn push(etcd: &EtcdServer, file: &Path, extra: &[&str]) -> i64 {
    let path = file.to_str().expect("utf-8 path");
    let url = etcd.url();
    let mut args = vec!["config", "push", "--etcd", &url, "--config-key", KEY];
    args.extend_from_slice(extra);
    args.push(path);
    let out = gatehouse(&args).await;
    assert!(out.status.success(), "push failed: {}", stderr(&out));
    let text = stdout(&out);
    text.rsplit("at revision ")
        .next()
        .and_then(|r| r.trim().split(';').next())
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no revision in the push output: {text}"))
}

/// A config with one service and route per `(name, prefix, origin)`, and a static route
/// whose body is a file relative to the config directory.
fn config_text(routes: &[(&str, &str, &Origin)]) -> String {
    let mut text = String::from(
        "[listen]\npublic = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\n\n\
         [[routes]]\nname = \"hello\"\nmatch = { prefix = \"/hello\" }\n\
         respond = { status = 200, body_file = \"pages/hello.txt\" }\n",
    );
    for (name, prefix, origin) in routes {
        text.push_str(&format!(
            "\n[[services]]\nname = \"{name}\"\nendpoints = [\"{}\"]\n\n\
             [[routes]]\nname = \"{name}\"\nservice = \"{name}\"\nmatch = {{ prefix = \"{prefix}\" }}\n",
            origin.addr
        ));
    }
    text
}

fn config_dir(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::create_dir_all(dir.join("pages")).expect("mkdir");
    std::fs::write(dir.join("pages/hello.txt"), "hello from the config dir").expect("write");
    dir
}

fn write(dir: &TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

async fn three(etcd: &EtcdServer, dir: &TempDir) -> Vec<Gateway> {
    let mut gateways = Vec::new();
    for n in 0..3 {
        gateways.push(Gateway::start(etcd, dir, n).await);
    }
    gateways
}

/// Every gateway runs `revision`.
async fn all_run(gateways: &[Gateway], revision: i64) {
    for (n, gw) in gateways.iter().enumerate() {
        eventually(
            &format!("gateway {n} runs revision {revision}"),
            DEADLINE,
            async || gw.running().await["revision"] == revision,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_apply_one_pushed_config_and_refuse_a_bad_revision() {
    let etcd = EtcdServer::start();
    let one = origin::start(|_req| async { origin::text(200, "one") }).await;
    let two = origin::start(|_req| async { origin::text(200, "two") }).await;
    let dir = config_dir("etcd-config-three");
    let v1 = write(&dir, "v1.toml", &config_text(&[("a", "/a", &one)]));
    let r1 = push(&etcd, &v1, &[]).await;

    let gateways = three(&etcd, &dir).await;
    for gw in &gateways {
        assert_eq!(gw.text("/a/x").await, (200, "one".to_owned()));
        assert_eq!(gw.text("/b/x").await.0, 404);
        // Relative paths resolve against --config-dir.
        assert_eq!(
            gw.text("/hello").await,
            (200, "hello from the config dir".to_owned())
        );
        let running = gw.running().await;
        assert_eq!(running["source"]["kind"], "etcd", "{running}");
        assert_eq!(running["source"]["key"], KEY);
        assert_eq!(running["source"]["endpoints"], etcd.url());
        assert_eq!(running["revision"], r1);
        assert!(running["applied_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
        assert!(running["last_refused"].is_null(), "{running}");
    }

    // One push, applied by all three: a new route answers everywhere.
    let v2 = write(
        &dir,
        "v2.toml",
        &config_text(&[("a", "/a", &one), ("b", "/b", &two)]),
    );
    let r2 = push(&etcd, &v2, &[]).await;
    assert!(r2 > r1);
    all_run(&gateways, r2).await;
    for gw in &gateways {
        assert_eq!(gw.text("/b/x").await, (200, "two".to_owned()));
        assert_eq!(gw.text("/a/x").await, (200, "one".to_owned()));
    }

    // A bad revision (push would refuse it locally, so it goes straight to etcd) is refused
    // by every gateway, which keeps serving the running config and says why.
    let bad = config_text(&[("a", "/a", &one)])
        + "\n[[routes]]\nname = \"c\"\nservice = \"nowhere\"\nmatch = { prefix = \"/c\" }\n";
    let mut client = etcd.client().await;
    let put = client.put(KEY, bad, None).await.expect("put");
    let r3 = put.header().expect("header").revision();
    for (n, gw) in gateways.iter().enumerate() {
        eventually(
            &format!("gateway {n} refuses revision {r3}"),
            DEADLINE,
            async || gw.running().await["last_refused"]["revision"] == r3,
        )
        .await;
        let running = gw.running().await;
        assert_eq!(
            running["revision"], r2,
            "the running config stays: {running}"
        );
        let error = running["last_refused"]["error"].as_str().expect("error");
        assert!(
            error.contains(&format!("etcd:{KEY}@{r3}:"))
                && error.contains("routes[2].service")
                && error.contains("nowhere"),
            "{error}"
        );
        assert_eq!(gw.text("/b/x").await, (200, "two".to_owned()));
        assert!(
            gw.metrics()
                .await
                .contains("gatehouse_config_reloads_total{source=\"etcd\",result=\"refused\"} 1"),
            "{}",
            gw.metrics().await
        );
        assert!(
            gw.log().contains("config from etcd refused"),
            "{}",
            gw.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_serve_on_while_etcd_is_down_then_apply_a_push_made_after_it_returns() {
    let mut etcd = EtcdServer::start();
    let one = origin::start(|_req| async { origin::text(200, "one") }).await;
    let two = origin::start(|_req| async { origin::text(200, "two") }).await;
    let dir = config_dir("etcd-config-down");
    let v1 = write(&dir, "v1.toml", &config_text(&[("a", "/a", &one)]));
    let r1 = push(&etcd, &v1, &[]).await;
    let gateways = three(&etcd, &dir).await;

    etcd.stop();
    for (n, gw) in gateways.iter().enumerate() {
        eventually(
            &format!("gateway {n} notices etcd is gone"),
            DEADLINE,
            async || gw.log().contains("etcd config watch lost"),
        )
        .await;
        assert_eq!(gw.text("/a/x").await, (200, "one".to_owned()));
        assert_eq!(gw.running().await["revision"], r1);
    }

    etcd.restart();
    let v2 = write(
        &dir,
        "v2.toml",
        &config_text(&[("a", "/a", &one), ("b", "/b", &two)]),
    );
    let r2 = push(&etcd, &v2, &[]).await;
    all_run(&gateways, r2).await;
    for gw in &gateways {
        assert_eq!(gw.text("/b/x").await, (200, "two".to_owned()));
        assert!(gw.running().await["last_refused"].is_null());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_refuses_an_invalid_file_with_the_same_error_as_check() {
    let etcd = EtcdServer::start();
    let dir = TempDir::new("etcd-config-invalid");
    let bad = write(
        &dir,
        "bad.toml",
        "[[services]]\nname = \"s\"\nendpoints = [\"nowhere\"]\n",
    );
    let bad = bad.to_str().expect("utf-8 path");
    let check = gatehouse(&["check", "--config", bad]).await;
    let url = etcd.url();
    let pushed = gatehouse(&["config", "push", "--etcd", &url, "--config-key", KEY, bad]).await;
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(pushed.status.code(), Some(1));
    assert!(
        stderr(&check).contains("bad.toml:3:14: services[0].endpoints[0]"),
        "{}",
        stderr(&check)
    );
    assert_eq!(stderr(&pushed), stderr(&check));
    let mut client = etcd.client().await;
    let read = client.get(KEY, None).await.expect("get");
    assert!(read.kvs().is_empty(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_push_from_the_same_read_revision_fails_naming_the_current_one() {
    let etcd = EtcdServer::start();
    let one = origin::start(|_req| async { origin::text(200, "one") }).await;
    let two = origin::start(|_req| async { origin::text(200, "two") }).await;
    let dir = config_dir("etcd-config-race");
    let url = etcd.url();
    let v1 = write(&dir, "v1.toml", &config_text(&[("a", "/a", &one)]));
    let r1 = push(&etcd, &v1, &["--expect-revision", "0"]).await;

    // Both operators read revision r1.
    let got = gatehouse(&["config", "get", "--etcd", &url, "--config-key", KEY]).await;
    assert!(got.status.success(), "{}", stderr(&got));
    assert!(
        stdout(&got).contains(&format!("revision: {r1}\n")),
        "{}",
        stdout(&got)
    );
    let theirs = config_text(&[("b", "/b", &two)]);
    let ours = config_text(&[("a", "/a", &one), ("b", "/b", &two)]);
    let theirs_file = write(&dir, "theirs.toml", &theirs);
    let ours_file = write(&dir, "ours.toml", &ours);
    let expect = r1.to_string();
    let r2 = push(&etcd, &theirs_file, &["--expect-revision", &expect]).await;

    let lost = gatehouse(&[
        "config",
        "push",
        "--etcd",
        &url,
        "--config-key",
        KEY,
        "--expect-revision",
        &expect,
        ours_file.to_str().expect("utf-8"),
    ])
    .await;
    assert_eq!(lost.status.code(), Some(1));
    let message = stderr(&lost);
    assert!(
        message.contains(&format!("{KEY} is at revision {r2}, not {r1} as expected"))
            && message.contains(&format!("--expect-revision {r2}"))
            && message.contains("nothing was written"),
        "{message}"
    );
    // The winner's config is what the key holds.
    let toml = gatehouse(&[
        "config",
        "get",
        "--etcd",
        &url,
        "--config-key",
        KEY,
        "--toml",
    ])
    .await;
    assert!(toml.status.success(), "{}", stderr(&toml));
    assert_eq!(stdout(&toml), theirs);
    assert!(stderr(&toml).contains(&format!("revision {r2}")));

    // A first push (--expect-revision 0) when the key already exists loses too.
    let first = gatehouse(&[
        "config",
        "push",
        "--etcd",
        &url,
        "--config-key",
        KEY,
        "--expect-revision",
        "0",
        ours_file.to_str().expect("utf-8"),
    ])
    .await;
    assert_eq!(first.status.code(), Some(1));
    assert!(
        stderr(&first).contains(&format!("is at revision {r2}, not absent")),
        "{}",
        stderr(&first)
    );

    // Pushing what the key already holds writes nothing.
    let again = gatehouse(&[
        "config",
        "push",
        "--etcd",
        &url,
        "--config-key",
        KEY,
        theirs_file.to_str().expect("utf-8"),
    ])
    .await;
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("already holds") && stdout(&again).contains(&r2.to_string()),
        "{}",
        stdout(&again)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_fails_clearly_on_a_missing_key_an_invalid_config_or_no_etcd() {
    let etcd = EtcdServer::start();
    let url = etcd.url();
    let missing = gatehouse(&["run", "--etcd", &url, "--config-key", "/no/such/key"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("no config at key /no/such/key")
            && stderr(&missing).contains("gatehouse config push"),
        "{}",
        stderr(&missing)
    );

    let mut client = etcd.client().await;
    let put = client
        .put(
            "/bad",
            "[[services]]\nname = \"s\"\nendpoints = [\"nowhere\"]\n",
            None,
        )
        .await
        .expect("put");
    let revision = put.header().expect("header").revision();
    let invalid = gatehouse(&["run", "--etcd", &url, "--config-key", "/bad"]).await;
    assert_eq!(invalid.status.code(), Some(1));
    assert!(
        stderr(&invalid).contains(&format!(
            "etcd:/bad@{revision}:3:14: services[0].endpoints[0]"
        )),
        "{}",
        stderr(&invalid)
    );

    let nobody = format!("http://{}", free_addr());
    let unreachable = gatehouse(&["run", "--etcd", &nobody]).await;
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(
        stderr(&unreachable).contains(&format!("etcd at {nobody}: cannot read /gatehouse/config")),
        "{}",
        stderr(&unreachable)
    );
}

/// The key watch (`etcd::config_key`) resumes by reading the key again when the revisions it
/// would resume from were compacted away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_watch_reads_the_key_again_after_a_compaction() {
    let etcd = EtcdServer::start();
    let mut client = etcd.client().await;
    let first = client.put(KEY, "v1", None).await.expect("put");
    let after = first.header().expect("header").revision();
    client.put(KEY, "v2", None).await.expect("put");
    let last = client.put(KEY, "v3", None).await.expect("put");
    let r3 = last.header().expect("header").revision();
    client.compact(r3, None).await.expect("compact");

    let key = ConfigKey::connect(&etcd.settings(), KEY)
        .await
        .expect("key");
    let (changes, mut latest) = tokio::sync::watch::channel(None);
    let follow = tokio::spawn(async move { key.follow(after, changes).await });
    let seen = |latest: &mut tokio::sync::watch::Receiver<Option<Change>>| {
        latest.borrow_and_update().clone()
    };
    eventually("the current value after the compaction", DEADLINE, async || {
        matches!(seen(&mut latest), Some(Change::Put(s)) if s.value == b"v3" && s.mod_revision == r3)
    })
    .await;
    let next = client.put(KEY, "v4", None).await.expect("put");
    let r4 = next.header().expect("header").revision();
    eventually("the next revision", DEADLINE, async || {
        matches!(seen(&mut latest), Some(Change::Put(s)) if s.value == b"v4" && s.mod_revision == r4)
    })
    .await;
    client.delete(KEY, None).await.expect("delete");
    eventually(
        "the delete",
        DEADLINE,
        async || matches!(seen(&mut latest), Some(Change::Deleted { revision }) if revision > r4),
    )
    .await;
    follow.abort();
}

/// A file gateway says so in `/admin/config`, and a refused reload shows there too.
#[tokio::test]
async fn admin_config_names_the_file_and_the_last_refusal() {
    let one = origin::start(|_req| async { origin::text(200, "one") }).await;
    let dir = config_dir("etcd-config-file");
    let path = write(
        &dir,
        "gatehouse.toml",
        &config_text(&[("a", "/a", &one)])
            .replace("127.0.0.1:1", "127.0.0.1:0")
            .replace("127.0.0.1:2", "127.0.0.1:0"),
    );
    let config = gatehouse::config::load_file(&path).expect("valid");
    let gw = gatehouse::gateway::start(config).await.expect("starts");
    let running = |gw: &gatehouse::gateway::RunningGateway| {
        let url = format!("http://{}/admin/config", gw.admin_addr);
        async move { get(&url, &[]).await.json()["running"].clone() }
    };
    let before = running(&gw).await;
    assert_eq!(before["source"]["kind"], "file");
    assert_eq!(before["source"]["path"], path.display().to_string());
    assert!(before["revision"].is_null() && before["last_refused"].is_null());

    std::fs::write(&path, "[[routes]]\nname = 1\n").expect("rewrite");
    let refused = support::send(
        &support::http1(),
        "POST",
        &format!("http://{}/admin/reload", gw.admin_addr),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    let after = running(&gw).await;
    assert!(
        after["last_refused"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("routes[0].name")),
        "{after}"
    );
    assert!(after["last_refused"]["revision"].is_null());
    assert_eq!(after["applied_at"], before["applied_at"]);
    assert_eq!(
        get(&format!("http://{}/a/x", gw.public_addr), &[])
            .await
            .text(),
        "one"
    );
    gw.shutdown().await;
}

/// `POST /admin/reload` (as SIGHUP) on a gateway whose config is in etcd reads the key again,
/// through the same load as the watch; an older revision is never applied over a newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reload_reads_the_etcd_key_again() {
    use gatehouse::reload::source::{ConfigSource, ListenOverrides, Origin};
    let etcd = EtcdServer::start();
    let one = origin::start(|_req| async { origin::text(200, "one") }).await;
    let two = origin::start(|_req| async { origin::text(200, "two") }).await;
    let dir = config_dir("etcd-config-reload");
    let mut client = etcd.client().await;
    client
        .put(KEY, config_text(&[("a", "/a", &one)]), None)
        .await
        .expect("put");
    let key = ConfigKey::connect(&etcd.settings(), KEY)
        .await
        .expect("key");
    let source = ConfigSource::new(Origin::Etcd {
        key: Box::new(key),
        base: dir.0.clone(),
    })
    .with_overrides(ListenOverrides {
        public: Some("127.0.0.1:0".parse().expect("addr")),
        admin: Some("127.0.0.1:0".parse().expect("addr")),
    });
    let fetched = source.fetch().await.expect("fetch");
    let config = source.load(&fetched).expect("valid");
    let gw = gatehouse::gateway::start_from(config, source, fetched.revision)
        .await
        .expect("starts");

    let put = client
        .put(KEY, config_text(&[("b", "/b", &two)]), None)
        .await
        .expect("put");
    let revision = put.header().expect("header").revision();
    let reloaded = support::send(
        &support::http1(),
        "POST",
        &format!("http://{}/admin/reload", gw.admin_addr),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    assert_eq!(reloaded.json()["config"]["revision"], revision);
    let got = get(&format!("http://{}/b/x", gw.public_addr), &[]).await;
    assert_eq!(got.text(), "two");
    assert_eq!(gw.reloader.running().revision, Some(revision));
    gw.shutdown().await;
}

/// `--listen-admin` cannot open the admin API to the network without a token.
#[test]
fn a_non_loopback_admin_override_needs_a_token() {
    use gatehouse::reload::source::{ConfigSource, Fetched, ListenOverrides, Origin};
    let dir = TempDir::new("etcd-config-override");
    let source =
        ConfigSource::new(Origin::File(dir.join("g.toml"))).with_overrides(ListenOverrides {
            public: Some("127.0.0.1:7001".parse().expect("addr")),
            admin: Some("0.0.0.0:7002".parse().expect("addr")),
        });
    let open = Fetched {
        text: String::new(),
        revision: None,
    };
    let error = source.load(&open).expect_err("refused").to_string();
    assert!(
        error.contains("--listen-admin 0.0.0.0:7002 is not a loopback address"),
        "{error}"
    );
    let with_token = Fetched {
        text: "[admin]\ntoken = \"s3cret\"\n".to_owned(),
        revision: None,
    };
    let config = source.load(&with_token).expect("a token makes it fine");
    assert_eq!(config.listen.public.to_string(), "127.0.0.1:7001");
    assert_eq!(config.listen.admin.to_string(), "0.0.0.0:7002");
}
