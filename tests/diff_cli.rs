//! `groupban-operator diff` as a real process against the simulator over
//! loopback, from manifest files (with a state file) and from a cluster:
//! what it reports, its exit codes, and that the gateway never receives an
//! unban call from it.

mod support;

use std::process::Output;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use support::apply::{BIN, manifests_dir, policy_yaml, secret_yaml};
use support::cluster::Cluster;
use support::*;

async fn run_diff(args: &[&str], env: &[(&str, &str)]) -> Output {
    let run = tokio::process::Command::new(BIN)
        .arg("diff")
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("diff finishes").expect("diff runs")
}

fn report(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("stdout is the JSON report ({e}); stderr: {}", String::from_utf8_lossy(&output.stderr))
    })
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every request the simulator logged, as (command, limit).
async fn requests(sim_url: &str) -> Vec<(String, Option<u64>)> {
    get_json(sim_url, "/simulator/requests").await["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["command"].as_str().unwrap().to_string(), r["limit"].as_u64()))
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// From files and a state file: desired members still banned, those not
/// banned, and a recorded member banned again, in the documented shape;
/// exit 1; the state file untouched; not one unban call.
#[tokio::test(flavor = "multi_thread")]
async fn files_report_each_kind_of_difference_and_never_unban() {
    let sim = start(config(
        "groups: [{groupId: \"@TGS#a\", type: AVChatRoom, banned: [m0, m1, other]}, {groupId: \"@TGS#b\", type: AVChatRoom, banned: [x]}]",
    ))
    .await;
    let url = sim.base_url();
    let dir = manifests_dir(&[
        secret_yaml(&url, ADMIN, KEY, SDKAPPID),
        policy_yaml("room", "@TGS#a", &["m0".into(), "m1".into(), "z".into()]),
        policy_yaml("quiet", "@TGS#b", &["y".into()]),
    ]);
    let state = dir.path().join("state.json");
    // As apply records it: the group, app and endpoint the members were
    // unbanned in, and a member no longer desired (which does not count).
    let recorded = json!({"apiVersion": "groupban.dev/v1alpha1", "kind": "GroupBanPolicyState", "policies": {
        "default/room": {"groupId": "@TGS#a", "sdkAppId": SDKAPPID, "endpoint": url, "unbannedMembers": ["m1", "z", "dropped"]}
    }});
    std::fs::write(&state, serde_json::to_vec(&recorded).unwrap()).unwrap();
    let before = std::fs::read(&state).unwrap();
    let path = dir.path().to_str().unwrap();

    let output = run_diff(&["-f", path, "--state", state.to_str().unwrap(), "-o", "json"], &[]).await;
    assert_eq!(output.status.code(), Some(1), "differences exit 1: {}", stderr(&output));
    let report = report(&output);
    assert_eq!(report["kind"], "GroupBanPolicyDiff");
    assert_eq!(report["differences"], true);
    assert_eq!(report["errors"], 0);
    let room = &report["policies"][0];
    assert_eq!((room["namespace"].as_str(), room["name"].as_str()), (Some("default"), Some("room")));
    // m1 is recorded: a pass will not call for it, only a drift check.
    assert_eq!(strings(&room["stillBanned"]), ["m0"]);
    assert_eq!(strings(&room["notBanned"]), ["z"]);
    assert_eq!(strings(&room["bannedAgain"]), ["m1"]);
    assert_eq!(
        (room["desired"].as_u64(), room["recorded"].as_u64(), room["bannedTotal"].as_u64()),
        (Some(3), Some(2), Some(3))
    );
    let quiet = &report["policies"][1];
    assert_eq!(strings(&quiet["stillBanned"]), Vec::<String>::new());
    assert_eq!(strings(&quiet["notBanned"]), ["y"]);
    assert_eq!(std::fs::read(&state).unwrap(), before, "diff only reads the state file");

    let table = run_diff(&["-f", path, "--state", state.to_str().unwrap()], &[]).await;
    assert_eq!(table.status.code(), Some(1));
    let text = stdout(&table);
    assert!(text.contains("default/room: still banned, the next pass unbans: m0\n"), "{text}");
    let drift = "default/room: recorded as unbanned but banned again (no spec.driftCheckInterval, so the operator will not notice): m1";
    assert!(text.contains(drift), "{text}");
    assert!(text.lines().any(|l| l.starts_with("default") && l.contains("quiet") && l.ends_with("in sync")), "{text}");

    // The variable `run` takes for its default Secret does not get in the
    // way of files (whose own Secrets are used).
    let env = [("GROUPBAN_DEFAULT_CREDENTIALS_SECRET", "elsewhere/shared")];
    let yaml = run_diff(&["-f", path, "-o", "yaml"], &env).await;
    let parsed: Value = yaml_serde::from_slice(&yaml.stdout).expect("YAML report");
    assert_eq!(parsed["policies"][0]["bannedAgain"], json!([]), "no state file: nothing recorded");
    assert_eq!(parsed["policies"][0]["stillBanned"], json!(["m0", "m1"]));

    let calls = requests(&url).await;
    assert!(!calls.is_empty());
    assert!(calls.iter().all(|(command, limit)| command == "get_group_ban_member" && *limit == Some(100)), "{calls:?}");
}

/// Exit 0 when every policy agrees with its group; 2 when one cannot be
/// compared (the others still reported); 2 for input it cannot read.
#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_follow_kubectl_diff() {
    let sim = start(config("groups: [{groupId: \"@TGS#a\", type: AVChatRoom, banned: [other]}]")).await;
    let url = sim.base_url();
    let in_sync = manifests_dir(&[secret_yaml(&url, ADMIN, KEY, SDKAPPID), policy_yaml("p", "@TGS#a", &["m0".into()])]);
    let output = run_diff(&["-f", in_sync.path().to_str().unwrap()], &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("in sync"));

    let gone = manifests_dir(&[
        secret_yaml(&url, ADMIN, KEY, SDKAPPID),
        policy_yaml("p", "@TGS#a", &["other".into()]),
        policy_yaml("q", "@TGS#gone", &["m0".into()]),
    ]);
    let output = run_diff(&["-f", gone.path().to_str().unwrap(), "-o", "json"], &[]).await;
    assert_eq!(output.status.code(), Some(2), "an error outranks the difference");
    let report = report(&output);
    assert_eq!(strings(&report["policies"][0]["stillBanned"]), ["other"], "the other policy is still compared");
    assert_eq!(report["policies"][1]["errorCode"], 10010);
    assert!(report["policies"][1]["error"].as_str().unwrap().contains("10010"));

    let no_secret = manifests_dir(&[policy_yaml("p", "@TGS#a", &["m0".into()])]);
    let output = run_diff(&["-f", no_secret.path().to_str().unwrap()], &[]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stdout(&output).contains("Secret default/groupban-credentials not found"), "{}", stdout(&output));

    let output = run_diff(&["-f", "/nonexistent/policies.yaml"], &[]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("/nonexistent/policies.yaml"), "{}", stderr(&output));

    // A state file that is not there, and a folder with no policy: errors,
    // never a silent "no difference".
    let missing_state = in_sync.path().join("typo.json");
    let output =
        run_diff(&["-f", in_sync.path().to_str().unwrap(), "--state", missing_state.to_str().unwrap()], &[]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("typo.json"), "{}", stderr(&output));
    let misspelt = manifests_dir(&[
        policy_yaml("p", "@TGS#a", &["m0".into()]).replace("kind: GroupBanPolicy", "kind: GroupBanPolicies")
    ]);
    let output = run_diff(&["-f", misspelt.path().to_str().unwrap()], &[]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("no GroupBanPolicy found"), "{}", stderr(&output));
    assert!(stderr(&output).contains("GroupBanPolicies"), "the skipped manifest is named: {}", stderr(&output));
    assert!(requests(&url).await.iter().all(|(command, _)| command == "get_group_ban_member"));
}

/// A group with 100,000 banned members is read in pages of 100 (1,000
/// calls), never faster than get_group_ban_member's 200 calls a second,
/// and only the policy's own members are reported.
#[tokio::test(flavor = "multi_thread")]
async fn a_ban_list_of_100000_is_paged_at_the_documented_size() {
    let sim = start(config(&seed_banned(&[("@TGS#big", 100_000)]))).await;
    let url = sim.base_url();
    let mut desired = members("m", 30);
    desired.extend(members("free", 5));
    let dir = manifests_dir(&[secret_yaml(&url, ADMIN, KEY, SDKAPPID), policy_yaml("big", "@TGS#big", &desired)]);
    let args = ["-f", dir.path().to_str().unwrap(), "-o", "json", "--max-calls-per-second", "200"];
    let output = run_diff(&args, &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report = report(&output);
    let policy = &report["policies"][0];
    assert_eq!(policy["bannedTotal"], 100_000);
    assert_eq!(strings(&policy["stillBanned"]).len(), 30);
    assert_eq!(strings(&policy["notBanned"]), members("free", 5));
    let calls = requests(&url).await;
    assert_eq!(calls.len(), 1000, "100,000 members in pages of 100");
    assert!(calls.iter().all(|(command, limit)| command == "get_group_ban_member" && *limit == Some(100)));
    let stats = get_json(&url, "/simulator/stats").await;
    assert!(stats["peakRequestsInWindow"].as_u64().unwrap() <= 200, "{stats}");
}

/// From the cluster: the policies of a namespace, the record in their
/// status, the Secret the operator would use; `-l` and a name narrow it.
#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_source_reads_status_records_and_secrets() {
    let sim = start(config("groups: [{groupId: \"@TGS#a\", type: AVChatRoom, banned: [m0, m1]}]")).await;
    let cluster = Cluster::start().await;
    cluster.put_secret("groupban-credentials", &sim.base_url(), KEY).await;
    cluster.apply_policy("room", json!({"groupId": "@TGS#a", "unbannedMembers": ["m0", "m1", "m2"]})).await;
    cluster.apply_policy("other", json!({"groupId": "@TGS#a", "unbannedMembers": ["m9"]})).await;
    cluster.apply_policy("moved", json!({"groupId": "@TGS#a", "unbannedMembers": ["m1"]})).await;
    let labels = json!({"metadata": {"labels": {"tier": "gold"}}});
    cluster.policies().patch("other", &PatchParams::default(), &Patch::Merge(labels)).await.unwrap();
    let record = |group: &str, members: &[&str]| json!({"status": {"groupId": group, "sdkAppId": SDKAPPID, "endpoint": sim.base_url(), "unbannedMembers": members}});
    for (name, status) in [("room", record("@TGS#a", &["m1", "m2"])), ("moved", record("@TGS#old", &["m1"]))] {
        cluster
            .policies()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .expect("record a status as the operator would");
    }
    let kubeconfig = cluster.kubeconfig.to_str().unwrap().to_string();
    let env = [("KUBECONFIG", kubeconfig.as_str())];

    let output = run_diff(&["-n", &cluster.namespace, "-o", "json"], &env).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report = report(&output);
    assert_eq!(report_names(&output), ["moved", "other", "room"]);
    let moved = &report["policies"][0];
    assert_eq!(strings(&moved["bannedAgain"]), Vec::<String>::new(), "a record of another group counts for nothing");
    assert_eq!(strings(&moved["stillBanned"]), ["m1"]);
    let room = &report["policies"][2];
    assert_eq!(strings(&room["stillBanned"]), ["m0"]);
    assert_eq!(strings(&room["bannedAgain"]), ["m1"]);
    assert_eq!(strings(&room["notBanned"]), ["m2"]);

    let gold = run_diff(&["-n", &cluster.namespace, "-l", "tier=gold", "-o", "json"], &env).await;
    assert_eq!(gold.status.code(), Some(0), "{}", stderr(&gold));
    assert_eq!(report_names(&gold), ["other"]);

    let one = run_diff(&["other", "-n", &cluster.namespace, "-o", "json"], &env).await;
    assert_eq!(one.status.code(), Some(0), "{}", stderr(&one));
    assert_eq!(report_names(&one), ["other"]);
    let missing = run_diff(&["nope", "-n", &cluster.namespace], &env).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains(&format!("GroupBanPolicy {}/nope not found", cluster.namespace)),
        "{}",
        stderr(&missing)
    );
    assert!(requests(&sim.base_url()).await.iter().all(|(command, _)| command == "get_group_ban_member"));
    cluster.cleanup().await;
}

fn report_names(output: &Output) -> Vec<String> {
    report(output)["policies"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect()
}
