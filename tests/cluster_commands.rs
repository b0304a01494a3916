//! `get`, `reconcile`, `suspend` and `resume` as real processes with a
//! user's kubeconfig, against the test API server (the real control plane
//! in CI), a running operator and the simulator: what they print, their
//! exit codes, the fields their writes own, and their errors. Also the
//! same binary as the kubectl plugin `kubectl groupban`.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use groupban_operator::crd::GroupBanPolicy;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use support::cluster::{BIN, Cluster, Operator, is_ready};
use support::*;

const WAIT: Duration = Duration::from_secs(30);

struct Cli<'a> {
    cluster: &'a Cluster,
}

impl Cli<'_> {
    /// The command with the test's kubeconfig, in the test's namespace.
    async fn run(&self, args: &[&str]) -> Output {
        self.run_with(&self.cluster.kubeconfig, args).await
    }

    async fn run_with(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        let run = tokio::process::Command::new(BIN)
            .args(args)
            .args(["-n", &self.cluster.namespace])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(Duration::from_secs(90), run).await.expect("the command finishes").expect("it runs")
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The fields `manager` owns in the object, as the API server records them.
fn owned_by(policy: &GroupBanPolicy, manager: &str) -> Vec<Value> {
    policy
        .managed_fields()
        .iter()
        .filter(|entry| entry.manager.as_deref() == Some(manager))
        .map(|entry| entry.fields_v1.as_ref().map(|f| f.0.clone()).unwrap_or(Value::Null))
        .collect()
}

/// A simulator with `banned` members of group "room" banned, a cluster
/// with its credentials, a running operator, and policy "p" (members
/// m0..m4) Ready.
async fn operator_with_ready_policy(
    banned: usize,
) -> (groupban_operator::simulator::RunningSimulator, Cluster, Operator) {
    let sim = start(config(&seed_banned(&[("room", banned)]))).await;
    let cluster = Cluster::start().await;
    cluster.put_secret("groupban-credentials", &sim.base_url(), KEY).await;
    let operator = Operator::start(&cluster, &[]);
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": members("m", 5)})).await;
    cluster.wait_for("p", WAIT, is_ready).await;
    (sim, cluster, operator)
}

/// `get`: a fresh policy reads READY Unknown, `-l` and a name narrow the
/// list, `-o wide|yaml|json` as kubectl prints them, `-A` adds the
/// namespace; a missing name is an error naming it.
#[tokio::test(flavor = "multi_thread")]
async fn get_lists_policies_in_each_format() {
    let cluster = Cluster::start().await;
    cluster.apply_policy("alpha", json!({"groupId": "@TGS#a", "unbannedMembers": ["x", "y"]})).await;
    cluster.apply_policy("beta", json!({"groupId": "@TGS#b", "unbannedMembers": ["z"]})).await;
    let labels = json!({"metadata": {"labels": {"tier": "gold"}}});
    cluster.policies().patch("beta", &PatchParams::default(), &Patch::Merge(labels)).await.unwrap();
    let cli = Cli { cluster: &cluster };

    let table = cli.run(&["get"]).await;
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    let text = stdout(&table);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let header: Vec<&str> = lines[0].split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(header, ["NAME", "GROUP", "DESIRED", "UNBANNED", "ERRORCODE", "READY", "AGE", "MESSAGE"]);
    let alpha: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(alpha[..6], ["alpha", "@TGS#a", "2", "0", "-", "Unknown"]);
    assert!(lines[1].ends_with("not reconciled yet"), "{text}");

    let gold = cli.run(&["get", "-l", "tier=gold"]).await;
    assert_eq!(stdout(&gold).lines().count(), 2);
    assert!(stdout(&gold).lines().nth(1).unwrap().starts_with("beta"));

    let wide = cli.run(&["get", "-o", "wide"]).await;
    let text = stdout(&wide);
    assert!(text.lines().next().unwrap().contains("SUSPENDED"), "{text}");
    let alpha: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(alpha[..10], ["alpha", "@TGS#a", "2", "0", "-", "Unknown", "0", "0", "false", "-"], "{text}");

    let refused = cli.run(&["get", "-w", "-o", "json"]).await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("--watch prints table rows"), "{}", stderr(&refused));
    let refused = cli.run(&["get", "beta", "-l", "tier=gold"]).await;
    assert_eq!(refused.status.code(), Some(2), "a name and a selector: kubectl refuses it too");

    let json = cli.run(&["get", "-o", "json"]).await;
    let list: Value = serde_json::from_slice(&json.stdout).expect("a JSON List");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert!(list["items"][0]["metadata"].get("managedFields").is_none(), "managedFields hidden, as kubectl does");

    let yaml = cli.run(&["get", "beta", "-o", "yaml"]).await;
    let object: Value = yaml_serde::from_slice(&yaml.stdout).expect("one YAML object");
    assert_eq!(object["kind"], "GroupBanPolicy");
    assert_eq!(object["spec"]["groupId"], "@TGS#b");

    let missing = cli.run(&["get", "nope"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains(&format!("GroupBanPolicy {}/nope not found", cluster.namespace)),
        "{}",
        stderr(&missing)
    );

    let all = tokio::process::Command::new(BIN)
        .args(["get", "-A"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .await
        .unwrap();
    let text = stdout(&all);
    assert!(text.starts_with("NAMESPACE"), "{text}");
    assert!(text.lines().any(|l| l.starts_with(&cluster.namespace) && l.contains("alpha")), "{text}");
    cluster.cleanup().await;
}

/// `reconcile NAME` sets the annotation, waits for the operator to handle
/// it, prints the outcome and exits 0 when Ready, 1 when not; its write is
/// its own field manager's and owns only the annotation.
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_waits_for_the_operator_and_reports_the_outcome() {
    let (_sim, cluster, _operator) = operator_with_ready_policy(5).await;
    let cli = Cli { cluster: &cluster };

    let output = cli.run(&["reconcile", "p", "--timeout", "30s"]).await;
    assert_eq!(output.status.code(), Some(0), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("Ready=True"), "{}", stdout(&output));
    assert!(stdout(&output).contains("last ErrorCode 0"), "{}", stdout(&output));
    let policy = cluster.policies().get("p").await.unwrap();
    let requested = policy.annotations().get("groupban.dev/reconcile-requested-at").cloned();
    assert!(requested.is_some());
    assert_eq!(policy.status.as_ref().unwrap().last_handled_reconcile_at, requested);
    // Field ownership is the API server's; the fake keeps none.
    if cluster.fake.is_none() {
        // ".": the annotations map itself, which this write created.
        let owned = owned_by(&policy, "groupban-cli");
        assert_eq!(
            owned,
            [json!({"f:metadata": {"f:annotations": {".": {}, "f:groupban.dev/reconcile-requested-at": {}}}})]
        );
    }

    // A group that is gone: handled, Stalled, exit 1 with the reason.
    cluster.apply_policy("gone", json!({"groupId": "no-such-group", "unbannedMembers": ["m0"]})).await;
    cluster.wait_for("gone", WAIT, |p| p.status.as_ref().is_some_and(|s| s.last_error_code == Some(10010))).await;
    let output = cli.run(&["reconcile", "gone", "--timeout", "30s"]).await;
    assert_eq!(output.status.code(), Some(1), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("Ready=False"), "{}", stdout(&output));
    assert!(stdout(&output).contains("last ErrorCode 10010"), "{}", stdout(&output));

    let output = cli.run(&["reconcile", "nope"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains(&format!("GroupBanPolicy {}/nope not found", cluster.namespace)));
    cluster.cleanup().await;
}

/// With no operator to answer, `reconcile` gives up at `--timeout` and
/// says what it waited for.
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_times_out_when_no_operator_answers() {
    let cluster = Cluster::start().await;
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": ["m0"]})).await;
    let output = Cli { cluster: &cluster }.run(&["reconcile", "p", "--timeout", "2s"]).await;
    assert_eq!(output.status.code(), Some(1));
    let error = stderr(&output);
    assert!(
        error.contains(&format!("timed out after 2s waiting for GroupBanPolicy {}/p", cluster.namespace)),
        "{error}"
    );
    assert!(error.contains("is an operator running"), "{error}");
    cluster.cleanup().await;
}

/// `suspend` stops the calls (the operator says Suspended and unbans no
/// one newly desired); `resume` lets it act again and waits for it; both
/// write only spec.suspend (and resume the annotation) as groupban-cli;
/// `reconcile` refuses a suspended policy.
#[tokio::test(flavor = "multi_thread")]
async fn suspend_and_resume_own_only_their_fields() {
    let (_sim, cluster, _operator) = operator_with_ready_policy(10).await;
    let cli = Cli { cluster: &cluster };

    let output = cli.run(&["suspend", "p"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("suspended"));
    let suspended =
        cluster.wait_for("p", WAIT, |p| p.status.as_ref().unwrap().observed_generation == p.metadata.generation).await;
    assert_eq!(suspended.spec.suspend, Some(true));
    if cluster.fake.is_none() {
        assert_eq!(owned_by(&suspended, "groupban-cli"), [json!({"f:spec": {"f:suspend": {}}})]);
    }

    let refused = cli.run(&["reconcile", "p"]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("is suspended: resume it"), "{}", stderr(&refused));

    // Newly desired members wait while suspended, and Ready says why.
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": members("m", 10)})).await;
    cluster
        .wait_for("p", WAIT, |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "Suspended"))
        })
        .await;
    assert_eq!(cluster.status("p").await.unbanned_members.len(), 5, "no call while suspended");

    let missing = cli.run(&["suspend", "nope"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains(&format!("GroupBanPolicy {}/nope not found", cluster.namespace)));

    let output = cli.run(&["resume", "p", "--timeout", "30s"]).await;
    assert_eq!(output.status.code(), Some(0), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("Ready=True"), "{}", stdout(&output));
    let resumed = cluster.policies().get("p").await.unwrap();
    assert_eq!(resumed.spec.suspend, Some(false));
    assert_eq!(resumed.status.as_ref().unwrap().unbanned_members.len(), 10);
    if cluster.fake.is_none() {
        let owned = owned_by(&resumed, "groupban-cli");
        assert_eq!(
            owned,
            [
                json!({"f:metadata": {"f:annotations": {".": {}, "f:groupban.dev/reconcile-requested-at": {}}}, "f:spec": {"f:suspend": {}}})
            ]
        );
        // The spec's other fields stay the test's own manager's.
        assert!(owned_by(&resumed, "e2e-test").iter().any(|f| f["f:spec"].get("f:unbannedMembers").is_some()));
    }
    cluster.cleanup().await;
}

/// `get --watch` prints the table, then a row when a policy changes.
#[tokio::test(flavor = "multi_thread")]
async fn get_watch_prints_a_row_for_each_change() {
    let cluster = Cluster::start().await;
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": ["m0"]})).await;
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut watching = tokio::process::Command::new(BIN)
        .args(["get", "--watch", "-n", &cluster.namespace])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdout(out.reopen().unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = || std::fs::read_to_string(out.path()).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + WAIT;
    while lines().lines().count() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no table: {}", lines());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": ["m0", "m1", "m2"]})).await;
    while !lines().lines().skip(2).any(|l| l.split_whitespace().nth(2) == Some("3")) {
        assert!(tokio::time::Instant::now() < deadline, "no row for the change: {}", lines());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lines().lines().filter(|l| l.starts_with("NAME")).count(), 1, "one header: {}", lines());
    let pid = watching.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let status =
        tokio::time::timeout(Duration::from_secs(10), watching.wait()).await.expect("stops on SIGINT").unwrap();
    assert_eq!(status.code(), Some(0));
    cluster.cleanup().await;
}

/// A user the API server forbids: the error says forbidden and names the
/// object (real control plane only: the fake authorizes everyone).
#[tokio::test(flavor = "multi_thread")]
async fn a_forbidden_user_is_told_so() {
    let cluster = Cluster::start().await;
    let Some(plane) = cluster.plane else {
        eprintln!("skipped: needs the real control plane (RBAC)");
        return;
    };
    plane.kubectl(&["create", "serviceaccount", "nobody", "-n", &cluster.namespace]);
    let token = plane.service_account_token(&cluster.namespace, "nobody");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("nobody.kubeconfig");
    plane.token_kubeconfig(&kubeconfig, &token, &cluster.namespace);
    let cli = Cli { cluster: &cluster };
    for args in [&["get"][..], &["suspend", "p"], &["reconcile", "p"]] {
        let output = cli.run_with(&kubeconfig, args).await;
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let error = stderr(&output);
        assert!(error.contains("forbidden: cannot"), "{args:?}: {error}");
        assert!(error.contains(&cluster.namespace), "{args:?} names the object: {error}");
    }
    cluster.cleanup().await;
}

/// Installed as `kubectl-groupban` on PATH, the binary answers `kubectl
/// groupban ...` (argv[0] decides), and its usage says so.
#[tokio::test(flavor = "multi_thread")]
async fn the_binary_is_a_kubectl_plugin() {
    let cluster = Cluster::start().await;
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": ["m0"]})).await;
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("kubectl-groupban");
    std::os::unix::fs::symlink(BIN, &plugin).unwrap();

    let help = std::process::Command::new(&plugin).arg("--help").output().unwrap();
    assert!(stdout(&help).contains("Usage: kubectl groupban"), "{}", stdout(&help));
    let direct = std::process::Command::new(&plugin)
        .args(["get", "p", "-n", &cluster.namespace])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .unwrap();
    assert!(stdout(&direct).lines().nth(1).is_some_and(|l| l.starts_with("p ")), "{}", stdout(&direct));

    let Some(plane) = cluster.plane else {
        eprintln!("skipped the kubectl half: no kubectl without the control plane");
        cluster.cleanup().await;
        return;
    };
    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
    let kubectl = plane.bin.join("kubectl");
    let through_kubectl = std::process::Command::new(kubectl)
        .args(["groupban", "get", "p", "-n", &cluster.namespace])
        .env("PATH", path)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .unwrap();
    assert_eq!(through_kubectl.status.code(), Some(0), "{}", stderr(&through_kubectl));
    assert!(
        stdout(&through_kubectl).lines().nth(1).is_some_and(|l| l.starts_with("p ")),
        "{}",
        stdout(&through_kubectl)
    );
    cluster.cleanup().await;
}

/// `resume --no-wait` returns once the policy is resumed and the reconcile
/// requested; the operator then does it.
#[tokio::test(flavor = "multi_thread")]
async fn resume_without_waiting_returns_at_once() {
    let sim = start(config(&seed_banned(&[("room", 3)]))).await;
    let cluster = Cluster::start().await;
    cluster.put_secret("groupban-credentials", &sim.base_url(), KEY).await;
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": members("m", 3), "suspend": true})).await;
    let output = Cli { cluster: &cluster }.run(&["resume", "p", "--no-wait"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("resumed; a reconcile is requested"), "{}", stdout(&output));
    let resumed = cluster.policies().get("p").await.unwrap();
    assert_eq!(resumed.spec.suspend, Some(false));
    assert!(resumed.annotations().contains_key("groupban.dev/reconcile-requested-at"));
    let _operator = Operator::start(&cluster, &[]);
    cluster.wait_for("p", WAIT, is_ready).await;
    cluster.cleanup().await;
}

/// A pass the operator keeps retrying (the gateway answers HTTP 502):
/// once the request is handled and `--timeout` runs out, `reconcile`
/// prints the outcome so far and exits 1.
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_reports_a_policy_still_retrying_at_the_timeout() {
    let mut sim_config = config(&seed_banned(&[("room", 3)]));
    sim_config.faults.fail_http502 = 1.0;
    let sim = start(sim_config).await;
    let cluster = Cluster::start().await;
    cluster.put_secret("groupban-credentials", &sim.base_url(), KEY).await;
    let _operator = Operator::start(&cluster, &[]);
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": members("m", 3)})).await;
    let output = Cli { cluster: &cluster }.run(&["reconcile", "p", "--timeout", "6s"]).await;
    assert_eq!(output.status.code(), Some(1), "{}{}", stdout(&output), stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("still reconciling after 6s"), "{text}");
    assert!(text.contains("Ready=False") && text.contains("last ErrorCode -1"), "{text}");
    cluster.cleanup().await;
}
