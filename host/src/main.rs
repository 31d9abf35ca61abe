//! The `gatehouse` binary: parse the CLI, load config, run the gateway until a signal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gatehouse::config::{self, Config};
use gatehouse::reload::Reloader;

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
    Run {
        /// Path to a TOML configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and exit: 0 if valid, 1 with every problem listed if not.
    Check {
        /// Path to a TOML configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Write and test plugins: `plugin new`, `plugin test`.
    #[command(subcommand)]
    Plugin(PluginCommand),
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
        Command::Run { config } => run(config),
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

fn run(path: Option<PathBuf>) -> anyhow::Result<()> {
    let embedded = path.is_none();
    let config: Config = match &path {
        Some(p) => config::load_file(p)?,
        None => config::load_str(config::EMBEDDED_DEFAULT, config::EMBEDDED_SOURCE)?,
    };
    gatehouse::telemetry::init(&config.log);
    // The control runtime: admin API, health checks, discovery, reloads. Requests are served
    // on the public listener's own worker threads (`gatehouse::listener::workers`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
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
        let gateway = gatehouse::gateway::start(config).await?;
        let reloads = start_reloads(gateway.reloader.clone());
        shutdown_signal().await;
        reloads.abort();
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

/// SIGHUP re-reads the config file and applies it (or logs why not, keeping the running one).
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
                if let Err(error) = reloader.reload_file().await {
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
