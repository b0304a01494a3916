//! Who may spend the shared default credentials. With
//! `--default-credentials-secret`, a policy that names no Secret calls as
//! the app admin in that Secret; `--default-credentials-namespace-selector`
//! limits that to namespaces whose labels match (as external-secrets'
//! ClusterSecretStore has `conditions.namespaceSelector`). A policy outside
//! it is Stalled with reason `DefaultCredentialsNotAllowed` until its
//! namespace is labelled or it names a Secret of its own.
//!
//! The matching namespaces come from a watch of Namespace metadata with the
//! selector itself, so a namespace that gains or loses the label wakes the
//! policies in it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{WatchStreamExt, reflector::store::Writer};
use kube::{Api, Client, ResourceExt};

use crate::crd::GroupBanPolicy;
use crate::engine::credentials::{CredentialsError, SecretKey};

/// How long a reconcile waits for the first list of namespaces before it
/// calls the credentials unavailable (retried on backoff, never Stalled).
const FIRST_LIST_WAIT: Duration = Duration::from_secs(10);

/// The namespaces allowed to use the default credentials, as watched.
#[derive(Clone)]
pub struct SharedScope {
    pub selector: String,
    namespaces: reflector::Store<PartialObjectMeta<Namespace>>,
}

impl SharedScope {
    /// A scope and the writer its watch fills (see [`namespace_changes`]).
    pub fn new(selector: String) -> (Self, Writer<PartialObjectMeta<Namespace>>) {
        let (namespaces, writer) = reflector::store();
        (Self { selector, namespaces }, writer)
    }

    /// Whether a policy in `namespace` that names no Secret may use the
    /// default `secret`: the verdict, or (outer `Err`) why there is none
    /// yet: the first list is not in, a passing problem, never a refusal.
    pub async fn admits(&self, namespace: &str, secret: &SecretKey) -> Result<Result<(), CredentialsError>, String> {
        if tokio::time::timeout(FIRST_LIST_WAIT, self.namespaces.wait_until_ready()).await.is_err() {
            return Err(format!("the namespaces matching {:?} are not listed yet", self.selector));
        }
        let listed = self.namespaces.get(&ObjectRef::new(namespace)).is_some();
        Ok(allowed(listed, namespace, secret, &self.selector))
    }
}

/// The verdict (pure): a namespace the selector lists may use the
/// default Secret; any other is told how to fix it.
pub fn allowed(listed: bool, namespace: &str, secret: &SecretKey, selector: &str) -> Result<(), CredentialsError> {
    if listed {
        return Ok(());
    }
    Err(CredentialsError::NotAllowed {
        namespace: namespace.to_string(),
        secret: secret.to_string(),
        selector: selector.to_string(),
    })
}

/// The watch of matching namespaces: fills the scope's store, and yields
/// each namespace that entered or left the selection (a namespace that
/// stops matching arrives as a deletion).
pub fn namespace_changes(
    client: &Client,
    selector: &str,
    writer: Writer<PartialObjectMeta<Namespace>>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<Namespace>, watcher::Error>> + Send + 'static {
    // Metadata only: labels are all it needs.
    let api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let config = watcher::Config::default().labels(selector);
    watcher(api, config).default_backoff().reflect(writer).touched_objects()
}

/// The policies a change to `namespace` can wake: those in it that name
/// no Secret (the others never use the default).
pub fn policies_in(namespace: &str, policies: &[Arc<GroupBanPolicy>]) -> Vec<ObjectRef<GroupBanPolicy>> {
    policies
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace) && p.spec.credentials_secret_ref.is_none())
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_namespaces_may_use_the_default_and_the_refusal_says_how_to_fix_it() {
        let secret = SecretKey { namespace: "im-system".into(), name: "shared".into() };
        assert_eq!(allowed(true, "team-a", &secret, "tier=trusted"), Ok(()));
        let refused = allowed(false, "team-b", &secret, "tier=trusted").unwrap_err();
        let message = refused.to_string();
        assert!(message.contains("team-b") && message.contains("im-system/shared"), "{message}");
        assert!(message.contains("tier=trusted") && message.contains("credentialsSecretRef"), "{message}");
        assert!(!refused.is_passing(), "Stalled until a person acts");
    }
}
