//! Staged rollout of a new plugin version: while the old version serves, the new one (the
//! candidate) takes a growing share of the plugin's invocations; its failures (trap,
//! deadline, out of memory) are counted, and past the threshold it is rolled back, otherwise
//! promoted after the last step.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::loader::LoadedPlugin;

/// How a new version of a plugin that is already serving goes live (`[plugins.rollout]`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RolloutPolicy {
    /// Shares of invocations (percent, increasing, the last 100) the candidate gets, one step
    /// per `step_interval`. `[100]` (the default) swaps at once, without a candidate phase.
    pub steps: Vec<u8>,
    /// How long each step lasts.
    #[serde(serialize_with = "crate::serialize::as_humantime")]
    pub step_interval: Duration,
    /// Failed share of the candidate's invocations past which it is rolled back.
    pub max_failure_ratio: f64,
    /// Invocations of the candidate before its failure ratio is judged.
    pub min_invocations: u64,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            steps: vec![100],
            step_interval: Duration::from_secs(30),
            max_failure_ratio: 0.05,
            min_invocations: 20,
        }
    }
}

impl RolloutPolicy {
    /// Whether a new version goes through a candidate phase at all.
    pub fn staged(&self) -> bool {
        self.steps.iter().any(|&s| s < 100)
    }
}

/// A candidate version during its rollout, shared by the chains that pick it.
pub struct Canary {
    /// The candidate; its optimized build replaces its baseline one in place.
    pub version: ArcSwap<LoadedPlugin>,
    share: AtomicU8,
    invocations: AtomicU64,
    failures: AtomicU64,
}

impl Canary {
    pub fn new(version: Arc<LoadedPlugin>, share: u8) -> Self {
        Canary {
            version: ArcSwap::new(version),
            share: AtomicU8::new(share.min(100)),
            invocations: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Whether the request with `request_id` runs the candidate: the same answer for the
    /// same request id at the same share, so one request sees one version in all phases.
    pub fn picks(&self, request_id: &str) -> bool {
        // FNV-1a: cheap, and stable across processes (no random seed).
        let mut h: u32 = 0x811c_9dc5;
        for b in request_id.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        (h % 100) < u32::from(self.share.load(Ordering::Relaxed))
    }

    pub fn set_share(&self, share: u8) {
        self.share.store(share.min(100), Ordering::Relaxed);
    }

    pub fn share(&self) -> u8 {
        self.share.load(Ordering::Relaxed)
    }

    /// One invocation of the candidate ended; `failed`: it trapped, ran past its deadline or
    /// out of memory.
    pub fn record(&self, failed: bool) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (invocations, failures) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.invocations.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// Why the candidate must be rolled back under `policy`, if it must.
    pub fn verdict(&self, policy: &RolloutPolicy) -> Option<String> {
        let (n, failed) = self.counts();
        verdict(n, failed, policy)
    }
}

/// Why a candidate with `failed` of `n` invocations failed must be rolled back, if it must.
fn verdict(n: u64, failed: u64, policy: &RolloutPolicy) -> Option<String> {
    if n < policy.min_invocations.max(1) {
        return None;
    }
    let ratio = failed as f64 / n as f64;
    (ratio > policy.max_failure_ratio).then(|| {
        format!(
            "rolled back: {failed} of {n} invocations failed ({:.1} % > max_failure_ratio {:.1} %)",
            ratio * 100.0,
            policy.max_failure_ratio * 100.0
        )
    })
}

/// What `/admin/plugins` shows of a rollout in progress.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RolloutStatus {
    /// SHA-256 of the candidate.
    pub hash: String,
    /// Percent of invocations it gets now.
    pub share: u8,
    pub invocations: u64,
    pub failures: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_waits_for_enough_invocations_then_compares_the_ratio() {
        let policy = RolloutPolicy {
            min_invocations: 10,
            max_failure_ratio: 0.2,
            ..RolloutPolicy::default()
        };
        assert_eq!(verdict(9, 9, &policy), None, "too few to judge");
        assert_eq!(verdict(10, 2, &policy), None, "20 % is not over 20 %");
        let reason = verdict(10, 3, &policy).expect("30 % is over");
        assert!(reason.contains("3 of 10"), "{reason}");
    }

    #[test]
    fn staged_means_some_step_below_100() {
        assert!(!RolloutPolicy::default().staged());
        let staged = RolloutPolicy {
            steps: vec![5, 25, 100],
            ..RolloutPolicy::default()
        };
        assert!(staged.staged());
    }
}
