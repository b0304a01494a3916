//! What the controller remembers of each policy between reconciles, kept
//! in one place so that forgetting a policy forgets all of it: its backoff
//! (kube-runtime keeps none), when its drift check was last attempted, and
//! our status writes whose echo the cache has not shown yet.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use prometheus_client::metrics::gauge::Gauge;

use super::backoff::{BackoffPolicy, Backoffs};
use super::status_writer::PendingEchoes;
use kube::ResourceExt;

use crate::crd::{GroupBanPolicy, GroupBanPolicyStatus};

/// The policy's `namespace/name`.
pub fn policy_key(policy: &GroupBanPolicy) -> String {
    format!("{}/{}", policy.namespace().unwrap_or_default(), policy.name_any())
}

/// Per-policy memory, keyed by `namespace/name`.
#[derive(Debug)]
pub struct PolicyMemory {
    backoffs: Backoffs,
    /// When each policy's drift check was last attempted (successful or
    /// not). Kept here rather than written: a check that finds nothing
    /// changes nothing a user needs to see.
    drift_attempts: Mutex<HashMap<String, Timestamp>>,
    /// Status writes the cache has not shown yet.
    echoes: PendingEchoes,
}

impl PolicyMemory {
    /// `retrying` is set to how many policies are on their backoff.
    pub fn new(backoff: BackoffPolicy, retrying: Gauge) -> Self {
        Self {
            backoffs: Backoffs::new(backoff, retrying),
            drift_attempts: Mutex::default(),
            echoes: PendingEchoes::default(),
        }
    }

    /// Counts one more failed pass of `key` and returns how long to wait.
    pub fn backoff_after_failure(&self, key: &str) -> Duration {
        self.backoffs.next_delay(key)
    }

    /// The policy settled (done, stalled, suspended): its backoff starts over.
    pub fn settled(&self, key: &str) {
        self.backoffs.reset(key);
    }

    /// Policies waiting on their backoff.
    pub fn retrying(&self) -> usize {
        self.backoffs.len()
    }

    /// A drift check of `key` was attempted at `at`.
    pub fn drift_attempted(&self, key: &str, at: Timestamp) {
        self.drift_attempts.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), at);
    }

    /// The later of the remembered attempt and the last check in status
    /// (which survives a restart).
    pub fn last_drift_attempt(&self, key: &str, status: &GroupBanPolicyStatus) -> Option<Timestamp> {
        let remembered = self.drift_attempts.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied();
        let written = status.drift.as_ref().map(|d| d.last_check_time.0);
        remembered.max(written)
    }

    /// Our status write of `key` at `version`; `cached` reads the version
    /// the cache holds now (see [`PendingEchoes::wrote`]).
    pub fn wrote_status(&self, key: &str, version: String, cached: impl FnOnce() -> Option<String>) {
        self.echoes.wrote(key, version, cached);
    }

    /// The cache shows `key` at `version`.
    pub fn seen(&self, key: &str, version: Option<&str>) {
        self.echoes.seen(key, version);
    }

    /// True while a reconcile of `key` must wait for the echo of our last
    /// write (see [`PendingEchoes::awaited`]).
    pub fn awaits_echo(&self, key: &str, cached_version: Option<&str>) -> bool {
        self.echoes.awaited(key, cached_version)
    }

    /// The resourceVersion of our last status write of `key`.
    pub fn last_written(&self, key: &str) -> Option<String> {
        self.echoes.last_written(key)
    }

    /// Status writes whose echo has not been seen yet.
    pub fn pending_echoes(&self) -> usize {
        self.echoes.len()
    }

    /// Forgets everything about `key` (deleted, or gone in a relist).
    pub fn forget(&self, key: &str) {
        self.echoes.forget(key);
        self.backoffs.reset(key);
        self.drift_attempts.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// Forgets every policy but those in `live`: kube-runtime does not
    /// reconcile a deleted object, and a process that runs for months sees
    /// many come and go. (Echoes go too: before they lived apart, the last
    /// write of a policy deleted during a watch gap stayed for good.)
    pub fn forget_all_except(&self, live: &HashSet<String>) {
        self.backoffs.retain(|key| live.contains(key));
        self.drift_attempts.lock().unwrap_or_else(|e| e.into_inner()).retain(|key, _| live.contains(key));
        self.echoes.retain(|key| live.contains(key));
    }

    /// True when anything is remembered of `key`.
    pub fn remembers(&self, key: &str) -> bool {
        self.backoffs.has(key)
            || self.drift_attempts.lock().unwrap_or_else(|e| e.into_inner()).contains_key(key)
            || self.echoes.last_written(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forgetting a policy forgets its backoff, drift attempt and writes;
    /// forgetting all but some keeps exactly those.
    #[test]
    fn forgetting_a_policy_forgets_all_of_it() {
        let retrying = Gauge::default();
        let memory = PolicyMemory::new(BackoffPolicy::default(), retrying.clone());
        for key in ["ns/a", "ns/b", "ns/c"] {
            memory.backoff_after_failure(key);
            memory.drift_attempted(key, Timestamp::UNIX_EPOCH);
            memory.wrote_status(key, "9".into(), || None);
        }
        assert_eq!((memory.retrying(), retrying.get()), (3, 3));
        memory.forget("ns/a");
        assert!(!memory.remembers("ns/a"));
        memory.forget_all_except(&["ns/b".to_string()].into());
        assert!(memory.remembers("ns/b") && !memory.remembers("ns/c"));
        assert_eq!(memory.last_written("ns/b").as_deref(), Some("9"));
        assert_eq!((memory.retrying(), retrying.get()), (1, 1));
        memory.settled("ns/b");
        assert_eq!((memory.retrying(), retrying.get()), (0, 0));
    }
}
