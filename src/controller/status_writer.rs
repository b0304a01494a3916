//! Status goes to the API server by server-side apply on `/status`, under
//! one fixed field manager, and only when something a user can see changed.

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

/// Writes `status` by server-side apply (forced: we own `.status`).
pub async fn write_status(
    api: &Api<GroupBanPolicy>,
    name: &str,
    status: &GroupBanPolicyStatus,
) -> Result<(), kube::Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(status_patch(status))).await.map(|_| ())
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
) -> Option<GroupBanPolicyStatus> {
    let mut written: Option<GroupBanPolicyStatus> = None;
    while progress.changed().await.is_ok() {
        let Some(status) = progress.borrow_and_update().clone() else {
            continue;
        };
        if !differs_beyond_timestamps(written.as_ref().unwrap_or(on_server), &status) {
            continue;
        }
        match write_status(api, name, &status).await {
            Ok(()) => {
                debug!(policy = name, "Published progress");
                written = Some(status);
            }
            Err(error) => warn!(policy = name, error = %crate::error_chain(&error), "Failed to publish progress"),
        }
    }
    written
}
