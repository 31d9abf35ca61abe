//! The per-request store state (`PluginCtx`) and the host functions plugins import.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::p2::OutputStream;
use wasmtime_wasi::random::WasiRandomCtx;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{cache, context, limits, services, types};
use super::capabilities::{PluginEnv, RequestMeta, ServiceCallError};
use super::clock::CpuClock;
use super::instance::HookSet;
use super::message::{collect_capped, full, headers, PluginRequest, PluginResponse};
use super::ticker::TickerHandle;
use crate::telemetry::trace::TraceScope;

type Result<T> = wasmtime::Result<T>;

/// How much of a plugin's stderr is kept for the log when it fails.
const STDERR_CAPTURE: usize = 4096;

/// Memory accounting for one instance; remembers whether the limit was hit so an
/// out-of-memory trap can be told apart from any other trap.
pub struct MemoryLimiter {
    limit: usize,
    pub(crate) hit: bool,
    /// Bytes of linear memory the instance holds now (all its memories), and the most it
    /// ever held: `gatehouse plugin test` reports the peak per case.
    held: usize,
    peak: usize,
}

impl MemoryLimiter {
    /// The most linear memory (bytes, all memories together) the instance held so far.
    pub fn peak(&self) -> usize {
        self.peak
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
        self.held = self.held.saturating_add(desired.saturating_sub(current));
        self.peak = self.peak.max(self.held);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The plugin's stderr as its WASI context sees it: whatever buffer is behind the handle now.
/// A context serves one instance after another (`PluginCtx::renew`); each instance gets an
/// empty buffer of its own, so what one wrote is never reported for another.
#[derive(Clone)]
pub(crate) struct StderrCapture(Arc<Mutex<MemoryOutputPipe>>);

impl StderrCapture {
    fn new() -> Self {
        StderrCapture(Arc::new(Mutex::new(MemoryOutputPipe::new(STDERR_CAPTURE))))
    }

    fn pipe(&self) -> MemoryOutputPipe {
        // The pipe is only ever replaced whole: a poisoned lock still holds a usable one.
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// An empty buffer from now on.
    fn clear(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = MemoryOutputPipe::new(STDERR_CAPTURE);
    }

    pub(crate) fn contents(&self) -> Bytes {
        self.pipe().contents()
    }
}

impl IsTerminal for StderrCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrCapture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.pipe())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.pipe())
    }
}

/// The state of one plugin instance for one request: its resources, limits and grants.
pub struct PluginCtx {
    pub(crate) table: ResourceTable,
    wasi: WasiCtx,
    pub(crate) stderr: StderrCapture,
    pub(crate) memory: MemoryLimiter,
    pub(crate) clock: CpuClock,
    pub(crate) env: Arc<PluginEnv>,
    meta: Arc<RequestMeta>,
    /// The plugin version's short content hash, for log lines.
    version: Arc<str>,
    body_cap: usize,
    /// Hooks the plugin declared to do nothing (`context.default-hook`).
    pub(crate) default_hooks: HookSet,
}

impl PluginCtx {
    /// Fresh state for one instance.
    pub fn new(
        env: Arc<PluginEnv>,
        meta: Arc<RequestMeta>,
        version: Arc<str>,
        memory_limit: usize,
        cpu_budget: Duration,
        ticker: TickerHandle,
        body_cap: usize,
    ) -> Self {
        let stderr = StderrCapture::new();
        // No environment, arguments, preopened directories or network: a plugin reaches
        // the outside only through the gatehouse imports.
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .build();
        PluginCtx {
            table: ResourceTable::new(),
            wasi,
            stderr,
            memory: MemoryLimiter {
                limit: memory_limit,
                hit: false,
                held: 0,
                peak: 0,
            },
            clock: CpuClock::new(cpu_budget, ticker),
            env,
            meta,
            version,
            body_cap,
            default_hooks: HookSet::default(),
        }
    }

    /// This state, left by an instance that was torn down, for a fresh instance of the same
    /// route entry: everything the old instance could have touched is new (resource table,
    /// random generators, stderr buffer, limits, clock, hook flags); only the WASI context's
    /// stateless parts (no environment, arguments, files or sockets; closed stdin, discarded
    /// stdout) are kept. Building those for each instance was most of the context's cost.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn renew(
        &mut self,
        env: Arc<PluginEnv>,
        meta: Arc<RequestMeta>,
        version: Arc<str>,
        memory_limit: usize,
        cpu_budget: Duration,
        body_cap: usize,
    ) {
        self.table = ResourceTable::new();
        *self.wasi.random() = WasiRandomCtx::default();
        self.stderr.clear();
        self.memory = MemoryLimiter {
            limit: memory_limit,
            hit: false,
            held: 0,
            peak: 0,
        };
        self.clock.renew(cpu_budget);
        self.env = env;
        self.meta = meta;
        self.version = version;
        self.body_cap = body_cap;
        self.default_hooks = HookSet::default();
    }

    /// Serve another request with this state (a reused instance): its metadata changes; the
    /// limit flags are clear, since an instance that hit a limit is never reused.
    pub(crate) fn recycle(&mut self, meta: Arc<RequestMeta>) {
        self.meta = meta;
        self.clock.hit = false;
        self.memory.hit = false;
    }

    /// The memory limit of this instance, in bytes.
    pub fn memory_limit(&self) -> usize {
        self.memory.limit
    }

    /// What the plugin wrote to stderr (e.g. a panic message), lossily decoded.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_string()
    }

    fn request(&mut self, r: &Resource<PluginRequest>) -> Result<&mut PluginRequest> {
        Ok(self.table.get_mut(r)?)
    }

    fn response(&mut self, r: &Resource<PluginResponse>) -> Result<&mut PluginResponse> {
        Ok(self.table.get_mut(r)?)
    }

    /// Time spent awaiting the host is not the plugin's CPU time.
    async fn waiting<F: std::future::Future>(&mut self, fut: F) -> F::Output {
        self.clock.host_call_starts();
        let out = fut.await;
        self.clock.host_call_returned();
        out
    }
}

impl WasiView for PluginCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

// --- impl types ---

impl types::Host for PluginCtx {}

impl types::HostRequest for PluginCtx {
    async fn method(&mut self, r: Resource<PluginRequest>) -> Result<String> {
        Ok(self.request(&r)?.parts.method.as_str().to_string())
    }
    async fn set_method(
        &mut self,
        r: Resource<PluginRequest>,
        method: String,
    ) -> Result<std::result::Result<(), String>> {
        match http::Method::from_bytes(method.as_bytes()) {
            Ok(m) => {
                self.request(&r)?.parts.method = m;
                Ok(Ok(()))
            }
            Err(_) => Ok(Err(format!("invalid method `{}`", method.escape_debug()))),
        }
    }
    async fn path(&mut self, r: Resource<PluginRequest>) -> Result<String> {
        Ok(self.request(&r)?.parts.uri.path().to_string())
    }
    async fn query(&mut self, r: Resource<PluginRequest>) -> Result<Option<String>> {
        Ok(self.request(&r)?.parts.uri.query().map(str::to_string))
    }
    async fn set_path_with_query(
        &mut self,
        r: Resource<PluginRequest>,
        pq: String,
    ) -> Result<std::result::Result<(), String>> {
        Ok(self.request(&r)?.set_path_with_query(&pq))
    }
    async fn header(
        &mut self,
        r: Resource<PluginRequest>,
        name: String,
    ) -> Result<Option<Vec<u8>>> {
        Ok(headers::get(&self.request(&r)?.parts.headers, &name))
    }
    async fn header_all(
        &mut self,
        r: Resource<PluginRequest>,
        name: String,
    ) -> Result<Vec<Vec<u8>>> {
        Ok(headers::get_all(&self.request(&r)?.parts.headers, &name))
    }
    async fn header_names(&mut self, r: Resource<PluginRequest>) -> Result<Vec<String>> {
        Ok(headers::names(&self.request(&r)?.parts.headers))
    }
    async fn set_header(
        &mut self,
        r: Resource<PluginRequest>,
        name: String,
        value: Vec<u8>,
    ) -> Result<std::result::Result<(), types::HeaderError>> {
        Ok(headers::set(
            &mut self.request(&r)?.parts.headers,
            &name,
            &value,
        ))
    }
    async fn append_header(
        &mut self,
        r: Resource<PluginRequest>,
        name: String,
        value: Vec<u8>,
    ) -> Result<std::result::Result<(), types::HeaderError>> {
        Ok(headers::append(
            &mut self.request(&r)?.parts.headers,
            &name,
            &value,
        ))
    }
    async fn remove_header(&mut self, r: Resource<PluginRequest>, name: String) -> Result<()> {
        headers::remove(&mut self.request(&r)?.parts.headers, &name);
        Ok(())
    }
    async fn body(
        &mut self,
        r: Resource<PluginRequest>,
    ) -> Result<std::result::Result<Vec<u8>, types::BodyError>> {
        self.clock.host_call_starts();
        let out = self.request(&r)?.body().await.map(|b| b.to_vec());
        self.clock.host_call_returned();
        Ok(out)
    }
    async fn set_body(&mut self, r: Resource<PluginRequest>, body: Vec<u8>) -> Result<()> {
        self.request(&r)?.set_body(Bytes::from(body));
        Ok(())
    }
    async fn drop(&mut self, _r: Resource<PluginRequest>) -> Result<()> {
        // The plugin dropped its handle. The host still owns the request and takes it back
        // out of the table itself after the hook returns.
        Ok(())
    }
}

impl types::HostResponse for PluginCtx {
    async fn status(&mut self, r: Resource<PluginResponse>) -> Result<u16> {
        Ok(self.response(&r)?.parts.status.as_u16())
    }
    async fn set_status(
        &mut self,
        r: Resource<PluginResponse>,
        status: u16,
    ) -> Result<std::result::Result<(), String>> {
        match http::StatusCode::from_u16(status) {
            Ok(s) => {
                self.response(&r)?.parts.status = s;
                Ok(Ok(()))
            }
            Err(_) => Ok(Err(format!("invalid status {status}"))),
        }
    }
    async fn header(
        &mut self,
        r: Resource<PluginResponse>,
        name: String,
    ) -> Result<Option<Vec<u8>>> {
        Ok(headers::get(&self.response(&r)?.parts.headers, &name))
    }
    async fn header_all(
        &mut self,
        r: Resource<PluginResponse>,
        name: String,
    ) -> Result<Vec<Vec<u8>>> {
        Ok(headers::get_all(&self.response(&r)?.parts.headers, &name))
    }
    async fn header_names(&mut self, r: Resource<PluginResponse>) -> Result<Vec<String>> {
        Ok(headers::names(&self.response(&r)?.parts.headers))
    }
    async fn set_header(
        &mut self,
        r: Resource<PluginResponse>,
        name: String,
        value: Vec<u8>,
    ) -> Result<std::result::Result<(), types::HeaderError>> {
        Ok(headers::set(
            &mut self.response(&r)?.parts.headers,
            &name,
            &value,
        ))
    }
    async fn append_header(
        &mut self,
        r: Resource<PluginResponse>,
        name: String,
        value: Vec<u8>,
    ) -> Result<std::result::Result<(), types::HeaderError>> {
        Ok(headers::append(
            &mut self.response(&r)?.parts.headers,
            &name,
            &value,
        ))
    }
    async fn remove_header(&mut self, r: Resource<PluginResponse>, name: String) -> Result<()> {
        headers::remove(&mut self.response(&r)?.parts.headers, &name);
        Ok(())
    }
    async fn body(
        &mut self,
        r: Resource<PluginResponse>,
    ) -> Result<std::result::Result<Vec<u8>, types::BodyError>> {
        self.clock.host_call_starts();
        let out = self.response(&r)?.body().await.map(|b| b.to_vec());
        self.clock.host_call_returned();
        Ok(out)
    }
    async fn set_body(&mut self, r: Resource<PluginResponse>, body: Vec<u8>) -> Result<()> {
        self.response(&r)?.set_body(Bytes::from(body));
        Ok(())
    }
    async fn drop(&mut self, _r: Resource<PluginResponse>) -> Result<()> {
        // See `HostRequest::drop`: the host owns responses.
        Ok(())
    }
}

// --- impl services ---

fn build_service_request(
    req: services::ServiceRequest,
) -> std::result::Result<http::Request<crate::plugins::Body>, services::CallError> {
    let invalid = |what: String| services::CallError::InvalidRequest(what);
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| invalid(format!("method `{}`", req.method.escape_debug())))?;
    if !req.path_with_query.starts_with('/') {
        return Err(invalid(format!(
            "path `{}` must start with `/`",
            req.path_with_query.escape_debug()
        )));
    }
    let uri: http::Uri = req.path_with_query.parse().map_err(|e| {
        invalid(format!(
            "path `{}`: {e}",
            req.path_with_query.escape_debug()
        ))
    })?;
    let mut out = http::Request::new(full(Bytes::from(req.body)));
    *out.method_mut() = method;
    *out.uri_mut() = uri;
    for (name, value) in &req.headers {
        headers::append(out.headers_mut(), name, value)
            .map_err(|e| invalid(format!("header `{}`: {e:?}", name.escape_debug())))?;
    }
    Ok(out)
}

async fn call_one(
    env: Arc<PluginEnv>,
    body_cap: usize,
    service: String,
    req: services::ServiceRequest,
    trace: Option<TraceScope>,
) -> std::result::Result<services::ServiceResponse, services::CallError> {
    if !env.grants.services.contains(&service) {
        tracing::warn!(plugin = %env.name, route = %env.route, service = %service,
            "plugin called a service it has no grant for; refused");
        return Err(services::CallError::NotAllowed(service));
    }
    let mut req = build_service_request(req)?;
    // A child of the request's span; the upstream tries under it send `traceparent`.
    let span = trace.map(|scope| {
        let span = scope.service_call(
            env.name.as_str(),
            &service,
            req.method().as_str(),
            req.uri().path(),
        );
        req.extensions_mut().insert(span.scope().clone());
        span
    });
    let resp = match env.services.call(&service, req).await {
        Ok(resp) => {
            if let Some(span) = span {
                span.end_status(resp.status());
            }
            resp
        }
        Err(e) => {
            let kind = match &e {
                ServiceCallError::UnknownService(_) => "unknown_service",
                ServiceCallError::Timeout => "timeout",
                ServiceCallError::Failed(_) => "failed",
            };
            if let Some(span) = span {
                span.end_error(kind, e.to_string());
            }
            return Err(match e {
                ServiceCallError::UnknownService(s) => services::CallError::UnknownService(s),
                ServiceCallError::Timeout => services::CallError::Timeout,
                ServiceCallError::Failed(m) => services::CallError::Failed(m),
            });
        }
    };
    let (parts, body) = resp.into_parts();
    let collected = match collect_capped(body, body_cap).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(services::CallError::TooLarge),
        Err(e) => {
            return Err(services::CallError::Failed(format!(
                "reading the response body: {e}"
            )))
        }
    };
    Ok(services::ServiceResponse {
        status: parts.status.as_u16(),
        headers: header_list(&parts.headers),
        body: collected.body.to_vec(),
        trailers: header_list(&collected.trailers),
    })
}

fn header_list(map: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    map.iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

impl services::Host for PluginCtx {
    async fn call(
        &mut self,
        service: String,
        request: services::ServiceRequest,
    ) -> Result<std::result::Result<services::ServiceResponse, services::CallError>> {
        let env = self.env.clone();
        let cap = self.body_cap;
        let trace = self.meta.trace.clone();
        Ok(self
            .waiting(call_one(env, cap, service, request, trace))
            .await)
    }

    async fn call_batch(
        &mut self,
        calls: Vec<(String, services::ServiceRequest)>,
    ) -> Result<Vec<std::result::Result<services::ServiceResponse, services::CallError>>> {
        let env = self.env.clone();
        let cap = self.body_cap;
        let trace = self.meta.trace.clone();
        let all = calls
            .into_iter()
            .map(|(service, req)| call_one(env.clone(), cap, service, req, trace.clone()));
        Ok(self.waiting(futures::future::join_all(all)).await)
    }
}

// --- impl cache ---

impl PluginCtx {
    fn namespace(&self) -> std::result::Result<&str, cache::CacheError> {
        self.env
            .grants
            .cache_namespace
            .as_deref()
            .ok_or(cache::CacheError::NotAllowed)
    }
}

impl cache::Host for PluginCtx {
    // With `[plugins.cache] store = "redis"` each call awaits Redis (bounded by
    // `[redis] timeout`, not counted as the plugin's time); in process it answers at once.
    async fn get(
        &mut self,
        key: String,
    ) -> Result<std::result::Result<Option<Vec<u8>>, cache::CacheError>> {
        let ns = match self.namespace() {
            Ok(ns) => ns,
            Err(e) => return Ok(Err(e)),
        };
        if self.env.cache.shared().is_none() {
            return Ok(Ok(self.env.cache.get(ns, &key).map(|b| b.to_vec())));
        }
        let (cache, ns) = (Arc::clone(&self.env.cache), ns.to_owned());
        let value = self
            .waiting(async {
                match cache.shared() {
                    Some(shared) => shared.get(&ns, &key).await,
                    None => None,
                }
            })
            .await;
        Ok(Ok(value.map(|b| b.to_vec())))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<std::result::Result<(), cache::CacheError>> {
        let ns = match self.namespace() {
            Ok(ns) => ns,
            Err(e) => return Ok(Err(e)),
        };
        let (value, ttl) = (Bytes::from(value), Duration::from_millis(ttl_ms));
        if self.env.cache.shared().is_none() {
            return Ok(self
                .env
                .cache
                .set(ns, &key, value, ttl)
                .map_err(|_| cache::CacheError::TooLarge));
        }
        let (cache, ns) = (Arc::clone(&self.env.cache), ns.to_owned());
        let stored = self
            .waiting(async {
                match cache.shared() {
                    Some(shared) => shared.set(&ns, &key, value, ttl).await,
                    None => Ok(()),
                }
            })
            .await;
        Ok(stored.map_err(|_| cache::CacheError::TooLarge))
    }

    async fn delete(
        &mut self,
        key: String,
    ) -> Result<std::result::Result<bool, cache::CacheError>> {
        let ns = match self.namespace() {
            Ok(ns) => ns,
            Err(e) => return Ok(Err(e)),
        };
        if self.env.cache.shared().is_none() {
            return Ok(Ok(self.env.cache.delete(ns, &key)));
        }
        let (cache, ns) = (Arc::clone(&self.env.cache), ns.to_owned());
        let deleted = self
            .waiting(async {
                match cache.shared() {
                    Some(shared) => shared.delete(&ns, &key).await,
                    None => false,
                }
            })
            .await;
        Ok(Ok(deleted))
    }
}

// --- impl limits ---

/// The longest key a plugin may charge, in bytes.
const MAX_LIMIT_KEY: usize = 1024;

impl limits::Host for PluginCtx {
    async fn take(
        &mut self,
        limit: String,
        key: String,
        cost: u32,
    ) -> Result<std::result::Result<limits::Charge, limits::LimitError>> {
        let Some(limiter) = self.env.grants.limits.get(&limit).cloned() else {
            tracing::debug!(plugin = %self.env.name, route = %self.env.route, limit = %limit,
                "plugin charged a limit it has no grant for; refused");
            return Ok(Err(limits::LimitError::NotAllowed(limit)));
        };
        let burst = limiter.rate().burst.get();
        if cost == 0 || cost > burst {
            return Ok(Err(limits::LimitError::BadCost(burst)));
        }
        if key.is_empty() || key.len() > MAX_LIMIT_KEY {
            return Ok(Err(limits::LimitError::BadKey));
        }
        let now = std::time::Instant::now();
        let decided = match limiter.take(key.as_bytes(), cost, now) {
            crate::ratelimit::Take::Ready(decided) => decided,
            pending => self.waiting(pending).await,
        };
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Ok(match decided {
            Ok(d) if d.allowed => Ok(limits::Charge::Allowed(limits::Quota {
                remaining: d.remaining,
                reset_ms: millis(d.reset),
            })),
            // Rounded up: a plugin that waits this long is not refused again for it.
            Ok(d) => Ok(limits::Charge::Limited(millis(
                d.retry_after + Duration::from_nanos(999_999),
            ))),
            Err(e) => Err(limits::LimitError::Unavailable(e.to_string())),
        })
    }
}

// --- impl context ---

impl context::Host for PluginCtx {
    async fn config(&mut self) -> Result<String> {
        Ok(self.env.config.to_string())
    }
    async fn route_name(&mut self) -> Result<String> {
        Ok(self.env.route.to_string())
    }
    async fn client_addr(&mut self) -> Result<String> {
        Ok(self
            .meta
            .client_addr
            .map(|a| a.to_string())
            .unwrap_or_default())
    }
    async fn request_id(&mut self) -> Result<String> {
        Ok(self.meta.request_id.clone())
    }
    async fn client_certificate(&mut self) -> Result<Option<context::PeerCertificate>> {
        Ok(self
            .meta
            .client_certificate
            .as_deref()
            .map(|cert| context::PeerCertificate {
                subject: cert.subject.clone(),
                dns_names: cert.dns_names.clone(),
                uris: cert.uris.clone(),
                emails: cert.emails.clone(),
                sha256: cert.sha256.clone(),
            }))
    }
    async fn file(&mut self, name: String) -> Result<Option<Vec<u8>>> {
        Ok(self.env.grants.files.get(&name).map(|b| b.to_vec()))
    }
    async fn log(&mut self, level: context::Level, message: String) -> Result<()> {
        let plugin = self.env.name.as_str();
        let route = &*self.env.route;
        let request_id = self.meta.request_id.as_str();
        let version = &*self.version;
        // Plugins are untrusted: cap what one log line may carry.
        let message = match message.char_indices().nth(2048) {
            Some((i, _)) => &message[..i],
            None => &message,
        };
        match level {
            context::Level::Trace => {
                tracing::trace!(target: "gatehouse::plugin", plugin, version, route, request_id, "{message}")
            }
            context::Level::Debug => {
                tracing::debug!(target: "gatehouse::plugin", plugin, version, route, request_id, "{message}")
            }
            context::Level::Info => {
                tracing::info!(target: "gatehouse::plugin", plugin, version, route, request_id, "{message}")
            }
            context::Level::Warn => {
                tracing::warn!(target: "gatehouse::plugin", plugin, version, route, request_id, "{message}")
            }
            context::Level::Error => {
                tracing::error!(target: "gatehouse::plugin", plugin, version, route, request_id, "{message}")
            }
        }
        Ok(())
    }
    async fn default_hook(&mut self, hook: context::Hook) -> Result<()> {
        match hook {
            context::Hook::Request => self.default_hooks.request = true,
            context::Hook::Response => self.default_hooks.response = true,
            context::Hook::Failure => self.default_hooks.failure = true,
        }
        Ok(())
    }
}
