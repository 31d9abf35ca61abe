//! Predicates on a request's headers, cookies and query parameters: what a route's `match`
//! and a gray subset's `match` share, so both read a request the same way.

use http::{HeaderMap, HeaderName};
use serde::{Serialize, Serializer};

use crate::headers::cookies;

/// How a header, cookie or query value must look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum ValueMatch {
    /// `"*"`: present, any value.
    Present,
    Exact(String),
}

impl ValueMatch {
    /// `"*"` means present with any value; anything else is an exact value.
    pub fn parse(s: &str) -> Self {
        if s == "*" {
            ValueMatch::Present
        } else {
            ValueMatch::Exact(s.to_owned())
        }
    }

    fn accepts(&self, value: &[u8]) -> bool {
        match self {
            ValueMatch::Present => true,
            ValueMatch::Exact(want) => want.as_bytes() == value,
        }
    }
}

/// Every listed header, cookie and query parameter must be there, with an accepted value (any
/// of a repeated one's values will do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RequestMatch {
    #[serde(serialize_with = "header_pairs")]
    pub headers: Vec<(HeaderName, ValueMatch)>,
    /// Cookies from every `Cookie` header.
    pub cookies: Vec<(String, ValueMatch)>,
    /// Query parameters, percent-decoded.
    pub query: Vec<(String, ValueMatch)>,
}

fn header_pairs<S: Serializer>(h: &[(HeaderName, ValueMatch)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(h.iter().map(|(n, v)| (n.as_str(), v)))
}

impl RequestMatch {
    /// How many predicates there are (a route's precedence counts them).
    pub fn len(&self) -> usize {
        self.headers.len() + self.cookies.len() + self.query.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the request with these headers and query matches.
    pub fn matches(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        self.headers.iter().all(|(name, want)| {
            headers
                .get_all(name)
                .iter()
                .any(|v| want.accepts(v.as_bytes()))
        }) && self.cookies.iter().all(|(name, want)| {
            cookies(headers)
                .filter(|(k, _)| k == name)
                .any(|(_, v)| want.accepts(v.as_bytes()))
        }) && self.query.iter().all(|(name, want)| {
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .filter(|(k, _)| k == name)
                .any(|(_, v)| want.accepts(v.as_bytes()))
        })
    }
}
