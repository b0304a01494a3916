//! Status goes to the API server by server-side apply on `/status`, under
//! one fixed field manager, and only when something a user can see changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::crd::{GroupBanPolicy, GroupBanPolicyStatus};
use crate::engine::changes::differs_beyond_timestamps;
use crate::metrics::Metrics;

/// The field manager of every status write: one owner of `.status`.
pub const FIELD_MANAGER: &str = "groupban-operator";

/// The server-side apply body for a status, with the resourceVersion it
/// was computed against as a precondition when known.
pub fn status_patch(status: &GroupBanPolicyStatus, resource_version: Option<&str>) -> Value {
    let mut patch = json!({
        "apiVersion": "groupban.dev/v1alpha1",
        "kind": "GroupBanPolicy",
        "status": status,
    });
    if let Some(version) = resource_version {
        patch["metadata"] = json!({"resourceVersion": version});
    }
    patch
}

/// The one object a pass's status is for. A policy deleted and made again
/// under the same name is another object (another uid): a status computed
/// for the old one must never land on it, or a reader would see the new
/// policy Ready for members never unbanned in its group.
///
/// The API server's status subresource ignores a uid in the body, so the
/// guard is the resourceVersion: each write carries the version last seen
/// of this object, and a conflict is resolved by reading the object again,
/// writing again only when it is still the same one.
#[derive(Debug)]
pub struct StatusTarget {
    pub name: String,
    pub uid: Option<String>,
    /// The object's version as last read or written by us.
    version: Mutex<Option<String>>,
}

impl StatusTarget {
    pub fn of(policy: &GroupBanPolicy) -> Self {
        Self::new(
            policy.metadata.name.clone().unwrap_or_default(),
            policy.metadata.uid.clone(),
            policy.metadata.resource_version.clone(),
        )
    }

    /// The object `name` with `uid`, as read at `version`.
    pub fn new(name: String, uid: Option<String>, version: Option<String>) -> Self {
        Self { name, uid, version: Mutex::new(version) }
    }

    fn version(&self) -> Option<String> {
        self.version.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_version(&self, version: Option<String>) {
        *self.version.lock().unwrap_or_else(|e| e.into_inner()) = version;
    }
}

/// What became of a status write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Yes,
    /// The object is gone, or another object has its name now: nothing
    /// was written.
    ObjectReplaced,
}

/// Conflicts resolved by reading the object again before a write gives up
/// (each means someone else wrote the policy in between).
const CONFLICT_RETRIES: usize = 3;

/// Writes `status` by server-side apply (forced: we own `.status`) to the
/// object `target` names, and hands the written resourceVersion to
/// `written` (see [`PendingEchoes`]). A write RBAC refuses is counted here,
/// for progress and final writes alike.
pub async fn write_status(
    api: &StatusApi,
    target: &StatusTarget,
    status: &GroupBanPolicyStatus,
    written: &(dyn Fn(String) + Sync),
) -> Result<Written, kube::Error> {
    let mut conflicts = 0;
    loop {
        match write_status_at(api, &target.name, status, target.version().as_deref()).await {
            Ok(object) => {
                target.set_version(object.metadata.resource_version.clone());
                if let Some(version) = object.metadata.resource_version {
                    written(version);
                }
                return Ok(Written::Yes);
            }
            Err(kube::Error::Api(answer)) if answer.code == 409 && conflicts < CONFLICT_RETRIES => {
                conflicts += 1;
                match api.get_opt(&target.name).await? {
                    Some(current) if current.metadata.uid == target.uid => {
                        target.set_version(current.metadata.resource_version);
                    }
                    _ => return Ok(Written::ObjectReplaced),
                }
            }
            Err(kube::Error::Api(answer)) if answer.code == 404 => return Ok(Written::ObjectReplaced),
            Err(error) => return Err(error),
        }
    }
}

/// One status write at `resource_version` (when given), no conflict
/// handling: [`write_status`]'s attempt, and the whole write for a caller
/// that recomputes the status from a fresh read on a conflict rather than
/// resending it. A write RBAC refuses is counted here.
pub async fn write_status_at(
    api: &StatusApi,
    name: &str,
    status: &GroupBanPolicyStatus,
    resource_version: Option<&str>,
) -> Result<DynamicObject, kube::Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let result = api.api.patch_status(name, &params, &Patch::Apply(status_patch(status, resource_version))).await;
    if let Err(error) = &result
        && is_forbidden(error)
    {
        api.metrics.observe_forbidden(STATUS_WRITE.0, STATUS_WRITE.1);
    }
    result
}

/// The API that status writes go through, and where the writes RBAC
/// refuses are counted. Untyped, so that an answer carrying a spec that no
/// longer decodes (the policy was broken while its pass ran) is not an
/// error, and never gets logged whole by the client.
pub struct StatusApi {
    api: Api<DynamicObject>,
    metrics: Arc<Metrics>,
}

impl StatusApi {
    /// The policies of `namespace`.
    pub fn new(client: kube::Client, namespace: &str, metrics: Arc<Metrics>) -> Self {
        Self { api: Api::namespaced_with(client, namespace, &ApiResource::erase::<GroupBanPolicy>(&())), metrics }
    }

    /// Reads policy `name` as it is now (`None`: there is none).
    pub async fn get_opt(&self, name: &str) -> Result<Option<DynamicObject>, kube::Error> {
        self.api.get_opt(name).await
    }
}

/// True for the API server's 403: RBAC does not allow the request.
pub fn is_forbidden(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 403)
}

/// The verb and resource of a status write, for
/// [`crate::metrics::Metrics::observe_forbidden`].
pub(super) const STATUS_WRITE: (&str, &str) = ("patch", "groupbanpolicies.groupban.dev/status");

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
    /// Policy key -> resourceVersion of our last write, kept after its echo
    /// (until the policy is forgotten): see [`PendingEchoes::last_written`].
    written: Mutex<HashMap<String, String>>,
}

impl PendingEchoes {
    pub const PATIENCE: Duration = Duration::from_secs(5);

    /// Notes our write of `version`, unless the cache shows it already
    /// (`cached` is asked under the lock that [`PendingEchoes::seen`] takes
    /// after the cache is updated, so an echo that came first is not missed).
    pub fn wrote(&self, key: &str, version: String, cached: impl FnOnce() -> Option<String>) {
        self.written.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), version.clone());
        let mut pending = self.lock();
        let cached = cached();
        debug!(policy = key, %version, cached = ?cached, "Awaiting the echo of a status write");
        if cached.as_deref() == Some(version.as_str()) {
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
            Some((ours, at)) => {
                debug!(policy = key, ours = %ours, cached = ?cached_version, waited_ms = at.elapsed().as_millis() as u64, "Echo awaited no longer");
                pending.remove(key);
                false
            }
            None => false,
        }
    }

    pub fn forget(&self, key: &str) {
        self.written.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        if let Some((ours, _)) = self.lock().remove(key) {
            debug!(policy = key, ours = %ours, "Echo forgotten with its policy");
        }
    }

    /// Keeps what is pending or written for the policies `keep` says yes to.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.written.lock().unwrap_or_else(|e| e.into_inner()).retain(|key, _| keep(key));
        self.lock().retain(|key, _| keep(key));
    }

    /// The resourceVersion of our last status write to the policy, echoed
    /// or not. A cached version other than this one is either newer (the
    /// policy changed since) or older (the cache went back: a relist
    /// served from before our write); versions are opaque, so a reconcile
    /// that sees another one reads the policy afresh rather than trust a
    /// record that may lack what it wrote.
    pub fn last_written(&self, key: &str) -> Option<String> {
        self.written.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
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
    api: &StatusApi,
    target: &StatusTarget,
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
        match write_status(api, target, &status, on_written).await {
            Ok(Written::Yes) => {
                debug!(policy = %target.name, "Published progress");
                written = Some(status);
            }
            Ok(Written::ObjectReplaced) => {
                debug!(policy = %target.name, "Policy deleted or replaced; no more progress for it");
                break;
            }
            Err(error) => {
                warn!(policy = %target.name, error = %crate::error_chain(&error), "Failed to publish progress")
            }
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
