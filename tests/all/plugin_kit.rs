//! The plugin author's kit: `gatehouse plugin test` on every shipped plugin's cases (the
//! gateway's own runtime, canned services and upstream), its diff, `--record` and `--json`,
//! and scaffold → build → test → drop → live for each language (`gatehouse plugin new`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use gatehouse::plugin_kit::{self, render, RunOptions};

use crate::plugins::guests::{self, TempDir};
use crate::shipped_plugins::kit::{counting_echo, header, toml_inline};
use crate::support;

/// Every shipped plugin and the runtime's test guests with cases: `plugins/<name>/cases/`.
const WITH_CASES: [&str; 8] = [
    "jwt-auth",
    "api-key",
    "aggregate",
    "fallback",
    "grpc-transcode",
    "header-rewrite",
    "noop",
    "test-kit",
];

fn options() -> RunOptions {
    RunOptions {
        cache_dir: Some(guests::workspace().join("target/guests/artifact-cache")),
    }
}

fn cases_of(name: &str) -> PathBuf {
    guests::workspace().join("plugins").join(name).join("cases")
}

/// `gatehouse plugin ...` with `args`, in `dir`.
fn gatehouse(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("gatehouse runs")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn every_plugin_passes_its_shipped_cases() {
    let mut failures = Vec::new();
    for name in WITH_CASES {
        let report = plugin_kit::run_cases(&guests::path(name), &[cases_of(name)], options())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!report.cases.is_empty(), "{name} has cases");
        if !report.ok() {
            failures.push(render::text(&report));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn deadline_and_memory_outcomes_are_the_real_limits() {
    let report = plugin_kit::run_cases(
        &guests::path("test-kit"),
        &[
            cases_of("test-kit").join("loops-forever.toml"),
            cases_of("test-kit").join("oom.toml"),
        ],
        options(),
    )
    .expect("runs");
    assert!(report.ok(), "{}", render::text(&report));
    let looped = &report.cases[0];
    assert_eq!(
        looped.observed.as_ref().expect("observed").outcome,
        "deadline"
    );
    // The case's own 50 ms deadline, measured as the plugin's CPU time.
    assert!(looped.time_ms >= 50.0, "{}", looped.time_ms);
    let oom = &report.cases[1];
    assert_eq!(
        oom.observed.as_ref().expect("observed").outcome,
        "out-of-memory"
    );
    assert!(oom.memory_bytes > 8 << 20, "{}", oom.memory_bytes);
    assert!(oom.memory_bytes <= 16 << 20, "{}", oom.memory_bytes);
}

#[test]
fn a_wrong_expectation_fails_with_a_readable_diff() {
    let dir = TempDir::new("kit-diff");
    let original =
        std::fs::read_to_string(cases_of("api-key").join("missing-key.toml")).expect("case");
    let wrong = original.replace("status = 401", "status = 418");
    assert_ne!(wrong, original, "the case expects a 401");
    std::fs::write(dir.join("missing-key.toml"), wrong).expect("write");
    let wasm = guests::path("api-key");
    let out = gatehouse(
        &dir.0,
        &[
            "plugin",
            "test",
            wasm.to_str().expect("utf-8"),
            "missing-key.toml",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL missing-key"), "{stdout}");
    assert!(
        stdout.contains("response.status\n       - 418\n       + 401"),
        "{stdout}"
    );
    assert!(stdout.contains("0 passed, 1 failed"), "{stdout}");
}

#[test]
fn record_writes_the_outcome_and_keeps_the_rest_of_the_file() {
    let dir = TempDir::new("kit-record");
    let case = dir.join("tags.toml");
    std::fs::write(
        &case,
        "# why this case exists\n[plugin]\nconfig = { mode = \"tag\" } # tag mode\n\n\
         [expect]\n# a stale comment\noutcome = \"respond\"\n",
    )
    .expect("write");
    let wasm = guests::path("test-kit");
    let wasm = wasm.to_str().expect("utf-8");
    let failed = gatehouse(&dir.0, &["plugin", "test", wasm, "tags.toml"]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    let recorded = gatehouse(&dir.0, &["plugin", "test", wasm, "tags.toml", "--record"]);
    assert_eq!(recorded.status.code(), Some(0), "{}", text(&recorded));
    let written = std::fs::read_to_string(&case).expect("read");
    assert!(
        written.starts_with(
            "# why this case exists\n[plugin]\nconfig = { mode = \"tag\" } # tag mode\n"
        ),
        "{written}"
    );
    assert!(!written.contains("stale comment"), "{written}");
    assert!(written.contains("outcome = \"continue\""), "{written}");
    assert!(written.contains("x-version = \"kit\""), "{written}");
    let passes = gatehouse(&dir.0, &["plugin", "test", wasm, "tags.toml"]);
    assert_eq!(passes.status.code(), Some(0), "{}", text(&passes));
}

#[test]
fn json_reports_calls_logs_time_and_memory_per_case() {
    let wasm = guests::path("test-kit");
    let out = gatehouse(
        &guests::workspace(),
        &[
            "plugin",
            "test",
            wasm.to_str().expect("utf-8"),
            "plugins/test-kit/cases",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let case = |name: &str| {
        report["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("case {name} in {report}"))
            .clone()
    };
    let calls = case("calls");
    let made = calls["calls"].as_array().expect("calls");
    assert_eq!(made.len(), 3, "{calls}");
    let stock = made
        .iter()
        .find(|c| c["service"] == "stock")
        .expect("stock call");
    assert_eq!(stock["method"], "GET");
    assert_eq!(stock["path"], "/part/stock");
    assert!(stock["answer"]
        .as_str()
        .expect("answer")
        .contains("timed out"));
    let logs = case("logs");
    assert_eq!(logs["logs"][0]["level"], "INFO", "{logs}");
    assert_eq!(logs["logs"][0]["message"], "hello from test-kit", "{logs}");
    for c in report["cases"].as_array().expect("cases") {
        assert!(c["memory_bytes"].as_u64().expect("memory") > 0, "{c}");
        assert!(c["time_ms"].as_f64().expect("time") > 0.0, "{c}");
    }
    assert_eq!(report["failed"], 0);
}

#[test]
fn a_missing_plugin_or_a_bad_case_is_a_clear_error() {
    let dir = TempDir::new("kit-errors");
    let out = gatehouse(&dir.0, &["plugin", "test", "nope.wasm", "cases"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    std::fs::write(dir.join("bad.toml"), "[request]\nmethd = \"GET\"\n").expect("write");
    let wasm = guests::path("noop");
    let out = gatehouse(
        &dir.0,
        &["plugin", "test", wasm.to_str().expect("utf-8"), "bad.toml"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("methd"),
        "{stderr}"
    );
    let not_a_plugin = dir.join("garbage.wasm");
    std::fs::write(&not_a_plugin, b"hello").expect("write");
    std::fs::write(dir.join("ok.toml"), "").expect("write");
    let out = gatehouse(&dir.0, &["plugin", "test", "garbage.wasm", "ok.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot load this plugin"),
        "{}",
        text(&out)
    );
}

// --- scaffold → build → test → drop → live ---

/// Write a project with every hook, build it with `build`, run its sample cases, then drop the
/// component into a running gateway's plugins directory and see it serve.
async fn scaffold_to_live(lang: &str, build: impl FnOnce(&Path) -> Output) {
    let work = TempDir::new(&format!("kit-{lang}"));
    let project = work.join("hello-kit");
    let out = gatehouse(
        &work.0,
        &[
            "plugin",
            "new",
            "hello-kit",
            "--lang",
            lang,
            "--hooks",
            "request,response,failure",
            "--dir",
            project.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let built = build(&project);
    assert!(
        built.status.success(),
        "building the {lang} template: {}",
        text(&built)
    );
    let wasm = project.join("hello-kit.wasm");
    assert!(wasm.is_file(), "the build wrote {}", wasm.display());

    let cache = guests::workspace().join("target/guests/artifact-cache");
    let tested = gatehouse(
        &project,
        &[
            "plugin",
            "test",
            "hello-kit.wasm",
            "--cache-dir",
            cache.to_str().expect("utf-8"),
        ],
    );
    assert!(tested.status.success(), "sample cases: {}", text(&tested));
    let stdout = String::from_utf8_lossy(&tested.stdout);
    assert!(stdout.contains("3 passed, 0 failed"), "{stdout}");

    // A gateway whose route names the plugin before its file exists; then the drop.
    let (origin, hits) = counting_echo().await;
    let plugins = work.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    let toml = format!(
        "[plugins]\ndir = {}\ncache_dir = {}\n\n[[services]]\nname = \"api\"\nendpoints = [\"{}\"]\n\n\
         [[routes]]\nname = \"api\"\nservice = \"api\"\nmatch = {{ prefix = \"/\" }}\n\
         plugins = [{{ name = \"hello-kit\", config = {{ greeting = \"hi\" }} }}]\n",
        toml_inline(&serde_json::json!(plugins.display().to_string())),
        toml_inline(&serde_json::json!(guests::workspace()
            .join("target/guests/artifact-cache")
            .display()
            .to_string())),
        origin.addr
    );
    let gw = support::gateway(&toml).await;
    let url = format!("http://{}/hello", gw.public_addr);
    std::fs::copy(&wasm, plugins.join("hello-kit.wasm.tmp")).expect("copy");
    std::fs::rename(
        plugins.join("hello-kit.wasm.tmp"),
        plugins.join("hello-kit.wasm"),
    )
    .expect("drop");
    // A fresh Python component compiles for a while; the others load in about a second.
    support::eventually(
        "the dropped plugin serves",
        Duration::from_secs(240),
        async || support::get(&url, &[]).await.status == 200,
    )
    .await;
    let got = support::get(&url, &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["headers"]["x-greeting"], "hi", "{}", got.text());
    assert_eq!(header(&got, "x-plugin").as_deref(), Some("hello-kit"));
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    let denied = support::get(&url, &[("x-deny", "1")]).await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before);
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("build command runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_template_scaffold_build_test_drop_live() {
    scaffold_to_live("rust", |project| {
        // A target dir shared by every run, so wit-bindgen compiles once.
        let target = guests::workspace().join("target/guests/scaffold");
        run(Command::new("bash")
            .arg(project.join("build.sh"))
            .env("CARGO_TARGET_DIR", &target))
    })
    .await;
}

/// The jco that `examples/js-plugin/build.sh` installed (README's test command runs it first).
fn jco() -> PathBuf {
    let jco = guests::workspace().join("examples/js-plugin/node_modules/.bin/jco");
    assert!(
        jco.exists(),
        "{} is missing: run examples/js-plugin/build.sh (needs node + npm), as README's test \
         command does",
        jco.display()
    );
    jco
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_template_scaffold_build_test_drop_live() {
    let jco = jco();
    scaffold_to_live("js", |project| {
        run(Command::new("bash")
            .arg(project.join("build.sh"))
            .env("JCO", &jco))
    })
    .await;
}

/// componentize-py from the venv `.ci/run` makes (target/py).
pub fn componentize_py() -> PathBuf {
    let tool = guests::workspace().join("target/py/bin/componentize-py");
    assert!(
        tool.exists(),
        "{} is missing: python3 -m venv target/py && target/py/bin/pip install \
         componentize-py==0.25.1 (as .ci/run does)",
        tool.display()
    );
    tool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_template_scaffold_build_test_drop_live() {
    let tool = componentize_py();
    scaffold_to_live("python", |project| {
        run(Command::new("bash")
            .arg(project.join("build.sh"))
            .env("COMPONENTIZE_PY", &tool))
    })
    .await;
}

#[test]
fn scaffold_refuses_a_bad_name_a_bad_hook_and_a_used_directory() {
    let work = TempDir::new("kit-new-errors");
    let out = gatehouse(&work.0, &["plugin", "new", "Bad Name"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid plugin name"),
        "{}",
        text(&out)
    );
    let out = gatehouse(
        &work.0,
        &["plugin", "new", "ok", "--hooks", "request,teleport"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("teleport"),
        "{}",
        text(&out)
    );
    std::fs::create_dir_all(work.join("used")).expect("dir");
    std::fs::write(work.join("used/file"), "x").expect("file");
    let out = gatehouse(&work.0, &["plugin", "new", "ok", "--dir", "used"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        text(&out)
    );
}

// --- the Python example through the gateway ---

/// The built Python example. A missing one fails the test with the command that builds it.
fn python_example() -> PathBuf {
    let path = guests::workspace().join("examples/python-plugin/py-auth.wasm");
    assert!(
        path.is_file(),
        "the Python plugin {} is missing: build it with examples/python-plugin/build.sh \
         (needs componentize-py: python3 -m venv target/py && target/py/bin/pip install \
         componentize-py==0.25.1), as .ci/run does",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_authenticates_through_the_gateway() {
    let wasm = python_example();
    let (origin, hits) = counting_echo().await;
    let work = TempDir::new("kit-python-example");
    let plugins = work.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    std::fs::copy(&wasm, plugins.join("py-auth.wasm")).expect("copy");
    let toml = format!(
        "[plugins]\ndir = {}\ncache_dir = {}\nwatch = false\n\n[[services]]\nname = \"api\"\nendpoints = [\"{}\"]\n\n\
         [[routes]]\nname = \"api\"\nservice = \"api\"\nmatch = {{ prefix = \"/\" }}\n\
         plugins = [{{ name = \"py-auth\", config = {{ keys = [\"alpha\", \"beta\"] }} }}]\n",
        toml_inline(&serde_json::json!(plugins.display().to_string())),
        toml_inline(&serde_json::json!(guests::workspace()
            .join("target/guests/artifact-cache")
            .display()
            .to_string())),
        origin.addr
    );
    // The gateway loads the plugins directory before it starts serving.
    let gw = support::gateway(&toml).await;
    let url = format!("http://{}/items", gw.public_addr);
    let refused = support::get(&url, &[]).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(refused.json()["error"], "invalid API key");
    assert_eq!(refused.json()["plugin"], "py-auth");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    let wrong = support::get(&url, &[("x-api-key", "gamma")]).await;
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    let passed = support::get(&url, &[("x-api-key", "beta")]).await;
    assert_eq!(passed.status, 200, "{}", passed.text());
    assert_eq!(
        passed.json()["headers"]["x-py-auth"],
        "1",
        "{}",
        passed.text()
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// The figures in docs/plugins.md ("Python"): per-request cost of the Python example through
/// the chain, with a fresh instance per request and with `reuse_instances`, and its size.
/// A measurement, not a check: `cargo test -p gatehouse --test all plugin_kit::measure --
/// --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn measure_python_plugin_cost() {
    use gatehouse::plugins::{
        NoServices, OnError, PluginManager, PluginName, PluginRef, PluginSettings, RequestMeta,
        RequestOutcome,
    };
    use std::sync::Arc;
    let wasm = python_example();
    let work = TempDir::new("kit-measure");
    std::fs::copy(&wasm, work.join("py-auth.wasm")).expect("copy");
    let settings = PluginSettings {
        dir: work.0.clone(),
        cache_dir: Some(guests::workspace().join("target/guests/artifact-cache")),
        watch: false,
        ..PluginSettings::default()
    };
    let manager = PluginManager::start(settings, Arc::new(NoServices))
        .await
        .expect("manager");
    for reuse in [false, true] {
        let entry = PluginRef {
            name: PluginName::new("py-auth").expect("name"),
            config_json: r#"{"keys":["alpha"]}"#.into(),
            calls: Vec::new(),
            cache: None,
            reuse_instances: reuse,
            files: Default::default(),
            limits: Default::default(),
            deadline: None,
            memory: None,
            body_cap: None,
        };
        let chain = manager.chain("measure", &[entry], OnError::FailClosed);
        let request = || {
            http::Request::builder()
                .uri("/x")
                .header("x-api-key", "alpha")
                .body(gatehouse::body::full(""))
                .expect("request")
        };
        for _ in 0..20 {
            let mut run = chain.start(RequestMeta::default());
            assert!(matches!(
                run.on_request(request()).await,
                Ok(RequestOutcome::Continue(_))
            ));
        }
        let n = 200;
        let started = std::time::Instant::now();
        for _ in 0..n {
            let mut run = chain.start(RequestMeta::default());
            assert!(matches!(
                run.on_request(request()).await,
                Ok(RequestOutcome::Continue(_))
            ));
        }
        let per = started.elapsed() / n;
        println!(
            "py-auth ({} bytes), {}: {per:?} per request",
            std::fs::metadata(&wasm).expect("size").len(),
            if reuse {
                "reused instance"
            } else {
                "fresh instance"
            }
        );
    }
}
