//! Operating `groupban-operator run`: metrics and probes scraped from a
//! running process, and leader election between two processes against the
//! same API (the fake in tests/support, or a real cluster with
//! GROUPBAN_E2E_KUBECONFIG) and the IM simulator.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::json;
use support::cluster::{Cluster, Operator, is_ready};
use support::*;

const SECRET: &str = "groupban-credentials";

async fn http_get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// The value of the sample `name{labels}` in OpenMetrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_and_probes_report_a_running_operator() {
    let sim = start(config(&seed_banned(&[("room", 45)]))).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let operator = Operator::start(&cluster, &["--metrics-bind-address", "127.0.0.1:0"]);
    let base = operator.metrics_base().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(&format!("{base}/healthz")).await.is_none() {
        assert!(Instant::now() < deadline, "no /healthz: {}", operator.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": members("m", 45)})).await;
    cluster.apply_policy("off", json!({"groupId": "room", "unbannedMembers": ["x"], "suspend": true})).await;
    cluster.wait_for("p", Duration::from_secs(30), is_ready).await;

    assert_eq!(http_get(&format!("{base}/healthz")).await.map(|r| r.0), Some(200));
    assert_eq!(http_get(&format!("{base}/readyz")).await.map(|r| r.0), Some(200), "{}", operator.logs());
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = response.text().await.unwrap();
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"));
    // 45 members: three calls, all answered 0.
    assert_eq!(value("groupban_im_calls_total{api=\"unban_group_member\",error_code=\"0\"}"), 3.0);
    assert_eq!(value("groupban_im_call_duration_seconds_count{api=\"unban_group_member\"}"), 3.0);
    assert!(value("groupban_rate_limiter_wait_seconds_total{api=\"unban_group_member\"}") >= 0.0);
    assert!(value("controller_runtime_reconcile_total{controller=\"groupbanpolicy\",result=\"success\"}") >= 2.0);
    assert!(value("controller_runtime_reconcile_time_seconds_count{controller=\"groupbanpolicy\"}") >= 2.0);
    assert_eq!(value("groupban_policies{condition=\"Ready\"}"), 1.0);
    assert_eq!(value("groupban_policies{condition=\"Suspended\"}"), 1.0);
    assert_eq!(value("groupban_members{state=\"desired\"}"), 46.0);
    assert_eq!(value("groupban_members{state=\"unbanned\"}"), 45.0);
    let leader = format!("leader_election_master_status{{name=\"{}\"}}", cluster.lease_name);
    assert_eq!(value(&leader), 1.0, "leader election is on by default");
    assert!(text.contains("groupban_build_info{version=\"") && text.trim_end().ends_with("# EOF"));
    drop(operator);
    cluster.cleanup().await;
}

/// A policy whose calls keep failing waits on its own backoff, counted in
/// `groupban_policies_retrying`; deleting it forgets the backoff (a
/// process that runs for months sees many policies come and go).
#[tokio::test]
async fn a_deleted_policy_stops_counting_as_retrying() {
    let mut failing = config(&seed_banned(&[("room", 5)]));
    failing.faults.fail_http502 = 1.0;
    let sim = start(failing).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    let operator = Operator::start(&cluster, &["--metrics-bind-address", "127.0.0.1:0"]);
    let base = operator.metrics_base().await;
    let wait_for_retrying = |wanted: f64| {
        let url = format!("{base}/metrics");
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let text = http_get(&url).await.map(|(_, text)| text).unwrap_or_default();
                if sample(&text, "groupban_policies_retrying") == Some(wanted) {
                    return;
                }
                assert!(Instant::now() < deadline, "groupban_policies_retrying is not {wanted}:\n{text}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": members("m", 5)})).await;
    // The count turns 1 as the first pass ends; the delete follows within
    // a poll, well inside the first backoff (2.5-5 s), when no reconcile
    // runs: only the Delete event can take the count back to 0.
    wait_for_retrying(1.0).await;
    cluster.delete_policy("p").await;
    wait_for_retrying(0.0).await;
    drop(operator);
    cluster.cleanup().await;
}

async fn lease_holder(cluster: &Cluster) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &cluster.lease_namespace);
    leases.get_opt(&cluster.lease_name).await.ok().flatten()?.spec?.holder_identity.filter(|h| !h.is_empty())
}

async fn wait_for_holder(cluster: &Cluster, who: &str, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if lease_holder(cluster).await.as_deref() == Some(who) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{who} did not get the Lease in {timeout:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Arrival times (since the simulator started) of unban calls.
async fn call_times(sim_url: &str) -> Vec<Duration> {
    get_json(sim_url, "/simulator/requests").await["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["command"] == "unban_group_member")
        .map(|r| Duration::from_millis(r["atMs"].as_u64().unwrap()))
        .collect()
}

const ELECTION: [&str; 8] = [
    "--leader-elect",
    "--leader-election-lease-duration",
    "4s",
    "--leader-election-renew-deadline",
    "2s",
    "--leader-election-retry-period",
    "1s",
    "--max-calls-per-second",
];

/// 20 policies of 100 members at 20 calls/s: 100 calls, five seconds of
/// work to hand over in the middle of.
async fn fleet(cluster: &Cluster) -> (groupban_operator::simulator::RunningSimulator, Instant) {
    let groups: Vec<String> = (0..20).map(|i| format!("room{i}")).collect();
    let seeded: Vec<(&str, usize)> = groups.iter().map(|g| (g.as_str(), 100)).collect();
    let mut config = config(&seed_banned(&seeded));
    config.rate_limit = 20;
    let started = Instant::now();
    let sim = start(config).await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    for group in &groups {
        cluster.apply_policy(group, json!({"groupId": group, "unbannedMembers": members("m", 100)})).await;
    }
    (sim, started)
}

/// A candidate, serving /metrics on a port of its own choosing.
fn candidate(cluster: &Cluster, name: &str) -> Operator {
    let mut args = ELECTION.to_vec();
    args.extend(["20", "--metrics-bind-address", "127.0.0.1:0"]);
    Operator::start_with_env(cluster, &args, &[("POD_NAME", name)])
}

/// A standby's own account: it does not lead and has made no IM call.
async fn assert_idle_standby(cluster: &Cluster, standby: &Operator) {
    let (metrics, logs) = (standby.metrics_base().await, standby.logs());
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        if let Some((200, text)) = http_get(&format!("{metrics}/metrics")).await {
            break text;
        }
        assert!(Instant::now() < deadline, "the standby serves no metrics: {logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let series = format!("leader_election_master_status{{name=\"{}\"}}", cluster.lease_name);
    assert_eq!(sample(&text, &series), Some(0.0), "{text}");
    assert!(!text.contains("groupban_im_calls_total{"), "the standby made IM calls:\n{text}");
}

async fn all_ready(cluster: &Cluster) -> bool {
    let list = cluster.policies().list(&Default::default()).await.unwrap();
    list.items.len() == 20 && list.items.iter().all(is_ready)
}

/// The leader is killed mid-run: the standby, which made no call while it
/// waited, takes over once the Lease expires, finishes the work, and no
/// second ever carries more than the limit.
#[tokio::test]
async fn a_standby_takes_over_from_a_killed_leader_without_overlap() {
    let cluster = Cluster::start().await;
    let (sim, sim_started) = fleet(&cluster).await;
    let mut first = candidate(&cluster, "first");
    wait_for_holder(&cluster, "first", Duration::from_secs(20)).await;
    let second = candidate(&cluster, "second");
    let deadline = Instant::now() + Duration::from_secs(30);
    while call_times(&sim.base_url()).await.len() < 30 {
        assert!(Instant::now() < deadline, "the leader made no progress: {}", first.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_idle_standby(&cluster, &second).await;
    first.signal("KILL");
    let killed = Instant::now();
    first.wait(Duration::from_secs(5)).await;
    let acquired = wait_for_holder(&cluster, "second", Duration::from_secs(15)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !all_ready(&cluster).await {
        assert!(Instant::now() < deadline, "not converged: {}", second.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let since_start = |at: Instant| at.duration_since(sim_started);
    let times = call_times(&sim.base_url()).await;
    // Requests the killed leader had already written to its sockets still
    // reach the simulator for a moment after the kill; 200 ms covers them.
    let killed_and_drained = since_start(killed) + Duration::from_millis(200);
    let standby_calls_before_leading = times.iter().filter(|&&t| t > killed_and_drained && t < since_start(acquired));
    assert_eq!(standby_calls_before_leading.count(), 0, "the standby called before it held the Lease");
    let first_after = times.iter().copied().filter(|&t| t > killed_and_drained).min().expect("calls after the kill");
    let gap = first_after - since_start(killed);
    // Lease duration, one retry period, and the new leader's cache sync.
    assert!(gap < Duration::from_secs(4 + 1 + 2), "{gap:?} without calls across the hand-over");
    // The two leaders never call in the same second, so together they
    // cannot exceed the limit: the old one's last call and the new one's
    // first are more than a second apart.
    let last_before = times.iter().copied().filter(|&t| t <= killed_and_drained).max().expect("calls before the kill");
    assert!(first_after - last_before > Duration::from_secs(1), "{last_before:?} then {first_after:?}");
    assert!(second.logs().matches("Became the leader").count() == 1, "{}", second.logs());
    cluster.cleanup().await;
}

/// A leader stopped with SIGTERM finishes its calls, then hands the Lease
/// back: the standby takes over at its next try, well before the Lease
/// would have expired, and the two never call in the same second.
#[tokio::test]
async fn sigterm_hands_the_lease_to_the_standby_at_once() {
    let cluster = Cluster::start().await;
    let (sim, sim_started) = fleet(&cluster).await;
    let mut first = candidate(&cluster, "first");
    wait_for_holder(&cluster, "first", Duration::from_secs(20)).await;
    let second = candidate(&cluster, "second");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_idle_standby(&cluster, &second).await;
    first.signal("TERM");
    let status = first.wait(Duration::from_secs(25)).await.expect("exits");
    assert!(status.success(), "{}", first.logs());
    let exited = Instant::now();
    let logs = first.logs();
    let (drained, handed) = (logs.find("Controller stopped").unwrap(), logs.find("Handed the Lease back").unwrap());
    assert!(drained < handed, "the Lease went back before the calls in flight were done:\n{logs}");
    let acquired = wait_for_holder(&cluster, "second", Duration::from_secs(10)).await;
    assert!(acquired - exited < Duration::from_millis(2500), "took {:?}", acquired - exited);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !all_ready(&cluster).await {
        assert!(Instant::now() < deadline, "not converged: {}", second.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let handed_over = exited.duration_since(sim_started);
    let times = call_times(&sim.base_url()).await;
    let last_before = times.iter().copied().filter(|&t| t <= handed_over).max().expect("the first leader called");
    let first_after = times.iter().copied().filter(|&t| t > handed_over).min().expect("the second leader called");
    assert!(first_after - last_before > Duration::from_secs(1), "{last_before:?} then {first_after:?}");
    cluster.cleanup().await;
}

/// Two processes started the same way, with no election flags, against one
/// app: leader election is on by default, so one calls and the other waits,
/// and together they make exactly the calls needed, none answered 60007
/// (before: twice the calls, and 60007s that neither process mentioned).
/// Opting out is possible, and said loudly.
#[tokio::test]
async fn two_processes_started_alike_never_both_call() {
    let mut config = config(&seed_banned(&[("room", 2000)]));
    config.rate_limit = 100;
    let sim = start(config).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    cluster.apply_policy("p", json!({"groupId": "room", "unbannedMembers": members("m", 2000)})).await;
    let first = Operator::start(&cluster, &["--max-calls-per-second", "100"]);
    let second = Operator::start(&cluster, &["--max-calls-per-second", "100"]);
    cluster.wait_for("p", Duration::from_secs(60), is_ready).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = get_json(&sim.base_url(), "/simulator/stats").await;
    assert_eq!(stats["requests"], 100, "2,000 members: 100 calls, made once: {stats}");
    assert_eq!(stats["byErrorCode"]["60007"], serde_json::Value::Null, "{stats}");
    let leaders = [&first, &second].iter().filter(|o| o.logs().contains("Became the leader")).count();
    assert_eq!(leaders, 1, "{}\n---\n{}", first.logs(), second.logs());
    drop((first, second));

    let alone = Operator::start(&cluster, &["--leader-elect=false"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !alone.logs().contains("Leader election is off") {
        assert!(Instant::now() < deadline, "no warning: {}", alone.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.cleanup().await;
}

/// Two processes opted out of election against one app spend its budget
/// twice: the gateway answers 60007 although each keeps under its own
/// limit. That shows as a Warning Event on the policies that met it, a log
/// line and the 60007 count in the metrics, not only as quiet retries; also
/// when the answers are spread over many small policies (a per-policy
/// count would never see them).
#[tokio::test]
async fn a_shared_app_budget_is_reported_not_only_retried() {
    let groups: Vec<String> = (0..40).map(|i| format!("room{i}")).collect();
    let seeded: Vec<(&str, usize)> = groups.iter().map(|g| (g.as_str(), 100)).collect();
    let mut config = config(&seed_banned(&seeded));
    config.rate_limit = 100;
    let sim = start(config).await;
    let cluster = Cluster::start().await;
    cluster.put_secret(SECRET, &sim.base_url(), KEY).await;
    for group in &groups {
        cluster.apply_policy(group, json!({"groupId": group, "unbannedMembers": members("m", 100)})).await;
    }
    let flags = ["--max-calls-per-second", "100", "--leader-elect=false", "--metrics-bind-address", "127.0.0.1:0"];
    let operators = [Operator::start(&cluster, &flags), Operator::start(&cluster, &flags)];
    for group in &groups {
        cluster.wait_for(group, Duration::from_secs(60), is_ready).await;
    }
    let stats = get_json(&sim.base_url(), "/simulator/stats").await;
    assert!(stats["byErrorCode"]["60007"].as_u64().unwrap_or(0) > 0, "the app's budget was not shared? {stats}");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut warned = 0;
        for group in &groups {
            if cluster.event_reasons(group).await.contains(&("Warning".into(), "RateLimitedByGateway".into())) {
                warned += 1;
            }
        }
        if warned > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no Warning Event on any policy; {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logs: Vec<String> = operators.iter().map(Operator::logs).collect();
    assert!(
        logs.iter().any(|l| l.contains("another client is likely spending this app's budget")),
        "no log line: {logs:?}"
    );
    let mut counted = 0.0;
    for operator in &operators {
        let text = http_get(&format!("{}/metrics", operator.metrics_base().await)).await.unwrap().1;
        counted +=
            sample(&text, "groupban_im_calls_total{api=\"unban_group_member\",error_code=\"60007\"}").unwrap_or(0.0);
    }
    assert!(counted > 0.0, "60007 answers not in the metrics");
    cluster.cleanup().await;
}
