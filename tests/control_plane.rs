//! What only a real API server shows: the CRD as kubectl and the server
//! read it (warnings, `explain`, columns, `wait`, schema and CEL rules,
//! list-type sets, unknown fields), Events for the longest names, field
//! managers beside our status manager, and kstatus (what Flux reads) on our
//! objects in each state.
//!
//! Runs against the control plane of tests/support/control_plane.rs; skips
//! (with a notice) without one, except under GROUPBAN_REQUIRE_CONTROL_PLANE.

mod support;

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use support::cluster::{Cluster, Operator, condition, is_ready};
use support::control_plane::{self, ControlPlane, ROOT};
use support::*;

const SECRET: &str = "groupban-credentials";
const WAIT: Duration = Duration::from_secs(30);

/// The API server warns about a CRD's schema (from 1.34 on, `unrecognized
/// format "uint32"` for the formats schemars derives) when it is created
/// or changed; kubectl prints warnings on stderr. `crds/` is applied
/// server-side as a new CRD (under a group of the test's own, since the
/// chart installed ours already) and draws no warning.
#[tokio::test]
async fn the_crd_applies_server_side_without_warnings() {
    let Some(plane) = control_plane::for_test("the_crd_applies_server_side_without_warnings").await else { return };
    let crd = std::fs::read_to_string(format!("{ROOT}/crds/groupbanpolicies.yaml")).unwrap();
    let group = format!("t{}.groupban.dev", rand::random::<u32>());
    let renamed = crd
        .replace("groupbanpolicies.groupban.dev", &format!("groupbanpolicies.{group}"))
        .replace("group: groupban.dev", &format!("group: {group}"));
    assert_ne!(renamed, crd);
    let output = std::process::Command::new(plane.bin.join("kubectl"))
        .args(["apply", "--server-side", "--field-manager=crd-test", "-f", "-"])
        .env("KUBECONFIG", &plane.admin_kubeconfig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(renamed.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("serverside-applied"));
    assert!(!stderr.to_lowercase().contains("warning"), "the API server warned: {stderr}");
}

/// `kubectl explain` shows our field docs.
#[tokio::test]
async fn kubectl_explain_prints_the_field_docs() {
    let Some(plane) = control_plane::for_test("kubectl_explain_prints_the_field_docs").await else { return };
    // The server publishes a new CRD's OpenAPI a moment after Established.
    let deadline = std::time::Instant::now() + WAIT;
    let spec = loop {
        match plane.kubectl_status(&["explain", "groupbanpolicy.spec"]) {
            Ok(text) => break text,
            Err(error) if std::time::Instant::now() < deadline => drop(error),
            Err(error) => panic!("kubectl explain: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(spec.contains("ID of the AVChatRoom group"), "{spec}");
    assert!(spec.contains("unbannedMembers"), "{spec}");
    let interval = plane.kubectl(&["explain", "groupbanpolicy.spec.driftCheckInterval"]);
    assert!(interval.contains("at least 1s"), "{interval}");
}

fn policy(namespace: &str, name: &str, spec: Value) -> String {
    json!({
        "apiVersion": "groupban.dev/v1alpha1", "kind": "GroupBanPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
    .to_string()
}

/// What the API server answers to `kubectl apply` of a spec: Ok, or the
/// error text kubectl printed.
fn apply(plane: &ControlPlane, namespace: &str, spec: Value, extra: &[&str]) -> Result<String, String> {
    let mut args = vec!["apply", "--server-side", "--field-manager=schema-test", "-f", "-"];
    args.extend(extra);
    plane.kubectl_with(&plane.admin_kubeconfig, &args, Some(&policy(namespace, "p", spec)))
}

/// Specs the operator would report as SpecInvalid are refused at
/// `kubectl apply` time, each with a message naming the field.
#[tokio::test]
async fn the_server_refuses_bad_specs_naming_the_field() {
    let Some(plane) = control_plane::for_test("the_server_refuses_bad_specs_naming_the_field").await else { return };
    let cluster = Cluster::start().await;
    let ns = cluster.namespace.clone();
    let good = json!({"groupId": "@TGS#room", "unbannedMembers": ["a", "b"], "driftCheckInterval": "1h30m"});
    apply(plane, &ns, good, &[]).expect("a good spec is accepted");
    let cases = [
        (json!({"groupId": "room", "unbannedMembers": ["a"], "driftCheckInterval": "500ms"}), "must be at least 1s"),
        (json!({"groupId": "room", "unbannedMembers": ["a"], "driftCheckInterval": "9000h"}), "must be at most a year"),
        (json!({"groupId": "room", "unbannedMembers": ["a"], "driftCheckInterval": "5x"}), "spec.driftCheckInterval"),
        (json!({"groupId": "g".repeat(49), "unbannedMembers": ["a"]}), "spec.groupId"),
        (json!({"groupId": "r\u{e9}", "unbannedMembers": ["a"]}), "spec.groupId"),
        (json!({"groupId": "", "unbannedMembers": ["a"]}), "spec.groupId"),
        (json!({"groupId": "room", "unbannedMembers": ["x".repeat(33)]}), "spec.unbannedMembers[0]"),
        // A list-type set: server-side apply says "duplicate entries".
        (json!({"groupId": "room", "unbannedMembers": ["a", "a"]}), "duplicate entries"),
        (
            json!({"groupId": "room", "unbannedMembers": ["a"], "credentialsSecretRef": {"name": ""}}),
            "credentialsSecretRef.name",
        ),
    ];
    for (spec, expected) in cases {
        let answer = apply(plane, &ns, spec.clone(), &[]);
        let error = answer.expect_err(&format!("{spec} was accepted"));
        assert!(error.contains(expected), "{spec}: expected {expected:?} in: {error}");
    }
    // kubectl create (no apply) meets the set rule in validation instead.
    let duplicate = json!({"groupId": "room", "unbannedMembers": ["a", "a"]});
    let created =
        plane.kubectl_with(&plane.admin_kubeconfig, &["create", "-f", "-"], Some(&policy(&ns, "q", duplicate)));
    let error = created.expect_err("a duplicate member is refused");
    assert!(error.contains("spec.unbannedMembers[1]: Duplicate value: \"a\""), "{error}");
    let too_many: Vec<String> = (0..5001).map(|i| format!("m{i}")).collect();
    let error = apply(plane, &ns, json!({"groupId": "room", "unbannedMembers": too_many}), &[]).unwrap_err();
    assert!(error.contains("spec.unbannedMembers") && error.contains("5000"), "{error}");
    cluster.cleanup().await;
}

/// An unknown field (a typo, say) is refused by server-side apply, as
/// Argo CD and Flux apply, and by kubectl's strict validation; a client
/// that turns validation off gets it pruned, never stored.
#[tokio::test]
async fn unknown_fields_are_refused_or_pruned() {
    let Some(plane) = control_plane::for_test("unknown_fields_are_refused_or_pruned").await else { return };
    let cluster = Cluster::start().await;
    let ns = cluster.namespace.clone();
    let spec = json!({"groupId": "room", "unbannedMembers": ["a"], "unbanedMembers": ["b"]});
    let error = apply(plane, &ns, spec.clone(), &[]).unwrap_err();
    assert!(error.contains(".spec.unbanedMembers: field not declared in schema"), "{error}");
    let create = |extra: &[&str]| {
        let mut args = vec!["create", "-f", "-"];
        args.extend(extra);
        plane.kubectl_with(&plane.admin_kubeconfig, &args, Some(&policy(&ns, "p", spec.clone())))
    };
    let error = create(&[]).unwrap_err();
    assert!(error.contains("unknown field \"spec.unbanedMembers\""), "{error}");
    create(&["--validate=false"]).expect("accepted without validation");
    let stored = cluster.policies().get("p").await.unwrap();
    assert_eq!(stored.spec.unbanned_members, ["a"]);
    let raw: Value = serde_json::from_str(&plane.kubectl(&["get", "gbp", "p", "-n", &ns, "-o", "json"])).unwrap();
    assert!(raw["spec"].get("unbanedMembers").is_none(), "pruned: {}", raw["spec"]);
    cluster.cleanup().await;
}

/// A policy applied by another field manager (as Argo CD and Flux apply)
/// converges; `kubectl get` shows the columns with values and `kubectl
/// wait` sees Ready; the spec stays the applier's and the status ours, so
/// neither overwrites the other.
#[tokio::test]
async fn a_gitops_applied_policy_shows_in_kubectl_get_and_wait() {
    let Some(plane) = control_plane::for_test("a_gitops_applied_policy_shows_in_kubectl_get_and_wait").await else {
        return;
    };
    let sim = start(config(&seed_banned(&[("room", 25)]))).await;
    let cluster = Cluster::start().await;
    let ns = cluster.namespace.clone();
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let _operator = Operator::start(&cluster, &[]);
    let spec = json!({"groupId": "room", "unbannedMembers": members("m", 25)});
    let manifest: Value = serde_json::from_str(&policy(&ns, "p", spec)).unwrap();
    cluster.policies().patch("p", &PatchParams::apply("argocd-controller"), &Patch::Apply(&manifest)).await.unwrap();

    let waited = tokio::task::spawn_blocking(move || {
        plane.kubectl_status(&["wait", "--for=condition=Ready", "gbp/p", "-n", &ns, "--timeout=60s"])
    })
    .await
    .unwrap();
    assert!(waited.is_ok(), "{waited:?}");
    let table = plane.kubectl(&["get", "groupbanpolicies", "-n", &cluster.namespace]);
    let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["NAME", "GROUP", "DESIRED", "UNBANNED", "ERRORCODE", "READY", "AGE"], "{table}");
    assert_eq!(lines[1][..6], ["p", "room", "25", "25", "0", "True"], "{table}");

    // The applier re-applies its spec: no conflict with our status, which stays.
    cluster.policies().patch("p", &PatchParams::apply("argocd-controller"), &Patch::Apply(&manifest)).await.unwrap();
    let stored = cluster.policies().get("p").await.unwrap();
    assert!(is_ready(&stored));
    let managers: Vec<(String, Option<String>)> = stored
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|entry| (entry.manager.unwrap_or_default(), entry.subresource))
        .collect();
    assert!(managers.contains(&("argocd-controller".into(), None)), "{managers:?}");
    assert!(managers.contains(&("groupban-operator".into(), Some("status".into()))), "{managers:?}");
    cluster.cleanup().await;
}

/// The longest name Kubernetes allows still gets its Events: kube names an
/// Event `<object>.<hex time>`, which the server refuses over 253.
#[tokio::test]
async fn a_policy_with_a_253_character_name_gets_its_events() {
    let Some(_) = control_plane::for_test("a_policy_with_a_253_character_name_gets_its_events").await else { return };
    let sim = start(config(&seed_banned(&[("room", 5)]))).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let operator = Operator::start(&cluster, &[]);
    let name = format!("{}.{}", "a".repeat(126), "b".repeat(126));
    assert_eq!(name.len(), 253);
    cluster.apply_policy(&name, json!({"groupId": "room", "unbannedMembers": members("m", 5)})).await;
    cluster.wait_for(&name, WAIT, is_ready).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let events = cluster.event_reasons(&name).await;
        if events.contains(&("Normal".into(), "MembersUnbanned".into())) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no Event: {events:?}\n{}", operator.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!operator.logs().contains("Failed to publish an Event"), "{}", operator.logs());
    cluster.cleanup().await;
}

/// kstatus, the library Flux's health checks are built on, computed on the
/// policies as the API server holds them.
fn kstatus(plane: &ControlPlane, objects: &[Value]) -> Vec<(String, String)> {
    let input: String = objects.iter().map(|o| format!("{o}\n")).collect();
    let output = std::process::Command::new(plane.bin.join("kstatus"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(input.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let result: Value = serde_json::from_str(line).unwrap();
            (result["name"].as_str().unwrap().to_string(), result["status"].as_str().unwrap().to_string())
        })
        .collect()
}

async fn raw_policies(cluster: &Cluster) -> Vec<Value> {
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        cluster.client.clone(),
        &cluster.namespace,
        &kube::api::ApiResource::erase::<groupban_operator::crd::GroupBanPolicy>(&()),
    );
    let list = api.list(&Default::default()).await.unwrap();
    list.items.into_iter().map(|o| serde_json::to_value(o).unwrap()).collect()
}

/// Each state the operator writes, as kstatus reads it (and so Flux's
/// health checks): Ready is Current; a pass under way is InProgress;
/// Stalled is Failed; a spec the operator has not looked at yet (stale
/// observedGeneration) is InProgress. A suspended policy is InProgress too:
/// its Ready is False (the members are not being unbanned), and kstatus
/// reads any Ready=False so. The README says so for `wait: true`.
#[tokio::test]
async fn kstatus_reads_each_state_as_flux_should() {
    let Some(plane) = control_plane::for_test("kstatus_reads_each_state_as_flux_should").await else { return };
    // 1,000 members at 4 calls/s: 12.5 s of calls, progress written every
    // second, still under way when the other three have settled.
    let mut config = config(&seed_banned(&[("room", 5), ("big", 1000)]));
    config.rate_limit = 4;
    let sim = start(config).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let mut operator = Operator::start(&cluster, &["--max-calls-per-second", "4"]);
    cluster.apply_policy("ready", json!({"groupId": "room", "unbannedMembers": members("m", 5)})).await;
    cluster.apply_policy("stalled", json!({"groupId": "no-such-room", "unbannedMembers": ["m1"]})).await;
    cluster.apply_policy("suspended", json!({"groupId": "room", "unbannedMembers": ["m1"], "suspend": true})).await;
    cluster.apply_policy("reconciling", json!({"groupId": "big", "unbannedMembers": members("m", 1000)})).await;
    cluster.wait_for("ready", WAIT, is_ready).await;
    cluster.wait_for("stalled", WAIT, |p| condition(p, "Stalled").is_some_and(|(s, _)| s == "True")).await;
    cluster.wait_for("suspended", WAIT, |p| condition(p, "Ready").is_some_and(|(_, r)| r == "Suspended")).await;
    cluster.wait_for("reconciling", WAIT, |p| condition(p, "Reconciling").is_some_and(|(s, _)| s == "True")).await;
    let mut states = kstatus(plane, &raw_policies(&cluster).await);
    states.sort();
    assert_eq!(
        states,
        [
            ("ready".to_string(), "Current".to_string()),
            ("reconciling".into(), "InProgress".into()),
            ("stalled".into(), "Failed".into()),
            ("suspended".into(), "InProgress".into()),
        ]
    );
    // Stop the operator and edit a Ready policy: until an operator looks
    // at the new generation, kstatus must not call it Current.
    operator.signal("KILL");
    operator.wait(Duration::from_secs(5)).await;
    cluster.apply_policy("ready", json!({"groupId": "room", "unbannedMembers": members("m", 4)})).await;
    // A policy no operator has looked at: the CRD's status default
    // (observedGeneration 0) makes it InProgress, not Current, so a Flux
    // Kustomization with `wait: true` does not pass it unreconciled.
    cluster.apply_policy("fresh", json!({"groupId": "room", "unbannedMembers": ["m1"]})).await;
    let states = kstatus(plane, &raw_policies(&cluster).await);
    assert!(states.contains(&("ready".into(), "InProgress".into())), "{states:?}");
    assert!(states.contains(&("fresh".into(), "InProgress".into())), "{states:?}");
    let fresh = cluster.policies().get("fresh").await.unwrap();
    assert_eq!(fresh.status.and_then(|s| s.observed_generation), Some(0), "the API server's default");
    cluster.cleanup().await;
}
