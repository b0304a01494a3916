//! Status goes to the API server by server-side apply on `/status`, under
//! one fixed field manager, and only when something a user can see changed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::crd::{GroupBanPolicy, GroupBanPolicyStatus};
use crate::engine::status::differs_beyond_timestamps;

/// The field manager of every status write: one owner of `.status`.
pub const FIELD_MANAGER: &str = "groupban-operator";

/// The server-side apply body for a status.
pub fn status_patch(status: &GroupBanPolicyStatus) -> Value {
    json!({
        "apiVersion": "groupban.dev/v1alpha1",
        "kind": "GroupBanPolicy",
        "status": status,
    })
}

/// Writes `status` by server-side apply (forced: we own `.status`), and
/// hands the written resourceVersion to `written` (see [`PendingEchoes`]).
pub async fn write_status(
    api: &Api<GroupBanPolicy>,
    name: &str,
    status: &GroupBanPolicyStatus,
    written: &(dyn Fn(String) + Sync),
) -> Result<(), kube::Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let object = api.patch_status(name, &params, &Patch::Apply(status_patch(status))).await?;
    if let Some(version) = object.metadata.resource_version {
        written(version);
    }
    Ok(())
}

/// Status writes whose watch event (their echo) the controller's cache has
/// not shown yet. A reconcile that starts before the echo (a Secret event
/// during the previous reconcile, say) would read a status without what
/// that write recorded and call for those members again: it waits a moment
/// instead. Bounded: an echo not seen within [`PendingEchoes::PATIENCE`]
/// (a watch that broke) no longer holds anything up.
#[derive(Debug, Default)]
pub struct PendingEchoes {
    /// Policy key -> (resourceVersion of our last write, when).
    pending: Mutex<HashMap<String, (String, Instant)>>,
}

impl PendingEchoes {
    pub const PATIENCE: Duration = Duration::from_secs(5);

    /// Notes our write of `version`, unless the cache shows it already
    /// (`cached` is asked under the lock that [`PendingEchoes::seen`] takes
    /// after the cache is updated, so an echo that came first is not missed).
    pub fn wrote(&self, key: &str, version: String, cached: impl FnOnce() -> Option<String>) {
        let mut pending = self.lock();
        if cached().as_deref() == Some(version.as_str()) {
            pending.remove(key);
        } else {
            pending.insert(key.to_string(), (version, Instant::now()));
        }
    }

    /// The cache now holds `version` of the policy: an echo, if ours.
    pub fn seen(&self, key: &str, version: Option<&str>) {
        let mut pending = self.lock();
        if pending.get(key).is_some_and(|(ours, _)| Some(ours.as_str()) == version) {
            pending.remove(key);
        }
    }

    /// True while the cached `version` of the policy predates our last
    /// write to it (within the patience). A write that changed nothing keeps
    /// the version it had, so the cache holding it is up to date.
    pub fn awaited(&self, key: &str, cached_version: Option<&str>) -> bool {
        let mut pending = self.lock();
        match pending.get(key) {
            Some((ours, at)) if Some(ours.as_str()) != cached_version && at.elapsed() < Self::PATIENCE => true,
            Some(_) => {
                pending.remove(key);
                false
            }
            None => false,
        }
    }

    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes the progress of a long pass as it arrives on `progress` (the pass
/// sends at most one every few seconds), skipping statuses that differ from
/// the last one written (at first `on_server`) only in timestamps. Ends when the pass drops its
/// sender; returns the last status written, if any. A failed write is only
/// logged: the final write after the pass still carries everything.
pub async fn publish_progress(
    api: &Api<GroupBanPolicy>,
    name: &str,
    mut progress: watch::Receiver<Option<GroupBanPolicyStatus>>,
    on_server: &GroupBanPolicyStatus,
    on_written: &(dyn Fn(String) + Sync),
) -> Option<GroupBanPolicyStatus> {
    let mut written: Option<GroupBanPolicyStatus> = None;
    while progress.changed().await.is_ok() {
        let Some(status) = progress.borrow_and_update().clone() else {
            continue;
        };
        if !differs_beyond_timestamps(written.as_ref().unwrap_or(on_server), &status) {
            continue;
        }
        match write_status(api, name, &status, on_written).await {
            Ok(()) => {
                debug!(policy = name, "Published progress");
                written = Some(status);
            }
            Err(error) => warn!(policy = name, error = %crate::error_chain(&error), "Failed to publish progress"),
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reconcile waits while the cache shows a version older than our
    /// last write, and not once the echo came, the write changed nothing,
    /// or the patience ran out.
    #[test]
    fn a_write_is_awaited_until_its_echo() {
        let echoes = PendingEchoes::default();
        let cache_at = |version: &str| {
            let version = version.to_string();
            move || Some(version)
        };
        assert!(!echoes.awaited("ns/p", Some("7")), "nothing written");
        echoes.wrote("ns/p", "9".into(), cache_at("7"));
        assert!(echoes.awaited("ns/p", Some("7")));
        assert!(!echoes.awaited("ns/q", Some("7")), "another policy");
        echoes.seen("ns/p", Some("8"));
        assert!(echoes.awaited("ns/p", Some("8")), "an older event is no echo");
        echoes.seen("ns/p", Some("9"));
        assert!(echoes.is_empty());
        assert!(!echoes.awaited("ns/p", Some("9")));

        // The echo came before the answer to the write, or the write
        // changed nothing: the cache is up to date, nothing to wait for
        // (not even after a newer version arrives).
        echoes.wrote("ns/p", "9".into(), cache_at("9"));
        assert!(echoes.is_empty());
        assert!(!echoes.awaited("ns/p", Some("10")));

        echoes.wrote("ns/p", "10".into(), cache_at("9"));
        assert!(!echoes.awaited("ns/p", Some("10")), "the cache holds the write");
        assert!(echoes.is_empty());

        echoes.wrote("ns/p", "11".into(), || None);
        echoes.pending.lock().unwrap().get_mut("ns/p").unwrap().1 -= PendingEchoes::PATIENCE;
        assert!(!echoes.awaited("ns/p", Some("10")), "patience ran out");
        assert!(echoes.is_empty());

        echoes.wrote("ns/a", "1".into(), || None);
        echoes.wrote("ns/b", "2".into(), || None);
        echoes.forget("ns/a");
        assert_eq!(echoes.len(), 1);
    }
}
