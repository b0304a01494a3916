//! The chart installed into the real control plane with the pinned Helm,
//! and `run` started on the host exactly as the chart's pod runs it: the
//! Deployment's own arguments, the ServiceAccount's TokenRequest token and
//! nothing else. Every request it makes is then authorized by the chart's
//! rules; with a rule taken away the operator goes on as far as it can and
//! says what it may not do. Also: the namespaced values, two releases side
//! by side, and in-cluster configuration as a pod sees it.
//!
//! Runs against the control plane of tests/support/control_plane.rs; skips
//! (with a notice) without one, except under GROUPBAN_REQUIRE_CONTROL_PLANE.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use groupban_operator::crd::{GroupBanPolicy, GroupBanPolicyStatus};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::cluster::{Operator, client_from, is_ready};
use support::control_plane::{self, ControlPlane, ROOT};
use support::*;

const WAIT: Duration = Duration::from_secs(30);

/// A release of the chart as installed, and how its pod would run `run`.
struct Release {
    namespace: String,
    /// The Deployment's container arguments, metrics on a free loopback port.
    args: Vec<String>,
    service_account: String,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Release {
    fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.service_account)
    }

    /// `run` as the chart's pod runs it, as its ServiceAccount.
    fn start_operator(&self) -> Operator {
        let env = [
            ("KUBECONFIG".to_string(), self.kubeconfig.display().to_string()),
            ("POD_NAMESPACE".to_string(), self.namespace.clone()),
            ("POD_NAME".to_string(), "operator-0".to_string()),
        ];
        Operator::start_raw(&self.args, &env)
    }
}

fn install(plane: &ControlPlane, release: &str, namespace: &str, options: &[&str]) -> Release {
    let chart = format!("{ROOT}/charts/groupban-operator");
    let mut args =
        vec!["install", release, chart.as_str(), "--namespace", namespace, "--create-namespace", "--timeout", "60s"];
    args.extend(options);
    plane.helm(&args).unwrap_or_else(|e| panic!("helm install {release}: {e}"));
    let manifest = plane.helm(&["get", "manifest", release, "-n", namespace]).unwrap();
    let deployment = yaml_serde::Deserializer::from_str(&manifest)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .find(|d| d["kind"] == "Deployment")
        .expect("the chart renders a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let service_account = pod["serviceAccountName"].as_str().unwrap().to_string();
    let args = pod["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .map(|a| if a.starts_with("--metrics-bind-address=") { "--metrics-bind-address=127.0.0.1:0".into() } else { a })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let token = plane.service_account_token(namespace, &service_account);
    plane.token_kubeconfig(&kubeconfig, &token, namespace);
    Release { namespace: namespace.into(), args, service_account, kubeconfig, _dir: dir }
}

async fn admin(plane: &ControlPlane) -> Client {
    groupban_operator::install_crypto_provider();
    client_from(&plane.admin_kubeconfig).await
}

fn create_namespace(plane: &ControlPlane, name: &str) {
    let _ = plane.kubectl_status(&["create", "namespace", name]);
}

async fn put_secret(client: &Client, namespace: &str, name: &str, endpoint: &str) {
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {"sdkAppId": SDKAPPID.to_string(), "identifier": ADMIN, "secretKey": KEY, "endpoint": endpoint},
    });
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    secrets.patch(name, &PatchParams::apply("chart-test").force(), &Patch::Apply(secret)).await.unwrap();
}

async fn put_policy(client: &Client, namespace: &str, name: &str, labels: Value, spec: Value) {
    let policy = json!({
        "apiVersion": "groupban.dev/v1alpha1", "kind": "GroupBanPolicy",
        "metadata": {"name": name, "labels": labels}, "spec": spec,
    });
    let policies: Api<GroupBanPolicy> = Api::namespaced(client.clone(), namespace);
    policies.patch(name, &PatchParams::apply("chart-test").force(), &Patch::Apply(policy)).await.unwrap();
}

/// True when no operator has written the policy's status: the API server
/// shows only the CRD's default (observedGeneration 0).
fn never_written(policy: &GroupBanPolicy) -> bool {
    policy
        .status
        .as_ref()
        .is_none_or(|s| *s == GroupBanPolicyStatus { observed_generation: Some(0), ..Default::default() })
}

async fn wait_ready(client: &Client, namespace: &str, name: &str, operator: &Operator) -> GroupBanPolicy {
    let policies: Api<GroupBanPolicy> = Api::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let policy = policies.get(name).await.unwrap();
        if is_ready(&policy) {
            return policy;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} not Ready: {:?}\n{}", policy.status, operator.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the API server refused this user, from its audit log.
fn forbidden_requests(plane: &ControlPlane, user: &str) -> Vec<String> {
    plane
        .requests_by(user)
        .into_iter()
        .filter(|r| r.code == 403)
        .map(|r| format!("{} {} ({}/{})", r.verb, r.uri, r.resource, r.subresource))
        .collect()
}

async fn metric(operator: &Operator, series: &str) -> Option<f64> {
    let base = operator.metrics_base().await;
    let text = reqwest::get(format!("{base}/metrics")).await.ok()?.text().await.ok()?;
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The CI values (one watched namespace, a label selector, the default
/// credentials in another namespace, two replicas with leader election),
/// as a second release beside the default one: a second release with
/// default values fails on the CRD the first one owns, and
/// `crds.install=false` is the way. The operator, run as that release's
/// pod, converges the policies its selector picks, ignores the others, and
/// the API server refused it nothing.
#[tokio::test]
async fn the_namespaced_values_run_as_a_second_release() {
    let Some(plane) = control_plane::for_test("the_namespaced_values_run_as_a_second_release").await else { return };
    let error = plane.helm_install("second", "groupban-second", &[]).expect_err("the CRD belongs to the first release");
    assert!(error.contains("CustomResourceDefinition") && error.contains("groupbanpolicies.groupban.dev"), "{error}");

    let values = format!("{ROOT}/charts/groupban-operator/ci/namespaced-values.yaml");
    for namespace in ["team-a", "im-system"] {
        create_namespace(plane, namespace);
    }
    let _ = plane.kubectl_status(&["label", "namespace", "team-a", "groupban.dev/shared-credentials-"]);
    // The values file also turns on the Prometheus Operator's kinds, which
    // this control plane does not serve.
    let release = install(
        plane,
        "shard-a",
        "ops-a",
        &[
            "--values",
            &values,
            "--set",
            "metrics.serviceMonitor.enabled=false",
            "--set",
            "metrics.prometheusRule.enabled=false",
        ],
    );
    assert!(release.args.iter().any(|a| a == "--namespace=team-a"), "{:?}", release.args);

    let sim = start(config(&seed_banned(&[("room", 30)]))).await;
    let client = admin(plane).await;
    put_secret(&client, "im-system", "groupban-credentials", &sim.base_url()).await;
    put_policy(
        &client,
        "team-a",
        "mine",
        json!({"shard": "a"}),
        json!({"groupId": "room", "unbannedMembers": members("m", 20)}),
    )
    .await;
    put_policy(
        &client,
        "team-a",
        "other",
        json!({"shard": "b"}),
        json!({"groupId": "room", "unbannedMembers": members("m", 30)}),
    )
    .await;
    let operator = release.start_operator();
    // Tenancy: the values let only labelled namespaces use the shared
    // default credentials. Unlabelled, team-a's policy that names no Secret
    // is Stalled, saying why; labelled, it goes ahead without any change to
    // the policy (the namespace watch wakes it), as the chart's RBAC allows.
    let policies: Api<GroupBanPolicy> = Api::namespaced(client.clone(), "team-a");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = policies.get("mine").await.unwrap().status.unwrap_or_default();
        let stalled = status.conditions.iter().find(|c| c.type_ == "Stalled" && c.status == "True");
        if let Some(stalled) = stalled {
            assert_eq!(stalled.reason, "DefaultCredentialsNotAllowed");
            assert!(stalled.message.contains("groupban.dev/shared-credentials=true"), "{}", stalled.message);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not Stalled: {status:?}\n{}", operator.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get_json(&sim.base_url(), "/simulator/stats").await["requests"], 0, "no call with the shared key");
    // A policy naming a Secret of its own is not concerned.
    put_secret(&client, "team-a", "own", &sim.base_url()).await;
    let own = json!({"groupId": "room", "unbannedMembers": members("m", 2), "credentialsSecretRef": {"name": "own"}});
    put_policy(&client, "team-a", "named", json!({"shard": "a"}), own).await;
    wait_ready(&client, "team-a", "named", &operator).await;
    plane.kubectl(&["label", "namespace", "team-a", "groupban.dev/shared-credentials=true", "--overwrite"]);
    let ready = wait_ready(&client, "team-a", "mine", &operator).await;
    assert_eq!(ready.status.unwrap().unbanned_members.len(), 20);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(never_written(&policies.get("other").await.unwrap()), "another shard's policy was touched");
    assert_eq!(forbidden_requests(plane, &release.user()), Vec::<String>::new(), "{}", operator.logs());
    assert!(!plane.requests_by(&release.user()).is_empty(), "the operator ran as the release's ServiceAccount");
}

/// Removes the rule for `resource` from a Role.
fn remove_rule(plane: &ControlPlane, namespace: &str, role: &str, resource: &str) {
    let mut object: Value =
        serde_json::from_str(&plane.kubectl(&["get", "role", role, "-n", namespace, "-o", "json"])).unwrap();
    let rules = object["rules"].as_array_mut().unwrap();
    let before = rules.len();
    rules.retain(|rule| rule["resources"][0] != resource);
    assert_eq!(rules.len(), before - 1, "{resource} had one rule");
    plane.kubectl_with(&plane.admin_kubeconfig, &["replace", "-f", "-"], Some(&object.to_string())).unwrap();
}

/// A release watching one namespace, with one rule of its Role taken away.
async fn release_without(plane: &ControlPlane, name: &str, resource: &str) -> (Release, String) {
    let watched = format!("{name}-{}", rand::random::<u32>());
    create_namespace(plane, &watched);
    let release = install(
        plane,
        name,
        &format!("{name}-ops"),
        &["--set", "crds.install=false", "--set", &format!("operator.watchNamespace={watched}")],
    );
    remove_rule(plane, &watched, &format!("{name}-groupban-operator"), resource);
    (release, watched)
}

/// An operator running as a release that lacks one rule, with a policy of
/// 10 banned members to unban in the namespace it watches.
struct Run {
    release: Release,
    watched: String,
    client: Client,
    operator: Operator,
    sim: groupban_operator::simulator::RunningSimulator,
}

async fn run_without(plane: &ControlPlane, name: &str, resource: &str) -> Run {
    let (release, watched) = release_without(plane, name, resource).await;
    let sim = start(config(&seed_banned(&[("room", 10)]))).await;
    let client = admin(plane).await;
    put_secret(&client, &watched, "groupban-credentials", &sim.base_url()).await;
    put_policy(&client, &watched, "p", json!({}), json!({"groupId": "room", "unbannedMembers": members("m", 10)}))
        .await;
    let operator = release.start_operator();
    Run { release, watched, client, operator, sim }
}

/// Without `create` on Events the operator still unbans and records, and
/// says in its log and its metrics what it may not do.
#[tokio::test]
async fn without_events_the_operator_still_converges_and_says_so() {
    let Some(plane) = control_plane::for_test("without_events_the_operator_still_converges_and_says_so").await else {
        return;
    };
    let Run { release, watched, client, operator, sim: _sim } = run_without(plane, "no-events", "events").await;
    wait_ready(&client, &watched, "p", &operator).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !operator.logs().contains("May not publish Events") {
        assert!(tokio::time::Instant::now() < deadline, "{}", operator.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let series = "groupban_kubernetes_forbidden_requests_total{verb=\"create\",resource=\"events.events.k8s.io\"}";
    assert_eq!(metric(&operator, series).await, Some(1.0));
    let forbidden = forbidden_requests(plane, &release.user());
    assert!(!forbidden.is_empty() && forbidden.iter().all(|r| r.contains("(events/)")), "{forbidden:?}");
}

/// Without `patch` on the status the operator makes its calls but cannot
/// record them: it says so (log, metric), backs off instead of looping,
/// and calls again only at each retry.
#[tokio::test]
async fn without_status_writes_the_operator_backs_off_and_says_so() {
    let Some(plane) = control_plane::for_test("without_status_writes_the_operator_backs_off_and_says_so").await else {
        return;
    };
    let Run { release, watched, client, operator, sim } =
        run_without(plane, "no-status", "groupbanpolicies/status").await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let logs = operator.logs();
    assert!(logs.contains("may not write the status of"), "{logs}");
    assert!(logs.contains("StatusForbidden"), "{logs}");
    let series = "groupban_kubernetes_forbidden_requests_total{verb=\"patch\",resource=\"groupbanpolicies.groupban.dev/status\"}";
    let refused = metric(&operator, series).await.unwrap_or_default();
    // Backoff of 2.5-5 s, then 5-10 s: at most three passes in 12 s.
    assert!((1.0..=3.0).contains(&refused), "{refused} refused status writes in 12 s");
    let status_writes = plane
        .requests_by(&release.user())
        .into_iter()
        .filter(|r| r.verb == "patch" && r.subresource == "status" && r.namespace == watched)
        .count();
    // Read after the metric: a retry may have started in between.
    let counted = refused as usize;
    assert!(
        (counted..=counted + 1).contains(&status_writes),
        "{status_writes} status writes, {counted} counted refused"
    );
    let calls = get_json(&sim.base_url(), "/simulator/requests").await["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["command"] == "unban_group_member")
        .count();
    assert!(
        (status_writes..=status_writes + 1).contains(&calls),
        "one call (10 members) per pass, a pass per retry: {calls} calls, {status_writes} status writes"
    );
    let policies: Api<GroupBanPolicy> = Api::namespaced(client, &watched);
    assert!(never_written(&policies.get("p").await.unwrap()));
}

/// In-cluster configuration for real: the ServiceAccount's files where a
/// pod has them (token, ca.crt, namespace), KUBERNETES_SERVICE_HOST and
/// _PORT set, and no kubeconfig anywhere. A private mount namespace lays
/// the files out at their in-pod path without touching the host's.
#[tokio::test]
async fn run_in_cluster_with_the_pod_service_account_files() {
    let Some(plane) = control_plane::for_test("run_in_cluster_with_the_pod_service_account_files").await else {
        return;
    };
    let unshare = std::process::Command::new("unshare").args(["--mount", "true"]).status();
    if !unshare.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var_os("GROUPBAN_REQUIRE_CONTROL_PLANE").is_none(),
            "in-cluster test needs `unshare --mount` (root)"
        );
        eprintln!("SKIPPED run_in_cluster_with_the_pod_service_account_files: unshare --mount is not allowed here");
        return;
    }
    let release = plane.default_release();
    let watched = format!("in-cluster-{}", rand::random::<u32>());
    create_namespace(plane, &watched);
    let sim = start(config(&seed_banned(&[("room", 5)]))).await;
    let client = admin(plane).await;
    put_secret(&client, &watched, "groupban-credentials", &sim.base_url()).await;
    put_policy(&client, &watched, "p", json!({}), json!({"groupId": "room", "unbannedMembers": members("m", 5)})).await;

    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("token"), &release.token).unwrap();
    std::fs::copy(&plane.ca, files.path().join("ca.crt")).unwrap();
    std::fs::write(files.path().join("namespace"), &release.namespace).unwrap();
    let home = tempfile::tempdir().unwrap();
    let script = r#"set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/secrets/kubernetes.io/serviceaccount
cp "$SA_FILES"/token "$SA_FILES"/ca.crt "$SA_FILES"/namespace /run/secrets/kubernetes.io/serviceaccount/
exec "$@""#;
    let args: Vec<String> = [
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "in-pod",
        support::cluster::BIN,
        "run",
        "--namespace",
        &watched,
        "--metrics-bind-address",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = [
        ("KUBERNETES_SERVICE_HOST".to_string(), "127.0.0.1".to_string()),
        ("KUBERNETES_SERVICE_PORT".to_string(), plane.port.to_string()),
        ("HOME".to_string(), home.path().display().to_string()),
        ("SA_FILES".to_string(), files.path().display().to_string()),
    ];
    let operator = Operator::start_program("unshare", &args, &env);
    wait_ready(&client, &watched, "p", &operator).await;
    let user = release.user();
    let requests = plane.requests_by(&user);
    assert!(requests.iter().any(|r| r.namespace == watched && r.subresource == "status"), "status written as {user}");
}
