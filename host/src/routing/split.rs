//! A route's target: one service, or a weighted split over several (canary, blue-green).
//!
//! A split lays its targets' weights end to end on `[0, total)`, in the order written. A
//! request takes the target whose range holds its point: a random point, or with `sticky` a
//! point computed from the request's key (header, cookie, client address) scaled onto the
//! range. The scaling keeps a key's *relative* position (`hash / 2^64`), so when the weights
//! change only the keys between an old and a new boundary move: going from 95/5 to 90/10
//! moves the users in (0.90, 0.95] and no one else, and adding a target at the end takes
//! its share from the end.
//!
//! Picking is a few integer operations: no lock, no allocation. A one-service route does not
//! pick at all.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use rand::RngExt;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::respond::StaticResponse;
use crate::balancing::HashKey;
use crate::upstream::ServiceName;

/// The largest weight a split target may have. Weights are relative: 95/5 and 950/50 are the
/// same split; the cap only keeps the sum far from overflow and the numbers readable.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// Where a route sends its requests (`service = "x"`, or `[[routes.split]]`), or what it
/// answers by itself (`[routes.respond]`, `[routes.redirect]`).
#[derive(Debug, Clone)]
pub enum RouteTarget {
    /// Every request goes to this service.
    Service(ServiceName),
    /// Each request goes to one of several services, by weight.
    Split(Arc<Split>),
    /// No service: the gateway answers (a fixed response or a redirect).
    Static(Arc<StaticResponse>),
}

/// What a request's route target comes to: a service (with the split target's shared name
/// when a split chose it, for the access log), or the route's own answer.
#[derive(Debug)]
pub enum Pick<'a> {
    Service(&'a ServiceName, Option<&'a Arc<String>>),
    Static(&'a StaticResponse),
}

/// A weighted choice between services, validated (see [`Split::new`]).
#[derive(Debug)]
pub struct Split {
    targets: Box<[SplitTarget]>,
    /// `ends[i]` = sum of the weights of targets `0..=i`; the last one is the total.
    ends: Box<[u64]>,
    sticky: Option<HashKey>,
}

/// One service of a split and its weight.
#[derive(Debug, Clone)]
pub struct SplitTarget {
    pub service: ServiceName,
    pub weight: u32,
    /// The service's name, shared with the access log and the metric labels (no copy per
    /// request).
    label: Arc<String>,
}

/// Why targets and weights cannot form a split. Each names the target (`split[i]`) it is
/// about, so that config and the admin API can point at the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("a split needs at least one target")]
    Empty,
    #[error("{weight} is not a weight; expected a positive integer up to {MAX_WEIGHT}")]
    Weight { index: usize, weight: i64 },
    #[error(
        "service {service:?} appears twice in the split; give it one entry with the summed weight"
    )]
    Duplicate { index: usize, service: String },
}

impl SplitError {
    /// The field the error is about, relative to the split: `split`, `split[1].weight`,
    /// `split[2].service`.
    pub fn field(&self) -> String {
        match self {
            SplitError::Empty => "split".to_owned(),
            SplitError::Weight { index, .. } => format!("split[{index}].weight"),
            SplitError::Duplicate { index, .. } => format!("split[{index}].service"),
        }
    }
}

// --- impl RouteTarget ---

impl RouteTarget {
    /// The service this request goes to, or the route's own answer. A one-service route costs
    /// one branch here.
    ///
    /// `headers` and `client` feed a sticky split's key; a request without the key gets a
    /// random point, so the weights still hold.
    #[inline]
    pub fn service_for(&self, headers: &HeaderMap, client: IpAddr) -> Pick<'_> {
        match self {
            RouteTarget::Service(service) => Pick::Service(service, None),
            RouteTarget::Split(split) => {
                let t = split.pick(headers, client);
                Pick::Service(&t.service, Some(&t.label))
            }
            RouteTarget::Static(answer) => Pick::Static(answer),
        }
    }

    /// The split's targets; a one-service route reads as one target of weight 1, a route
    /// that answers by itself as none.
    pub fn targets(&self) -> Vec<(ServiceName, u32)> {
        match self {
            RouteTarget::Static(_) => Vec::new(),
            RouteTarget::Service(s) => vec![(s.clone(), 1)],
            RouteTarget::Split(split) => split
                .targets
                .iter()
                .map(|t| (t.service.clone(), t.weight))
                .collect(),
        }
    }

    /// The split's sticky key, if any.
    pub fn sticky(&self) -> Option<&HashKey> {
        match self {
            RouteTarget::Service(_) | RouteTarget::Static(_) => None,
            RouteTarget::Split(split) => split.sticky.as_ref(),
        }
    }

    /// This target with every `from` replaced by `to` (their weights added when the split
    /// already holds `to`); `None` when `from` is not among its services.
    pub fn replace_service(&self, from: &ServiceName, to: &ServiceName) -> Option<RouteTarget> {
        match self {
            RouteTarget::Service(s) if s == from => Some(RouteTarget::Service(to.clone())),
            RouteTarget::Service(_) | RouteTarget::Static(_) => None,
            RouteTarget::Split(split) => {
                let from_weight = split.targets.iter().find(|t| &t.service == from)?.weight;
                let mut targets: Vec<(ServiceName, u32)> = Vec::new();
                for t in split.targets.iter() {
                    if &t.service == from {
                        if split.targets.iter().any(|o| &o.service == to) {
                            continue; // added to `to`'s own entry below
                        }
                        targets.push((to.clone(), t.weight));
                    } else if &t.service == to {
                        let sum = t.weight.saturating_add(from_weight).min(MAX_WEIGHT);
                        targets.push((to.clone(), sum));
                    } else {
                        targets.push((t.service.clone(), t.weight));
                    }
                }
                // Valid by construction (non-empty, positive, distinct); a one-target split
                // stays a split, so its sticky key is kept for a later canary.
                Split::new(targets, split.sticky.clone())
                    .ok()
                    .map(|s| RouteTarget::Split(Arc::new(s)))
            }
        }
    }
}

/// `{"service": "x"}` or `{"split": [{"service": "x", "weight": 95}, …], "sticky": "…"}`:
/// the config file's keys, flattened into the route by `RouteConfig`.
impl Serialize for RouteTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RouteTarget::Service(service) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("service", service)?;
                map.end()
            }
            RouteTarget::Split(split) => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("split", &*split.targets)?;
                map.serialize_entry("sticky", &split.sticky.as_ref().map(|k| k.to_string()))?;
                map.end()
            }
            RouteTarget::Static(answer) => {
                let mut map = s.serialize_map(Some(1))?;
                let key = match answer.redirect {
                    Some(_) => "redirect",
                    None => "respond",
                };
                map.serialize_entry(key, &**answer)?;
                map.end()
            }
        }
    }
}

impl Serialize for SplitTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("service", &self.service)?;
        map.serialize_entry("weight", &self.weight)?;
        map.end()
    }
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteTarget::Service(s) => write!(f, "{s}"),
            RouteTarget::Static(answer) => match &answer.redirect {
                Some(r) => write!(f, "redirect {} to {}", answer.status.as_u16(), r.location),
                None => write!(f, "static {}", answer.status.as_u16()),
            },
            RouteTarget::Split(split) => {
                for (i, t) in split.targets.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{}={}", t.service, t.weight)?;
                }
                Ok(())
            }
        }
    }
}

// --- impl Split ---

impl Split {
    /// A split over `targets` in this order. Weights must be `1..=MAX_WEIGHT` and services
    /// distinct; whether the services exist is the caller's business (config and the admin
    /// API know the service list, routing does not).
    pub fn new(
        targets: impl IntoIterator<Item = (ServiceName, u32)>,
        sticky: Option<HashKey>,
    ) -> Result<Self, SplitError> {
        let targets: Vec<(ServiceName, u32)> = targets.into_iter().collect();
        Self::check(targets.iter().map(|(s, w)| (s.0.as_str(), i64::from(*w))))?;
        let mut sum = 0u64;
        let ends = targets
            .iter()
            .map(|(_, w)| {
                sum += u64::from(*w);
                sum
            })
            .collect();
        let targets = targets
            .into_iter()
            .map(|(service, weight)| SplitTarget {
                label: Arc::new(service.0.clone()),
                service,
                weight,
            })
            .collect();
        Ok(Split {
            targets,
            ends,
            sticky,
        })
    }

    /// The first problem with these (service, weight) pairs, as written by a user: weights
    /// are taken as `i64` so that config and JSON can report a negative or too-large one.
    pub fn check<'a>(targets: impl IntoIterator<Item = (&'a str, i64)>) -> Result<(), SplitError> {
        let mut seen: Vec<&str> = Vec::new();
        for (index, (service, weight)) in targets.into_iter().enumerate() {
            if !(1..=i64::from(MAX_WEIGHT)).contains(&weight) {
                return Err(SplitError::Weight { index, weight });
            }
            if seen.contains(&service) {
                return Err(SplitError::Duplicate {
                    index,
                    service: service.to_owned(),
                });
            }
            seen.push(service);
        }
        if seen.is_empty() {
            return Err(SplitError::Empty);
        }
        Ok(())
    }

    /// The targets, in order.
    pub fn targets(&self) -> &[SplitTarget] {
        &self.targets
    }

    /// The target for this request.
    pub fn pick(&self, headers: &HeaderMap, client: IpAddr) -> &SplitTarget {
        let total = self.ends.last().copied().unwrap_or(1);
        let point = match self
            .sticky
            .as_ref()
            .and_then(|key| key.hash_of(headers, Some(client)))
        {
            Some(hash) => scale(hash, total),
            None => rand::rng().random_range(0..total),
        };
        self.at(point)
    }

    /// The target whose range holds `point` (`0 <= point < total`).
    fn at(&self, point: u64) -> &SplitTarget {
        // A handful of targets: a linear scan beats a binary search.
        let i = self.ends.iter().take_while(|&&end| end <= point).count();
        &self.targets[i.min(self.targets.len() - 1)]
    }
}

/// `hash / 2^64`, scaled onto `[0, total)`: a key keeps its relative position whatever the
/// total, which is what makes a weight change move only the keys near a boundary.
fn scale(hash: u64, total: u64) -> u64 {
    ((u128::from(hash) * u128::from(total)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(weights: &[(&str, u32)], sticky: Option<&str>) -> Split {
        Split::new(
            weights
                .iter()
                .map(|(s, w)| (ServiceName((*s).to_owned()), *w)),
            sticky.map(|k| HashKey::parse(k).expect("a valid key")),
        )
        .expect("a valid split")
    }

    fn ip() -> IpAddr {
        IpAddr::from([192, 0, 2, 1])
    }

    fn user(id: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-user", id.to_string().parse().expect("header value"));
        h
    }

    #[test]
    fn random_picks_hold_the_weights() {
        let s = split(&[("blue", 95), ("green", 5)], None);
        let n = 100_000;
        let green = (0..n)
            .filter(|_| s.pick(&HeaderMap::new(), ip()).service.0 == "green")
            .count();
        let share = green as f64 / f64::from(n);
        assert!((0.045..0.055).contains(&share), "green share {share}");
    }

    #[test]
    fn points_map_onto_ranges_in_order() {
        let s = split(&[("a", 1), ("b", 2), ("c", 3)], None);
        let names: Vec<&str> = (0..6).map(|p| s.at(p).service.0.as_str()).collect();
        assert_eq!(names, ["a", "b", "b", "c", "c", "c"]);
    }

    #[test]
    fn sticky_keys_hold_the_weights_and_stay_put() {
        let s = split(&[("blue", 90), ("green", 10)], Some("header:x-user"));
        let first: Vec<&str> = (0..20_000)
            .map(|u| s.pick(&user(u), ip()).service.0.as_str())
            .collect();
        let green = first.iter().filter(|n| **n == "green").count();
        let share = green as f64 / 20_000.0;
        assert!((0.085..0.115).contains(&share), "green share {share}");
        for (u, name) in first.iter().enumerate() {
            assert_eq!(
                s.pick(&user(u as u64), ip()).service.0,
                *name,
                "user {u} moved"
            );
        }
    }

    #[test]
    fn a_weight_change_moves_only_the_moved_share() {
        let before = split(&[("blue", 95), ("green", 5)], Some("header:x-user"));
        let after = split(&[("blue", 90), ("green", 10)], Some("header:x-user"));
        let (mut moved, n) = (0, 20_000u64);
        for u in 0..n {
            let (b, a) = (
                &before.pick(&user(u), ip()).service.0,
                &after.pick(&user(u), ip()).service.0,
            );
            if b != a {
                assert_eq!((b.as_str(), a.as_str()), ("blue", "green"), "user {u}");
                moved += 1;
            }
        }
        let share = moved as f64 / n as f64;
        assert!((0.04..0.06).contains(&share), "moved share {share}");
        // Scaling the weights (95/5 → 950/50) moves no one.
        let scaled = split(&[("blue", 950), ("green", 50)], Some("header:x-user"));
        assert!((0..n).all(
            |u| before.pick(&user(u), ip()).service.0 == scaled.pick(&user(u), ip()).service.0
        ));
    }

    #[test]
    fn requests_without_the_key_still_follow_the_weights() {
        let s = split(&[("blue", 50), ("green", 50)], Some("cookie:session"));
        let green = (0..10_000)
            .filter(|_| s.pick(&HeaderMap::new(), ip()).service.0 == "green")
            .count();
        assert!((4_500..5_500).contains(&green), "{green} of 10000 keyless");
    }

    #[test]
    fn bad_splits_name_their_field() {
        let err = |t: &[(&str, i64)]| Split::check(t.iter().copied()).expect_err("refused");
        assert_eq!(err(&[]).field(), "split");
        assert_eq!(err(&[("a", 1), ("b", 0)]).field(), "split[1].weight");
        assert_eq!(err(&[("a", -3)]).field(), "split[0].weight");
        assert_eq!(err(&[("a", 2_000_000)]).field(), "split[0].weight");
        assert_eq!(err(&[("a", 1), ("a", 2)]).field(), "split[1].service");
    }

    #[test]
    fn replacing_a_service_merges_weights() {
        let blue = ServiceName("blue".into());
        let green = ServiceName("green".into());
        let t = RouteTarget::Split(Arc::new(split(&[("blue", 95), ("green", 5)], None)));
        let switched = t
            .replace_service(&blue, &green)
            .expect("blue is in the split");
        assert_eq!(switched.targets(), vec![(green.clone(), 100)]);
        let one = RouteTarget::Service(blue.clone());
        assert_eq!(
            one.replace_service(&blue, &green).map(|t| t.targets()),
            Some(vec![(green.clone(), 1)])
        );
        assert!(RouteTarget::Service(green.clone())
            .replace_service(&blue, &green)
            .is_none());
    }
}
