//! Passes under way, so a change to their policy can stop them.
//!
//! A pass is computed for one object at one generation. When the watch
//! shows that object deleted, made again under its name (another uid), or
//! its spec edited (another generation), the pass starts no new call: calls
//! for members no longer desired, or for a group no longer named, would be
//! wasted at best. Calls on the wire finish and are recorded; the next
//! reconcile, which the same watch event schedules, plans from the new spec.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The identity of the object a pass was planned for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassFor {
    pub uid: Option<String>,
    pub generation: Option<i64>,
}

impl PassFor {
    pub fn of(policy: &crate::crd::GroupBanPolicy) -> Self {
        Self { uid: policy.metadata.uid.clone(), generation: policy.metadata.generation }
    }
}

struct Running {
    planned_for: PassFor,
    stop: watch::Sender<bool>,
    /// Why it was stopped, once it was.
    changed: Arc<Mutex<Option<&'static str>>>,
}

/// Passes under way, by policy key (`namespace/name`).
#[derive(Default)]
pub struct RunningPasses {
    running: Mutex<HashMap<String, Running>>,
}

/// Held by a reconcile while its pass runs; dropping it forgets the pass.
pub struct PassGuard<'a> {
    passes: &'a RunningPasses,
    key: String,
    /// Stops the pass: the process's shutdown or a change to its policy.
    pub stop: watch::Receiver<bool>,
    changed: Arc<Mutex<Option<&'static str>>>,
    forward: tokio::task::JoinHandle<()>,
}

impl PassGuard<'_> {
    /// Why the pass was stopped for a change to its policy, if it was
    /// (`"deleted"`, `"replaced"`, `"spec changed"`).
    pub fn changed(&self) -> Option<&'static str> {
        *self.changed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for PassGuard<'_> {
    fn drop(&mut self) {
        self.forward.abort();
        self.passes.lock().remove(&self.key);
    }
}

impl RunningPasses {
    /// Registers the pass about to run for `key`, planned for
    /// `planned_for`; it also stops when `shutdown` turns true.
    pub fn start(&self, key: &str, planned_for: PassFor, mut shutdown: watch::Receiver<bool>) -> PassGuard<'_> {
        let (stop, stop_rx) = watch::channel(*shutdown.borrow());
        let changed = Arc::new(Mutex::new(None));
        let forwarded = stop.clone();
        let forward = tokio::spawn(async move {
            if shutdown.wait_for(|stopping| *stopping).await.is_ok() {
                forwarded.send_replace(true);
            }
        });
        self.lock().insert(key.to_string(), Running { planned_for, stop, changed: changed.clone() });
        PassGuard { passes: self, key: key.to_string(), stop: stop_rx, changed, forward }
    }

    /// The watch shows `key` as `now`: a pass planned for another object or
    /// another generation stops starting calls.
    pub fn seen(&self, key: &str, now: &PassFor) {
        if let Some(running) = self.lock().get(key) {
            let why = match (&running.planned_for, now) {
                (planned, now) if planned.uid != now.uid => "replaced",
                (planned, now) if planned.generation != now.generation => "spec changed",
                _ => return,
            };
            stop(running, why);
        }
    }

    /// Checks every pass under way against `current` (the cache after a
    /// relist, which brings no Delete for what went during the gap): a
    /// policy gone, replaced or edited stops its pass.
    pub fn check_all(&self, current: impl Fn(&str) -> Option<PassFor>) {
        let keys: Vec<String> = self.lock().keys().cloned().collect();
        for key in keys {
            match current(&key) {
                Some(now) => self.seen(&key, &now),
                None => self.deleted(&key),
            }
        }
    }

    /// The watch shows `key` deleted.
    pub fn deleted(&self, key: &str) {
        if let Some(running) = self.lock().get(key) {
            stop(running, "deleted");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn stop(running: &Running, why: &'static str) {
    running.changed.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(why);
    running.stop.send_replace(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(uid: &str, generation: i64) -> PassFor {
        PassFor { uid: Some(uid.into()), generation: Some(generation) }
    }

    /// Our own status writes and annotation changes (same object, same
    /// generation) let the pass run; an edit, a delete or a re-creation
    /// stops it and says why; another policy's events do nothing.
    #[tokio::test]
    async fn a_pass_stops_only_when_its_own_object_changes() {
        let passes = RunningPasses::default();
        let (_shutdown_tx, shutdown) = watch::channel(false);
        for (event, why) in [
            (Some(at("u1", 2)), Some("spec changed")),
            (Some(at("u2", 1)), Some("replaced")),
            (None, Some("deleted")),
            (Some(at("u1", 1)), None),
        ] {
            let guard = passes.start("ns/p", at("u1", 1), shutdown.clone());
            passes.seen("ns/q", &at("x", 9));
            passes.deleted("ns/q");
            match &event {
                Some(now) => passes.seen("ns/p", now),
                None => passes.deleted("ns/p"),
            }
            assert_eq!(guard.changed(), why, "{event:?}");
            assert_eq!(*guard.stop.borrow(), why.is_some(), "{event:?}");
        }
        assert!(passes.lock().is_empty(), "every guard forgot its pass");
    }

    /// A shutdown stops the pass too, without calling it a change.
    #[tokio::test]
    async fn a_shutdown_stops_the_pass() {
        let passes = RunningPasses::default();
        let (shutdown_tx, shutdown) = watch::channel(false);
        let mut guard = passes.start("ns/p", at("u1", 1), shutdown);
        shutdown_tx.send_replace(true);
        tokio::time::timeout(std::time::Duration::from_secs(5), guard.stop.wait_for(|s| *s)).await.unwrap().unwrap();
        assert_eq!(guard.changed(), None);
    }
}
