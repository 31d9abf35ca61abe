//! etcd with TLS, client certificates and etcd's own user authentication, as a production
//! cluster runs it: the gateway's one connection path (`gatehouse::etcd::connect`) used by the
//! registry store (`[etcd.tls]`, `user`, `password_env`) and by the config key (`--etcd-ca`,
//! `--etcd-cert`, `--etcd-user`, `GATEHOUSE_ETCD_PASSWORD`). Wrong credentials fail clearly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{AuthClient, Client};
use gatehouse::etcd::{connect, EtcdSettings, EtcdTls};

use crate::support::certs::{temp_dir, Ca};
use crate::support::etcd::{EtcdServer, ServerTls};
use crate::support::origin::{self, Origin};
use crate::support::{eventually, free_addr, get, http1, send, start_gatehouse_logged};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
const PASSWORD: &str = "etcd-root-password";
const DEADLINE: Duration = Duration::from_secs(20);

/// A TLS etcd with auth enabled (user `root`, [`PASSWORD`]) and the files a client needs.
struct SecureEtcd {
    etcd: EtcdServer,
    dir: PathBuf,
    ca: PathBuf,
    /// A client certificate whose name (`CN=gatehouse`) is no etcd user: it gets the
    /// gateway through TLS, and only the password grants it anything.
    cert: PathBuf,
    key: PathBuf,
}

impl SecureEtcd {
    async fn start() -> SecureEtcd {
        let dir = temp_dir("etcd-tls");
        let ca = Ca::new("etcd test CA");
        let ca_path = ca.write(&dir, "ca.pem");
        let (server_cert, server_key) = ca.server(&["127.0.0.1", "localhost"]).write(&dir, "etcd");
        let (cert, key) = ca.client("gatehouse", None).write(&dir, "client");
        let etcd = EtcdServer::start_tls(ServerTls {
            cert: server_cert,
            key: server_key,
            client_ca: ca_path.clone(),
        });
        let secure = SecureEtcd {
            etcd,
            dir,
            ca: ca_path,
            cert,
            key,
        };
        // Auth on: a root user with a password (etcd needs root before `auth enable`).
        let mut client = connect(&secure.settings(None))
            .await
            .expect("a TLS client before auth is on");
        client
            .user_add("root", PASSWORD, None)
            .await
            .expect("add user root");
        client
            .user_grant_role("root", "root")
            .await
            .expect("grant root");
        let mut auth: AuthClient = client.auth_client();
        auth.auth_enable().await.expect("auth enable");
        secure
    }

    fn tls(&self) -> EtcdTls {
        EtcdTls {
            ca: Some(self.ca.clone()),
            cert: Some(self.cert.clone()),
            key: Some(self.key.clone()),
            server_name: None,
        }
    }

    fn settings(&self, password: Option<&str>) -> EtcdSettings {
        let mut settings = EtcdSettings::new(vec![self.etcd.url()]);
        settings.tls = Some(self.tls());
        settings.user = password.map(|p| ("root".to_owned(), p.to_owned()));
        settings
    }

    /// The TLS and user flags of `gatehouse run/config --etcd` (the password from the
    /// environment, as docs/scale-out.md advises).
    fn flags(&self) -> Vec<String> {
        let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
        vec![
            "--etcd".into(),
            self.etcd.url(),
            "--etcd-ca".into(),
            path(&self.ca),
            "--etcd-cert".into(),
            path(&self.cert),
            "--etcd-cert-key".into(),
            path(&self.key),
            "--etcd-user".into(),
            "root".into(),
        ]
    }

    /// `gatehouse run` from the config in `key` of this etcd, on the given listeners.
    fn run_args(&self, key: &str, public: SocketAddr, admin: SocketAddr) -> Vec<String> {
        let mut run = vec!["run".to_owned()];
        run.extend(self.flags());
        run.extend([
            "--config-key".into(),
            key.into(),
            "--listen-public".into(),
            public.to_string(),
            "--listen-admin".into(),
            admin.to_string(),
        ]);
        run
    }
}

async fn put_get(client: &mut Client, key: &str) -> Result<(), etcd_client::Error> {
    client.put(key, "v", None).await?;
    let got = client.get(key, None).await?;
    assert_eq!(got.kvs().first().map(|kv| kv.value()), Some(&b"v"[..]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificates_and_a_password_are_all_required_by_a_secure_etcd() {
    let secure = SecureEtcd::start().await;

    // Everything right: TLS with a client certificate, user and password.
    let mut client = connect(&secure.settings(Some(PASSWORD)))
        .await
        .expect("connect with TLS and the password");
    put_get(&mut client, "/probe").await.expect("put and get");

    // The right certificate but no password: TLS gets through, etcd grants nothing.
    let mut anonymous = connect(&secure.settings(None)).await.expect("lazy connect");
    let err = put_get(&mut anonymous, "/probe")
        .await
        .expect_err("no user: refused");
    assert!(
        err.to_string().to_lowercase().contains("permission denied")
            || err.to_string().to_lowercase().contains("user name"),
        "{err}"
    );

    // A wrong password fails at connect, naming the endpoint.
    let Err(err) = connect(&secure.settings(Some("wrong"))).await else {
        panic!("a wrong password is refused");
    };
    let text = err.to_string();
    assert!(text.contains(&secure.etcd.url()), "{text}");
    assert!(
        text.to_lowercase().contains("authentication failed"),
        "{text}"
    );

    // No client certificate: the TLS handshake is refused, so every call fails.
    let mut no_cert = secure.settings(Some(PASSWORD));
    if let Some(tls) = no_cert.tls.as_mut() {
        tls.cert = None;
        tls.key = None;
    }
    let refused = match connect(&no_cert).await {
        Ok(mut client) => put_get(&mut client, "/probe").await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "etcd requires a client certificate");

    // A CA that did not sign etcd's certificate: not trusted.
    let other = Ca::new("another CA").write(&secure.dir, "other-ca.pem");
    let mut untrusted = secure.settings(Some(PASSWORD));
    if let Some(tls) = untrusted.tls.as_mut() {
        tls.ca = Some(other);
    }
    let refused = match connect(&untrusted).await {
        Ok(mut client) => put_get(&mut client, "/probe").await.is_err(),
        Err(_) => true,
    };
    assert!(
        refused,
        "etcd's certificate must chain to the configured CA"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_store_works_over_tls_with_a_password_from_the_environment() {
    let secure = SecureEtcd::start().await;
    let origin: Origin = origin::start(|_req| async { origin::text(200, "orders") }).await;
    let (public, admin) = (free_addr(), free_addr());
    let path = |p: &Path| p.display().to_string();
    let toml = format!(
        r#"
[listen]
public = "{public}"
admin = "{admin}"
workers = 1

[etcd]
endpoints = ["{url}"]
user = "root"
password_env = "GATEHOUSE_TEST_ETCD_PASSWORD"

[etcd.tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"

[registry]
token = "s3cret"
store = "etcd"
ready_requires_store = true

[[services]]
name = "orders"
discovery = "registry"

[[routes]]
name = "orders"
service = "orders"
"#,
        url = secure.etcd.url(),
        ca = path(&secure.ca),
        cert = path(&secure.cert),
        key = path(&secure.key),
    );
    let config = secure.dir.join("gateway.toml");
    std::fs::write(&config, toml).expect("write config");
    let run = vec!["run".to_owned(), "--config".to_owned(), path(&config)];
    let log = secure.dir.join("gateway.log");
    let _gateway = start_gatehouse_logged(
        &run,
        &[("GATEHOUSE_TEST_ETCD_PASSWORD", PASSWORD)],
        admin,
        &log,
    )
    .await
    .unwrap_or_else(|e| panic!("the gateway did not start: {e}"));

    // A registration through the gateway lands in etcd (as a leased key) and is routed.
    let body = serde_json::json!({
        "id": "one",
        "address": origin.addr.ip().to_string(),
        "port": origin.addr.port(),
    });
    let registered = send(
        &http1(),
        "POST",
        &format!("http://{admin}/registry/services/orders/instances"),
        &[("authorization", "Bearer s3cret")],
        Bytes::from(body.to_string()),
    )
    .await;
    assert_eq!(registered.status, 201, "{}", registered.text());
    let mut client = connect(&secure.settings(Some(PASSWORD)))
        .await
        .expect("test client");
    let keys = client
        .get(
            "/gatehouse/registry/orders/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("read the registry keys");
    assert_eq!(keys.kvs().len(), 1, "one leased key for the instance");
    eventually("the instance is routed", DEADLINE, async || {
        let got = get(&format!("http://{public}/"), &[]).await;
        got.status == 200 && got.text() == "orders"
    })
    .await;

    // The same config with a wrong password: the store never becomes ready, and the log
    // says why.
    let (public2, admin2) = (free_addr(), free_addr());
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace(&public.to_string(), &public2.to_string())
        .replace(&admin.to_string(), &admin2.to_string());
    let wrong_config = secure.dir.join("wrong.toml");
    std::fs::write(&wrong_config, text).expect("write config");
    let wrong_log = secure.dir.join("wrong.log");
    let out = std::fs::File::create(&wrong_log).expect("log file");
    let mut wrong = tokio::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&wrong_config)
        .env("GATEHOUSE_TEST_ETCD_PASSWORD", "wrong")
        .env_remove("RUST_LOG")
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn gatehouse");
    eventually(
        "a wrong password is logged as an authentication failure",
        DEADLINE,
        async || {
            std::fs::read_to_string(&wrong_log)
                .unwrap_or_default()
                .to_lowercase()
                .contains("authentication failed")
        },
    )
    .await;
    let ready = http1()
        .get(format!("http://{admin2}/readyz").parse().expect("uri"))
        .await
        .is_ok_and(|r| r.status() == 200);
    assert!(
        !ready,
        "ready_requires_store: not ready without the store ({})",
        std::fs::read_to_string(&wrong_log).unwrap_or_default()
    );
    let _ = wrong.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_pushed_and_run_over_tls_with_auth_is_served() {
    let secure = SecureEtcd::start().await;
    let origin: Origin = origin::start(|_req| async { origin::text(200, "secure") }).await;
    let file = secure.dir.join("pushed.toml");
    std::fs::write(
        &file,
        format!(
            "[[services]]\nname = \"s\"\nendpoints = [\"{}\"]\n\n[[routes]]\nname = \"r\"\nservice = \"s\"\n",
            origin.addr
        ),
    )
    .expect("write config");
    let key = "/secure/gatehouse/config";
    let mut push = vec!["config".to_owned(), "push".to_owned()];
    push.extend(secure.flags());
    push.extend([
        "--config-key".into(),
        key.into(),
        file.display().to_string(),
    ]);

    let pushed = tokio::process::Command::new(BIN)
        .args(&push)
        .env("GATEHOUSE_ETCD_PASSWORD", PASSWORD)
        .output()
        .await
        .expect("run config push");
    assert!(
        pushed.status.success(),
        "push over TLS with auth: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    let denied = tokio::process::Command::new(BIN)
        .args(&push)
        .env("GATEHOUSE_ETCD_PASSWORD", "wrong")
        .output()
        .await
        .expect("run config push");
    assert!(!denied.status.success(), "a wrong password must fail");
    let stderr = String::from_utf8_lossy(&denied.stderr).to_lowercase();
    assert!(stderr.contains("authentication failed"), "{stderr}");

    let (public, admin) = (free_addr(), free_addr());
    let run = secure.run_args(key, public, admin);
    let log = secure.dir.join("run.log");
    let _gateway =
        start_gatehouse_logged(&run, &[("GATEHOUSE_ETCD_PASSWORD", PASSWORD)], admin, &log)
            .await
            .unwrap_or_else(|e| panic!("run --etcd over TLS: {e}"));
    let got = get(&format!("http://{public}/"), &[]).await;
    assert_eq!((got.status, got.text().as_str()), (200, "secure"));

    // A wrong password: the start fails (the config cannot be read), saying why.
    let wrong_admin = free_addr();
    let wrong = secure.run_args(key, free_addr(), wrong_admin);
    let refused = start_gatehouse_logged(
        &wrong,
        &[("GATEHOUSE_ETCD_PASSWORD", "wrong")],
        wrong_admin,
        &secure.dir.join("run-wrong.log"),
    )
    .await;
    let Err(output) = refused else {
        panic!("run with a wrong etcd password must exit");
    };
    assert!(
        output.to_lowercase().contains("authentication failed"),
        "{output}"
    );
}
