//! Runs test cases against one plugin on the gateway's own plugin runtime: the same
//! `PluginManager` (engine, pooling allocator, CPU deadline, memory limit, body cap, loader
//! and its checks) and the same `PluginChain` the request path uses, with one plugin in it.
//! Only the outside world is canned: the request, the services and the upstream.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Serialize;
use tracing::instrument::WithSubscriber;

use super::canned::{CallRecord, CannedServices};
use super::case::{Case, CaseFile, CaseLimits, RequestChanges};
use super::logs::{LogCapture, LogLine};
use super::outcome::{Difference, Observed, ObservedResponse};
use super::KitError;
use crate::plugins::runtime::message::full;
use crate::plugins::{
    Body, OnError, PluginFailure, PluginLimits, PluginManager, PluginName, PluginRef,
    PluginSettings, RequestMeta, RequestOutcome, UpstreamFailure,
};

/// How a run is set up.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Where compiled artifacts are cached between runs (keyed by content and engine);
    /// `None` compiles every run.
    pub cache_dir: Option<PathBuf>,
}

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    /// The case's name (its file name without `.toml`).
    pub name: String,
    /// Its file.
    pub file: PathBuf,
    /// Its description, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether the observed outcome matched the expected one.
    pub passed: bool,
    /// Why the case could not run at all (bad request, unreadable granted file), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup_error: Option<String>,
    /// Whether the case has no `[expect]` yet (it fails until recorded).
    pub unrecorded: bool,
    /// What happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
    /// Where it differs from `[expect]`.
    pub differences: Vec<Difference>,
    /// The plugin's log lines.
    pub logs: Vec<LogLine>,
    /// The service calls it made, with their arguments.
    pub calls: Vec<CallRecord>,
    /// Wall time of the plugin's phases (instantiation and hook calls, waiting on canned
    /// services included), in milliseconds.
    pub time_ms: f64,
    /// The most linear memory the plugin's instance held, in bytes.
    pub memory_bytes: usize,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The plugin file.
    pub plugin: PathBuf,
    /// SHA-256 of the plugin file.
    pub hash: String,
    /// Milliseconds the gateway's loader took for it (compile or cache, link, trial
    /// instantiation).
    pub load_ms: f64,
    /// Each case, in order.
    pub cases: Vec<CaseReport>,
    /// How many passed.
    pub passed: usize,
    /// How many failed.
    pub failed: usize,
}

impl Report {
    /// Whether every case passed.
    pub fn ok(&self) -> bool {
        self.failed == 0
    }
}

/// One plugin loaded by the gateway's manager, ready to run cases.
pub struct Harness {
    wasm: PathBuf,
    name: PluginName,
    dir: PluginDir,
    options: RunOptions,
    services: CannedServices,
    logs: LogCapture,
    /// One manager (engine) per distinct case limits; most runs need one.
    managers: HashMap<CaseLimits, Arc<PluginManager>>,
    hash: String,
    load_ms: f64,
}

/// The scratch plugins directory holding the plugin under test; removed on drop.
struct PluginDir(PathBuf);

impl Drop for PluginDir {
    fn drop(&mut self) {
        // Best effort: a leftover scratch directory is harmless.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Instances the test engine's pool holds. A case runs one instance at a time, but the
/// gateway's recycler prepares fresh ones ahead and tears used ones down in the background, and
/// a componentize-py component holds a dozen core instances per instance: room for a few
/// dozen keeps every case clear of the pool's limits, with far less address space reserved
/// than a gateway's 1000. Per-instance limits are the gateway's.
const TEST_INSTANCES: u32 = 64;

impl Harness {
    /// Load `wasm` the way the gateway loads a file dropped in its plugins directory.
    pub async fn load(wasm: &Path, options: RunOptions) -> Result<Self, KitError> {
        let stem = wasm
            .file_stem()
            .map(|s| s.to_string_lossy().replace('.', "_"))
            .unwrap_or_default();
        let name = PluginName::new(&stem).map_err(|reason| KitError::Plugin {
            path: wasm.to_path_buf(),
            message: reason,
        })?;
        if !wasm.is_file() {
            return Err(KitError::Read {
                path: wasm.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-plugin-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| KitError::Read {
            path: dir.clone(),
            source,
        })?;
        let dir = PluginDir(dir);
        std::fs::copy(wasm, dir.0.join(format!("{name}.wasm"))).map_err(|source| {
            KitError::Read {
                path: wasm.to_path_buf(),
                source,
            }
        })?;
        let mut harness = Harness {
            wasm: wasm.to_path_buf(),
            name,
            dir,
            options,
            services: CannedServices::default(),
            logs: LogCapture::default(),
            managers: HashMap::new(),
            hash: String::new(),
            load_ms: 0.0,
        };
        harness.manager(&CaseLimits::default()).await?;
        Ok(harness)
    }

    /// The manager for `limits`, started (and the plugin loaded) on first use.
    async fn manager(&mut self, limits: &CaseLimits) -> Result<Arc<PluginManager>, KitError> {
        if let Some(m) = self.managers.get(limits) {
            return Ok(m.clone());
        }
        let mut plugin_limits = PluginLimits {
            max_instances: TEST_INSTANCES,
            ..PluginLimits::default()
        };
        if let Some(ms) = limits.deadline_ms {
            plugin_limits.deadline = Duration::from_millis(ms);
        }
        if let Some(bytes) = limits.memory_bytes {
            plugin_limits.memory = bytes;
        }
        if let Some(bytes) = limits.body_cap_bytes {
            plugin_limits.body_cap = bytes;
        }
        let settings = PluginSettings {
            dir: self.dir.0.clone(),
            cache_dir: self.options.cache_dir.clone(),
            watch: false,
            limits: plugin_limits,
            ..PluginSettings::default()
        };
        let manager = PluginManager::start(settings, Arc::new(self.services.clone()))
            .await
            .map_err(|e| KitError::Plugin {
                path: self.wasm.clone(),
                message: e.to_string(),
            })?;
        let status = manager
            .status()
            .into_iter()
            .find(|s| s.name == self.name.as_str());
        match status {
            Some(s) if s.status == "loaded" => {
                self.hash = s.hash.unwrap_or_default();
                self.load_ms = s.load_ms.unwrap_or_default();
            }
            other => {
                return Err(KitError::Plugin {
                    path: self.wasm.clone(),
                    message: other
                        .and_then(|s| s.last_error)
                        .unwrap_or_else(|| "the gateway did not load it".into()),
                })
            }
        }
        let manager = Arc::new(manager);
        self.managers.insert(limits.clone(), manager.clone());
        Ok(manager)
    }

    /// Run every case, in order.
    pub async fn run(&mut self, cases: &[CaseFile]) -> Report {
        let mut reports = Vec::with_capacity(cases.len());
        for case in cases {
            reports.push(self.run_case(case).await);
        }
        let passed = reports.iter().filter(|r| r.passed).count();
        Report {
            plugin: self.wasm.clone(),
            hash: self.hash.clone(),
            load_ms: self.load_ms,
            failed: reports.len() - passed,
            passed,
            cases: reports,
        }
    }

    /// Run one case.
    pub async fn run_case(&mut self, file: &CaseFile) -> CaseReport {
        let mut report = CaseReport {
            name: file.name.clone(),
            file: file.path.clone(),
            description: file.case.description.clone(),
            passed: false,
            setup_error: None,
            unrecorded: file.case.expect.is_none(),
            observed: None,
            differences: Vec::new(),
            logs: Vec::new(),
            calls: Vec::new(),
            time_ms: 0.0,
            memory_bytes: 0,
        };
        let manager = match self.manager(&file.case.limits).await {
            Ok(m) => m,
            Err(e) => {
                report.setup_error = Some(e.to_string());
                return report;
            }
        };
        let setup = match Setup::new(&self.name, file) {
            Ok(s) => s,
            Err(e) => {
                report.setup_error = Some(e);
                return report;
            }
        };
        self.services.start_case(file.case.services.clone());
        self.logs.take();
        let dispatch = self.logs.dispatch();
        let started = Instant::now();
        let (observed, memory) = execute(&manager, &file.case, setup)
            .with_subscriber(dispatch)
            .await;
        report.time_ms = started.elapsed().as_secs_f64() * 1000.0;
        report.memory_bytes = memory;
        report.calls = self.services.take_calls();
        report.logs = self.logs.take();
        if let Some(expect) = &file.case.expect {
            report.differences = observed.compare(expect);
            report.passed = report.differences.is_empty();
        }
        report.observed = Some(observed);
        report
    }
}

/// A case turned into what the gateway hands a chain.
struct Setup {
    entry: PluginRef,
    route: String,
    request: http::Request<Body>,
    meta: RequestMeta,
}

impl Setup {
    fn new(name: &PluginName, file: &CaseFile) -> Result<Self, String> {
        let case = &file.case;
        let base = file.path.parent().unwrap_or(Path::new("."));
        let mut files = HashMap::new();
        for (grant, path) in &case.plugin.files {
            let path = base.join(path);
            let bytes = std::fs::read(&path).map_err(|e| {
                format!("plugin.files.{grant}: cannot read {}: {e}", path.display())
            })?;
            files.insert(grant.clone(), Bytes::from(bytes));
        }
        let config = match &case.plugin.config {
            Some(table) => serde_json::to_string(table)
                .map_err(|e| format!("plugin.config: not representable as JSON: {e}"))?,
            None => "{}".into(),
        };
        // Each case gets an empty cache: its namespace is unique to the run (the plugin
        // never sees the namespace's name).
        static CASE: AtomicU64 = AtomicU64::new(0);
        let run = CASE.fetch_add(1, Ordering::Relaxed);
        let entry = PluginRef {
            name: name.clone(),
            config_json: config,
            calls: case.plugin.calls.clone(),
            cache: case
                .plugin
                .cache
                .as_ref()
                .map(|ns| format!("case-{run}/{ns}")),
            reuse_instances: false,
            files: Arc::new(files),
            limits: Arc::new(HashMap::new()),
            // The case's own limits are the run's `[plugins]` defaults (see `CaseLimits`).
            deadline: None,
            memory: None,
            body_cap: None,
        };
        let mut request = http::Request::builder()
            .method(case.request.method.as_str())
            .uri(case.request.path.as_str());
        for (n, v) in &case.request.headers {
            request = request.header(n.as_str(), v.as_str());
        }
        let request = request
            .body(full(Bytes::from(case.request.body.clone())))
            .map_err(|e| format!("request: {e}"))?;
        let client_addr = case
            .request
            .client_addr
            .as_deref()
            .unwrap_or("127.0.0.1:40000")
            .parse()
            .map_err(|e| format!("request.client_addr: {e}"))?;
        let meta = RequestMeta {
            client_addr: Some(client_addr),
            request_id: case
                .request
                .request_id
                .clone()
                .unwrap_or_else(|| "plugin-test".into()),
            client_certificate: None,
        };
        Ok(Setup {
            entry,
            route: case
                .plugin
                .route
                .clone()
                .unwrap_or_else(|| "test-route".into()),
            request,
            meta,
        })
    }
}

/// Run the phases the gateway would run for this request, with the case's upstream.
async fn execute(manager: &PluginManager, case: &Case, setup: Setup) -> (Observed, usize) {
    let chain = manager.chain(&setup.route, &[setup.entry], OnError::FailClosed);
    let before = Snapshot::of(&setup.request, case.request.body.as_bytes());
    let mut run = chain.start(setup.meta);
    let failed = |failure: PluginFailure, request: Option<RequestChanges>| Observed {
        outcome: match failure.error.kind() {
            "out_of_memory" => "out-of-memory".into(),
            "trap" | "deadline" => failure.error.kind().into(),
            _ => "error".into(),
        },
        phase: Some(failure.phase.as_str().into()),
        error: Some(failure.error.to_string()),
        request,
        response: None,
    };
    let observed = match run.on_request(setup.request).await {
        Err(failure) => failed(failure, None),
        Ok(RequestOutcome::Respond(resp)) => Observed {
            outcome: "respond".into(),
            phase: None,
            error: None,
            request: None,
            response: Some(observe_response(resp).await),
        },
        Ok(RequestOutcome::Continue(req)) => {
            let changes = before.changes(req).await;
            match &case.upstream.failure {
                Some(spec) => {
                    let failure = UpstreamFailure {
                        kind: spec.kind.clone(),
                        message: spec.message.clone().unwrap_or_else(|| spec.kind.clone()),
                    };
                    match run.on_failure(failure).await {
                        Err(f) => failed(f, Some(changes)),
                        Ok(None) => Observed {
                            outcome: "pass-on".into(),
                            phase: None,
                            error: None,
                            request: Some(changes),
                            response: None,
                        },
                        Ok(Some(resp)) => Observed {
                            outcome: "fallback".into(),
                            phase: None,
                            error: None,
                            request: Some(changes),
                            response: Some(observe_response(resp).await),
                        },
                    }
                }
                None => match upstream_response(case) {
                    Err(e) => Observed {
                        outcome: "error".into(),
                        phase: None,
                        error: Some(format!("the case's [upstream] is invalid: {e}")),
                        request: Some(changes),
                        response: None,
                    },
                    Ok(resp) => match run.on_response(resp).await {
                        Err(f) => failed(f, Some(changes)),
                        Ok(resp) => Observed {
                            outcome: "continue".into(),
                            phase: None,
                            error: None,
                            request: Some(changes),
                            response: Some(observe_response(resp).await),
                        },
                    },
                },
            }
        }
    };
    let memory = run.memory_peak();
    (observed, memory)
}

fn upstream_response(case: &Case) -> Result<http::Response<Body>, String> {
    let mut resp = http::Response::builder().status(case.upstream.status);
    for (n, v) in &case.upstream.headers {
        resp = resp.header(n.as_str(), v.as_str());
    }
    resp.body(full(Bytes::from(case.upstream.body.clone())))
        .map_err(|e| e.to_string())
}

/// Every header's values joined by `, `, by lower-case name.
fn header_texts(headers: &http::HeaderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        out.insert(name.as_str().to_string(), joined);
    }
    out
}

async fn read_body(body: Body) -> String {
    match body.collect().await {
        Ok(c) => String::from_utf8_lossy(&c.to_bytes()).into_owned(),
        Err(e) => format!("(body unreadable: {e})"),
    }
}

async fn observe_response(resp: http::Response<Body>) -> ObservedResponse {
    let (parts, body) = resp.into_parts();
    ObservedResponse {
        status: parts.status.as_u16(),
        headers: header_texts(&parts.headers),
        body: read_body(body).await,
    }
}

/// The request as the client sent it, to tell what the plugin changed.
struct Snapshot {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Snapshot {
    fn of(req: &http::Request<Body>, body: &[u8]) -> Self {
        Snapshot {
            method: req.method().to_string(),
            path: path_of(req.uri()),
            headers: header_texts(req.headers()),
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }

    async fn changes(&self, req: http::Request<Body>) -> RequestChanges {
        let (parts, body) = req.into_parts();
        let after = header_texts(&parts.headers);
        // The host fixes content-length after a body change; the body shows that change.
        let host_managed = |name: &str| name == "content-length";
        let set_headers = after
            .iter()
            .filter(|(n, v)| !host_managed(n) && self.headers.get(*n) != Some(*v))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let removed_headers = self
            .headers
            .keys()
            .filter(|n| !host_managed(n) && !after.contains_key(*n))
            .cloned()
            .collect();
        let body = read_body(body).await;
        let path = path_of(&parts.uri);
        RequestChanges {
            method: (parts.method.as_str() != self.method).then(|| parts.method.to_string()),
            path: (path != self.path).then_some(path),
            set_headers,
            removed_headers,
            body: (body != self.body).then_some(body),
        }
    }
}

fn path_of(uri: &http::Uri) -> String {
    uri.path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string())
}
