//! `groupban-operator run` as a real process against a Kubernetes API (the
//! faithful fake in tests/support, or a real cluster with
//! GROUPBAN_E2E_KUBECONFIG) and the IM simulator over loopback: what a user
//! sees after `kubectl apply`, edits, Secret rotation, drift and signals.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::{Cluster, Operator, condition, is_ready};
use support::*;

const SECRET: &str = "groupban-credentials";
const WAIT: Duration = Duration::from_secs(30);

fn spec(group: &str, members: &[String]) -> Value {
    json!({"groupId": group, "unbannedMembers": members})
}

/// Members the simulator answered ErrorCode 0 for, over the whole run.
async fn confirmed_unbanned(sim_url: &str) -> BTreeSet<String> {
    get_json(sim_url, "/simulator/requests").await["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["command"] == "unban_group_member" && r["errorCode"] == 0)
        .flat_map(|r| r["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()))
        .collect()
}

async fn unban_calls(sim_url: &str) -> usize {
    get_json(sim_url, "/simulator/requests").await["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["command"] == "unban_group_member")
        .count()
}

/// Apply a policy, get it Ready with every member unbanned in the
/// simulator, a Normal Event saying so; grow it, shrink it, delete it
/// (nobody is banned again).
#[tokio::test]
async fn create_grow_shrink_and_delete() {
    let sim = start(config(&seed_banned(&[("room", 50)]))).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let _operator = Operator::start(&cluster, &[]);

    cluster.apply_policy("p", spec("room", &members("m", 30))).await;
    let ready = cluster.wait_for("p", WAIT, is_ready).await;
    let status = ready.status.unwrap();
    assert_eq!(status.unbanned_members.len(), 30);
    assert_eq!(status.last_error_code, Some(0));
    assert_eq!(unban_calls(&sim.base_url()).await, 2, "30 members: the minimum of 2 calls");
    let events = cluster.event_reasons("p").await;
    assert!(events.contains(&("Normal".into(), "MembersUnbanned".into())), "{events:?}");

    cluster.apply_policy("p", spec("room", &members("m", 50))).await;
    let grown =
        cluster.wait_for("p", WAIT, |p| is_ready(p) && p.status.as_ref().unwrap().unbanned_members.len() == 50).await;
    assert_eq!(grown.status.unwrap().summary.unwrap().desired, 50);
    assert_eq!(unban_calls(&sim.base_url()).await, 3, "only the 20 new members were called");

    cluster.apply_policy("p", spec("room", &members("m", 10))).await;
    let shrunk =
        cluster.wait_for("p", WAIT, |p| is_ready(p) && p.status.as_ref().unwrap().unbanned_members.len() == 10).await;
    assert_eq!(shrunk.status.unwrap().summary.unwrap().desired, 10);
    assert_eq!(unban_calls(&sim.base_url()).await, 3, "shrinking calls nothing");

    // Deleting: no finalizer holds the policy, and the operator makes no
    // IM call at all for it (it never bans anyone back).
    let finalizers = cluster.policies().get("p").await.unwrap().metadata.finalizers;
    assert!(finalizers.unwrap_or_default().is_empty(), "no finalizer");
    let requests_before = get_json(&sim.base_url(), "/simulator/stats").await["requests"].as_u64().unwrap();
    cluster.delete_policy("p").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cluster.policies().get_opt("p").await.unwrap().is_none(), "deleted at once");
    let requests_after = get_json(&sim.base_url(), "/simulator/stats").await["requests"].as_u64().unwrap();
    assert_eq!(requests_after, requests_before, "no IM call after the delete");
    let state = get_json(&sim.base_url(), "/simulator/state").await;
    let banned = state["groups"][0]["banned"].as_array().unwrap().len();
    assert_eq!(banned, 0, "deleting a policy bans no one");
    cluster.cleanup().await;
}

/// Suspend: no calls and reason Suspended; resume: the calls are made.
#[tokio::test]
async fn suspend_then_resume() {
    let sim = start(config(&seed_banned(&[("room", 20)]))).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let _operator = Operator::start(&cluster, &[]);
    let mut suspended = spec("room", &members("m", 20));
    suspended["suspend"] = json!(true);
    cluster.apply_policy("p", suspended).await;
    let policy =
        cluster.wait_for("p", WAIT, |p| condition(p, "Ready").is_some_and(|(_, reason)| reason == "Suspended")).await;
    assert_eq!(condition(&policy, "Reconciling").unwrap(), ("False".into(), "Suspended".into()));
    assert_eq!(unban_calls(&sim.base_url()).await, 0);

    // `suspend: false` rather than leaving the field out: the fake API
    // server's apply merges and does not track managed fields.
    let mut resumed = spec("room", &members("m", 20));
    resumed["suspend"] = json!(false);
    cluster.apply_policy("p", resumed).await;
    cluster.wait_for("p", WAIT, is_ready).await;
    assert_eq!(unban_calls(&sim.base_url()).await, 1);
    cluster.cleanup().await;
}

/// A group that does not exist stalls the policy with its ErrorCode and a
/// Warning Event, without retrying in a loop; fixing the spec heals it.
#[tokio::test]
async fn a_terminal_error_code_stalls_until_the_spec_is_fixed() {
    let sim = start(config(&seed_banned(&[("room", 5)]))).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let _operator = Operator::start(&cluster, &[]);
    cluster.apply_policy("p", spec("no-such-room", &members("m", 5))).await;
    let stalled = cluster.wait_for("p", WAIT, |p| condition(p, "Stalled").is_some_and(|(s, _)| s == "True")).await;
    assert_eq!(condition(&stalled, "Stalled").unwrap().1, "GroupNotFound");
    assert_eq!(stalled.status.as_ref().unwrap().last_error_code, Some(10010));
    // At start the Secret watch's first list may re-check the policy once
    // (a Secret event wakes the policies using it); let that pass, then
    // watch longer than the first backoff (2.5-5 s) a loop would wait.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = unban_calls(&sim.base_url()).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(unban_calls(&sim.base_url()).await, calls, "a Stalled policy is not retried in a loop");
    let events = cluster.event_reasons("p").await;
    assert_eq!(events.iter().filter(|e| e.0 == "Warning").count(), 1, "{events:?}");

    cluster.apply_policy("p", spec("room", &members("m", 5))).await;
    cluster.wait_for("p", WAIT, is_ready).await;
    cluster.cleanup().await;
}

/// A wrong key stalls the policy on a signature error; putting the right
/// key in the Secret heals it with no edit to the policy.
#[tokio::test]
async fn secret_rotation_heals_a_stalled_policy() {
    let sim = start(config(&seed_banned(&[("room", 5)]))).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), "not-the-key").await;
    let _operator = Operator::start(&cluster, &[]);
    cluster.apply_policy("p", spec("room", &members("m", 5))).await;
    let stalled = cluster.wait_for("p", WAIT, |p| condition(p, "Stalled").is_some_and(|(s, _)| s == "True")).await;
    assert_eq!(condition(&stalled, "Stalled").unwrap().1, "UserSigKeyMismatch");

    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let healed = cluster.wait_for("p", WAIT, is_ready).await;
    assert_eq!(healed.metadata.generation, Some(1), "the policy was not edited");
    cluster.cleanup().await;
}

/// A member banned again behind the operator's back is unbanned at the
/// next drift check, and status says when and how many.
#[tokio::test]
async fn drift_is_corrected() {
    let sim = start(config(&seed_banned(&[("room", 5)]))).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let _operator = Operator::start(&cluster, &[]);
    let mut with_drift = spec("room", &members("m", 5));
    with_drift["driftCheckInterval"] = json!("1s");
    cluster.apply_policy("p", with_drift).await;
    cluster.wait_for("p", WAIT, is_ready).await;

    let admin = admin_client(&sim);
    assert_eq!(admin.ban_group_member("room", &["m3".to_string()], 3600).await.error_code(), Some(0));
    let corrected = cluster
        .wait_for("p", WAIT, |p| p.status.as_ref().and_then(|s| s.drift.as_ref()).is_some_and(|d| d.corrected == 1))
        .await;
    assert!(is_ready(&corrected));
    let state = get_json(&sim.base_url(), "/simulator/state").await;
    assert_eq!(state["groups"][0]["banned"].as_array().unwrap().len(), 0, "m3 is unbanned again");
    cluster.cleanup().await;
}

/// Drift checking on a policy that cannot progress (its group is gone)
/// neither retries in a loop nor reads the ban list every second.
#[tokio::test]
async fn drift_checks_on_a_stalled_policy_do_not_loop() {
    let sim = start(config(&seed_banned(&[("room", 5)]))).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let _operator = Operator::start(&cluster, &[]);
    let mut gone = spec("no-such-room", &members("m", 5));
    gone["driftCheckInterval"] = json!("1s");
    cluster.apply_policy("p", gone).await;
    cluster.wait_for("p", WAIT, |p| condition(p, "Stalled").is_some_and(|(s, _)| s == "True")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = get_json(&sim.base_url(), "/simulator/stats").await["requests"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = get_json(&sim.base_url(), "/simulator/stats").await["requests"].as_u64().unwrap();
    assert_eq!(after, before, "no IM call while Stalled (re-checked only every --stalled-recheck-interval)");
    cluster.cleanup().await;
}

/// The Flux convention: a reconcile-requested-at annotation is acted on
/// and echoed into status.lastHandledReconcileAt.
#[tokio::test]
async fn a_reconcile_request_is_handled_and_recorded() {
    let sim = start(config(&seed_banned(&[("room", 5)]))).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let _operator = Operator::start(&cluster, &[]);
    cluster.apply_policy("p", spec("room", &members("m", 5))).await;
    cluster.wait_for("p", WAIT, is_ready).await;
    cluster.annotate("p", "groupban.dev/reconcile-requested-at", "2026-11-27T12:00:00Z").await;
    cluster
        .wait_for("p", WAIT, |p| {
            p.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some("2026-11-27T12:00:00Z")
        })
        .await;
    cluster.cleanup().await;
}

/// A converged policy costs nothing: reconciled again and again (here
/// every second), it makes no status write and no IM call.
#[tokio::test]
async fn a_converged_policy_makes_no_write_and_no_call() {
    let sim = start(config(&seed_banned(&[("room", 40)]))).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let operator = Operator::start(&cluster, &["--resync-interval", "1s"]);
    cluster.apply_policy("p", spec("room", &members("m", 40))).await;
    let ready = cluster.wait_for("p", WAIT, is_ready).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(fake) = &cluster.fake {
        fake.clear_requests();
    }
    let audited_before = cluster.operator_requests().map(|r| r.len());
    let version = cluster.policies().get("p").await.unwrap().metadata.resource_version;
    let calls = unban_calls(&sim.base_url()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cluster.policies().get("p").await.unwrap().metadata.resource_version, version, "no write");
    assert_eq!(unban_calls(&sim.base_url()).await, calls, "no IM call");
    assert!(ready.status.unwrap().unbanned_members.len() == 40);
    // Reconciled meanwhile (a Secret read each time), and nothing written.
    let (secret_reads, writes) = match (&cluster.fake, cluster.operator_requests()) {
        (Some(fake), _) => {
            let requests = fake.requests();
            let secret_reads = requests.iter().filter(|r| r.method == "GET" && r.path.contains("/secrets/")).count();
            // The leader's Lease renewals are writes of another kind.
            let writes = requests.iter().filter(|r| r.method != "GET" && !r.path.contains("/leases/")).count();
            (Some(secret_reads), writes)
        }
        (None, Some(audited)) => {
            let quiet = &audited[audited_before.unwrap_or_default()..];
            let secret_reads = quiet.iter().filter(|r| r.verb == "get" && r.resource == "secrets").count();
            let writes = quiet.iter().filter(|r| !["get", "list", "watch"].contains(&r.verb.as_str())).count();
            (Some(secret_reads), writes)
        }
        (None, None) => (None, 0),
    };
    if let Some(secret_reads) = secret_reads {
        // A resync every second, plus the reconcile's own time: at least two.
        assert!(secret_reads >= 2, "it was reconciled during the quiet period ({secret_reads} Secret reads)");
    }
    assert_eq!(writes, 0, "no write request (status, Event, anything but the Lease)");
    drop(operator);
    cluster.cleanup().await;
}

/// 100 policies at once all converge, each with the fewest calls.
#[tokio::test]
async fn a_hundred_policies_at_once() {
    let groups: Vec<(String, usize)> = (0..100).map(|i| (format!("room{i}"), 25)).collect();
    let refs: Vec<(&str, usize)> = groups.iter().map(|(g, n)| (g.as_str(), *n)).collect();
    let sim = start(config(&seed_banned(&refs))).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let operator = Operator::start(&cluster, &[]);
    for (group, _) in &groups {
        cluster.apply_policy(group, spec(group, &members("m", 25))).await;
    }
    for (group, _) in &groups {
        cluster.wait_for(group, Duration::from_secs(60), is_ready).await;
    }
    let stats = get_json(&sim.base_url(), "/simulator/stats").await;
    if unban_calls(&sim.base_url()).await != 200 {
        // A rare extra pass seen under heavy load: say which policy and
        // what the operator logged about it.
        let mut extra = Vec::new();
        for (group, _) in &groups {
            let calls = group_calls(&sim.base_url(), group).await;
            if calls != 2 {
                let needle = group.to_string();
                let lines: Vec<String> = operator
                    .logs()
                    .lines()
                    .filter(|l| {
                        // The policy's own lines, and what the whole
                        // controller went through (leadership, lists).
                        let about_the_controller =
                            ["leader", "Leader", "lease", "Policy list done", "watch", "Controller"]
                                .iter()
                                .any(|w| l.contains(w));
                        about_the_controller
                            || l.match_indices(&needle)
                                .any(|(i, _)| !l[i + needle.len()..].starts_with(|c: char| c.is_ascii_digit()))
                    })
                    .map(str::to_string)
                    .collect();
                extra.push(format!("{group}: {calls} calls\n{}", lines.join("\n")));
            }
        }
        panic!("25 members: 2 calls each; {stats}\n{}", extra.join("\n---\n"));
    }
    cluster.cleanup().await;
}

/// SIGTERM in the middle of a large policy: the operator exits 0 well
/// within Kubernetes' 30 s grace period, having written exactly what the
/// simulator confirmed.
#[tokio::test]
async fn sigterm_writes_what_was_confirmed_and_exits_zero() {
    let mut config = config(&seed_banned(&[("room", 3000)]));
    config.rate_limit = 50;
    let sim = start(config).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let mut operator = Operator::start(&cluster, &["--max-calls-per-second", "50"]);
    cluster.apply_policy("p", spec("room", &members("m", 3000))).await;
    cluster.wait_for("p", WAIT, |p| p.status.as_ref().is_some_and(|s| !s.unbanned_members.is_empty())).await;
    operator.signal("TERM");
    let exit = operator.wait(Duration::from_secs(30)).await.expect("exits within 30 s");
    assert_eq!(exit.code(), Some(0), "{}", operator.logs());
    let recorded: BTreeSet<String> = cluster.status("p").await.unbanned_members.into_iter().collect();
    let confirmed = confirmed_unbanned(&sim.base_url()).await;
    assert_eq!(recorded, confirmed, "every confirmed member is recorded, and nothing else");
    assert!(recorded.len() < 3000, "it stopped early");
    cluster.cleanup().await;
}

/// SIGKILL at random moments of a large policy, then a restart: what was
/// recorded is always a subset of what the simulator really unbanned, and
/// the policy converges in the end.
#[tokio::test]
async fn sigkill_then_restart_never_records_an_unconfirmed_member() {
    let mut config = config(&seed_banned(&[("room", 2000)]));
    config.rate_limit = 100;
    let sim = start(config).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    cluster.apply_policy("p", spec("room", &members("m", 2000))).await;
    for round in 0..3 {
        let operator = Operator::start(&cluster, &["--max-calls-per-second", "100"]);
        tokio::time::sleep(Duration::from_millis(1500 + 400 * round)).await;
        operator.signal("KILL");
        drop(operator);
        let recorded: BTreeSet<String> = cluster.status("p").await.unbanned_members.into_iter().collect();
        let confirmed = confirmed_unbanned(&sim.base_url()).await;
        assert!(recorded.is_subset(&confirmed), "round {round}: recorded a member the simulator did not confirm");
    }
    let _operator = Operator::start(&cluster, &["--max-calls-per-second", "100"]);
    let done = cluster.wait_for("p", Duration::from_secs(60), is_ready).await;
    assert_eq!(done.status.unwrap().unbanned_members.len(), 2000);
    cluster.cleanup().await;
}

/// A policy deleted and made again under the same name while a pass for
/// the old one runs: status computed for the old object never lands on the
/// new one (a uid precondition), so a Flux or Argo CD reader never sees the
/// new policy Ready, or with the old group's members, before its own pass.
#[tokio::test]
async fn a_policy_recreated_under_its_name_never_gets_the_old_ones_status() {
    let mut config = config(&format!(
        "groups: [{{groupId: g1, type: AVChatRoom, banned: [{}]}}, {{groupId: g2, type: AVChatRoom, banned: [{}]}}]",
        members("m", 400).join(", "),
        members("n", 40).join(", ")
    ));
    config.rate_limit = 2;
    let sim = start(config).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let operator = Operator::start(&cluster, &["--max-calls-per-second", "2"]);
    cluster.apply_policy("p", spec("g1", &members("m", 400))).await;
    // A long pass is under way (2 calls/s, 20 members each) and has
    // published progress.
    cluster.wait_for("p", WAIT, |p| p.status.as_ref().is_some_and(|s| s.unbanned_members.len() >= 40)).await;
    let calls_at_delete = group_calls(&sim.base_url(), "g1").await;
    cluster.delete_policy("p").await;
    cluster.apply_policy("p", spec("g2", &members("n", 40))).await;
    let new_uid = cluster.policies().get("p").await.unwrap().metadata.uid;

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let policy = cluster.policies().get("p").await.unwrap();
        assert_eq!(policy.metadata.uid, new_uid, "the test re-created p once");
        let status = policy.status.clone().unwrap_or_default();
        assert_ne!(status.group_id.as_deref(), Some("g1"), "the old pass wrote onto the new policy: {status:#?}");
        assert!(
            status.unbanned_members.iter().all(|m| m.starts_with('n')),
            "the new policy shows members of the old one: {:?}",
            status.unbanned_members
        );
        if is_ready(&policy) {
            assert_eq!(status.unbanned_members.len(), 40);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not Ready: {status:#?}\n{}", operator.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The old pass stopped starting calls at the delete: one call may have
    // been on its way, one more while the delete was being sent (before the
    // fix: 5.4 s of calls, about 10).
    let late = group_calls(&sim.base_url(), "g1").await - calls_at_delete;
    assert!(late <= 2, "{late} calls for the deleted policy's group after the delete\n{}", operator.logs());
    cluster.cleanup().await;
}

/// How many requests the simulator has logged.
async fn logged_requests(sim_url: &str) -> usize {
    get_json(sim_url, "/simulator/requests").await["requests"].as_array().unwrap().len()
}

/// Unban calls the simulator received for `group`.
async fn group_calls(sim_url: &str, group: &str) -> usize {
    get_json(sim_url, "/simulator/requests").await["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["command"] == "unban_group_member" && r["groupId"] == group)
        .count()
}

/// A policy shrunk in the middle of a long pass: the pass stops starting
/// calls for members no longer desired within one call, and the policy
/// converges on its new spec.
#[tokio::test]
async fn a_spec_change_reaches_a_running_pass_within_one_call() {
    let mut config = config(&seed_banned(&[("room", 400)]));
    config.rate_limit = 2;
    let sim = start(config).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let operator = Operator::start(&cluster, &["--max-calls-per-second", "2"]);
    cluster.apply_policy("p", spec("room", &members("m", 400))).await;
    cluster.wait_for("p", WAIT, |p| p.status.as_ref().is_some_and(|s| s.unbanned_members.len() >= 40)).await;
    let calls_at_edit = logged_requests(&sim.base_url()).await;
    cluster.apply_policy("p", spec("room", &members("m", 30))).await;
    let done =
        cluster.wait_for("p", WAIT, |p| is_ready(p) && p.status.as_ref().unwrap().unbanned_members.len() == 30).await;
    assert_eq!(done.status.unwrap().summary.unwrap().desired, 30);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Calls carrying a member no longer desired, after the edit: one may
    // have been on its way, one more while the edit was being sent (before
    // the fix: 10 or more). Members are
    // planned in sorted order (m0, m1, m10, m100, ...), so the new spec
    // may still need calls of its own.
    let kept: std::collections::HashSet<String> = members("m", 30).into_iter().collect();
    let requests = get_json(&sim.base_url(), "/simulator/requests").await;
    let late = requests["requests"].as_array().unwrap()[calls_at_edit..]
        .iter()
        .filter(|r| r["command"] == "unban_group_member")
        .filter(|r| r["members"].as_array().unwrap().iter().any(|m| !kept.contains(m.as_str().unwrap())))
        .count();
    assert!(late <= 2, "{late} calls for removed members after the edit\n{}", operator.logs());
    cluster.cleanup().await;
}
