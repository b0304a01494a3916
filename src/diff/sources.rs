//! Where `diff` finds the policies, what each has recorded as unbanned,
//! and the credentials to read its group's ban list with.

use std::collections::{BTreeMap, HashMap};

use kube::{Client, ResourceExt};

use crate::cluster::errors::ClusterError;
use crate::cluster::get::{self, Query};
use crate::crd::{GroupBanPolicySpec, GroupBanPolicyStatus, validate_spec};
use crate::engine::credentials::{self, AppTarget, CredentialsError, SecretKey};
use crate::engine::fold::{self, RecordOwner};
use crate::oneshot::manifests::Manifests;

/// One policy to compare.
#[derive(Debug, Clone)]
pub struct DiffInput {
    pub namespace: String,
    pub name: String,
    pub spec: GroupBanPolicySpec,
    /// Members recorded as unbanned in this group (empty when the record
    /// is of another group: it starts over, as the operator's does).
    pub recorded: Vec<String>,
    /// The spec's own error, if it has one (nothing is read for it).
    pub spec_error: Option<String>,
    pub target: Result<AppTarget, CredentialsError>,
}

/// The members recorded as unbanned, read as the operator reads the
/// record before a pass ([`fold::prepare`]): a record of another group,
/// app or endpoint (or of an unknown one) counts for nothing, and members
/// no longer desired leave it.
pub fn recorded_members(
    spec: &GroupBanPolicySpec,
    status: Option<&GroupBanPolicyStatus>,
    target: Option<&AppTarget>,
) -> Vec<String> {
    let endpoint = target.map(|t| t.endpoint.to_string());
    let owner =
        target.zip(endpoint.as_deref()).map(|(t, endpoint)| RecordOwner { sdkappid: t.credentials.sdkappid, endpoint });
    fold::prepare(status.cloned().unwrap_or_default(), spec, owner).unbanned_members
}

/// Policies from manifest files, as `apply` reads them: credentials from
/// the Secrets among the files, records from the state file's `recorded`.
pub fn from_manifests(manifests: &Manifests, recorded: &BTreeMap<String, GroupBanPolicyStatus>) -> Vec<DiffInput> {
    manifests
        .policies
        .iter()
        .map(|loaded| {
            let spec = loaded.policy.spec.clone();
            let secret = credentials::secret_for(&loaded.namespace, &spec, None);
            let target = match manifests.secrets.get(&(secret.namespace.clone(), secret.name.clone())) {
                Some(found) => credentials::from_secret(found, &secret.to_string()),
                None => Err(CredentialsError::SecretNotFound { secret: secret.to_string() }),
            };
            DiffInput {
                namespace: loaded.namespace.clone(),
                name: loaded.name.clone(),
                recorded: recorded_members(&spec, recorded.get(&loaded.key()), target.as_ref().ok()),
                spec_error: validate_spec(&spec).err().map(|e| e.to_string()),
                spec,
                target,
            }
        })
        .collect()
}

/// Policies from the cluster, with their recorded status and the Secret
/// the operator would use (each Secret read once).
pub async fn from_cluster(
    client: Client,
    query: &Query,
    default_secret: Option<&SecretKey>,
) -> Result<Vec<DiffInput>, ClusterError> {
    let policies = get::list(client.clone(), query).await?;
    let mut secrets: HashMap<SecretKey, Result<AppTarget, CredentialsError>> = HashMap::new();
    let mut inputs = Vec::with_capacity(policies.len());
    for policy in policies {
        let namespace = policy.namespace().unwrap_or_default();
        let key = credentials::secret_for(&namespace, &policy.spec, default_secret);
        if !secrets.contains_key(&key) {
            let target = crate::cluster::secrets::read_target(client.clone(), &key).await;
            secrets.insert(key.clone(), target);
        }
        let target = secrets[&key].clone();
        inputs.push(DiffInput {
            name: policy.name_any(),
            recorded: recorded_members(&policy.spec, policy.status.as_ref(), target.as_ref().ok()),
            spec_error: validate_spec(&policy.spec).err().map(|e| e.to_string()),
            target,
            spec: policy.spec,
            namespace,
        });
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_read_as_the_operator_reads_it() {
        let spec = GroupBanPolicySpec {
            group_id: "@TGS#new".into(),
            unbanned_members: vec!["a".into(), "b".into()],
            credentials_secret_ref: None,
            suspend: None,
            drift_check_interval: None,
        };
        let target = AppTarget {
            endpoint: crate::im::Endpoint::parse("http://127.0.0.1:1", false).unwrap(),
            credentials: crate::im::AppCredentials {
                sdkappid: 7,
                identifier: "admin".into(),
                secret_key: crate::secret::Redacted::new("k".into()),
            },
        };
        let mut status = GroupBanPolicyStatus {
            group_id: Some("@TGS#new".into()),
            sdk_app_id: Some(7),
            endpoint: Some(target.endpoint.to_string()),
            unbanned_members: vec!["a".into(), "gone".into()],
            ..Default::default()
        };
        assert_eq!(recorded_members(&spec, Some(&status), Some(&target)), ["a"], "members no longer desired leave");
        status.sdk_app_id = Some(8);
        assert!(recorded_members(&spec, Some(&status), Some(&target)).is_empty(), "another app's record");
        status.sdk_app_id = Some(7);
        status.group_id = Some("@TGS#old".into());
        assert!(recorded_members(&spec, Some(&status), Some(&target)).is_empty(), "another group's record");
        status.group_id = None;
        assert!(recorded_members(&spec, Some(&status), Some(&target)).is_empty(), "a record of no known group");
        assert!(recorded_members(&spec, None, Some(&target)).is_empty());
    }
}
