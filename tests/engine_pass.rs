//! The engine's pass against the simulator over loopback: what a driver
//! (the controller, `apply`) relies on when it stops a pass or runs many
//! passes side by side.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use groupban_operator::crd::{GroupBanPolicySpec, GroupBanPolicyStatus};
use groupban_operator::engine::clients::ClientPool;
use groupban_operator::engine::conditions::Decision;
use groupban_operator::engine::credentials::AppTarget;
use groupban_operator::engine::{PolicyInput, run_pass};
use groupban_operator::im::{Endpoint, RateLimit};
use serde_json::Value;
use support::*;
use tokio::sync::watch;

fn input(name: &str, group: &str, members: Vec<String>, base_url: &str) -> PolicyInput {
    PolicyInput {
        key: format!("default/{name}"),
        spec: GroupBanPolicySpec {
            group_id: group.into(),
            unbanned_members: members,
            credentials_secret_ref: None,
            suspend: None,
            drift_check_interval: None,
        },
        generation: Some(1),
        recorded: GroupBanPolicyStatus::default(),
        target: Ok(AppTarget {
            endpoint: Endpoint::parse(base_url, false).unwrap(),
            credentials: credentials(ADMIN, KEY),
        }),
    }
}

async fn requests(base_url: &str) -> Vec<Value> {
    get_json(base_url, "/simulator/requests").await["requests"].as_array().unwrap().clone()
}

/// SIGTERM in the controller: no call starts after the signal, the calls on
/// the wire finish, and every member they confirmed is in the returned
/// status, and no other.
#[tokio::test]
async fn a_shutdown_starts_no_call_and_keeps_every_confirmed_answer() {
    let mut config = config(&seed_banned(&[("room", 2000)]));
    config.faults.latency = Duration::from_millis(150);
    let sim = start(config).await;
    let url = sim.base_url();
    let pool = ClientPool::new(RateLimit::per_second(40), quick_settings()).unwrap();
    let (stop, shutdown) = watch::channel(false);
    let inputs = [input("big", "room", members("m", 2000), &url)];
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        stop.send_replace(true);
        tokio::time::Instant::now()
    });
    let outcomes = run_pass(&inputs, &pool, shutdown, |_, _| {}).await;
    stopper.await.unwrap();

    let log = requests(&url).await;
    assert!(log.len() < 100, "the pass stopped early: {} of 100 calls were made", log.len());
    assert!(!log.is_empty());
    let confirmed: BTreeSet<String> = log
        .iter()
        .filter(|r| r["errorCode"] == 0)
        .flat_map(|r| r["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()))
        .collect();
    let recorded: BTreeSet<String> = outcomes[0].status.unbanned_members.iter().cloned().collect();
    assert_eq!(recorded, confirmed, "recorded exactly what the simulator confirmed, in-flight answers included");
    assert_eq!(outcomes[0].decision, Decision::Retry, "members are left: the driver runs it again");
    assert_eq!(outcomes[0].calls_succeeded, log.len());
}

/// One pass per policy, as the controller runs them: a 20-member policy
/// that arrives while a 2,000-member one is under way waits behind a few
/// of its calls, not behind all 100.
#[tokio::test]
async fn a_small_policy_is_not_queued_behind_a_large_one() {
    let sim = start(config(&seed_banned(&[("big-room", 2000), ("small-room", 20)]))).await;
    let url = sim.base_url();
    let pool = std::sync::Arc::new(ClientPool::new(RateLimit::per_second(50), quick_settings()).unwrap());
    let (_keep, shutdown) = watch::channel(false);
    let big = {
        let (pool, shutdown, url) = (pool.clone(), shutdown.clone(), url.clone());
        tokio::spawn(async move {
            run_pass(&[input("big", "big-room", members("m", 2000), &url)], &pool, shutdown, |_, _| {}).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let made_before_arrival = requests(&url).await.len();
    let small = run_pass(&[input("small", "small-room", members("m", 20), &url)], &pool, shutdown, |_, _| {}).await;
    assert_eq!(small[0].decision, Decision::Idle);
    let log = requests(&url).await;
    let small_at = log.iter().position(|r| r["groupId"] == "small-room").unwrap();
    // The big policy keeps two calls queued at the limiter; one more may
    // have started while the log was being read.
    let waited_behind = small_at - made_before_arrival;
    assert!(made_before_arrival > 0 && made_before_arrival < 100, "the big policy was under way");
    assert!(waited_behind <= 3, "the small policy waited behind {waited_behind} calls");
    assert!(big.await.unwrap()[0].status.unbanned_members.len() == 2000);
}

/// One pass over policies that succeed, fail for good and cannot start:
/// each outcome counts its own calls, and the progress the driver sees
/// ends with every planned call done.
#[tokio::test]
async fn each_outcome_counts_its_own_calls_and_progress_ends_complete() {
    let sim = start(config(&seed_banned(&[("room", 45)]))).await;
    let url = sim.base_url();
    let pool = ClientPool::new(RateLimit::per_second(200), quick_settings()).unwrap();
    let (_stop, shutdown) = watch::channel(false);
    let mut suspended = input("paused", "room", members("m", 20), &url);
    suspended.spec.suspend = Some(true);
    let inputs = [
        input("ok", "room", members("m", 45), &url),
        input("gone", "no-such-group", members("x", 20), &url),
        suspended,
    ];
    let mut last = None;
    let outcomes = run_pass(&inputs, &pool, shutdown, |statuses, progress| {
        assert_eq!(statuses.len(), 3);
        last = Some(progress);
    })
    .await;
    let counts: Vec<(usize, usize)> = outcomes.iter().map(|o| (o.calls_succeeded, o.calls_failed)).collect();
    // 45 members: 3 calls; the missing group: one call, answered 10010.
    assert_eq!(counts, [(3, 0), (0, 1), (0, 0)]);
    let decisions: Vec<Decision> = outcomes.iter().map(|o| o.decision).collect();
    assert_eq!(decisions, [Decision::Idle, Decision::Stalled, Decision::Suspended]);
    let progress = last.expect("progress was observed");
    assert_eq!((progress.calls_planned, progress.calls_done), (4, 4));
}
