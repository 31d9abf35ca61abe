//! The plugin's config (`service`, `method` or `methods`, `descriptors`, ...) and resolving
//! method names against the descriptor set.

use std::collections::BTreeMap;

use prost_reflect::{DescriptorPool, MethodDescriptor};
use serde::Deserialize;

use crate::error::TranscodeError;

/// The route's config table for this plugin, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The gatehouse service to call (one with `protocol = "h2c"`, granted in `calls`).
    pub service: String,
    /// The one method every request of the route calls: `package.Service/Method` (or
    /// `package.Service.Method`). Exactly one of `method` and `methods` must be set.
    pub method: Option<String>,
    /// Request path (as the plugin sees it, after `strip_prefix`/`rewrite`) → method.
    #[serde(default)]
    pub methods: BTreeMap<String, String>,
    /// The name of the granted file holding the descriptor set (`files = { descriptors =
    /// "x.pb" }`, as made by `protoc --descriptor_set_out --include_imports`). Default
    /// `descriptors`.
    #[serde(default = "default_descriptors")]
    pub descriptors: String,
    /// Request headers passed on to the service as gRPC metadata (e.g. `authorization`).
    /// Default: none.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Write fields that hold their default value (`0`, `""`, `false`) into the JSON reply;
    /// proto3 JSON leaves them out. Default false.
    #[serde(default)]
    pub emit_defaults: bool,
}

fn default_descriptors() -> String {
    "descriptors".to_owned()
}

impl Settings {
    /// Parse the config JSON the host hands over, checking the method settings' shape.
    pub fn parse(json: &str) -> Result<Self, TranscodeError> {
        let settings: Settings =
            serde_json::from_str(json).map_err(|e| TranscodeError::Config(e.to_string()))?;
        match (&settings.method, settings.methods.is_empty()) {
            (Some(_), false) => Err(TranscodeError::Config(
                "`method` and `methods` cannot be set together".to_owned(),
            )),
            (None, true) => Err(TranscodeError::Config(
                "set `method` (one method for the route) or `methods` (path -> method)".to_owned(),
            )),
            _ => Ok(settings),
        }
    }

    /// The method name configured for `path`.
    pub fn method_for(&self, path: &str) -> Result<&str, TranscodeError> {
        match &self.method {
            Some(m) => Ok(m),
            None => self
                .methods
                .get(path)
                .map(String::as_str)
                .ok_or_else(|| TranscodeError::NoMethod(path.to_owned())),
        }
    }
}

/// Find a unary method by `package.Service/Method` or `package.Service.Method`.
pub fn resolve(pool: &DescriptorPool, name: &str) -> Result<MethodDescriptor, TranscodeError> {
    let bad = |why: String| TranscodeError::Config(format!("method {name:?}: {why}"));
    let (service, method) = name
        .rsplit_once('/')
        .or_else(|| name.rsplit_once('.'))
        .ok_or_else(|| bad("expected `package.Service/Method`".to_owned()))?;
    let service = pool.get_service_by_name(service).ok_or_else(|| {
        let known: Vec<_> = pool.services().map(|s| s.full_name().to_owned()).collect();
        bad(format!(
            "no service {service:?} in the descriptor set (known: {})",
            known.join(", ")
        ))
    })?;
    let found = service
        .methods()
        .find(|m| m.name() == method)
        .ok_or_else(|| bad(format!("{} has no method {method:?}", service.full_name())))?;
    if found.is_client_streaming() || found.is_server_streaming() {
        return Err(bad(
            "streaming methods cannot be transcoded; only unary".to_owned()
        ));
    }
    Ok(found)
}

/// The HTTP/2 path of a gRPC method: `/package.Service/Method`.
pub fn grpc_path(method: &MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}
