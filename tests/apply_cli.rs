//! `groupban-operator apply` as a real process against the simulator over
//! loopback: convergence under faults, each terminal code's condition,
//! credentials and manifest errors, and SIGKILL at random moments.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

use serde_json::Value;
use support::apply::*;
use support::*;

/// With 10% 10002 answers and 5% HTTP 502, apply still ends with exactly
/// the desired members unbanned, recorded, and nothing else touched.
#[tokio::test(flavor = "multi_thread")]
async fn converges_to_exactly_the_desired_state_under_faults() {
    // 50 calls: with 15% faults the chance of none is 0.03%, and the seed fixes it.
    let mut config = config(&seed_with_bans(&[("@TGS#a", "AVChatRoom", 620), ("@TGS#b", "AVChatRoom", 420)]));
    config.faults.fail_10002 = 0.10;
    config.faults.fail_http502 = 0.05;
    config.faults.seed = 11;
    let sim = start(config).await;
    let url = sim.base_url();
    let dir = manifests_dir(&[
        secret_yaml(&url, ADMIN, KEY, SDKAPPID),
        policy_yaml("a", "@TGS#a", &members("m", 600)),
        policy_yaml("b", "@TGS#b", &members("m", 400)),
    ]);
    let state = dir.path().join("state.json");
    let output = run_apply(dir.path(), &["--state", state.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    for (item, (group, n, left)) in items(&output).iter().zip([("@TGS#a", 600, 20), ("@TGS#b", 400, 20)]) {
        assert_eq!(condition(item, "Ready").0, "True");
        assert_eq!(strings(&item["status"]["unbannedMembers"]), members("m", n).into_iter().collect());
        assert_eq!(item["status"]["summary"]["unbanned"], n);
        let banned = get_json(&url, "/simulator/state").await["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["groupId"] == group)
            .unwrap()["banned"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(banned, left, "{group}: only undesired members stay banned");
    }
    let codes = logged_codes(&url).await;
    assert!(codes.contains(&Some(10002)) && codes.contains(&None), "faults were injected: {codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == Some(0)).count(), 30 + 20, "one success per batch");

    // A second run has nothing to do: no call at all.
    let again = run_apply(dir.path(), &["--state", state.to_str().unwrap()]).await;
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(logged_codes(&url).await.len(), codes.len());
}

/// Each terminal answer ends in Stalled with its reason and ErrorCode, and
/// group- or credential-level ones stop the policy's other calls.
#[tokio::test(flavor = "multi_thread")]
async fn each_terminal_code_ends_in_its_condition_reason_and_error_code() {
    let seed = "groups: [{groupId: room, type: AVChatRoom}, {groupId: pub, type: Public}, {groupId: locked, type: AVChatRoom, failWith: {errorCode: 10007, errorInfo: no permission}}, {groupId: weird, type: AVChatRoom, failWith: {errorCode: 10015, errorInfo: invalid group id}}]";
    let sim = start(config(seed)).await;
    let url = sim.base_url();
    let cases: Vec<(&str, String, &str, i64, &str)> = vec![
        ("group-missing", secret_yaml(&url, ADMIN, KEY, SDKAPPID), "gone", 10010, "GroupNotFound"),
        ("no-permission", secret_yaml(&url, ADMIN, KEY, SDKAPPID), "locked", 10007, "PermissionDenied"),
        ("bad-group-id", secret_yaml(&url, ADMIN, KEY, SDKAPPID), "weird", 10015, "InvalidGroupId"),
        ("not-avchatroom", secret_yaml(&url, ADMIN, KEY, SDKAPPID), "pub", 10004, "InvalidParameter"),
        ("wrong-key", secret_yaml(&url, ADMIN, "wrong", SDKAPPID), "room", 70009, "UserSigKeyMismatch"),
        ("not-admin", secret_yaml(&url, "bob", KEY, SDKAPPID), "room", 60010, "IdentifierNotAdmin"),
        ("wrong-app", secret_yaml(&url, ADMIN, KEY, SDKAPPID + 1), "room", 60006, "InvalidSdkAppId"),
    ];
    for (name, secret, group, code, reason) in cases {
        let before = logged_codes(&url).await.len();
        let dir = manifests_dir(&[secret, policy_yaml(name, group, &members("u", 1000))]);
        let output = run_apply(dir.path(), &[]).await;
        assert_eq!(output.status.code(), Some(1), "{name}: not Ready exits 1");
        let item = &items(&output)[0];
        let (stalled, stalled_reason, message) = condition(item, "Stalled");
        assert_eq!((stalled, stalled_reason), ("True", reason), "{name}");
        assert!(message.contains(&format!("ErrorCode {code}")), "{name}: {message}");
        assert_eq!(item["status"]["lastErrorCode"], code, "{name}");
        assert_eq!(condition(item, "Ready").0, "False");
        assert!(item["status"]["unbannedMembers"].as_array().is_none_or(|m| m.is_empty()));
        let calls = logged_codes(&url).await.len() - before;
        if code == 10004 {
            assert_eq!(calls, 50, "{name}: a batch-level fault fails only its batch");
        } else {
            assert!(calls < 50, "{name}: {calls} calls; a policy-level fault must stop the other 49");
        }
    }
}

/// Unusable credentials stall the policy with CredentialsInvalid, a
/// message naming the Secret and key, and not a single call.
#[tokio::test(flavor = "multi_thread")]
async fn unusable_credentials_stall_with_credentials_invalid_and_make_no_call() {
    let sim = start(config("groups: [{groupId: room, type: AVChatRoom}]")).await;
    let url = sim.base_url();
    let valid = secret_yaml(&url, ADMIN, KEY, SDKAPPID);
    let cases = [
        (None, "default/groupban-credentials not found"),
        (Some(valid.replace(&format!("  secretKey: {KEY}\n"), "")), "no key \"secretKey\""),
        (Some(valid.replace(&format!("\"{SDKAPPID}\""), "\"14e8\"")), "sdkAppId"),
        (Some(valid.replace(&format!("endpoint: {url}"), "region: atlantis")), "unknown region \"atlantis\""),
        (Some(valid.replace(&url, "http://10.1.2.3:8080")), "plain http"),
    ];
    for (secret, expected) in cases {
        let mut documents: Vec<String> = secret.into_iter().collect();
        documents.push(policy_yaml("p", "room", &members("u", 3)));
        let output = run_apply(manifests_dir(&documents).path(), &[]).await;
        assert_eq!(output.status.code(), Some(1), "{expected}");
        let item = &items(&output)[0];
        let (stalled, reason, message) = condition(item, "Stalled");
        assert_eq!((stalled, reason), ("True", "CredentialsInvalid"), "{expected}");
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains(KEY) && !message.contains("SECRETSIG"), "{message}");
    }
    assert!(logged_codes(&url).await.is_empty(), "no call without usable credentials");
}

/// Invalid input exits 2 with a message naming file, document and field,
/// and leaves the state file as it was.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_manifests_exit_2_naming_file_document_and_field() {
    let good = policy_yaml("p", "room", &members("u", 2));
    let cases = [
        (good.replace("unbannedMembers: [", "unbannedMembers: [\"u0\", "), "document 2", "spec.unbannedMembers[1]"),
        (good.replace("groupId: \"room\"", "groupId: 42"), "document 2", "spec.groupId"),
        (good.replace("groupId", "groupID"), "document 2", "spec.groupID"),
        ("kind: [unclosed".to_string(), "document 2", "invalid YAML"),
    ];
    for (broken, document, field) in cases {
        let dir = manifests_dir(&[secret_yaml("http://127.0.0.1:9", ADMIN, KEY, SDKAPPID), broken]);
        let state = dir.path().join("state.json");
        std::fs::write(
            &state,
            "{\"apiVersion\":\"groupban.dev/v1alpha1\",\"kind\":\"GroupBanPolicyState\",\"policies\":{}}",
        )
        .unwrap();
        let before = std::fs::read(&state).unwrap();
        let output = run_apply(dir.path(), &["--state", state.to_str().unwrap()]).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("manifests.yaml") && stderr.contains(document) && stderr.contains(field), "{stderr}");
        assert_eq!(std::fs::read(&state).unwrap(), before, "state file untouched");
    }
    let missing = run_apply(Path::new("/nonexistent/manifests"), &[]).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/manifests"));
}

/// The state file follows the spec: a member removed and added back is
/// unbanned again; a new group or a new endpoint starts the record over
/// (members unbanned elsewhere say nothing about the new place).
#[tokio::test(flavor = "multi_thread")]
async fn the_record_follows_spec_edits_group_changes_and_endpoint_changes() {
    let seed = seed_with_bans(&[("g1", "AVChatRoom", 40), ("g2", "AVChatRoom", 40)]);
    let first = start(config(&seed)).await;
    let second = start(config(&seed)).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let state_arg = state.to_str().unwrap().to_string();
    let run = |endpoint: String, group: &'static str, members: Vec<String>| {
        let (dir, state_arg) = (dir.path().to_path_buf(), state_arg.clone());
        async move {
            let documents = [secret_yaml(&endpoint, ADMIN, KEY, SDKAPPID), policy_yaml("p", group, &members)];
            std::fs::write(dir.join("manifests.yaml"), documents.join("---\n")).unwrap();
            let output = run_apply(&dir, &["--state", &state_arg]).await;
            assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
            items(&output)[0]["status"].clone()
        }
    };
    let calls = |url: String| async move { logged_codes(&url).await.len() };

    let status = run(first.base_url(), "g1", members("m", 40)).await;
    assert_eq!(strings(&status["unbannedMembers"]).len(), 40);
    assert_eq!(calls(first.base_url()).await, 2);

    let status = run(first.base_url(), "g1", members("m", 40)[10..].to_vec()).await;
    assert_eq!(strings(&status["unbannedMembers"]).len(), 30, "removed members leave the record");
    assert_eq!(calls(first.base_url()).await, 2, "removing members makes no call");

    let status = run(first.base_url(), "g1", members("m", 40)).await;
    assert_eq!(strings(&status["unbannedMembers"]).len(), 40);
    assert_eq!(calls(first.base_url()).await, 3, "the 10 members added back are unbanned again");

    let status = run(first.base_url(), "g2", members("m", 40)).await;
    assert_eq!(status["groupId"], "g2");
    assert_eq!(calls(first.base_url()).await, 5, "a new group starts over: 2 calls");

    let status = run(second.base_url(), "g2", members("m", 40)).await;
    assert_eq!(status["endpoint"], second.base_url());
    assert_eq!(calls(second.base_url()).await, 2, "a new endpoint starts over");
    assert_eq!(really_unbanned(&second.base_url(), "g2").await.len(), 40);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_file_in_use_or_no_policy_at_all_is_invalid_input() {
    let dir = manifests_dir(&[secret_yaml("http://127.0.0.1:9", ADMIN, KEY, SDKAPPID)]);
    let output = run_apply(dir.path(), &[]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no GroupBanPolicy"));

    let dir = manifests_dir(&[policy_yaml("p", "room", &members("u", 1))]);
    let state = dir.path().join("state.json");
    let lock = std::fs::File::create(dir.path().join(".state.json.lock")).unwrap();
    lock.try_lock().unwrap(); // another run holds it
    let output = run_apply(dir.path(), &["--state", state.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("in use by another run"));
}

/// SIGKILL at random moments, then a restart on the same state file: the
/// record never holds a member the simulator did not really unban, and the
/// runs converge to exactly the desired set.
#[tokio::test(flavor = "multi_thread")]
async fn killed_at_random_points_and_restarted_it_converges_without_false_records() {
    let mut config = config(&seed_with_bans(&[("@TGS#k", "AVChatRoom", 1100)]));
    config.faults.latency = Duration::from_millis(10);
    config.faults.fail_10002 = 0.05;
    let sim = start(config).await;
    let url = sim.base_url();
    let desired: BTreeSet<String> = members("m", 1000).into_iter().collect();
    let dir =
        manifests_dir(&[secret_yaml(&url, ADMIN, KEY, SDKAPPID), policy_yaml("k", "@TGS#k", &members("m", 1000))]);
    let state: PathBuf = dir.path().join("state.json");

    // A fixed LCG makes the kill times repeat from run to run.
    let mut rng: u64 = 0x9e3779b97f4a7c15;
    let mut next_delay_ms = || {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        100 + (rng >> 33) % 800
    };
    let recorded = |state: &Path| -> BTreeSet<String> {
        std::fs::read(state)
            .ok()
            .map(|bytes| {
                strings(&serde_json::from_slice::<Value>(&bytes).unwrap()["policies"]["default/k"]["unbannedMembers"])
            })
            .unwrap_or_default()
    };
    let mut partial_records = 0;
    let mut finished = false;
    for _ in 0..15 {
        let mut child = Command::new(BIN)
            .args(["apply", "-f"])
            .arg(dir.path())
            // 50 calls at 10/s take five seconds: most kills land mid-run.
            .args(["--state", state.to_str().unwrap(), "--max-calls-per-second", "10"])
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(next_delay_ms());
        tokio::select! {
            status = child.wait() => {
                assert_eq!(status.unwrap().code(), Some(0));
                finished = true;
            }
            _ = tokio::time::sleep(delay) => {
                child.start_kill().unwrap(); // SIGKILL
                child.wait().await.unwrap();
            }
        }
        let now_recorded = recorded(&state);
        let truly = really_unbanned(&url, "@TGS#k").await;
        assert!(now_recorded.is_subset(&truly), "recorded a member the simulator never unbanned");
        assert!(now_recorded.is_subset(&desired));
        if !finished && !now_recorded.is_empty() && now_recorded != desired {
            partial_records += 1;
        }
        if finished {
            break;
        }
    }
    if !finished {
        let output = run_apply(dir.path(), &["--state", state.to_str().unwrap()]).await;
        assert_eq!(output.status.code(), Some(0));
    }
    assert_eq!(recorded(&state), desired, "converged to exactly the desired set");
    eprintln!("{partial_records} kills landed mid-run with a partial record");
    assert!(partial_records >= 3, "only {partial_records} kills landed mid-run; the test proved too little");
}
