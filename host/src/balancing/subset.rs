//! Gray release by instance metadata and zone preference: which part of a service's backends
//! a request may go to (docs/traffic.md).
//!
//! A service's backends are split into groups when its balancer is rebuilt: each gray subset
//! (the backends whose registry metadata matches it, first subset in config order wins) and
//! the base set (backends in no subset). Per request, [`GrayPolicy::select`] names the group
//! (predicates first, in config order, then the weights), and the pool has already resolved
//! each group's fallback and zone preference into its own balancer, so a pick costs one
//! index more than a plain service's.

use std::sync::Arc;

use http::HeaderMap;
use rand::RngExt;
use serde::Serialize;

use super::Backend;
use crate::discovery::EndpointMeta;
use crate::matching::RequestMatch;

/// Which instances form a subset: every key given must match (`version`, `zone`, and `tag`,
/// which must be one of the instance's tags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetadataSelector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl MetadataSelector {
    /// The metadata keys a selector accepts, for error messages.
    pub const KEYS: &'static str = "version, zone, tag";

    /// Whether an instance with `meta` belongs to the subset.
    pub fn matches(&self, meta: &EndpointMeta) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| match want {
            None => true,
            Some(w) => have.as_deref() == Some(w.as_str()),
        };
        eq(&self.version, &meta.version)
            && eq(&self.zone, &meta.zone)
            && self
                .tag
                .as_ref()
                .is_none_or(|t| meta.tags.iter().any(|x| x == t))
    }
}

/// One gray subset (`[[services.gray]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraySubset {
    pub metadata: MetadataSelector,
    /// Percent (0..=100) of the requests no predicate claimed; 0: only `matcher` sends
    /// traffic here.
    pub weight: u8,
    /// Requests matching this always go to the subset.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matcher: Option<RequestMatch>,
}

/// A service's gray subsets, in config order (validated: weights sum to at most 100).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct GrayPolicy {
    subsets: Vec<GraySubset>,
}

impl GrayPolicy {
    pub fn new(subsets: Vec<GraySubset>) -> Self {
        Self { subsets }
    }

    pub fn subsets(&self) -> &[GraySubset] {
        &self.subsets
    }

    /// The subset an instance belongs to: the first whose metadata it matches.
    pub fn member_of(&self, meta: &EndpointMeta) -> Option<usize> {
        self.subsets.iter().position(|s| s.metadata.matches(meta))
    }

    /// The subset a request goes to, `None` for the base set. Predicates first, in config
    /// order; then the weights share a roll of 0..100, taken from `hash` (the service's
    /// `hash_key`) when the request has one, so one user stays on one side, else at random.
    pub fn select(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        hash: Option<u64>,
    ) -> Option<usize> {
        if let Some(i) = self.subsets.iter().position(|s| {
            s.matcher
                .as_ref()
                .is_some_and(|m| m.matches(headers, query))
        }) {
            return Some(i);
        }
        let roll = match hash {
            // Mixed first: the ring hash uses the same key, and its low bits alone would
            // correlate the gray share with ring positions.
            Some(h) => (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 100,
            None => rand::rng().random_range(0..100u64),
        };
        let mut upto = 0u64;
        for (i, s) in self.subsets.iter().enumerate() {
            upto += u64::from(s.weight);
            if roll < upto {
                return Some(i);
            }
        }
        None
    }
}

/// Zone-aware balancing (`services.zone_aware`): prefer backends whose registry zone is the
/// gateway's own while at least `min_healthy` of them can take traffic, else use all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZonePolicy {
    /// The gateway's zone (`gateway.zone`).
    pub local: Arc<str>,
    /// Fewest local backends that keep traffic local (default 1).
    pub min_healthy: usize,
}

impl ZonePolicy {
    /// The backends of `group` traffic goes to: the local ones, or all when too few.
    pub fn prefer(&self, group: Vec<Arc<Backend>>) -> Vec<Arc<Backend>> {
        let local = |b: &Arc<Backend>| b.endpoint.meta.zone.as_deref() == Some(&*self.local);
        let n = group.iter().filter(|b| local(b)).count();
        if n >= self.min_healthy && n < group.len() {
            group.into_iter().filter(local).collect()
        } else {
            group
        }
    }
}

/// How a service's backends are grouped: gray subsets and zone preference. Default: neither
/// (one group, as before).
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub gray: Option<Arc<GrayPolicy>>,
    pub zone: Option<ZonePolicy>,
}

impl Placement {
    pub fn is_plain(&self) -> bool {
        self.gray.is_none() && self.zone.is_none()
    }

    /// Splits `candidates` (healthy backends, or all open ones in panic mode) into the base
    /// group and one group per subset, each resolved to what traffic for it goes to: a subset
    /// with no candidate falls back to the base group, and an empty base group to every
    /// candidate; then the zone preference narrows each.
    pub fn groups(
        &self,
        candidates: Vec<Arc<Backend>>,
    ) -> (Vec<Arc<Backend>>, Vec<Vec<Arc<Backend>>>) {
        let n = self.gray.as_ref().map_or(0, |g| g.subsets().len());
        let mut base = Vec::with_capacity(candidates.len());
        let mut subsets = vec![Vec::new(); n];
        for b in &candidates {
            match self
                .gray
                .as_ref()
                .and_then(|g| g.member_of(&b.endpoint.meta))
            {
                Some(i) => subsets[i].push(Arc::clone(b)),
                None => base.push(Arc::clone(b)),
            }
        }
        if base.is_empty() {
            base = candidates;
        }
        for s in &mut subsets {
            if s.is_empty() {
                s.clone_from(&base);
            }
        }
        if let Some(zone) = &self.zone {
            base = zone.prefer(base);
            subsets = subsets.into_iter().map(|s| zone.prefer(s)).collect();
        }
        (base, subsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancing::test_support::backends;
    use crate::matching::ValueMatch;
    use http::HeaderName;

    fn meta(version: Option<&str>, zone: Option<&str>, tags: &[&str]) -> EndpointMeta {
        EndpointMeta {
            version: version.map(str::to_owned),
            zone: zone.map(str::to_owned),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            ..EndpointMeta::default()
        }
    }

    fn v2(weight: u8, matcher: Option<RequestMatch>) -> GraySubset {
        GraySubset {
            metadata: MetadataSelector {
                version: Some("v2".into()),
                ..MetadataSelector::default()
            },
            weight,
            matcher,
        }
    }

    #[test]
    fn selector_needs_every_key_given() {
        let s = MetadataSelector {
            version: Some("v2".into()),
            tag: Some("canary".into()),
            ..MetadataSelector::default()
        };
        assert!(s.matches(&meta(Some("v2"), None, &["x", "canary"])));
        assert!(!s.matches(&meta(Some("v2"), None, &["x"])));
        assert!(!s.matches(&meta(Some("v1"), None, &["canary"])));
        assert!(!s.matches(&meta(None, None, &[])));
    }

    #[test]
    fn predicates_win_over_weights_and_match_headers_cookies_query() {
        let m = RequestMatch {
            headers: vec![(HeaderName::from_static("x-canary"), ValueMatch::Present)],
            cookies: vec![("beta".into(), ValueMatch::Exact("1".into()))],
            query: vec![],
        };
        let policy = GrayPolicy::new(vec![v2(0, Some(m))]);
        let mut h = HeaderMap::new();
        assert_eq!(policy.select(&h, None, None), None, "weight 0, no match");
        h.insert("x-canary", "yes".parse().expect("valid"));
        assert_eq!(policy.select(&h, None, None), None, "cookie missing");
        h.insert("cookie", "a=b; beta=1".parse().expect("valid"));
        assert_eq!(policy.select(&h, None, None), Some(0));

        let q = RequestMatch {
            query: vec![("gray".into(), ValueMatch::Exact("on".into()))],
            ..RequestMatch::default()
        };
        let policy = GrayPolicy::new(vec![v2(0, Some(q))]);
        assert_eq!(
            policy.select(&HeaderMap::new(), Some("a=1&gray=on"), None),
            Some(0)
        );
        assert_eq!(
            policy.select(&HeaderMap::new(), Some("gray=off"), None),
            None
        );
    }

    #[test]
    fn weights_hold_their_share_and_a_hash_sticks() {
        let policy = GrayPolicy::new(vec![v2(5, None)]);
        let h = HeaderMap::new();
        let gray = (0..20_000)
            .filter(|_| policy.select(&h, None, None).is_some())
            .count();
        assert!((800..1200).contains(&gray), "5 % of 20000, got {gray}");
        let full = GrayPolicy::new(vec![v2(100, None)]);
        assert!((0..100).all(|_| full.select(&h, None, None) == Some(0)));
        // With a hash key, one key always lands on the same side; keys spread by weight.
        let sticky = (0..10_000u64)
            .filter(|k| {
                let first = policy.select(&h, None, Some(k.wrapping_mul(7919)));
                assert_eq!(first, policy.select(&h, None, Some(k.wrapping_mul(7919))));
                first.is_some()
            })
            .count();
        assert!((350..650).contains(&sticky), "5 % of keys, got {sticky}");
    }

    #[test]
    fn groups_isolate_subsets_and_fall_back() {
        let b = backends(4, |_| 1);
        let with = |i: usize, m: EndpointMeta| {
            let mut e = b[i].endpoint.clone();
            e.meta = m;
            Arc::new(Backend::new(e, crate::conn::ConnSettings::default()))
        };
        let v1a = with(0, meta(Some("v1"), Some("eu"), &[]));
        let v1b = with(1, meta(Some("v1"), Some("us"), &[]));
        let v2a = with(2, meta(Some("v2"), Some("eu"), &[]));
        let placement = Placement {
            gray: Some(Arc::new(GrayPolicy::new(vec![v2(5, None)]))),
            zone: None,
        };
        let ids = |v: &[Arc<Backend>]| {
            v.iter()
                .map(|b| b.endpoint.id.to_string())
                .collect::<Vec<_>>()
        };
        let (base, subs) = placement.groups(vec![v1a.clone(), v1b.clone(), v2a.clone()]);
        assert_eq!(ids(&base), ["b0", "b1"], "v2 gets no ordinary traffic");
        assert_eq!(ids(&subs[0]), ["b2"]);
        // The subset's instances gone: its traffic goes to the base set.
        let (_, subs) = placement.groups(vec![v1a.clone(), v1b.clone()]);
        assert_eq!(ids(&subs[0]), ["b0", "b1"]);
        // No base instance: ordinary traffic goes to the subsets' instances.
        let (base, _) = placement.groups(vec![v2a.clone()]);
        assert_eq!(ids(&base), ["b2"]);

        // Zones inside groups: local first, all when the local ones are too few.
        let zoned = Placement {
            zone: Some(ZonePolicy {
                local: Arc::from("eu"),
                min_healthy: 1,
            }),
            ..placement.clone()
        };
        let (base, _) = zoned.groups(vec![v1a.clone(), v1b.clone(), v2a.clone()]);
        assert_eq!(ids(&base), ["b0"]);
        let (base, _) = zoned.groups(vec![v1b.clone(), v2a.clone()]);
        assert_eq!(ids(&base), ["b1"], "no local v1: spill over to us");
        let two = Placement {
            zone: Some(ZonePolicy {
                local: Arc::from("eu"),
                min_healthy: 2,
            }),
            gray: None,
        };
        let (base, _) = two.groups(vec![v1a.clone(), v1b.clone()]);
        assert_eq!(
            ids(&base),
            ["b0", "b1"],
            "one local is below the minimum of 2"
        );
        let (base, _) = two.groups(vec![v1a, v1b, v2a]);
        assert_eq!(
            ids(&base),
            ["b0", "b2"],
            "two local ones keep traffic local"
        );
    }
}
