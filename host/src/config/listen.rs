//! `[listen.tls]` and the plaintext listener beside it (`listen.http`): validated into the
//! listener's own types (`listener::tls`, `listener::redirect`). Certificate, key and CA files
//! are read here, so `gatehouse check` finds a missing file, a key that does not match its
//! certificate, or an SNI name claimed twice.

use std::collections::BTreeMap;
use std::time::SystemTime;

use http::HeaderName;
use toml::Spanned;

use super::model::{RawCertificate, RawListen, RawListenTls};
use super::validate::Validator;
use crate::listener::redirect::{PlaintextListener, PlaintextMode, RedirectStatus};
use crate::listener::tls::{names_of, CertificateSpec, ClientAuth, TlsPolicy};
use crate::tls::{self as pem, PemError};

/// `[listen.tls]`, or `None` when the public listener is plaintext.
pub(super) fn tls(v: &mut Validator<'_>, raw: &RawListen) -> Option<TlsPolicy> {
    let spanned = raw.tls.as_ref()?;
    let raw_tls: &RawListenTls = spanned.get_ref();
    if raw_tls.certificates.is_empty() {
        v.problem(
            spanned.span(),
            "listen.tls.certificates",
            "[listen.tls] needs at least one certificate: certificates = [{ cert = \"server.pem\", key = \"server.key\" }]".to_owned(),
        );
    }
    // Which certificate claimed each SNI name first.
    let mut claimed: BTreeMap<String, usize> = BTreeMap::new();
    let mut certificates = Vec::with_capacity(raw_tls.certificates.len());
    let mut default: Option<usize> = None;
    for (i, raw_cert) in raw_tls.certificates.iter().enumerate() {
        let at = format!("listen.tls.certificates[{i}]");
        let spec = certificate(v, raw_cert, &at);
        if let Some(d) = &raw_cert.default {
            if *d.get_ref() {
                match default {
                    Some(first) => v.problem(
                        d.span(),
                        format!("{at}.default"),
                        format!("listen.tls.certificates[{first}] is already the default; only one certificate may be"),
                    ),
                    None => default = Some(i),
                }
            }
        }
        let names = loaded_names(v, raw_cert, &spec, &at);
        for (name, span) in names {
            if let Some(first) = claimed.get(&name) {
                v.problem(
                    span,
                    format!("{at}.names"),
                    format!("{name:?} is already covered by listen.tls.certificates[{first}]; each SNI name (exact or wildcard) may belong to one certificate"),
                );
            } else {
                claimed.insert(name, i);
            }
        }
        certificates.push(spec);
    }

    let client_auth = match raw_tls
        .client_auth
        .as_ref()
        .map(|a| (a.get_ref().as_str(), a.span()))
    {
        None | Some(("off", _)) => ClientAuth::Off,
        Some(("optional", _)) => ClientAuth::Optional,
        Some(("required", _)) => ClientAuth::Required,
        Some((other, span)) => {
            v.problem(
                span,
                "listen.tls.client_auth",
                format!("{other:?} is not a client certificate mode; expected \"off\", \"optional\" or \"required\""),
            );
            ClientAuth::Off
        }
    };
    let client_ca = match (&raw_tls.client_ca, client_auth) {
        (None, ClientAuth::Off) => None,
        (None, auth) => {
            let span = raw_tls
                .client_auth
                .as_ref()
                .map_or(spanned.span(), |a| a.span());
            let mode = if auth == ClientAuth::Required {
                "required"
            } else {
                "optional"
            };
            v.problem(
                span,
                "listen.tls.client_auth",
                format!("client_auth = \"{mode}\" needs client_ca, the CA bundle client certificates must chain to"),
            );
            None
        }
        (Some(ca), ClientAuth::Off) => {
            v.problem(
                ca.span(),
                "listen.tls.client_ca",
                "client_ca is set but client_auth is \"off\"; set client_auth = \"optional\" or \"required\", or remove client_ca".to_owned(),
            );
            None
        }
        (Some(ca), _) => {
            let path = v.base.join(ca.get_ref());
            if let Err(e) = pem::load_roots(&path) {
                v.problem(ca.span(), "listen.tls.client_ca", e.to_string());
            }
            Some(path)
        }
    };
    let client_cert_header = raw_tls.client_cert_header.as_ref().and_then(|h| {
        if client_auth == ClientAuth::Off {
            v.problem(
                h.span(),
                "listen.tls.client_cert_header",
                "client_cert_header forwards a verified client certificate, but client_auth is \"off\"; set client_auth = \"optional\" or \"required\"".to_owned(),
            );
        }
        match HeaderName::from_bytes(h.get_ref().as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                v.problem(
                    h.span(),
                    "listen.tls.client_cert_header",
                    format!("{:?} is not a header name", h.get_ref()),
                );
                None
            }
        }
    });
    Some(TlsPolicy {
        certificates,
        client_auth,
        client_ca,
        client_cert_header,
    })
}

fn certificate(v: &mut Validator<'_>, raw: &RawCertificate, at: &str) -> CertificateSpec {
    let names = raw.names.as_ref().map(|names| {
        names
            .iter()
            .filter_map(|n| {
                let name = n.get_ref().to_ascii_lowercase();
                if valid_sni_name(&name) {
                    Some(name)
                } else {
                    v.problem(
                        n.span(),
                        format!("{at}.names"),
                        format!("{:?} is not an SNI name; expected a DNS name such as \"api.example.org\" or \"*.example.org\"", n.get_ref()),
                    );
                    None
                }
            })
            .collect()
    });
    CertificateSpec {
        cert: v.base.join(raw.cert.get_ref()),
        key: v.base.join(raw.key.get_ref()),
        names,
        default: raw.default.as_ref().is_some_and(|d| *d.get_ref()),
    }
}

/// Loads the certificate (reporting what is wrong with its files, and warning when it has
/// expired) and returns the SNI names it claims, each with the span to blame.
fn loaded_names(
    v: &mut Validator<'_>,
    raw: &RawCertificate,
    spec: &CertificateSpec,
    at: &str,
) -> Vec<(String, std::ops::Range<usize>)> {
    let info = match pem::load_certified_key(&spec.cert, &spec.key) {
        Ok(key) => key.cert.first().and_then(|leaf| pem::describe(leaf).ok()),
        Err(e) => {
            let on_key = match &e {
                PemError::NoKey { .. } | PemError::BadKey { .. } | PemError::KeyMismatch { .. } => {
                    true
                }
                PemError::Read { path, .. } | PemError::Malformed { path, .. } => path == &spec.key,
                _ => false,
            };
            let (span, field) = if on_key {
                (raw.key.span(), format!("{at}.key"))
            } else {
                (raw.cert.span(), format!("{at}.cert"))
            };
            v.problem(span, field, e.to_string());
            None
        }
    };
    if let Some(info) = &info {
        if info.expired(SystemTime::now()) {
            v.warning(
                raw.cert.span(),
                format!("{at}.cert"),
                format!(
                    "{}: expired on {}; clients will refuse it",
                    spec.cert.display(),
                    humantime::format_rfc3339_seconds(info.not_after)
                ),
            );
        }
    }
    match (&raw.names, &spec.names) {
        (Some(raw_names), Some(_)) => raw_names
            .iter()
            .map(|n| (n.get_ref().to_ascii_lowercase(), n.span()))
            .filter(|(n, _)| valid_sni_name(n))
            .collect(),
        _ => info
            .map(|info| names_of(spec, &info))
            .unwrap_or_default()
            .into_iter()
            .map(|n| (n, raw.cert.span()))
            .collect(),
    }
}

/// A DNS name, or `*.` and a DNS name.
fn valid_sni_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `listen.http` and its mode, or `None`.
pub(super) fn plaintext(
    v: &mut Validator<'_>,
    raw: &RawListen,
    tls: bool,
) -> Option<PlaintextListener> {
    let Some(http) = &raw.http else {
        for (key, span) in [
            ("http_mode", raw.http_mode.as_ref().map(Spanned::span)),
            (
                "redirect_status",
                raw.redirect_status.as_ref().map(Spanned::span),
            ),
            (
                "redirect_port",
                raw.redirect_port.as_ref().map(Spanned::span),
            ),
        ] {
            if let Some(span) = span {
                v.problem(
                    span,
                    format!("listen.{key}"),
                    format!("listen.{key} applies to the plaintext listener, but listen.http is not set"),
                );
            }
        }
        return None;
    };
    let addr = v.addr(&raw.http, "listen.http", "0.0.0.0:8080");
    if !tls {
        v.problem(
            http.span(),
            "listen.http",
            "listen.http is a plaintext listener beside a TLS public listener, but [listen.tls] is not set (without it, listen.public already serves plaintext)".to_owned(),
        );
    }
    let status = match &raw.redirect_status {
        None => RedirectStatus(308),
        Some(s) => match *s.get_ref() {
            301 => RedirectStatus(301),
            308 => RedirectStatus(308),
            other => {
                v.problem(
                    s.span(),
                    "listen.redirect_status",
                    format!("{other} is not a redirect status here; expected 301 or 308 (both keep the redirect permanent; 308 keeps the method and body)"),
                );
                RedirectStatus(308)
            }
        },
    };
    let port = match &raw.redirect_port {
        None => None,
        Some(p) => match u16::try_from(*p.get_ref()) {
            Ok(port) if port > 0 => Some(port),
            _ => {
                v.problem(
                    p.span(),
                    "listen.redirect_port",
                    format!("{} is not a port; expected 1-65535", p.get_ref()),
                );
                None
            }
        },
    };
    let mode = match raw
        .http_mode
        .as_ref()
        .map(|m| (m.get_ref().as_str(), m.span()))
    {
        None | Some(("redirect", _)) => PlaintextMode::Redirect { status, port },
        Some(("serve", _)) => PlaintextMode::Serve,
        Some((other, span)) => {
            v.problem(
                span,
                "listen.http_mode",
                format!("{other:?} is not a plaintext listener mode; expected \"redirect\" or \"serve\""),
            );
            PlaintextMode::Redirect { status, port }
        }
    };
    Some(PlaintextListener { addr, mode })
}
