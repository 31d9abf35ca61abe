//! A cached response as stored in the host cache: JSON with the time it was stored, the
//! status, the kept headers and the body (both base64).

use base64::Engine as _;
use gatehouse_sdk::FullResponse;
use serde::{Deserialize, Serialize};

use crate::FALLBACK_HEADER;

/// A stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When it was stored, milliseconds since the Unix epoch.
    pub stored_ms: u64,
    /// Its status.
    pub status: u16,
    /// The kept headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    t: u64,
    s: u16,
    h: Vec<(String, String)>,
    b: String,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl Entry {
    /// The bytes to store.
    pub fn encode(&self) -> Vec<u8> {
        let stored = Stored {
            t: self.stored_ms,
            s: self.status,
            h: self
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), B64.encode(v)))
                .collect(),
            b: B64.encode(&self.body),
        };
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// Read stored bytes; `None` if they are not an entry (e.g. written by an older version).
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        let stored: Stored = serde_json::from_slice(bytes).ok()?;
        let mut headers = Vec::with_capacity(stored.h.len());
        for (n, v) in stored.h {
            headers.push((n, B64.decode(v).ok()?));
        }
        Some(Entry {
            stored_ms: stored.t,
            status: stored.s,
            headers,
            body: B64.decode(stored.b).ok()?,
        })
    }

    /// The response to serve, marked as coming from the cache, with its age.
    pub fn into_response(self, age_secs: u64) -> FullResponse {
        let mut headers = self.headers;
        headers.retain(|(n, _)| n != "age" && n != FALLBACK_HEADER);
        headers.push((FALLBACK_HEADER.to_string(), b"cache".to_vec()));
        headers.push(("age".to_string(), age_secs.to_string().into_bytes()));
        FullResponse {
            status: self.status,
            headers,
            body: self.body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_response() {
        let e = Entry {
            stored_ms: 1234,
            status: 200,
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("age".into(), b"9".to_vec()),
            ],
            body: vec![0, 159, 146, 150, b'{'],
        };
        let back = Entry::decode(&e.encode()).expect("decodes");
        assert_eq!(back, e);
        assert!(Entry::decode(b"junk").is_none());
        assert!(Entry::decode(b"{\"t\":1,\"s\":200,\"h\":[],\"b\":\"!!\"}").is_none());
        let r = back.into_response(7);
        assert_eq!(r.status, 200);
        let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["content-type", FALLBACK_HEADER, "age"]);
        assert_eq!(r.headers[2].1, b"7");
        assert_eq!(r.body, vec![0, 159, 146, 150, b'{']);
    }
}
