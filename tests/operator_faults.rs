//! `groupban-operator run` under API-server faults, through the fake API
//! server (the one that can inject them: status codes, refused requests,
//! hung watches) and the IM simulator: what a user sees in the process's
//! exit, its log, `/readyz` and the policies' status.
//!
//! These always use the in-process fake, with or without the local control
//! plane: a real API server cannot be told to fail on cue.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::{Cluster, Operator, is_ready};
use support::*;

const SECRET: &str = "groupban-credentials";
const WAIT: Duration = Duration::from_secs(30);

async fn readyz(operator: &Operator) -> Option<(u16, String)> {
    let base = operator.metrics_base().await;
    let response = reqwest::get(format!("{base}/readyz")).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// The operator's start-up check: a list of one policy (kube writes the
/// query as `?&limit=1`).
const STARTUP_LIST: &str = "groupbanpolicies?&limit=1";

/// A blip at start (the API server answering 500 while it restarts) is
/// waited out with backoff, `/readyz` saying what it waits for, instead of
/// exiting: in a cluster an exit is a CrashLoopBackOff.
#[tokio::test]
async fn a_blip_at_start_is_waited_out_not_a_crash() {
    let sim = start(config(&seed_banned(&[("room", 5)]))).await;
    let cluster = Cluster::start_fake().await;
    let fake = cluster.fake.as_ref().unwrap();
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": members("m", 5)})).await;
    fake.fail_requests(Some("GET"), STARTUP_LIST, 500, 2);
    let mut operator = Operator::start(&cluster, &["--metrics-bind-address", "127.0.0.1:0"]);
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some((503, body)) = readyz(&operator).await
            && body.contains("waiting for the API server")
        {
            break;
        }
        assert!(operator.child.try_wait().unwrap().is_none(), "exited: {}", operator.logs());
        assert!(Instant::now() < deadline, "/readyz never said what it waits for: {}", operator.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.wait_for("p", WAIT, is_ready).await;
    assert_eq!(readyz(&operator).await.map(|r| r.0), Some(200));
    // Each 500 is told once, saying what failed and what happens next;
    // not also as kube's bare `ERROR failed with status 500`.
    let logs = operator.logs();
    assert_eq!(logs.matches("Waiting for the API server: cannot list GroupBanPolicies yet").count(), 2, "{logs}");
    assert!(!logs.contains("failed with status"), "{logs}");
    operator.signal("TERM");
    assert_eq!(operator.wait(Duration::from_secs(25)).await.and_then(|s| s.code()), Some(0));
    cluster.cleanup().await;
}

/// What retrying cannot fix still ends the process at once, naming the fix.
#[tokio::test]
async fn a_missing_crd_or_a_denied_list_exits_at_once_naming_the_fix() {
    for (status, expected) in [(404, "CRD (groupbanpolicies.groupban.dev) is not installed"), (403, "access denied")] {
        let cluster = Cluster::start_fake().await;
        cluster.fake.as_ref().unwrap().fail_requests(Some("GET"), STARTUP_LIST, status, 1);
        let mut operator = Operator::start(&cluster, &[]);
        let exit = operator.wait(Duration::from_secs(10)).await.expect("exits at once");
        assert_eq!(exit.code(), Some(1), "{}", operator.logs());
        assert!(operator.logs().contains(expected), "{status}: {}", operator.logs());
        cluster.cleanup().await;
    }
}

/// Applies a policy whatever its spec, through an untyped client (the
/// typed one could not read the answer back).
async fn apply_untyped(cluster: &Cluster, name: &str, spec: serde_json::Value) {
    use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
    let resource = ApiResource::erase::<groupban_operator::crd::GroupBanPolicy>(&());
    let api: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &resource);
    let object = json!({"apiVersion": "groupban.dev/v1alpha1", "kind": "GroupBanPolicy", "metadata": {"name": name}, "spec": spec});
    api.patch(name, &PatchParams::apply("e2e-test").force(), &Patch::Apply(object)).await.expect("apply the policy");
}

/// The status of a policy whatever its spec.
async fn untyped_status(cluster: &Cluster, name: &str) -> serde_json::Value {
    use kube::api::{ApiResource, DynamicObject};
    let resource = ApiResource::erase::<groupban_operator::crd::GroupBanPolicy>(&());
    let api: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &resource);
    api.get(name).await.expect("get the policy").data["status"].clone()
}

/// One wrong-typed policy (a spec that slipped past the schema, as happens
/// when a CRD's schema changes under stored objects) hides no other: the
/// good one converges and `/readyz` is 200; the bad one is named with its
/// field in the log, in a Warning Event and in its status (Stalled,
/// `SpecInvalid`), at start and when one is made while running; no member
/// list reaches the log; SIGTERM exits 0 at once.
#[tokio::test]
async fn one_wrong_typed_policy_hides_no_other() {
    let sim = start(config(&seed_banned(&[("room", 5)]))).await;
    let cluster = Cluster::start_fake().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    cluster.apply_policy("good", json!({"groupId": "room", "unbannedMembers": members("m", 5)})).await;
    apply_untyped(&cluster, "bad", json!({"groupId": "room", "unbannedMembers": ["alice-the-member", 7]})).await;
    let mut operator = Operator::start(&cluster, &["--metrics-bind-address", "127.0.0.1:0"]);
    cluster.wait_for("good", WAIT, is_ready).await;
    assert_eq!(readyz(&operator).await.map(|r| r.0), Some(200), "{}", operator.logs());

    apply_untyped(&cluster, "worse", json!({"groupId": 42, "unbannedMembers": ["bob-the-member"]})).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let logs = operator.logs();
        let named = |name: &str, field: &str| {
            logs.lines()
                .any(|l| l.contains(&format!("e2e/{name}")) && l.contains(field) && l.contains("cannot be read"))
        };
        if named("bad", "spec.unbannedMembers[1]") && named("worse", "spec.groupId") {
            break;
        }
        assert!(Instant::now() < deadline, "the bad policies were not named: {logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in ["bad", "worse"] {
        let deadline = Instant::now() + WAIT;
        while !cluster.event_reasons(name).await.contains(&("Warning".into(), "SpecInvalid".into())) {
            assert!(Instant::now() < deadline, "no Warning Event for {name}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Said in their own status too, where kstatus and `kubectl wait` look.
    for (name, field) in [("bad", "spec.unbannedMembers[1]"), ("worse", "spec.groupId")] {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = untyped_status(&cluster, name).await;
            let condition =
                |kind: &str| status["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == kind).cloned();
            if let (Some(ready), Some(stalled)) = (condition("Ready"), condition("Stalled"))
                && (ready["status"] == "False" && ready["reason"] == "SpecInvalid")
                && (stalled["status"] == "True" && stalled["message"].as_str().is_some_and(|m| m.contains(field)))
            {
                break;
            }
            assert!(Instant::now() < deadline, "no SpecInvalid status on {name}: {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let logs = operator.logs();
    assert!(!logs.contains("alice-the-member") && !logs.contains("bob-the-member"), "members logged: {logs}");
    operator.signal("TERM");
    let exit = operator.wait(Duration::from_secs(10)).await.expect("exits well within the grace period");
    assert_eq!(exit.code(), Some(0), "{}", operator.logs());
    cluster.cleanup().await;
}

/// A policy watch that sends headers and then nothing hid every change
/// until kube's 295 s idle cut. Cut after `--watch-idle-timeout` (2 m by
/// default; 6 s, the least, here) and restarted: the change comes through.
#[tokio::test]
async fn a_hung_watch_is_cut_and_restarted() {
    let sim = start(config(&seed_banned(&[("room", 5)]))).await;
    let cluster = Cluster::start_fake().await;
    let fake = cluster.fake.as_ref().unwrap();
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let operator = Operator::start(&cluster, &["--metrics-bind-address", "127.0.0.1:0", "--watch-idle-timeout", "6s"]);
    // Ready once the first list is in; then the next policy watch hangs.
    let deadline = Instant::now() + WAIT;
    while readyz(&operator).await.map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "never ready: {}", operator.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started_hanging = std::time::Instant::now();
    fake.hang_watches("groupbanpolicies", 1);
    fake.drop_watches();
    // The old watch closes and the new one hangs before the change is made.
    let deadline = Instant::now() + WAIT;
    while !fake
        .requests()
        .iter()
        .any(|r| r.path.ends_with("/groupbanpolicies") && r.is_watch() && r.status == 200 && r.at > started_hanging)
    {
        assert!(Instant::now() < deadline, "no new watch");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": members("m", 5)})).await;
    let started = Instant::now();
    cluster.wait_for("p", WAIT, is_ready).await;
    // 6 s of silence, then a new watch (the relist brings the policy).
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "the change came through the hung watch? {:?}",
        started.elapsed()
    );
    cluster.cleanup().await;
}

/// A policy watch that fails (the API server answering 500 while it
/// restarts) makes `/readyz` 503 saying so, even on the leader (whose
/// election rounds say ready), and 200 again once the watch recovers.
#[tokio::test]
async fn a_failing_watch_says_so_in_readyz_until_it_recovers() {
    let cluster = Cluster::start_fake().await;
    let fake = cluster.fake.as_ref().unwrap();
    let operator = Operator::start(&cluster, &["--metrics-bind-address", "127.0.0.1:0"]);
    let ready = |want: u16, says: &'static str| {
        let operator = &operator;
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                if let Some((status, body)) = readyz(operator).await
                    && status == want
                    && body.contains(says)
                {
                    return;
                }
                assert!(Instant::now() < deadline, "/readyz never {want} {says:?}: {}", operator.logs());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    ready(200, "ok").await;
    // Every policy watch and list fails for a while (the watcher backs off
    // between tries), then the API server is back.
    fake.fail_requests(Some("GET"), "/groupbanpolicies?", 500, 4);
    fake.drop_watches();
    ready(503, "the policy watch failed").await;
    ready(200, "ok").await;
    assert!(operator.logs().contains("The policy watch failed; restarting it"), "{}", operator.logs());
    cluster.cleanup().await;
}

/// Polls until the policy's Ready condition is False with `reason`; returns
/// its message.
async fn wait_not_ready_for(cluster: &Cluster, name: &str, reason: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let status = cluster.status(name).await;
        if let Some(ready) = status.conditions.iter().find(|c| c.type_ == "Ready")
            && ready.status == "False"
            && ready.reason == reason
        {
            return ready.message.clone();
        }
        assert!(Instant::now() < deadline, "Ready never False/{reason}: {:?}", status.conditions);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An IM endpoint that refuses connections is named in Ready after the
/// first failed attempt, while the call's retries go on (eight attempts,
/// about 25 s), not only when they are used up (before: no condition at
/// all for that long).
#[tokio::test]
async fn a_refused_im_endpoint_shows_in_ready_after_the_first_attempt() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let cluster = Cluster::start_fake().await;
    cluster.put_secret(SECRET, &endpoint, KEY).await;
    let operator = Operator::start(&cluster, &[]);
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": members("m", 5)})).await;
    let message = wait_not_ready_for(&cluster, "p", "TransportError", Duration::from_secs(6)).await;
    assert!(message.contains("retrying after") && message.contains("connect"), "{message}");
    assert!(!operator.logs().contains("Pass done"), "the call's retries were over already: {}", operator.logs());
    cluster.cleanup().await;
}

/// A Secret the API server cannot hand out (a 500 while it restarts)
/// shows as Ready=False `CredentialsUnavailable`, naming the Secret, and
/// heals by itself on the policy's backoff: not Stalled, not silent.
#[tokio::test]
async fn an_unavailable_secret_shows_in_ready_and_heals_on_backoff() {
    let sim = start(config(&seed_banned(&[("room", 5)]))).await;
    let cluster = Cluster::start_fake().await;
    let fake = cluster.fake.as_ref().unwrap();
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    fake.fail_requests(Some("GET"), &format!("/secrets/{SECRET}"), 500, 2);
    let operator = Operator::start(&cluster, &[]);
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": members("m", 5)})).await;
    let message = wait_not_ready_for(&cluster, "p", "CredentialsUnavailable", Duration::from_secs(10)).await;
    assert!(message.contains(&format!("e2e/{SECRET}")) && message.contains("retrying"), "{message}");
    let stalled = cluster.status("p").await.conditions.into_iter().find(|c| c.type_ == "Stalled");
    assert_eq!(stalled.map(|c| c.status), Some("False".into()));
    cluster.wait_for("p", WAIT, is_ready).await;
    let logs = operator.logs();
    assert!(logs.lines().any(|l| l.contains("Reconcile failed") && l.contains("ReadSecret")), "{logs}");
    cluster.cleanup().await;
}

/// An API server that throttles (429 with `Retry-After`, as API Priority
/// and Fairness answers) is obeyed: the status write is sent again no
/// sooner than asked, and the policy converges.
#[tokio::test]
async fn a_throttling_api_server_is_obeyed() {
    let sim = start(config(&seed_banned(&[("room", 5)]))).await;
    let cluster = Cluster::start_fake().await;
    let fake = cluster.fake.as_ref().unwrap();
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    fake.throttle_requests(Some("PATCH"), "/groupbanpolicies/p/status", 1, 2);
    let _operator = Operator::start(&cluster, &[]);
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": members("m", 5)})).await;
    cluster.wait_for("p", WAIT, is_ready).await;
    let writes: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/groupbanpolicies/p/status"))
        .collect();
    assert_eq!(
        writes.first().map(|w| w.status),
        Some(429),
        "{:?}",
        writes.iter().map(|w| w.status).collect::<Vec<_>>()
    );
    let again = writes.get(1).expect("the write was sent again");
    let waited = again.at.duration_since(writes[0].at);
    assert!(waited >= Duration::from_millis(1900), "sent again after {waited:?}, asked to wait 2 s");
    cluster.cleanup().await;
}

/// An API server slow to take status writes (3 s each) holds up no IM
/// call: progress is published beside the pass, not between its calls, so
/// 20 calls still go out at the limiter's pace, and the policy converges.
#[tokio::test]
async fn a_slow_api_server_holds_up_no_call() {
    let sim = start(config(&seed_banned(&[("room", 400)]))).await;
    let cluster = Cluster::start_fake().await;
    let fake = cluster.fake.as_ref().unwrap();
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    fake.delay_requests(Some("PATCH"), "/groupbanpolicies/p/status", Duration::from_secs(3), 10);
    let _operator = Operator::start(&cluster, &["--max-calls-per-second", "10"]);
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": members("m", 400)})).await;
    cluster.wait_for("p", Duration::from_secs(60), is_ready).await;
    let stats = get_json(&sim.base_url(), "/simulator/stats").await;
    let span = stats["lastRequestAtMs"].as_u64().unwrap() - stats["firstRequestAtMs"].as_u64().unwrap();
    assert_eq!(stats["requests"], 20, "{stats}");
    // 20 calls at 10/s take about two seconds. With --progress-interval 1s
    // the pass publishes progress while it calls; had the calls waited for
    // those 3-second writes, they would have taken several seconds more.
    let writes = fake.requests().iter().filter(|r| r.method == "PATCH" && r.path.ends_with("/p/status")).count();
    assert!(writes >= 2, "progress and the pass's own write: {writes}");
    assert!(span < 3_000, "the calls were spread over {span} ms: {stats}");
    cluster.cleanup().await;
}
