//! What wakes a policy up (pure): its own spec or reconcile request, and a
//! change to the Secret it uses. Status writes do not, so the controller
//! never wakes itself.

use std::hash::{DefaultHasher, Hash, Hasher};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::crd::{GroupBanPolicy, RECONCILE_REQUESTED_AT};
pub use crate::engine::credentials::SecretKey;
use crate::engine::credentials::secret_for;

/// The Secret a policy's credentials come from (see [`secret_for`]).
pub fn credentials_secret(policy: &GroupBanPolicy, default: Option<&SecretKey>) -> SecretKey {
    secret_for(&policy.namespace().unwrap_or_default(), &policy.spec, default)
}

/// The policies, among `policies`, whose credentials come from `secret`.
pub fn policies_using(
    secret: &SecretKey,
    policies: &[std::sync::Arc<GroupBanPolicy>],
    default: Option<&SecretKey>,
) -> Vec<ObjectRef<GroupBanPolicy>> {
    policies
        .iter()
        .filter(|policy| credentials_secret(policy, default) == *secret)
        .map(|policy| ObjectRef::from_obj(policy.as_ref()))
        .collect()
}

/// What a change must touch to wake a policy: its generation (the spec)
/// and its reconcile-request annotation. Labels, status and other
/// annotations do not.
pub fn wake_hash(policy: &GroupBanPolicy) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    policy.metadata.generation.hash(&mut hasher);
    policy.annotations().get(RECONCILE_REQUESTED_AT).hash(&mut hasher);
    Some(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn policy(yaml: &str) -> Arc<GroupBanPolicy> {
        Arc::new(yaml_serde::from_str(yaml).unwrap())
    }

    const WITH_REF: &str = "apiVersion: groupban.dev/v1alpha1\nkind: GroupBanPolicy\nmetadata: {name: a, namespace: team, generation: 1}\nspec: {groupId: g, unbannedMembers: [x], credentialsSecretRef: {name: im-app}}\n";
    const WITHOUT_REF: &str = "apiVersion: groupban.dev/v1alpha1\nkind: GroupBanPolicy\nmetadata: {name: b, namespace: team, generation: 1}\nspec: {groupId: g, unbannedMembers: [x]}\n";

    #[test]
    fn the_secret_comes_from_the_ref_then_the_default_then_the_conventional_name() {
        let default: SecretKey = "ops/im-default".parse().unwrap();
        assert_eq!(credentials_secret(&policy(WITH_REF), Some(&default)).to_string(), "team/im-app");
        assert_eq!(credentials_secret(&policy(WITHOUT_REF), Some(&default)).to_string(), "ops/im-default");
        assert_eq!(credentials_secret(&policy(WITHOUT_REF), None).to_string(), "team/groupban-credentials");
    }

    /// Rotating a Secret wakes exactly the policies that use it.
    #[test]
    fn a_secret_maps_to_exactly_its_policies() {
        let policies = [policy(WITH_REF), policy(WITHOUT_REF)];
        let names = |secret: &str, default: Option<&SecretKey>| {
            let refs = policies_using(&secret.parse().unwrap(), &policies, default);
            refs.into_iter().map(|r| r.name).collect::<Vec<_>>()
        };
        assert_eq!(names("team/im-app", None), ["a"]);
        assert_eq!(names("team/groupban-credentials", None), ["b"]);
        assert_eq!(names("other/im-app", None), Vec::<String>::new());
        let default: SecretKey = "ops/im-default".parse().unwrap();
        assert_eq!(names("ops/im-default", Some(&default)), ["b"]);
        assert_eq!(names("team/groupban-credentials", Some(&default)), Vec::<String>::new());
    }

    /// The spec and the reconcile request wake a policy; a status write,
    /// a label or another annotation do not (or the controller would wake
    /// itself with every status write).
    #[test]
    fn only_the_spec_and_the_reconcile_request_wake_a_policy() {
        let base = policy(WITHOUT_REF);
        let hash = wake_hash(&base);
        let mut status_only = (*base).clone();
        status_only.status = Some(Default::default());
        status_only.metadata.resource_version = Some("99".into());
        status_only.labels_mut().insert("team".into(), "x".into());
        status_only.annotations_mut().insert("note".into(), "y".into());
        assert_eq!(wake_hash(&status_only), hash);
        let mut new_spec = (*base).clone();
        new_spec.metadata.generation = Some(2);
        assert_ne!(wake_hash(&new_spec), hash);
        let mut requested = (*base).clone();
        requested.annotations_mut().insert(RECONCILE_REQUESTED_AT.into(), "2026-11-27T10:00:00Z".into());
        assert_ne!(wake_hash(&requested), hash);
    }
}
