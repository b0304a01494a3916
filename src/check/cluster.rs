//! The cluster side of `check`: the API server's version, the CRD, the
//! operator's permissions, and a running operator.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};

use super::report::Line;
use crate::controller::permissions::{Needed, Permission, RUN_PERMISSIONS, Scope};
use crate::crd::GroupBanPolicy;
use crate::engine::credentials::SecretKey;

/// The oldest Kubernetes minor `run` supports: the CRD's validation rules
/// (CEL) are GA from 1.29. CI runs the newest.
pub const MIN_KUBERNETES_MINOR: u32 = 29;
/// The CRD's name and the version this binary reads and writes.
pub const CRD_NAME: &str = "groupbanpolicies.groupban.dev";
pub const CRD_VERSION: &str = "v1alpha1";
/// How far this machine's clock may differ from the leader's before a
/// fresh Lease reads as stale.
const CLOCK_SKEW_SLACK_SECONDS: i64 = 15;
/// Every request a check makes waits at most this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

async fn bounded<T>(request: impl Future<Output = Result<T, kube::Error>>) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(crate::cut_text(&crate::error_chain(&error), 300)),
        Err(_) => Err(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())),
    }
}

/// The version line (pure): `major`/`minor` as /version gives them
/// ("1", "36+" on some providers).
pub fn version_line(major: &str, minor: &str, git_version: &str) -> Line {
    let minor_number = minor.trim_end_matches('+').parse::<u32>().ok();
    match (major, minor_number) {
        ("1", Some(minor)) if minor >= MIN_KUBERNETES_MINOR => {
            Line::pass("kubernetes", format!("{git_version} (1.{MIN_KUBERNETES_MINOR} or newer is supported)"))
        }
        ("1", Some(_)) => Line::fail(
            "kubernetes",
            format!(
                "{git_version} is older than 1.{MIN_KUBERNETES_MINOR}, which the CRD's validation rules (CEL) need"
            ),
        ),
        _ => Line::fail("kubernetes", format!("cannot read the version {major:?}.{minor:?} ({git_version})")),
    }
}

pub async fn kubernetes(client: &Client) -> Line {
    match bounded(client.apiserver_version()).await {
        Ok(info) => version_line(&info.major, &info.minor, &info.git_version),
        Err(error) => Line::fail("kubernetes", format!("cannot reach the API server: {error}")),
    }
}

/// The CRD line (pure): established, and serving the version this binary
/// uses.
pub fn crd_line(crd: &CustomResourceDefinition) -> Line {
    let established = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Established" && c.status == "True"));
    let served: Vec<&str> = crd.spec.versions.iter().filter(|v| v.served).map(|v| v.name.as_str()).collect();
    if !served.contains(&CRD_VERSION) {
        return Line::fail(
            "crd",
            format!(
                "{CRD_NAME} serves {served:?}, not {CRD_VERSION} which this binary uses: install the CRD of this release (crds/ or the chart)"
            ),
        );
    }
    if !established {
        return Line::fail("crd", format!("{CRD_NAME} is not Established yet"));
    }
    Line::pass("crd", format!("{CRD_NAME} is installed and serves {CRD_VERSION}"))
}

pub async fn crd(client: &Client) -> Line {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match tokio::time::timeout(REQUEST_TIMEOUT, crds.get_opt(CRD_NAME)).await {
        Ok(Ok(Some(found))) => crd_line(&found),
        Ok(Ok(None)) => Line::fail(
            "crd",
            format!("{CRD_NAME} is not installed: kubectl apply -f crds/groupbanpolicies.yaml, or install the chart"),
        ),
        // Reading CRDs is often an admin's right: whether the API serves
        // policies says as much.
        Ok(Err(kube::Error::Api(status))) if status.is_forbidden() => {
            let policies: Api<GroupBanPolicy> = Api::all(client.clone());
            match bounded(policies.list_metadata(&ListParams::default().limit(1))).await {
                Ok(_) => Line::pass(
                    "crd",
                    format!("{CRD_VERSION} GroupBanPolicies are served (you may not read the CRD itself)"),
                ),
                Err(error) => Line::fail("crd", format!("GroupBanPolicies {CRD_VERSION} cannot be listed: {error}")),
            }
        }
        Ok(Err(error)) => Line::fail("crd", format!("cannot read {CRD_NAME}: {}", crate::error_chain(&error))),
        Err(_) => Line::fail("crd", format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())),
    }
}

/// Whose permissions, and where `run` uses them.
#[derive(Debug, Clone)]
pub struct OperatorSetup {
    /// The user the reviews are for (`--as`), or none for the current user.
    pub subject: Option<String>,
    /// `run --namespace`; every namespace when unset.
    pub watched: Option<String>,
    /// Where the operator runs: its Lease.
    pub operator_namespace: String,
    pub leader_election: bool,
    pub lease_name: Option<String>,
    pub default_secret: Option<SecretKey>,
    pub namespace_selector: bool,
}

impl OperatorSetup {
    fn needs(&self, permission: &Permission) -> bool {
        match permission.needed {
            Needed::Always => true,
            Needed::WithLeaderElection => self.leader_election,
            Needed::WithNamespaceSelector => self.namespace_selector,
            Needed::WithDefaultSecret => self.default_secret.is_some(),
        }
    }

    /// The namespace (empty: all, or cluster-scoped) and resource name a
    /// review of `permission` asks about, and how to say where.
    fn place(&self, permission: &Permission) -> (String, Option<String>, String) {
        match permission.scope {
            Scope::Watched => match &self.watched {
                Some(namespace) => (namespace.clone(), None, format!("in {namespace}")),
                None => (String::new(), None, "in all namespaces".into()),
            },
            Scope::Lease => {
                let namespace = self.operator_namespace.clone();
                (namespace.clone(), None, format!("in {namespace}"))
            }
            Scope::Cluster => (String::new(), None, "cluster-wide".into()),
            Scope::DefaultSecret => {
                let secret =
                    self.default_secret.clone().unwrap_or(SecretKey { namespace: String::new(), name: String::new() });
                (secret.namespace.clone(), Some(secret.name.clone()), format!("on {secret}"))
            }
        }
    }
}

/// One line per permission `run` needs: every verb allowed, or those
/// that are not, for the subject (reviews made as `client`, which
/// impersonates `--as` when given).
pub async fn permissions(client_as: &Client, setup: &OperatorSetup) -> Vec<Line> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client_as.clone());
    let who = setup.subject.clone().unwrap_or_else(|| "you".into());
    let mut lines = Vec::new();
    for permission in RUN_PERMISSIONS.iter().filter(|p| setup.needs(p)) {
        let (namespace, name, place) = setup.place(permission);
        let mut denied = Vec::new();
        let mut failed = None;
        for verb in permission.verbs {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        group: Some(permission.group.into()),
                        resource: Some(permission.resource.into()),
                        subresource: (!permission.subresource.is_empty()).then(|| permission.subresource.into()),
                        verb: Some((*verb).into()),
                        namespace: (!namespace.is_empty()).then(|| namespace.clone()),
                        name: name.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            match bounded(reviews.create(&PostParams::default(), &review)).await {
                Ok(answer) if answer.status.as_ref().is_some_and(|s| s.allowed) => {}
                Ok(_) => denied.push(*verb),
                Err(error) => failed = Some(error),
            }
        }
        let verbs = permission.verbs.join(", ");
        let line = match (failed, denied.is_empty()) {
            (Some(error), _) => {
                Line::fail("permission", format!("cannot ask about {} {place}: {error}", permission.name()))
            }
            (None, true) => Line::pass("permission", format!("{who} may {verbs} {} {place}", permission.name())),
            (None, false) => Line::fail(
                "permission",
                format!(
                    "{who} may not {} {} {place}, which run needs to {}",
                    denied.join(", "),
                    permission.name(),
                    permission.purpose
                ),
            ),
        };
        lines.push(line);
    }
    lines
}

/// The Lease line (pure): held, and renewed within its duration.
pub fn lease_line(lease: &Lease, now: Timestamp) -> Line {
    let name = lease.name_any();
    let spec = lease.spec.clone().unwrap_or_default();
    let Some(holder) = spec.holder_identity.filter(|h| !h.is_empty()) else {
        return Line::fail("operator", format!("Lease {name} has no holder: no operator is leading"));
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let Some(renewed) = spec.renew_time.map(|t| t.0) else {
        return Line::fail("operator", format!("Lease {name} is held by {holder} but was never renewed"));
    };
    let age = now.duration_since(renewed).as_secs();
    // The renew time is the pod's clock, `now` this machine's: some slack
    // keeps a skewed laptop from calling a live leader gone.
    if age > duration + CLOCK_SKEW_SLACK_SECONDS {
        return Line::fail(
            "operator",
            format!(
                "Lease {name} was last renewed by {holder} {age}s ago (its duration is {duration}s): the leader is gone or stuck"
            ),
        );
    }
    Line::pass("operator", format!("Lease {name} is held by {holder}, renewed {}s ago", age.max(0)))
}

/// The running operator: its Lease (found by name, or the one Lease in the
/// operator's namespace named like the chart names it) and `/readyz`.
pub async fn operator(client: &Client, setup: &OperatorSetup, readyz: Option<&str>) -> Vec<Line> {
    let mut lines = Vec::new();
    if setup.leader_election {
        let leases: Api<Lease> = Api::namespaced(client.clone(), &setup.operator_namespace);
        let line = match &setup.lease_name {
            Some(name) => match bounded(leases.get_opt(name)).await {
                Ok(Some(lease)) => lease_line(&lease, Timestamp::now()),
                Ok(None) => Line::fail(
                    "operator",
                    format!("no Lease {name} in {}: is the operator running there?", setup.operator_namespace),
                ),
                Err(error) => Line::fail("operator", format!("cannot read Lease {name}: {error}")),
            },
            None => match bounded(leases.list(&ListParams::default())).await {
                Ok(list) => {
                    let ours: Vec<&Lease> = list
                        .items
                        .iter()
                        .filter(|l| {
                            let name = l.name_any();
                            // `run`'s default, or the chart's RELEASE-groupban-operator
                            // (a release whose name holds it keeps its own name).
                            name.contains(crate::controller::CONTROLLER_NAME)
                        })
                        .collect();
                    match ours.as_slice() {
                        [lease] => lease_line(lease, Timestamp::now()),
                        [] => Line::fail(
                            "operator",
                            format!(
                                "no groupban-operator Lease in {}: is the operator running there?",
                                setup.operator_namespace
                            ),
                        ),
                        several => Line::fail(
                            "operator",
                            format!(
                                "{} groupban-operator Leases in {}: name one with --lease-name",
                                several.len(),
                                setup.operator_namespace
                            ),
                        ),
                    }
                }
                Err(error) => {
                    Line::fail("operator", format!("cannot list Leases in {}: {error}", setup.operator_namespace))
                }
            },
        };
        lines.push(line);
    }
    lines.push(match readyz {
        None => Line::skip(
            "readyz",
            "no --readyz-url (kubectl port-forward to the metrics port, then http://127.0.0.1:8080/readyz)",
        ),
        Some(url) => readyz_line(url).await,
    });
    lines
}

async fn readyz_line(url: &str) -> Line {
    let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
        Ok(client) => client,
        Err(error) => return Line::fail("readyz", format!("no HTTP client: {error}")),
    };
    match client.get(url).send().await {
        Ok(answer) => {
            let status = answer.status();
            let body = answer.text().await.unwrap_or_default();
            let body = crate::cut_text(body.trim(), 300);
            if status.is_success() {
                Line::pass("readyz", format!("{url} answered {status}"))
            } else {
                Line::fail("readyz", format!("{url} answered {status}: {body}"))
            }
        }
        Err(error) => Line::fail("readyz", format!("{url} is not reachable: {}", crate::error_chain(&error))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::report::Outcome;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    #[test]
    fn versions_from_the_minimum_up_pass() {
        assert_eq!(version_line("1", "36", "v1.36.3").outcome, Outcome::Pass);
        assert_eq!(version_line("1", "29+", "v1.29.1-eks").outcome, Outcome::Pass);
        let old = version_line("1", "28", "v1.28.9");
        assert_eq!(old.outcome, Outcome::Fail);
        assert!(old.detail.contains("older than 1.29"), "{}", old.detail);
        assert_eq!(version_line("", "", "").outcome, Outcome::Fail);
    }

    #[test]
    fn the_crd_must_serve_this_binarys_version_and_be_established() {
        let crd_with = |versions: &[&str], established: bool| -> CustomResourceDefinition {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": CRD_NAME},
                "spec": {"group": "groupban.dev", "scope": "Namespaced",
                    "names": {"plural": "groupbanpolicies", "kind": "GroupBanPolicy"},
                    "versions": versions.iter().map(|v| serde_json::json!({"name": v, "served": true, "storage": true})).collect::<Vec<_>>()},
                "status": {"conditions": [{"type": "Established", "status": if established { "True" } else { "False" }}]}
            }))
            .unwrap()
        };
        assert_eq!(crd_line(&crd_with(&["v1alpha1"], true)).outcome, Outcome::Pass);
        let moved = crd_line(&crd_with(&["v1beta1"], true));
        assert_eq!(moved.outcome, Outcome::Fail);
        assert!(moved.detail.contains("not v1alpha1"), "{}", moved.detail);
        assert_eq!(crd_line(&crd_with(&["v1alpha1"], false)).outcome, Outcome::Fail);
    }

    #[test]
    fn a_lease_must_be_held_and_renewed_within_its_duration() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let lease = |holder: Option<&str>, renewed_ago: Option<i64>| Lease {
            metadata: kube::api::ObjectMeta { name: Some("l".into()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(15),
                renew_time: renewed_ago.map(|ago| MicroTime(Timestamp::from_second(1_000_000 - ago).unwrap())),
                ..Default::default()
            }),
        };
        assert_eq!(lease_line(&lease(Some("pod-a"), Some(3)), now).outcome, Outcome::Pass);
        assert_eq!(lease_line(&lease(Some("pod-a"), Some(25)), now).outcome, Outcome::Pass, "within the skew slack");
        assert_eq!(lease_line(&lease(Some("pod-a"), Some(60)), now).outcome, Outcome::Fail);
        assert_eq!(lease_line(&lease(None, Some(1)), now).outcome, Outcome::Fail);
        assert_eq!(lease_line(&lease(Some("pod-a"), None), now).outcome, Outcome::Fail);
    }
}
