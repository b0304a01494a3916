//! `reconcile`, `suspend` and `resume`: small writes under the CLI's own
//! field manager, each a merge patch of the one field it owns, and the
//! wait for the operator to answer a reconcile request.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use super::errors::ClusterError;
use crate::crd::{GroupBanPolicy, RECONCILE_REQUESTED_AT, condition_types};

/// The field manager of every write these commands make: `kubectl get
/// -o yaml --show-managed-fields` shows which fields are theirs.
pub const FIELD_MANAGER: &str = "groupban-cli";

/// One policy by namespace and name.
pub struct PolicyRef {
    pub api: Api<GroupBanPolicy>,
    pub namespace: String,
    pub name: String,
}

impl PolicyRef {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self { api: Api::namespaced(client, namespace), namespace: namespace.into(), name: name.into() }
    }

    /// `NAMESPACE/NAME`, as errors name it.
    pub fn object(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    async fn get(&self) -> Result<GroupBanPolicy, ClusterError> {
        self.api.get(&self.name).await.map_err(|e| ClusterError::from_kube("get", &self.object(), e))
    }

    async fn patch(&self, patch: serde_json::Value) -> Result<GroupBanPolicy, ClusterError> {
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        self.api
            .patch(&self.name, &params, &Patch::Merge(patch))
            .await
            .map_err(|e| ClusterError::from_kube("patch", &self.object(), e))
    }
}

/// The token a reconcile request carries: the time, as Flux writes it.
pub fn new_token() -> String {
    Timestamp::now().to_string()
}

/// Sets `spec.suspend: true`: the operator makes no IM calls for the
/// policy until it is resumed.
pub async fn suspend(policy: &PolicyRef) -> Result<(), ClusterError> {
    policy.patch(json!({"spec": {"suspend": true}})).await.map(|_| ())
}

/// Sets `spec.suspend: false` and asks for a reconcile in the same write;
/// returns the request's token.
pub async fn resume(policy: &PolicyRef) -> Result<String, ClusterError> {
    let token = new_token();
    let patch = json!({"spec": {"suspend": false}, "metadata": {"annotations": {RECONCILE_REQUESTED_AT: token}}});
    policy.patch(patch).await?;
    Ok(token)
}

/// Asks the operator to reconcile now (annotation
/// `groupban.dev/reconcile-requested-at`); returns the token to wait for.
/// A suspended policy is refused, as Flux refuses it: the request would
/// be answered with no call made.
pub async fn request_reconcile(policy: &PolicyRef) -> Result<String, ClusterError> {
    if policy.get().await?.spec.suspend == Some(true) {
        return Err(ClusterError::Suspended { object: policy.object() });
    }
    let token = new_token();
    policy.patch(json!({"metadata": {"annotations": {RECONCILE_REQUESTED_AT: token}}})).await?;
    Ok(token)
}

/// True once the operator has handled the request `token` and the pass
/// it started has settled: Ready describes the current generation and
/// calls are no longer pending or being retried.
pub fn has_settled(policy: &GroupBanPolicy, token: &str) -> bool {
    let Some(status) = &policy.status else { return false };
    let condition = |kind: &str| status.conditions.iter().find(|c| c.type_ == kind);
    let handled = handled(policy, token);
    let current = status.observed_generation == policy.metadata.generation;
    let ready = condition(condition_types::READY).is_some_and(|c| c.status == "True");
    let reconciling = condition(condition_types::RECONCILING).is_some_and(|c| c.status == "True");
    handled && current && (ready || !reconciling)
}

/// What the wait for a reconcile request saw.
pub enum Waited {
    /// Handled, and the pass it started has settled.
    Settled(GroupBanPolicy),
    /// Handled, but still reconciling (retrying, say) when the time ran out.
    StillReconciling(GroupBanPolicy),
}

/// Waits, at most `timeout`, until the operator has handled `token` and
/// settled (see [`has_settled`]). A watch that breaks is resumed on a
/// backoff; a forbidden one ends the wait. A request not handled in time
/// is an error that says what may be wrong.
pub async fn wait_handled(policy: &PolicyRef, token: &str, timeout: Duration) -> Result<Waited, ClusterError> {
    let config = watcher::Config::default().fields(&format!("metadata.name={}", policy.name));
    let events = watcher(policy.api.clone(), config).default_backoff();
    let mut events = std::pin::pin!(events);
    let mut last_seen: Option<GroupBanPolicy> = None;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let event = match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(event)) => event,
        };
        match event {
            Ok(watcher::Event::Apply(found) | watcher::Event::InitApply(found)) => {
                if has_settled(&found, token) {
                    return Ok(Waited::Settled(found));
                }
                last_seen = Some(found);
            }
            Ok(watcher::Event::Delete(_)) => return Err(ClusterError::NotFound { object: policy.object() }),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(error) => {
                if let Some(forbidden) = forbidden_in(&error, policy) {
                    return Err(forbidden);
                }
                // Otherwise the watcher resumes on its backoff.
            }
        }
    }
    match last_seen {
        Some(found) if handled(&found, token) => Ok(Waited::StillReconciling(found)),
        _ => Err(ClusterError::TimedOut {
            object: policy.object(),
            after: timeout,
            waiting_for: format!(
                "to handle the reconcile request {token} (is an operator running, and does its --selector match this policy? try `groupban-operator get` and the operator's logs)"
            ),
        }),
    }
}

fn handled(policy: &GroupBanPolicy, token: &str) -> bool {
    policy.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some(token)
}

/// A watch the API server forbids, as an error naming the object.
fn forbidden_in(error: &watcher::Error, policy: &PolicyRef) -> Option<ClusterError> {
    let status = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status,
        _ => return None,
    };
    status.is_forbidden().then(|| ClusterError::Forbidden {
        action: "watch",
        object: policy.object(),
        message: status.message.clone(),
    })
}

/// How a handled policy came out: Ready, and a line to print.
pub fn outcome_line(policy: &GroupBanPolicy) -> (bool, String) {
    let status = policy.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == condition_types::READY);
    let is_ready = ready.is_some_and(|c| c.status == "True");
    let (state, message) = match ready {
        Some(c) => (format!("Ready={} ({})", c.status, c.reason), c.message.clone()),
        None => ("Ready=Unknown".to_string(), "no Ready condition".to_string()),
    };
    let code = status.last_error_code.map_or_else(|| "-".to_string(), |c| c.to_string());
    (is_ready, format!("{state}, last ErrorCode {code}: {message}"))
}
