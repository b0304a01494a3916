//! Per-policy backoff: kube-runtime keeps none, so retries of one policy
//! grow on their own and reset when the policy settles.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use rand::Rng;

/// Doubling delays with jitter, from `base` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub base: Duration,
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        // The IM client has already retried each call with its own backoff
        // (up to 8 attempts): a pass-level retry can afford to start slower.
        Self { base: Duration::from_secs(5), max: Duration::from_secs(300) }
    }
}

impl BackoffPolicy {
    /// The delay before retry number `failures` (1 for the first), with
    /// jitter in [d/2, d] so many policies failing together spread out.
    pub fn delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(20);
        let full = self.base.saturating_mul(1u32 << exponent).min(self.max);
        let half = full / 2;
        half + (full - half).mul_f64(rand::rng().random::<f64>())
    }
}

/// Consecutive failed passes per policy key.
#[derive(Debug, Default)]
pub struct Backoffs {
    policy: BackoffPolicy,
    failures: Mutex<HashMap<String, u32>>,
    /// Set to how many policies have a backoff in progress.
    retrying: Gauge,
}

impl Backoffs {
    pub fn new(policy: BackoffPolicy, retrying: Gauge) -> Self {
        Self { policy, failures: Mutex::new(HashMap::new()), retrying }
    }

    /// Counts one more failed pass of `key` and returns how long to wait.
    pub fn next_delay(&self, key: &str) -> Duration {
        self.change(|failures| {
            let count = failures.entry(key.to_string()).or_insert(0);
            *count = count.saturating_add(1);
            self.policy.delay(*count)
        })
    }

    /// The policy settled (done, stalled, suspended) or was deleted.
    pub fn reset(&self, key: &str) {
        self.change(|failures| failures.remove(key));
    }

    /// Keeps the backoffs of the policies `keep` says yes to.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.change(|failures| failures.retain(|key, _| keep(key)));
    }

    /// Applies `change` and publishes how many policies are retrying.
    fn change<T>(&self, change: impl FnOnce(&mut HashMap<String, u32>) -> T) -> T {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let result = change(&mut failures);
        self.retrying.set(failures.len() as i64);
        result
    }

    /// Policies with a backoff in progress.
    pub fn len(&self) -> usize {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True while `key` has a backoff in progress.
    pub fn has(&self, key: &str) -> bool {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every delay lies within [d/2, d] of the doubling schedule, capped.
        #[test]
        fn delays_double_within_jitter_and_cap(failures in 1u32..100) {
            let policy = BackoffPolicy::default();
            let full = policy.base.saturating_mul(1u32 << (failures - 1).min(20)).min(policy.max);
            let delay = policy.delay(failures);
            prop_assert!(delay >= full / 2 && delay <= full, "{:?} vs {:?}", delay, full);
        }
    }

    /// Each policy backs off on its own; success starts it over.
    #[test]
    fn backoff_is_per_policy_and_resets() {
        let retrying = Gauge::default();
        let backoffs = Backoffs::new(
            BackoffPolicy { base: Duration::from_secs(1), max: Duration::from_secs(60) },
            retrying.clone(),
        );
        for _ in 0..4 {
            backoffs.next_delay("ns/a");
        }
        assert!(backoffs.next_delay("ns/a") >= Duration::from_secs(8), "fifth failure: 16 s with jitter");
        assert!(backoffs.next_delay("ns/b") <= Duration::from_secs(1), "another policy starts at the base");
        assert_eq!(retrying.get(), 2, "the gauge counts policies, not failures");
        assert!(!backoffs.is_empty() && backoffs.has("ns/a") && !backoffs.has("ns/c"));
        backoffs.reset("ns/a");
        assert!(backoffs.next_delay("ns/a") <= Duration::from_secs(1));
        backoffs.reset("ns/a");
        backoffs.reset("ns/b");
        assert!(backoffs.is_empty());
    }
}
