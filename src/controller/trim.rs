//! What the caches keep of a watched object: only what the operator reads.

use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::PartialObjectMeta;

use crate::crd::GroupBanPolicy;

/// The annotation `kubectl apply` (client-side) keeps a whole copy of the
/// object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from a watched policy what the operator never reads before the
/// cache keeps it: `managedFields` (with Argo CD or Flux applying a policy
/// of 5,000 members, one entry per member per field manager, several times
/// the spec's size) and kubectl's last-applied copy of the whole object.
pub fn trim_for_cache(policy: &mut GroupBanPolicy) {
    let meta = policy.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// Keeps of a Secret's metadata only what finds the policies using it
/// (namespace and name): its labels and annotations can be large, and a
/// last-applied annotation would hold the Secret's values in the clear.
pub fn trim_secret_meta(secret: &mut PartialObjectMeta<Secret>) {
    let meta = &mut secret.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.labels = None;
    meta.owner_references = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;

    /// What a GitOps tool's server-side apply and kubectl's client-side
    /// apply add to a policy never reaches the cache; what the operator
    /// reads (spec, status, the reconcile request) does.
    #[test]
    fn the_cache_keeps_no_managed_fields_and_no_last_applied_copy() {
        let mut policy: GroupBanPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "groupban.dev/v1alpha1", "kind": "GroupBanPolicy",
            "metadata": {
                "name": "p", "namespace": "team",
                "annotations": {LAST_APPLIED: "{\"spec\": {}}", crate::crd::RECONCILE_REQUESTED_AT: "now"},
                "managedFields": [{"manager": "argocd-controller", "operation": "Apply", "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:spec": {"f:unbannedMembers": {}}}}],
            },
            "spec": {"groupId": "room", "unbannedMembers": ["a"]},
            "status": {"unbannedMembers": ["a"]},
        }))
        .unwrap();
        let before = policy.clone();
        trim_for_cache(&mut policy);
        assert_eq!(policy.metadata.managed_fields, None);
        let annotations = policy.annotations();
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert_eq!(annotations.get(crate::crd::RECONCILE_REQUESTED_AT).map(String::as_str), Some("now"));
        assert_eq!((policy.spec, policy.status), (before.spec, before.status));
    }

    #[test]
    fn a_cached_secret_keeps_only_its_namespace_and_name() {
        let mut secret: PartialObjectMeta<Secret> = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": "creds", "namespace": "team", "labels": {"a": "b"},
                "annotations": {LAST_APPLIED: "{\"stringData\": {\"secretKey\": \"hush\"}}"},
                "managedFields": [{"manager": "kubectl", "operation": "Update"}],
            },
        }))
        .unwrap();
        trim_secret_meta(&mut secret);
        assert_eq!((secret.name_any(), secret.namespace()), ("creds".to_string(), Some("team".to_string())));
        assert!(!serde_json::to_string(&secret).unwrap().contains("hush"));
        assert_eq!(secret.metadata.managed_fields, None);
    }
}
