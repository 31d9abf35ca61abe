//! Validation of a service's `protocol` against its `[services.tls]`, and of the TLS keys
//! themselves: files read and checked here, at load, into a [`crate::conn::UpstreamTls`]
//! (docs/upstream-tls.md).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use toml::Spanned;

use super::model::{RawService, RawUpstreamTls};
use super::validate::Validator;
use super::{DiscoveryConfig, Protocol};
use crate::conn::tls::{Roots, TlsSettings, TlsSummary};
use crate::conn::UpstreamTls;
use crate::tls::PemError;

/// `services[i].protocol`, checked against whether the service has `[services.tls]`.
pub(super) fn protocol(v: &mut Validator<'_>, s: &RawService, i: usize) -> Protocol {
    let field = format!("services[{i}].protocol");
    let Some(p) = &s.protocol else {
        return Protocol::Http1;
    };
    let protocol = match p.get_ref().as_str() {
        "http1" => Protocol::Http1,
        "h2" => Protocol::H2,
        "h2c" => Protocol::H2c,
        other => {
            v.problem(
                p.span(),
                field,
                format!("{other:?} is not a protocol; expected \"http1\", \"h2\" or \"h2c\""),
            );
            return Protocol::Http1;
        }
    };
    match (protocol, s.tls.is_some()) {
        (Protocol::H2, false) => v.problem(
            p.span(),
            field,
            "\"h2\" is HTTP/2 over TLS and needs a [services.tls] table; use \"h2c\" for cleartext HTTP/2 with prior knowledge".to_owned(),
        ),
        (Protocol::H2c, true) => v.problem(
            p.span(),
            field,
            "\"h2c\" is cleartext HTTP/2 and cannot be used with [services.tls]; use \"h2\" for HTTP/2 over TLS".to_owned(),
        ),
        _ => {}
    }
    protocol
}

/// `[services.tls]` of `services[i]`, loaded: `None` without the table, or when a problem was
/// reported.
pub(super) fn upstream_tls(
    v: &mut Validator<'_>,
    s: &RawService,
    i: usize,
    protocol: Protocol,
    discovery: &DiscoveryConfig,
) -> Option<UpstreamTls> {
    let raw = s.tls.as_ref()?;
    let at = |key: &str| format!("services[{i}].tls.{key}");
    let before = v.problem_count();
    let base = v.base().to_owned();

    let roots = match &raw.ca {
        None => Some(Roots::System),
        Some(ca) => match crate::tls::load_roots(&base.join(ca.get_ref())) {
            Ok(roots) => Some(Roots::Bundle(roots)),
            Err(e) => {
                v.problem(ca.span(), at("ca"), e.to_string());
                None
            }
        },
    };
    let server_name = server_name(v, raw, s, i, discovery);
    let client_identity = client_identity(v, raw, &base, &at);
    let verify = raw.verify.as_ref().is_none_or(|v| *v.get_ref());
    if let Some(off) = raw.verify.as_ref().filter(|v| !*v.get_ref()) {
        v.warning(
            off.span(),
            at("verify"),
            "certificate verification is off: any certificate is accepted, so anyone on the \
             network path can impersonate this service's endpoints"
                .to_owned(),
        );
    }

    if v.problem_count() > before || protocol == Protocol::H2c {
        return None;
    }
    let summary = TlsSummary {
        ca: raw
            .ca
            .as_ref()
            .map_or_else(|| "system".to_owned(), |ca| ca.get_ref().clone()),
        server_name: server_name.as_ref().map(|n| n.to_str().into_owned()),
        verify,
        cert: raw.cert.as_ref().map(|c| c.get_ref().clone()),
    };
    let settings = TlsSettings {
        roots: roots?,
        server_name,
        verify,
        client_identity: client_identity?,
        summary,
    };
    match UpstreamTls::new(settings, protocol) {
        Ok(tls) => Some(tls),
        Err(e) => {
            let span = raw.ca.as_ref().map_or(s.name.span(), Spanned::span);
            v.problem(span, at("ca"), e.to_string());
            None
        }
    }
}

/// `tls.server_name`, or by default `dns_name` with DNS discovery (`None`: each endpoint's IP).
fn server_name(
    v: &mut Validator<'_>,
    raw: &RawUpstreamTls,
    s: &RawService,
    i: usize,
    discovery: &DiscoveryConfig,
) -> Option<ServerName<'static>> {
    if let Some(name) = &raw.server_name {
        let text = name.get_ref();
        let parsed = ServerName::try_from(text.clone())
            .ok()
            .filter(|_| !text.contains('*'));
        if parsed.is_none() {
            v.problem(
                name.span(),
                format!("services[{i}].tls.server_name"),
                format!("{text:?} is not a server name; expected a DNS name such as \"payments.internal\" or an IP address (no wildcards: it names the one host to verify)"),
            );
        }
        return parsed;
    }
    let DiscoveryConfig::Dns { name, .. } = discovery else {
        return None;
    };
    match ServerName::try_from(name.clone()) {
        Ok(parsed) => Some(parsed),
        Err(_) => {
            let span = s.dns_name.as_ref().map_or(s.name.span(), Spanned::span);
            v.problem(
                span,
                format!("services[{i}].tls.server_name"),
                format!("dns_name {name:?} is not a TLS server name; set tls.server_name"),
            );
            None
        }
    }
}

/// `tls.cert` and `tls.key`: `Some(None)` without them, `None` after a problem.
fn client_identity(
    v: &mut Validator<'_>,
    raw: &RawUpstreamTls,
    base: &Path,
    at: &dyn Fn(&str) -> String,
) -> Option<Option<Arc<rustls::sign::CertifiedKey>>> {
    match (&raw.cert, &raw.key) {
        (None, None) => Some(None),
        (Some(cert), None) => {
            v.problem(
                cert.span(),
                at("cert"),
                "cert and key must be set together: cert is set, key is missing".to_owned(),
            );
            None
        }
        (None, Some(key)) => {
            v.problem(
                key.span(),
                at("key"),
                "cert and key must be set together: key is set, cert is missing".to_owned(),
            );
            None
        }
        (Some(cert), Some(key)) => {
            let (cert_path, key_path) = (base.join(cert.get_ref()), base.join(key.get_ref()));
            match crate::tls::load_certified_key(&cert_path, &key_path) {
                Ok(identity) => Some(Some(Arc::new(identity))),
                Err(e) => {
                    let (span, field) = if is_about(&e, &key_path) {
                        (key.span(), at("key"))
                    } else {
                        (cert.span(), at("cert"))
                    };
                    v.problem(span, field, e.to_string());
                    None
                }
            }
        }
    }
}

/// Whether a PEM error is about the key file (a mismatch counts as the key's).
fn is_about(error: &PemError, key: &Path) -> bool {
    match error {
        PemError::NoKey { .. } | PemError::BadKey { .. } | PemError::KeyMismatch { .. } => true,
        PemError::Read { path, .. } | PemError::Malformed { path, .. } => path == key,
        PemError::NoCertificate { .. } | PemError::BadCertificate { .. } => false,
    }
}
