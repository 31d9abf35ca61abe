//! Consistent hashing (ring hash) keyed on a header, a cookie or the client address.
//!
//! Each backend owns `replicas` points on a 64-bit ring, placed by hashing its endpoint id;
//! a request goes to the first point at or after its key's hash. Points depend only on the
//! backend's own id, so when a backend leaves only its keys move, and when one joins it only
//! takes keys from the others: about 1/n of keys remap (tests assert it).

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;

use crate::headers::cookies;

use super::{Backend, Balance, PickContext, Random};

/// The client's address, attached to a request as an extension by the proxy so that
/// `hash_key = "client-address"` can read it on the upstream path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// What a request's hash is computed from (`hash_key` in config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A request header's value, e.g. `x-user-id`.
    Header(http::HeaderName),
    /// A cookie's value, e.g. `session`.
    Cookie(String),
    /// The client's IP address (port excluded, so one client's connections agree).
    ClientAddr,
}

impl HashKey {
    /// Parses `header:NAME`, `cookie:NAME` or `client-address`.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "client-address" {
            return Some(HashKey::ClientAddr);
        }
        if let Some(name) = s.strip_prefix("header:") {
            return http::HeaderName::from_bytes(name.as_bytes())
                .ok()
                .map(HashKey::Header);
        }
        match s.strip_prefix("cookie:") {
            Some(name) if !name.is_empty() => Some(HashKey::Cookie(name.to_owned())),
            _ => None,
        }
    }

    /// The request's hash, or `None` when the key is missing (the balancer then picks at
    /// random rather than sending all keyless requests to one backend).
    pub fn hash_of(&self, headers: &HeaderMap, client: Option<IpAddr>) -> Option<u64> {
        match self {
            HashKey::Header(name) => headers.get(name).map(|v| hash64(v.as_bytes())),
            HashKey::ClientAddr => client.map(hash64),
            HashKey::Cookie(name) => cookies(headers)
                .find(|(k, _)| *k == name)
                .map(|(_, v)| hash64(v)),
        }
    }
}

/// `header:NAME`, `cookie:NAME` or `client-address`: what [`HashKey::parse`] reads.
impl std::fmt::Display for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashKey::Header(h) => write!(f, "header:{h}"),
            HashKey::Cookie(c) => write!(f, "cookie:{c}"),
            HashKey::ClientAddr => f.write_str("client-address"),
        }
    }
}

/// A stable 64-bit hash (SipHash with fixed keys: same input, same ring, within a build).
fn hash64(value: impl Hash) -> u64 {
    #[allow(deprecated)] // SipHasher is deprecated only in favour of DefaultHasher's instability.
    let mut h = std::hash::SipHasher::new();
    value.hash(&mut h);
    h.finish()
}

#[derive(Debug)]
pub struct RingHash {
    /// (point, backend index), sorted by point.
    ring: Box<[(u64, u32)]>,
    /// `index[b]` = first ring position whose point is ≥ `b << shift`: a lookup binary-searches
    /// only one bucket (a few entries) instead of the whole ring, which for 1 000 backends
    /// (160 000 points, 2.5 MB) would cost a cache miss per step.
    index: Box<[u32]>,
    shift: u32,
}

impl RingHash {
    /// Points per backend: enough that 10 backends get shares within a few percent.
    pub const DEFAULT_REPLICAS: usize = 160;

    pub fn new(backends: &[Arc<Backend>], replicas: usize) -> Self {
        let mut ring = Vec::with_capacity(backends.len() * replicas);
        for (i, b) in backends.iter().enumerate() {
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            for r in 0..replicas {
                ring.push((hash64((&*b.endpoint.id, r)), idx));
            }
        }
        ring.sort_unstable();
        // About one to two ring points per bucket, at most 2^16 buckets (256 KiB).
        let bits = (usize::BITS - ring.len().leading_zeros()).clamp(1, 16);
        let shift = 64 - bits;
        let index = (0..1u64 << bits)
            .map(|b| {
                let at = ring.partition_point(|&(p, _)| p < b << shift);
                u32::try_from(at).unwrap_or(u32::MAX)
            })
            .collect();
        Self {
            ring: ring.into(),
            index,
            shift,
        }
    }

    fn lookup(&self, key: u64) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let bucket = (key >> self.shift) as usize;
        let start = self
            .index
            .get(bucket)
            .map_or(self.ring.len(), |&i| i as usize);
        let end = self
            .index
            .get(bucket + 1)
            .map_or(self.ring.len(), |&i| i as usize);
        // The first point ≥ key is in this bucket, or else it is the first of the next ones
        // (`end`), or, past the last point, the ring wraps to 0.
        let at = start + self.ring[start..end].partition_point(|&(p, _)| p < key);
        let (_, idx) = self.ring[if at == self.ring.len() { 0 } else { at }];
        Some(idx as usize)
    }
}

impl Balance for RingHash {
    fn pick(&self, backends: &[Arc<Backend>], ctx: &PickContext) -> Option<usize> {
        match ctx.hash {
            // A retry moves the key around the ring, so it lands on another backend while
            // staying deterministic for that key.
            Some(h) => self
                .lookup(h.wrapping_add(u64::from(ctx.attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
                .filter(|&i| i < backends.len()),
            None => Random.pick(backends, ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancing::test_support::backends;

    fn owner(ring: &RingHash, b: &[Arc<Backend>], key: u64) -> Arc<str> {
        let ctx = PickContext {
            hash: Some(key),
            attempt: 0,
        };
        let i = ring.pick(b, &ctx).expect("non-empty");
        b[i].endpoint.id.clone()
    }

    #[test]
    fn removing_a_backend_moves_only_its_keys() {
        let all = backends(10, |_| 1);
        let before = RingHash::new(&all, RingHash::DEFAULT_REPLICAS);
        let fewer: Vec<_> = all
            .iter()
            .filter(|b| &*b.endpoint.id != "b3")
            .cloned()
            .collect();
        let after = RingHash::new(&fewer, RingHash::DEFAULT_REPLICAS);
        let keys: Vec<u64> = (0..20_000u64).map(hash64).collect();
        let mut moved = 0;
        for &k in &keys {
            let (o1, o2) = (owner(&before, &all, k), owner(&after, &fewer, k));
            if o1 != o2 {
                assert_eq!(&*o1, "b3", "a key of a surviving backend moved");
                moved += 1;
            }
        }
        let share = moved as f64 / keys.len() as f64;
        // Ideal is 1/10; allow the ring's natural unevenness.
        assert!((0.06..0.14).contains(&share), "remapped share {share}");
    }

    #[test]
    fn adding_a_backend_takes_about_one_share() {
        let eleven = backends(11, |_| 1);
        let ten = &eleven[..10];
        let before = RingHash::new(ten, RingHash::DEFAULT_REPLICAS);
        let after = RingHash::new(&eleven, RingHash::DEFAULT_REPLICAS);
        let mut moved = 0;
        for k in (0..20_000u64).map(hash64) {
            let (o1, o2) = (owner(&before, ten, k), owner(&after, &eleven, k));
            if o1 != o2 {
                assert_eq!(&*o2, "b10", "a key moved between old backends");
                moved += 1;
            }
        }
        let share = moved as f64 / 20_000.0;
        assert!((0.05..0.14).contains(&share), "remapped share {share}");
    }

    #[test]
    fn bucket_index_agrees_with_a_plain_search() {
        for n in [1, 3, 10, 200] {
            let b = backends(n, |_| 1);
            let ring = RingHash::new(&b, RingHash::DEFAULT_REPLICAS);
            let mut keys: Vec<u64> = (0..5_000u64).map(hash64).collect();
            keys.extend([0, 1, u64::MAX, u64::MAX - 1]);
            keys.extend(ring.ring.iter().take(50).map(|&(p, _)| p));
            for key in keys {
                let at = ring.ring.partition_point(|&(p, _)| p < key) % ring.ring.len();
                assert_eq!(
                    ring.lookup(key),
                    Some(ring.ring[at].1 as usize),
                    "key {key}"
                );
            }
        }
    }

    #[test]
    fn same_key_same_backend_and_retry_moves() {
        let b = backends(5, |_| 1);
        let ring = RingHash::new(&b, RingHash::DEFAULT_REPLICAS);
        let ctx = PickContext {
            hash: Some(7),
            attempt: 0,
        };
        let first = ring.pick(&b, &ctx);
        assert!((0..10).all(|_| ring.pick(&b, &ctx) == first));
    }

    #[test]
    fn keys_come_from_header_cookie_or_client() {
        let mut h = HeaderMap::new();
        h.insert("x-user", "alice".parse().expect("valid"));
        h.append(
            http::header::COOKIE,
            "theme=dark; session=abc".parse().expect("valid"),
        );
        let header = HashKey::parse("header:x-user").expect("parses");
        let cookie = HashKey::parse("cookie:session").expect("parses");
        assert_eq!(header.hash_of(&h, None), Some(hash64(&b"alice"[..])));
        assert_eq!(cookie.hash_of(&h, None), Some(hash64("abc")));
        assert_eq!(
            HashKey::parse("cookie:nope").and_then(|k| k.hash_of(&h, None)),
            None
        );
        let ip: IpAddr = "192.0.2.1".parse().expect("valid");
        assert!(HashKey::ClientAddr.hash_of(&h, Some(ip)).is_some());
        assert!(HashKey::parse("header:bad name").is_none());
        assert!(HashKey::parse("body").is_none());
    }
}
