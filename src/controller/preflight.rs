//! Before the controller starts: can policies be listed at all?

use std::time::Duration;

use kube::Api;
use kube::api::ListParams;
use tokio::sync::watch;
use tracing::warn;

use super::failure::RunFailure;
use crate::crd::GroupBanPolicy;
use crate::metrics::Health;

/// Checks that policies can be listed before the controller starts. What
/// retrying cannot fix (no CRD: 404; forbidden: 403; a bad selector: 400)
/// fails at once with a message that says what to do. Anything else (an
/// API server restarting: 5xx, refused connections, timeouts) is retried
/// with backoff, saying what it waits for in the log and in `/readyz`:
/// exiting would only turn an API-server restart into a CrashLoopBackOff.
/// Returns false when shutdown came first.
pub async fn preflight(
    policies: &Api<GroupBanPolicy>,
    selector: Option<&str>,
    health: &Health,
    mut stopped: watch::Receiver<bool>,
) -> Result<bool, RunFailure> {
    let mut params = ListParams::default().limit(1);
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    let mut delay = PREFLIGHT_FIRST_RETRY;
    loop {
        let error = match policies.list_metadata(&params).await {
            Ok(_) => {
                health.set_waiting_for(None);
                return Ok(true);
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(RunFailure::CrdMissing);
            }
            Err(kube::Error::Api(status)) if status.code == 403 => {
                return Err(RunFailure::ListForbidden(crate::cut_text(&status.message, 512)));
            }
            Err(kube::Error::Api(status)) if status.code == 400 => {
                return Err(RunFailure::ListRefused(crate::cut_text(&status.message, 512)));
            }
            Err(error) => error,
        };
        let problem = crate::cut_text(&crate::error_chain(&error), 512);
        warn!(error = %problem, retry_in_s = delay.as_secs(), "Waiting for the API server: cannot list GroupBanPolicies yet");
        health.set_waiting_for(Some(format!("waiting for the API server to list GroupBanPolicies: {problem}")));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stopped.wait_for(|stop| *stop) => return Ok(false),
        }
        delay = (delay * 2).min(PREFLIGHT_MAX_RETRY);
    }
}

/// Lists namespaces once with `--default-credentials-namespace-selector`,
/// so a selector the API server refuses, or RBAC that does not allow the
/// namespace watch, stops `run` at once with a message, rather than
/// leaving every policy that relies on the default credentials waiting.
/// Other errors are left to the watch, which retries.
pub async fn check_namespace_selector(client: &kube::Client, selector: &str) -> Result<(), RunFailure> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    match namespaces.list_metadata(&ListParams::default().labels(selector).limit(1)).await {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            Err(RunFailure::NamespacesForbidden(crate::cut_text(&status.message, 512)))
        }
        Err(kube::Error::Api(status)) if status.code == 400 => {
            Err(RunFailure::NamespaceSelectorRefused(crate::cut_text(&status.message, 512)))
        }
        _ => Ok(()),
    }
}

/// The first wait before listing policies again, and the longest.
const PREFLIGHT_FIRST_RETRY: Duration = Duration::from_secs(1);
const PREFLIGHT_MAX_RETRY: Duration = Duration::from_secs(30);
