//! The `gatehouse` binary: parse the CLI, load config, run the gateway until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gatehouse::config::{self, Config};
use gatehouse::etcd::config_key::{ConfigKey, Pushed, DEFAULT_CONFIG_KEY};
use gatehouse::etcd::{EtcdSettings, EtcdTls};
use gatehouse::reload::source::{ConfigSource, ListenOverrides, Origin};
use gatehouse::reload::{ReloadError, Reloader};

// Proxying allocates and frees small buffers at a high rate, often on different threads (a
// response buffer freed by another worker, plugin instances torn down off the request
// thread); glibc malloc serialises such frees on an arena lock, mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// gatehouse: a programmable API gateway with WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the gateway. Without --config it runs the embedded default: the public listener
    /// on 127.0.0.1:8080 proxies /echo/... to a bundled echo origin on 127.0.0.1:9902, and the
    /// admin API listens on 127.0.0.1:9901. SIGHUP (or POST /admin/reload) re-reads the
    /// config file and swaps it in whole, or keeps the running config and logs why not;
    /// SIGINT/SIGTERM drain in-flight requests and exit.
    ///
    /// With --etcd the config is the value of one etcd key (docs/scale-out.md): read at start
    /// (no retry: the start fails if etcd cannot be read, the key is missing or the config in
    /// it is invalid), then watched; each new revision is applied as a reload is.
    Run {
        /// Path to a TOML configuration file.
        #[arg(short, long, value_name = "FILE", conflicts_with = "endpoints")]
        config: Option<PathBuf>,
        #[command(flatten)]
        etcd: EtcdArgs,
        /// With --etcd: the directory relative paths in the config (plugins.dir, certificates,
        /// files) resolve against. Default: the working directory.
        #[arg(long, value_name = "DIR", env = "GATEHOUSE_CONFIG_DIR")]
        config_dir: Option<PathBuf>,
        /// This gateway's public address, over `[listen] public` of the config: several
        /// gateways on one machine can run one shared config.
        #[arg(long, value_name = "ADDR", env = "GATEHOUSE_LISTEN_PUBLIC")]
        listen_public: Option<SocketAddr>,
        /// This gateway's admin address, over `[listen] admin` of the config (a non-loopback
        /// one needs admin.token in the config).
        #[arg(long, value_name = "ADDR", env = "GATEHOUSE_LISTEN_ADMIN")]
        listen_admin: Option<SocketAddr>,
    },
    /// Validate a configuration file and exit: 0 if valid, 1 with every problem listed if not.
    Check {
        /// Path to a TOML configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// The config in etcd: `config push`, `config get` (docs/scale-out.md).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write and test plugins: `plugin new`, `plugin test`.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file exactly as `gatehouse check` does, then write it to the etcd key
    /// with a compare-and-swap: if the key changed since the revision read (or the one given
    /// with --expect-revision), nothing is written and the command fails naming the current
    /// revision. Every gateway watching the key applies it.
    Push {
        #[command(flatten)]
        etcd: EtcdArgs,
        /// Write only if the key is still at this revision (the one you reviewed, from
        /// `gatehouse config get`); 0: only if the key does not exist yet.
        #[arg(long, value_name = "N")]
        expect_revision: Option<i64>,
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Print the revision of the config in the etcd key (and with --toml, the config).
    Get {
        #[command(flatten)]
        etcd: EtcdArgs,
        /// Print the config itself to stdout (the revision goes to stderr).
        #[arg(long)]
        toml: bool,
    },
}

/// How to reach etcd and which key holds the config.
#[derive(Debug, clap::Args)]
struct EtcdArgs {
    /// etcd endpoints, comma-separated: http://HOST:2379, or https://... for TLS.
    #[arg(
        long = "etcd",
        value_name = "URL[,URL...]",
        env = "GATEHOUSE_ETCD",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,
    /// The etcd key that holds the config.
    #[arg(long, value_name = "KEY", env = "GATEHOUSE_CONFIG_KEY", default_value = DEFAULT_CONFIG_KEY)]
    config_key: String,
    /// etcd user (etcd's own authentication); needs --etcd-password.
    #[arg(
        long,
        value_name = "USER",
        env = "GATEHOUSE_ETCD_USER",
        requires = "etcd_password"
    )]
    etcd_user: Option<String>,
    /// etcd password; prefer the environment variable (a flag shows in `ps`).
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "GATEHOUSE_ETCD_PASSWORD",
        hide_env_values = true,
        requires = "etcd_user"
    )]
    etcd_password: Option<String>,
    /// CA certificate (PEM) that signed etcd's certificate. Default with https://: the
    /// system roots.
    #[arg(long, value_name = "FILE", env = "GATEHOUSE_ETCD_CA")]
    etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) when etcd requires one (--client-cert-auth); needs
    /// --etcd-cert-key.
    #[arg(
        long,
        value_name = "FILE",
        env = "GATEHOUSE_ETCD_CERT",
        requires = "etcd_cert_key"
    )]
    etcd_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "GATEHOUSE_ETCD_CERT_KEY",
        requires = "etcd_cert"
    )]
    etcd_cert_key: Option<PathBuf>,
    /// The name to verify etcd's certificate against, when it differs from the endpoint host.
    #[arg(long, value_name = "NAME", env = "GATEHOUSE_ETCD_SERVER_NAME")]
    etcd_server_name: Option<String>,
}

impl EtcdArgs {
    /// The settings, or an error when no endpoint is given.
    fn settings(&self) -> anyhow::Result<EtcdSettings> {
        if self.endpoints.is_empty() {
            anyhow::bail!("no etcd endpoint: give --etcd URL[,URL...] (or GATEHOUSE_ETCD)");
        }
        let mut settings = EtcdSettings::new(self.endpoints.clone());
        settings.user = self.etcd_user.clone().zip(self.etcd_password.clone());
        let tls_asked = self.etcd_ca.is_some()
            || self.etcd_cert.is_some()
            || self.etcd_server_name.is_some()
            || self.endpoints.iter().any(|e| e.starts_with("https://"));
        if tls_asked {
            settings.tls = Some(EtcdTls {
                ca: self.etcd_ca.clone(),
                cert: self.etcd_cert.clone(),
                key: self.etcd_cert_key.clone(),
                server_name: self.etcd_server_name.clone(),
            });
        }
        Ok(settings)
    }

    async fn connect(&self) -> anyhow::Result<ConfigKey> {
        Ok(ConfigKey::connect(&self.settings()?, &self.config_key).await?)
    }
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Write a ready plugin project (source, build script, README, sample test cases, and the
    /// WIT this binary speaks) into a new directory.
    New {
        /// The plugin's name: its file name in the plugins directory without `.wasm`.
        name: String,
        /// The language: rust, js or python.
        #[arg(long, value_name = "LANG", default_value = "rust")]
        lang: gatehouse::plugin_kit::scaffold::Language,
        /// The hooks it exports, comma-separated: request, response, failure.
        #[arg(long, value_name = "HOOKS", default_value = "request")]
        hooks: gatehouse::plugin_kit::scaffold::Hooks,
        /// The project directory. Default: ./NAME.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run a plugin against test cases on the gateway's runtime, without a gateway, origin or
    /// network. Exits 0 if every case passes, 1 if one fails, 2 if the run cannot start.
    Test {
        /// The plugin component (.wasm).
        plugin: PathBuf,
        /// Case files or directories of them. Default: ./cases, else cases/ beside the plugin.
        cases: Vec<PathBuf>,
        /// Write each case's observed outcome into its `[expect]` table.
        #[arg(long)]
        record: bool,
        /// Print the report as JSON (for CI).
        #[arg(long)]
        json: bool,
        /// Cache compiled plugins here between runs. Default: $HOME/.cache/gatehouse/plugins.
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Compile every run; cache nothing.
        #[arg(long, conflicts_with = "cache_dir")]
        no_cache: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => check(&config),
        Command::Run {
            config,
            etcd,
            config_dir,
            listen_public,
            listen_admin,
        } => {
            let overrides = ListenOverrides {
                public: listen_public,
                admin: listen_admin,
            };
            run(config, etcd, config_dir, overrides)
        }
        Command::Config(ConfigCommand::Push {
            etcd,
            expect_revision,
            file,
        }) => config_push(&etcd, expect_revision, &file),
        Command::Config(ConfigCommand::Get { etcd, toml }) => config_get(&etcd, toml),
        Command::Plugin(PluginCommand::Test {
            plugin,
            cases,
            record,
            json,
            cache_dir,
            no_cache,
        }) => {
            let cache_dir = if no_cache {
                None
            } else {
                cache_dir.or_else(|| {
                    std::env::var_os("HOME")
                        .map(|home| PathBuf::from(home).join(".cache/gatehouse/plugins"))
                })
            };
            return plugin_test(&plugin, cases, record, json, cache_dir);
        }
        Command::Plugin(PluginCommand::New {
            name,
            lang,
            hooks,
            dir,
        }) => plugin_new(name, lang, hooks, dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gatehouse: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: many errors already quote their cause
/// ("cannot read: No such file or directory"), and `{:#}` would append it again.
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = config::load_file(path)?;
    for warning in config.warning_lines() {
        println!("warning: {warning}");
    }
    check_plugins(&config)?;
    println!(
        "{}: ok ({}, {})",
        path.display(),
        config::count(config.services.len(), "service"),
        config::count(config.routes.len(), "route")
    );
    Ok(())
}

/// Load every plugin the config names, as `run` would.
fn check_plugins(config: &Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime
        .block_on(gatehouse::state::plugins::check(config))
        .map_err(anyhow::Error::msg)
}

fn plugin_new(
    name: String,
    language: gatehouse::plugin_kit::scaffold::Language,
    hooks: gatehouse::plugin_kit::scaffold::Hooks,
    dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    use gatehouse::plugin_kit::scaffold;
    let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
    let files = scaffold::write(&scaffold::NewPlugin {
        name: name.clone(),
        language,
        hooks,
        dir: dir.clone(),
    })?;
    println!("wrote {} plugin `{name}` in {}:", language, dir.display());
    for file in files {
        println!("  {}", file.display());
    }
    println!(
        "next: cd {} && ./build.sh && gatehouse plugin test {name}.wasm",
        dir.display()
    );
    Ok(())
}

/// `gatehouse plugin test`: its own exit codes (1: a case failed, 2: the run cannot start).
fn plugin_test(
    plugin: &std::path::Path,
    cases: Vec<PathBuf>,
    record: bool,
    json: bool,
    cache_dir: Option<PathBuf>,
) -> ExitCode {
    use gatehouse::plugin_kit::{self, record as recorder, render, RunOptions};
    let cases = if cases.is_empty() {
        vec![plugin_kit::default_cases(plugin)]
    } else {
        cases
    };
    let report = match plugin_kit::run_cases(plugin, &cases, RunOptions { cache_dir }) {
        Ok(r) => r,
        Err(error) => {
            eprintln!("gatehouse: {error}");
            return ExitCode::from(2);
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("gatehouse: cannot write the report as JSON: {error}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", render::text(&report));
    }
    if record {
        for case in &report.cases {
            let Some(observed) = &case.observed else {
                continue;
            };
            if case.passed {
                continue;
            }
            match recorder::write(&case.file, &observed.to_expect()) {
                Ok(()) => eprintln!("recorded {}", case.file.display()),
                Err(error) => {
                    eprintln!("gatehouse: {error}");
                    return ExitCode::from(2);
                }
            }
        }
        return ExitCode::SUCCESS;
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `gatehouse config push`: `check`, then a compare-and-swap write of the file's text.
fn config_push(etcd: &EtcdArgs, expect: Option<i64>, file: &std::path::Path) -> anyhow::Result<()> {
    let settings = etcd.settings()?;
    check(file)?;
    let text = std::fs::read(file).with_context(|| format!("{}: cannot read", file.display()))?;
    let pushed = control_runtime()?.block_on(async {
        let key = ConfigKey::connect(&settings, &etcd.config_key).await?;
        anyhow::Ok(key.push(&text, expect).await?)
    })?;
    match pushed {
        Pushed::Written { revision } => println!(
            "pushed {} to etcd key {} at revision {revision}",
            file.display(),
            etcd.config_key
        ),
        Pushed::Unchanged { revision } => println!(
            "etcd key {} already holds {} at revision {revision}; nothing written",
            etcd.config_key,
            file.display()
        ),
    }
    Ok(())
}

/// `gatehouse config get`: the key's revision, and with `--toml` its text.
fn config_get(etcd: &EtcdArgs, toml: bool) -> anyhow::Result<()> {
    let read =
        control_runtime()?.block_on(async { anyhow::Ok(etcd.connect().await?.read().await?) })?;
    let Some(stored) = read.stored else {
        return Err(ReloadError::NoKey {
            key: etcd.config_key.clone(),
            endpoints: etcd.endpoints.join(","),
        }
        .into());
    };
    if toml {
        use std::io::Write;
        eprintln!(
            "etcd key {}: revision {}",
            etcd.config_key, stored.mod_revision
        );
        std::io::stdout()
            .write_all(&stored.value)
            .context("cannot write the config to stdout")?;
        return Ok(());
    }
    println!("key: {}", etcd.config_key);
    println!("revision: {}", stored.mod_revision);
    println!("version: {}", stored.version);
    println!("created_revision: {}", stored.create_revision);
    println!("bytes: {}", stored.value.len());
    Ok(())
}

/// The control runtime: admin API, health checks, discovery, reloads, the etcd watch.
/// Requests are served on the public listener's own worker threads
/// (`gatehouse::listener::workers`).
fn control_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

fn run(
    path: Option<PathBuf>,
    etcd: EtcdArgs,
    config_dir: Option<PathBuf>,
    overrides: ListenOverrides,
) -> anyhow::Result<()> {
    let embedded = path.is_none() && etcd.endpoints.is_empty();
    let runtime = control_runtime()?;
    runtime.block_on(async move {
        // The origin, and for etcd the key and the store revision the config was read at.
        let (origin, key) = match path {
            Some(path) => (Origin::File(path), None),
            None if embedded => (Origin::Embedded, None),
            None => {
                let base = match config_dir {
                    Some(dir) => std::path::absolute(&dir)
                        .with_context(|| format!("--config-dir {}", dir.display()))?,
                    None => std::env::current_dir().context("cannot read the working directory")?,
                };
                let key = etcd.connect().await?;
                (
                    Origin::Etcd {
                        key: Box::new(key.clone()),
                        base,
                    },
                    Some(key),
                )
            }
        };
        let source = ConfigSource::new(origin).with_overrides(overrides);
        let (fetched, after) = match &key {
            Some(key) => {
                let read = key.read().await?;
                let stored = read.stored.ok_or_else(|| ReloadError::NoKey {
                    key: key.key().to_owned(),
                    endpoints: key.endpoints().to_owned(),
                })?;
                (source.fetched(stored)?, read.store_revision)
            }
            None => (source.fetch().await?, 0),
        };
        let config: Config = source.load(&fetched)?;
        gatehouse::telemetry::init(&config.log);
        let (stop_demo, demo_stopped) = tokio::sync::watch::channel(false);
        if embedded {
            let addr = "127.0.0.1:9902";
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot start the bundled echo origin on {addr}"))?;
            tokio::spawn(gatehouse::demo::serve_echo(listener, demo_stopped));
            tracing::info!(
                "bundled echo origin on {addr}; try: curl -i http://127.0.0.1:8080/echo/hello"
            );
        }
        let start_reloads = reload_on_sighup()?;
        let gateway = gatehouse::gateway::start_from(config, source, fetched.revision).await?;
        let reloads = start_reloads(gateway.reloader.clone());
        let watch = key.map(|key| {
            tracing::info!(key = %key.key(), endpoints = %key.endpoints(),
                revision = fetched.revision, "config from etcd; watching the key for new revisions");
            gatehouse::reload::etcd::spawn(gateway.reloader.clone(), key, after)
        });
        shutdown_signal().await;
        reloads.abort();
        if let Some(watch) = watch {
            watch.abort();
        }
        tracing::info!("shutdown signal received; draining in-flight requests");
        let report = gateway.shutdown().await;
        let _ = stop_demo.send(true); // the echo task may already be gone; nothing to do then
        if report.cut_connections > 0 {
            tracing::warn!(
                cut = report.cut_connections,
                "drain timeout cut connections"
            );
        }
        Ok(())
    })
}

/// SIGHUP re-reads the config (the file, or the etcd key) and applies it (or logs why not,
/// keeping the running one).
/// The handler is installed before the gateway starts, so an early SIGHUP never hits the
/// default action (terminate); one that arrives before the gateway is up is applied after.
#[cfg(unix)]
fn reload_on_sighup() -> anyhow::Result<impl FnOnce(Arc<Reloader>) -> tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    Ok(move |reloader: Arc<Reloader>| {
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the config");
                if let Err(error) = reloader.reload().await {
                    tracing::error!(%error, "config reload refused; the running config stays");
                }
            }
        })
    })
}

#[cfg(not(unix))]
fn reload_on_sighup() -> anyhow::Result<impl FnOnce(Arc<Reloader>) -> tokio::task::JoinHandle<()>> {
    Ok(|_reloader: Arc<Reloader>| tokio::spawn(async {}))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
