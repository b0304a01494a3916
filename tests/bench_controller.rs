//! Benchmarks of `groupban-operator run` through the fake API server and
//! the simulator (see BENCHMARKS.md). Ignored by `cargo test`; run with
//!
//! ```text
//! cargo test --release --test bench_controller -- --ignored --nocapture --test-threads 1
//! ```
//!
//! GROUPBAN_BENCH_POLICIES, GROUPBAN_BENCH_MEMBERS and GROUPBAN_BENCH_RATE
//! change the fleet (defaults 1000, 100, 200); GROUPBAN_BENCH_OPERATOR_ARGS
//! adds flags to `run` (e.g. `--concurrency 64`); GROUPBAN_BENCH_TRACE, set
//! to anything, prints, every half second, the calls answered so far and the
//! operator's CPU time.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::{Cluster, Operator, is_ready};
use support::*;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// (user + system CPU seconds, peak RSS in KiB) of a process, from /proc.
fn cpu_and_peak_rss(pid: i32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, rss)
}

/// CPU time the hypervisor gave to other guests while this machine's CPUs
/// wanted it (steal, in seconds, all CPUs), from /proc/stat: on a shared
/// machine it explains runs that are slower for no reason of their own.
fn machine_steal_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or_default();
    cpu.split_whitespace().nth(8).and_then(|v| v.parse::<f64>().ok()).map_or(f64::NAN, |ticks| ticks / 100.0)
}

/// The fleet a benchmark runs: GROUPBAN_BENCH_POLICIES policies of
/// GROUPBAN_BENCH_MEMBERS members at GROUPBAN_BENCH_RATE calls/s.
struct Fleet {
    policies: usize,
    per_policy: usize,
    rate: u32,
    groups: Vec<String>,
}

impl Fleet {
    fn from_env() -> Fleet {
        let policies = env_or("GROUPBAN_BENCH_POLICIES", 1000);
        let per_policy = env_or("GROUPBAN_BENCH_MEMBERS", 100);
        let rate = env_or("GROUPBAN_BENCH_RATE", 200) as u32;
        Fleet { policies, per_policy, rate, groups: (0..policies).map(|i| format!("room{i}")).collect() }
    }
}

/// A simulator with every group's members banned, at the fleet's rate.
fn fleet_simulator(groups: &[String], per_policy: usize, rate: u32) -> groupban_operator::simulator::SimulatorConfig {
    let seeded: Vec<(&str, usize)> = groups.iter().map(|g| (g.as_str(), per_policy)).collect();
    let mut config = config(&seed_banned(&seeded));
    config.rate_limit = rate;
    config.request_log_limit = 1000;
    config
}

// Two workers: the simulator, the fake API server and this loop share the
// test process, and on one thread a poll would hold up the simulator's
// answers (and so every call's slot in the operator's limiter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored in release mode"]
async fn fleet_converges_near_the_rate_bound() {
    let Fleet { policies, per_policy, rate, groups } = Fleet::from_env();
    let sim = start(fleet_simulator(&groups, per_policy, rate)).await;
    // The simulator's clock (firstRequestAtMs...) starts a moment before this.
    let sim_started = Instant::now();
    let cluster = Cluster::start_fake().await;
    cluster.put_secret("groupban-credentials", &sim.base_url(), KEY).await;
    for group in &groups {
        cluster.apply_policy(group, json!({"groupId": group, "unbannedMembers": members("m", per_policy)})).await;
    }
    let fake = cluster.fake.as_ref().expect("benchmarks run against the fake API server");
    fake.clear_requests();

    let (harness_cpu_before, _) = cpu_and_peak_rss(std::process::id() as i32);
    let steal_before = machine_steal_seconds();
    let started = Instant::now();
    let rate_flag = rate.to_string();
    let extra = std::env::var("GROUPBAN_BENCH_OPERATOR_ARGS").unwrap_or_default();
    let mut args = vec!["--max-calls-per-second", &rate_flag];
    args.extend(extra.split_whitespace());
    let operator = Operator::start(&cluster, &args);
    let pid = operator.pid();
    let minimum = (policies * per_policy.div_ceil(20)) as u64;
    loop {
        // Cheap until the simulator has answered the minimum number of
        // calls; only then read (and parse) every policy.
        let answered = get_json(&sim.base_url(), "/simulator/stats").await["requests"].as_u64().unwrap_or(0);
        if std::env::var("GROUPBAN_BENCH_TRACE").is_ok() {
            let (elapsed, cpu) = (started.elapsed().as_secs_f64(), cpu_and_peak_rss(pid).0);
            eprintln!("trace: {elapsed:.2} s: {answered} calls answered, operator CPU {cpu:.2} s");
        }
        let ready = if answered < minimum {
            0
        } else {
            fake.objects("groupbanpolicies")
                .into_iter()
                .filter(|p| serde_json::from_value(p.clone()).is_ok_and(|p| is_ready(&p)))
                .count()
        };
        if ready == policies {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "{ready} of {policies} Ready after 10 minutes");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (cpu_converge, peak_rss) = cpu_and_peak_rss(pid);
    let harness_cpu = cpu_and_peak_rss(std::process::id() as i32).0 - harness_cpu_before;
    let steal = machine_steal_seconds() - steal_before;
    // Converged when the last policy's Ready status was written: exact,
    // where the polling above only notices it up to 500 ms later.
    let requests = fake.requests();
    let status_writes: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/status") && r.changed)
        .map(|r| r.at - started)
        .collect();
    let converge = status_writes.iter().max().expect("status writes").as_secs_f64();
    let stats = get_json(&sim.base_url(), "/simulator/stats").await;
    println!("simulator stats: {stats}");
    // Where the time went: the operator's start, its first and last IM
    // call as the simulator saw them, its last status write.
    let sim_offset = (started - sim_started).as_secs_f64();
    let call_at = |field: &str| stats[field].as_f64().unwrap_or(f64::NAN) / 1000.0 - sim_offset;
    let first_api = requests.first().map_or(f64::NAN, |r| (r.at - started).as_secs_f64());
    println!(
        "timeline from the operator's start: first API request {first_api:.2} s, first IM call {:.2} s, \
         last IM call {:.2} s, last status write {converge:.2} s",
        call_at("firstRequestAtMs"),
        call_at("lastRequestAtMs"),
    );
    let calls = stats["requests"].as_u64().unwrap_or(0);
    let ideal = minimum as f64 / f64::from(rate);
    let writes = fake.status_writes();
    println!(
        "converge: {policies} policies x {per_policy} members at {rate}/s: {converge:.2} s vs ideal {ideal:.2} s ({:+.1}%); \
         IM calls {calls} (minimum {minimum}); status writes {writes} ({:.2} per policy); busiest 1-s window {}; \
         operator CPU {cpu_converge:.2} s (harness: simulator, fake API server, polling {harness_cpu:.2} s); \
         peak RSS {:.1} MiB; CPU stolen by the hypervisor {steal:.2} s",
        (converge / ideal - 1.0) * 100.0,
        writes as f64 / policies as f64,
        stats["peakRequestsInWindow"],
        peak_rss as f64 / 1024.0,
    );

    // The converged fleet over a quiet period.
    let quiet = Duration::from_secs(env_or("GROUPBAN_BENCH_QUIET_SECONDS", 60) as u64);
    tokio::time::sleep(Duration::from_secs(2)).await;
    fake.clear_requests();
    let (cpu_before, _) = cpu_and_peak_rss(pid);
    tokio::time::sleep(quiet).await;
    let (cpu_after, _) = cpu_and_peak_rss(pid);
    let calls_after = get_json(&sim.base_url(), "/simulator/stats").await["requests"].as_u64().unwrap_or(0);
    println!(
        "quiet: {} s: status writes {}, IM calls {}, API requests {}, operator CPU {:.3} s",
        quiet.as_secs(),
        fake.status_writes(),
        calls_after - calls,
        fake.requests().len(),
        cpu_after - cpu_before,
    );
    drop(operator);
}

/// The same fleet through the real API server of the local control plane
/// (`GROUPBAN_CONTROL_PLANE`), the operator as the chart's ServiceAccount:
/// the policies are created by server-side apply under a GitOps tool's
/// field manager, so the server keeps their `managedFields` as it would
/// for Argo CD or Flux. Status writes and their times come from the API
/// server's audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored in release mode, with GROUPBAN_CONTROL_PLANE set"]
async fn fleet_converges_through_the_real_api_server() {
    let Fleet { policies, per_policy, rate, groups } = Fleet::from_env();
    let sim = start(fleet_simulator(&groups, per_policy, rate)).await;
    let cluster = Cluster::start().await;
    let plane = cluster.plane.expect("set GROUPBAN_CONTROL_PLANE: this benchmark needs the real API server");
    cluster.put_secret("groupban-credentials", &sim.base_url(), KEY).await;
    let created = Instant::now();
    for group in &groups {
        let policy = json!({
            "apiVersion": "groupban.dev/v1alpha1", "kind": "GroupBanPolicy",
            "metadata": {"name": group},
            "spec": {"groupId": group, "unbannedMembers": members("m", per_policy)},
        });
        let params = kube::api::PatchParams::apply("argocd-controller");
        cluster.policies().patch(group, &params, &kube::api::Patch::Apply(&policy)).await.unwrap();
    }
    let sample =
        plane.kubectl(&["get", "gbp", &groups[0], "-n", &cluster.namespace, "-o", "json", "--show-managed-fields"]);
    let sample: serde_json::Value = serde_json::from_str(&sample).unwrap();
    let managed = serde_json::to_string(&sample["metadata"]["managedFields"]).unwrap().len();
    println!(
        "created {policies} policies by server-side apply in {:.2} s; one policy is {} bytes as JSON, {managed} of them managedFields",
        created.elapsed().as_secs_f64(),
        serde_json::to_string(&sample).unwrap().len(),
    );

    let user = plane.default_release().user();
    let audited_before = plane.requests_by(&user).len();
    let started_wall = k8s_openapi::jiff::Timestamp::now();
    let started = Instant::now();
    let steal_before = machine_steal_seconds();
    let rate_flag = rate.to_string();
    let operator = Operator::start(&cluster, &["--max-calls-per-second", &rate_flag]);
    let pid = operator.pid();
    let minimum = (policies * per_policy.div_ceil(20)) as u64;
    loop {
        let answered = get_json(&sim.base_url(), "/simulator/stats").await["requests"].as_u64().unwrap_or(0);
        let ready = if answered < minimum {
            0
        } else {
            cluster.policies().list(&Default::default()).await.unwrap().items.iter().filter(|p| is_ready(p)).count()
        };
        if ready == policies {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(900), "{ready} of {policies} Ready after 15 minutes");
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let (cpu, peak_rss) = cpu_and_peak_rss(pid);
    let steal = machine_steal_seconds() - steal_before;
    let audit = plane.audit_events();
    let status_writes: Vec<f64> = audit
        .iter()
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && e["user"]["username"] == user.as_str()
                && e["verb"] == "patch"
                && e["objectRef"]["subresource"] == "status"
                && e["objectRef"]["namespace"] == cluster.namespace.as_str()
        })
        .filter_map(|e| e["stageTimestamp"].as_str()?.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(|at| (at - started_wall).total(k8s_openapi::jiff::Unit::Second).unwrap_or(f64::NAN))
        .collect();
    let converge = status_writes.iter().copied().fold(0.0, f64::max);
    let stats = get_json(&sim.base_url(), "/simulator/stats").await;
    let calls = stats["requests"].as_u64().unwrap_or(0);
    let ideal = minimum as f64 / f64::from(rate);
    println!(
        "real API server: {policies} policies x {per_policy} members at {rate}/s: {converge:.2} s vs ideal {ideal:.2} s ({:+.1}%); \
         IM calls {calls} (minimum {minimum}); status writes {} ({:.2} per policy); busiest 1-s window {}; \
         operator CPU {cpu:.2} s; peak RSS {:.1} MiB; CPU stolen by the hypervisor {steal:.2} s",
        (converge / ideal - 1.0) * 100.0,
        status_writes.len(),
        status_writes.len() as f64 / policies as f64,
        stats["peakRequestsInWindow"],
        peak_rss as f64 / 1024.0,
    );
    let requests = plane.requests_by(&user).len() - audited_before;
    println!("API requests by the operator until converged: {requests}");
    drop(operator);
}
