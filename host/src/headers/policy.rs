//! Per-route header policy (`routes.request_headers`, `routes.response_headers`): remove, set
//! and append, without a plugin.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Serialize, Serializer};

/// What a route does to the headers of one direction, in this order: `remove`, then `set`
/// (replaces every value), then `append` (adds a value, keeping the others).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeaderPolicy {
    #[serde(serialize_with = "names")]
    pub remove: Vec<HeaderName>,
    #[serde(serialize_with = "pairs")]
    pub set: Vec<(HeaderName, HeaderValue)>,
    #[serde(serialize_with = "pairs")]
    pub append: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderPolicy {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.append.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.append {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// Headers a policy may not set or append: they frame the message or describe one
/// connection, and the gateway (or hyper) owns them.
pub fn is_reserved(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

fn names<S: Serializer>(names: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(names.iter().map(HeaderName::as_str))
}

fn pairs<S: Serializer>(pairs: &[(HeaderName, HeaderValue)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(
        pairs
            .iter()
            .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v.as_bytes()))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_then_set_then_append() {
        let policy = HeaderPolicy {
            remove: vec![HeaderName::from_static("x-user")],
            set: vec![(
                HeaderName::from_static("x-env"),
                HeaderValue::from_static("prod"),
            )],
            append: vec![(
                HeaderName::from_static("x-tag"),
                HeaderValue::from_static("gw"),
            )],
        };
        let mut h = HeaderMap::new();
        h.append("x-user", HeaderValue::from_static("admin"));
        h.append("x-user", HeaderValue::from_static("root"));
        h.append("x-env", HeaderValue::from_static("dev"));
        h.append("x-env", HeaderValue::from_static("test"));
        h.append("x-tag", HeaderValue::from_static("client"));
        policy.apply(&mut h);
        assert!(!h.contains_key("x-user"));
        assert_eq!(h.get_all("x-env").iter().collect::<Vec<_>>(), ["prod"]);
        assert_eq!(
            h.get_all("x-tag").iter().collect::<Vec<_>>(),
            ["client", "gw"]
        );
    }
}
