//! Why `run` stops other than by a clean shutdown.

use super::config::SHUTDOWN_BUDGET;
use crate::im::TransportError;

/// Why `run` stopped other than by a clean shutdown. Everything a policy
/// can get wrong ends in its status instead; these stop the process.
#[derive(Debug, thiserror::Error)]
pub enum RunFailure {
    #[error("failed to find a Kubernetes configuration")]
    NoKubeConfig(#[source] kube::config::InferConfigError),
    #[error("failed to create a Kubernetes client")]
    KubeClient(#[source] kube::Error),
    #[error(
        "the GroupBanPolicy CRD (groupbanpolicies.groupban.dev) is not installed: kubectl apply -f crds/groupbanpolicies.yaml, or install the Helm chart"
    )]
    CrdMissing,
    #[error(
        "access denied listing GroupBanPolicies ({0}); the service account needs get/list/watch on groupbanpolicies.groupban.dev"
    )]
    ListForbidden(String),
    #[error("the API server refused the list: {0} (check --selector)")]
    ListRefused(String),
    #[error(
        "cannot list namespaces for --default-credentials-namespace-selector ({0}); the service account needs list/watch on namespaces"
    )]
    NamespacesForbidden(String),
    #[error("the API server refused --default-credentials-namespace-selector: {0}")]
    NamespaceSelectorRefused(String),
    #[error("failed to set up the IM HTTP client")]
    ImClient(#[source] TransportError),
    #[error("shutdown took longer than {} s; answers of calls still in flight were not recorded", SHUTDOWN_BUDGET.as_secs())]
    ShutdownOverran,
}

impl RunFailure {
    /// A bounded label for logs (never an object name).
    pub fn category(&self) -> &'static str {
        match self {
            RunFailure::NoKubeConfig(_) => "NoKubeConfig",
            RunFailure::KubeClient(_) => "KubeClient",
            RunFailure::CrdMissing => "CrdMissing",
            RunFailure::ListForbidden(_) => "ListForbidden",
            RunFailure::ListRefused(_) => "ListRefused",
            RunFailure::NamespacesForbidden(_) => "NamespacesForbidden",
            RunFailure::NamespaceSelectorRefused(_) => "NamespaceSelectorRefused",
            RunFailure::ImClient(_) => "ImClient",
            RunFailure::ShutdownOverran => "ShutdownOverran",
        }
    }
}
