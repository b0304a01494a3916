//! `groupban-operator check` as a real process against the real control
//! plane (access reviews and impersonation are the API server's own), a
//! running operator and the simulator: every line passing for the chart's
//! ServiceAccount, and each line failing for what it guards against. The
//! version and CRD lines fail only on another cluster; their verdicts are
//! unit-tested in src/check/cluster.rs.

mod support;

use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::cluster::{BIN, Cluster, Operator, is_ready};
use support::*;

async fn run_check(cluster: &Cluster, args: &[&str]) -> Output {
    let run = tokio::process::Command::new(BIN)
        .arg("check")
        .args(["-n", &cluster.namespace])
        .args(args)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(90), run).await.expect("check finishes").expect("check runs")
}

fn lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect()
}

/// The line of `check` that starts with `mark` and mentions `about`.
fn has(output: &Output, mark: &str, about: &str) -> bool {
    lines(output).iter().any(|l| l.starts_with(mark) && l.contains(about))
}

/// The chart's ServiceAccount, a running operator, good credentials: every
/// line passes, exit 0.
#[tokio::test(flavor = "multi_thread")]
async fn every_line_passes_for_a_working_install() {
    let cluster = Cluster::start().await;
    let Some(user) = cluster.operator_user.clone() else {
        eprintln!("skipped: needs the real control plane (access reviews, impersonation)");
        return;
    };
    let sim = start(config(&seed_banned(&[("room", 3)]))).await;
    cluster.put_secret("groupban-credentials", &sim.base_url(), KEY).await;
    let operator = Operator::start(&cluster, &["--metrics-bind-address", "127.0.0.1:0"]);
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": members("m", 3)})).await;
    cluster.wait_for("p", Duration::from_secs(30), is_ready).await;
    let readyz = format!("{}/readyz", operator.metrics_base().await);
    let secret = format!("{}/groupban-credentials", cluster.namespace);
    let output = run_check(
        &cluster,
        &[
            "--as",
            &user,
            "--operator-namespace",
            &cluster.lease_namespace,
            "--lease-name",
            &cluster.lease_name,
            "--readyz-url",
            &readyz,
            "--secret",
            &secret,
            "--group",
            "room",
            "--wait",
            "30s",
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&output.stdout);
    eprintln!("{text}");
    assert_eq!(output.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&output.stderr));
    for about in ["kubernetes: v1.", "crd: groupbanpolicies.groupban.dev is installed and serves v1alpha1"] {
        assert!(has(&output, "[ok]", about), "{about}: {text}");
    }
    for resource in ["groupbanpolicies.groupban.dev in all", "groupbanpolicies/status.groupban.dev", "secrets in all"] {
        assert!(has(&output, "[ok]", &format!("{user} may")) && has(&output, "[ok]", resource), "{resource}: {text}");
    }
    for about in ["events.events.k8s.io", "leases.coordination.k8s.io", "is held by", "readyz:", "app 1400000000"] {
        assert!(has(&output, "[ok]", about), "{about}: {text}");
    }
    assert!(has(&output, "[ok]", "UserSig can be made"), "{text}");
    assert!(has(&output, "[ok]", "get_group_ban_member on room answered ErrorCode 0"), "{text}");
    assert!(!text.contains(KEY), "the secret key is never printed");

    // --policy: the Secret the policy uses and its group.
    let by_policy = run_check(
        &cluster,
        &["--policy", "p", "--lease-name", &cluster.lease_name, "--operator-namespace", &cluster.lease_namespace],
    )
    .await;
    assert!(
        has(&by_policy, "[ok]", "get_group_ban_member on room answered ErrorCode 0"),
        "{}",
        lines(&by_policy).join("\n")
    );
    cluster.cleanup().await;
}

/// Each check fails for what it guards against, saying what is wrong,
/// and the whole exits 1; `--wait` retries, then gives up.
#[tokio::test(flavor = "multi_thread")]
async fn each_line_fails_for_what_it_guards() {
    let cluster = Cluster::start().await;
    let Some(plane) = cluster.plane else {
        eprintln!("skipped: needs the real control plane (access reviews, impersonation)");
        return;
    };
    let sim = start(config(&seed_banned(&[("room", 3)]))).await;
    cluster.put_secret("groupban-credentials", &sim.base_url(), KEY).await;
    cluster.put_secret("wrong-key", &sim.base_url(), "not-the-key").await;
    let broken = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "broken"}, "stringData": {"identifier": ADMIN}});
    cluster.secrets().create(&PostParams::default(), &serde_json::from_value(broken).unwrap()).await.unwrap();
    plane.kubectl(&["create", "serviceaccount", "nobody", "-n", &cluster.namespace]);
    let nobody = format!("system:serviceaccount:{}:nobody", cluster.namespace);
    // A Lease whose holder stopped renewing a minute ago.
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let stale = json!({"metadata": {"name": "stale"}, "spec": {"holderIdentity": "gone-pod", "leaseDurationSeconds": 15,
        "renewTime": k8s_openapi::jiff::Timestamp::now().checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(60)).unwrap().to_string()}});
    leases.create(&PostParams::default(), &serde_json::from_value(stale).unwrap()).await.unwrap();

    let secret = |name: &str| format!("{}/{name}", cluster.namespace);
    // A policy on the shared default, in a namespace without the label.
    cluster.apply_policy("shared-user", json!({"groupId": "room", "unbannedMembers": ["m0"]})).await;
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec!["--as".into(), nobody.clone()],
            "[FAIL]",
            "may not get, list, watch groupbanpolicies.groupban.dev in all namespaces, which run needs to watch the policies",
        ),
        (vec!["--lease-name".into(), "stale".into()], "[FAIL]", "Lease stale was last renewed by gone-pod"),
        (vec!["--lease-name".into(), "nope".into()], "[FAIL]", "no Lease nope in"),
        (
            vec!["--readyz-url".into(), "http://127.0.0.1:1/readyz".into()],
            "[FAIL]",
            "readyz: http://127.0.0.1:1/readyz is not reachable",
        ),
        (
            vec!["--secret".into(), secret("wrong-key"), "--group".into(), "room".into()],
            "[FAIL]",
            "answered ErrorCode 70009",
        ),
        (
            vec!["--secret".into(), secret("groupban-credentials"), "--group".into(), "gone".into()],
            "[FAIL]",
            "answered ErrorCode 10010",
        ),
        (vec!["--secret".into(), secret("missing")], "[FAIL]", "not found"),
        (vec!["--secret".into(), secret("broken")], "[FAIL]", "has no key \"sdkAppId\""),
        (vec!["--policy".into(), "nope".into()], "[FAIL]", "not found"),
        (
            vec![
                "--policy".into(),
                "shared-user".into(),
                "--default-credentials-secret".into(),
                secret("groupban-credentials"),
                "--default-credentials-namespace-selector".into(),
                "groupban.dev/shared-credentials=true".into(),
            ],
            "[FAIL]",
            "DefaultCredentialsNotAllowed: namespace",
        ),
    ];
    for (args, mark, about) in cases {
        let mut all = vec!["--operator-namespace".to_string(), cluster.namespace.clone()];
        all.extend(args.iter().cloned());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let output = run_check(&cluster, &all).await;
        let text = lines(&output).join("\n");
        assert_eq!(output.status.code(), Some(1), "{args:?}: {text}");
        assert!(has(&output, mark, about), "{args:?}: expected {mark} ... {about} in\n{text}");
    }

    // --wait: tries again, then gives up with the last round's lines.
    let started = std::time::Instant::now();
    let output =
        run_check(&cluster, &["--operator-namespace", &cluster.namespace, "--lease-name", "nope", "--wait", "5s"])
            .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("trying again"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(started.elapsed() >= Duration::from_secs(3), "it waited");
    assert!(has(&output, "[FAIL]", "no Lease nope"));
    cluster.cleanup().await;
}

/// The two lines only another cluster can fail: an API server older than
/// 1.29 and a CRD that does not serve v1alpha1 (the fake API server stands
/// in, since the test control plane is new and shared).
#[tokio::test(flavor = "multi_thread")]
async fn the_version_and_crd_lines_fail_on_a_cluster_that_cannot_serve_the_operator() {
    use support::fake_apiserver::{FakeApiServer, RESOURCES, ResourceType};
    let mut resources = RESOURCES.to_vec();
    resources.push(ResourceType::new(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        false,
        &[],
        true,
    ));
    let fake = FakeApiServer::start_with_resources(&resources).await;
    fake.set_minor_version("28");
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "groupbanpolicies.groupban.dev"},
        "spec": {"group": "groupban.dev", "scope": "Namespaced",
            "names": {"plural": "groupbanpolicies", "kind": "GroupBanPolicy"},
            "versions": [{"name": "v1beta1", "served": true, "storage": true}]},
        "status": {"conditions": [{"type": "Established", "status": "True"}]}
    });
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(fake.client());
    crds.create(&PostParams::default(), &serde_json::from_value(crd).unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig);
    let output = tokio::process::Command::new(BIN)
        .args(["check", "--leader-elect=false"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .await
        .unwrap();
    let text = lines(&output).join("\n");
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(has(&output, "[FAIL]", "kubernetes: v1.28.0-fake is older than 1.29"), "{text}");
    assert!(has(&output, "[FAIL]", "serves [\"v1beta1\"], not v1alpha1"), "{text}");
}
