//! Which origins a policy allows: `*`, exact origins, and wildcard subdomains.

use http::HeaderValue;
use serde::Serialize;

/// One `allow_origins` entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `"*"`.
    Any,
    /// `https://app.example.com` (lowercase, port only when not the default one).
    Exact(String),
    /// `https://*.example.com`: any subdomain, at any depth, never `example.com` itself.
    Subdomain {
        scheme: String,
        /// `.example.com`.
        suffix: String,
        /// `:8443`, or empty for the scheme's default port.
        port: String,
    },
}

impl OriginPattern {
    /// Parses a configured origin; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text == "*" {
            return Ok(OriginPattern::Any);
        }
        let lower = text.to_ascii_lowercase();
        let Some((scheme, rest)) = lower.split_once("://") else {
            return Err("an origin is scheme://host[:port], such as \"https://app.example.com\"");
        };
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return Err("the scheme is not valid (expected e.g. https)");
        }
        if rest.contains(['/', '?', '#']) {
            return Err("an origin has no path, query or trailing slash");
        }
        let (host, port) = split_port(rest).ok_or("the port is not a number from 1 to 65535")?;
        if let Some(bare) = host.strip_prefix("*.") {
            if !is_dns_name(bare) || !bare.contains('.') {
                return Err("a wildcard is \"*.\" followed by a domain of two labels or more, such as https://*.example.com");
            }
            return Ok(OriginPattern::Subdomain {
                scheme: scheme.to_owned(),
                suffix: format!(".{bare}"),
                port: port.to_owned(),
            });
        }
        if host.contains('*') {
            return Err(
                "\"*\" may only stand for the first labels of the host (https://*.example.com)",
            );
        }
        let ipv6 = host.starts_with('[') && host.ends_with(']');
        if !ipv6 && !is_dns_name(host) {
            return Err("the host is not a valid name or address");
        }
        Ok(OriginPattern::Exact(lower))
    }
}

/// `host[:port]` → (host, ":port" or ""); None when the port is not a valid port number.
fn split_port(authority: &str) -> Option<(&str, &str)> {
    // An IPv6 literal holds colons of its own: the port, if any, follows the `]`.
    let search_from = authority.rfind(']').unwrap_or(0);
    match authority[search_from..].rfind(':') {
        Some(i) => {
            let at = search_from + i;
            let port = &authority[at + 1..];
            let valid = !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok_and(|p| p > 0);
            valid.then(|| (&authority[..at], &authority[at..]))
        }
        None => Some((authority, "")),
    }
}

/// Dot-separated labels of letters, digits and hyphens, none empty.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A policy's `allow_origins`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AllowedOrigins {
    /// `"*"` was listed.
    pub any: bool,
    #[serde(skip)]
    patterns: Vec<OriginPattern>,
    /// As configured, for `/admin/config`.
    listed: Vec<String>,
}

impl AllowedOrigins {
    pub fn new(patterns: Vec<(OriginPattern, String)>) -> Self {
        let any = patterns.iter().any(|(p, _)| *p == OriginPattern::Any);
        let (patterns, listed) = patterns.into_iter().unzip();
        AllowedOrigins {
            any,
            patterns,
            listed,
        }
    }

    /// Whether the request's `Origin` is allowed. `null` (an opaque origin: a sandboxed
    /// frame, a `file:` page) only through `*`.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        if self.any {
            return true;
        }
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        self.patterns.iter().any(|p| matches(p, origin))
    }
}

fn matches(pattern: &OriginPattern, origin: &str) -> bool {
    match pattern {
        OriginPattern::Any => true,
        OriginPattern::Exact(exact) => origin.eq_ignore_ascii_case(exact),
        OriginPattern::Subdomain {
            scheme,
            suffix,
            port,
        } => {
            let Some((their_scheme, rest)) = origin.split_once("://") else {
                return false;
            };
            let Some((host, their_port)) = split_port(rest) else {
                return false;
            };
            if !their_scheme.eq_ignore_ascii_case(scheme) || their_port != port {
                return false;
            }
            let host_len = host.len();
            // At least one whole label before the suffix: `evil-example.com` is no subdomain of
            // `example.com`, nor is `example.com.evil.net`.
            host_len > suffix.len()
                && host.is_char_boundary(host_len - suffix.len())
                && host[host_len - suffix.len()..].eq_ignore_ascii_case(suffix)
                && is_dns_name(&host[..host_len - suffix.len()])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(patterns: &[&str], origin: &str) -> bool {
        let patterns = patterns
            .iter()
            .map(|p| (OriginPattern::parse(p).unwrap(), (*p).to_owned()))
            .collect();
        AllowedOrigins::new(patterns).allows(&HeaderValue::from_str(origin).unwrap())
    }

    #[test]
    fn exact_origins() {
        let list = ["https://app.example.com", "http://localhost:3000"];
        assert!(allowed(&list, "https://app.example.com"));
        assert!(allowed(&list, "HTTPS://APP.example.com"));
        assert!(allowed(&list, "http://localhost:3000"));
        assert!(!allowed(&list, "http://app.example.com"));
        assert!(!allowed(&list, "https://app.example.com:8443"));
        assert!(!allowed(&list, "http://localhost:3001"));
        assert!(!allowed(&list, "null"));
    }

    #[test]
    fn wildcard_subdomains() {
        let list = ["https://*.example.com"];
        assert!(allowed(&list, "https://a.example.com"));
        assert!(allowed(&list, "https://a.b.example.com"));
        assert!(!allowed(&list, "https://example.com"));
        assert!(!allowed(&list, "https://evil-example.com"));
        assert!(!allowed(&list, "https://example.com.evil.net"));
        assert!(!allowed(&list, "https://a.example.com.evil.net"));
        assert!(!allowed(&list, "http://a.example.com"));
        assert!(!allowed(&list, "https://a.example.com:8443"));
        assert!(!allowed(&list, "https://.example.com"));
        assert!(!allowed(&list, "https://a..example.com"));
        assert!(allowed(
            &["https://*.example.com:8443"],
            "https://a.example.com:8443"
        ));
    }

    #[test]
    fn any_origin() {
        assert!(allowed(&["*"], "null"));
        assert!(allowed(&["*"], "https://anything.test"));
    }

    #[test]
    fn bad_patterns() {
        for bad in [
            "example.com",
            "https://example.com/",
            "https://example.com/path",
            "https://*.com",
            "https://a.*.example.com",
            "https://*example.com",
            "https://example.com:0",
            "https://example.com:99999",
            "https://exa mple.com",
            "1http://example.com",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(OriginPattern::parse("http://[::1]:8080").is_ok());
    }
}
