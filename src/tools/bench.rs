//! `groupban-operator bench client`: how close the client gets to the app's
//! call-rate limit without crossing it, measured at the simulator.
//!
//! Starts the simulator in-process on loopback with its limit at N calls/s,
//! keeps many unban calls in flight for the given duration through one
//! client (and so one shared limiter), then reads the simulator's own
//! record: arrival times, answers, and the busiest 1-second window.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::ToolError;
use crate::engine::clients::ClientPool;
use crate::engine::credentials::AppTarget;
use crate::im::{AppCredentials, ClientSettings, Endpoint, RateLimit};
use crate::secret::Redacted;
use crate::simulator::{self, SeedFile, SimulatorConfig};

const SDKAPPID: u64 = 1_400_000_000;
const ADMIN: &str = "administrator";
const KEY: &str = "bench-secret-key";
const GROUP: &str = "@TGS#bench";

#[derive(Debug, Clone, Copy)]
pub struct ClientBenchParams {
    pub seconds: u64,
    pub rate_limit: u32,
    pub concurrency: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientBenchReport {
    pub rate_limit: u32,
    pub seconds: f64,
    pub calls: usize,
    pub succeeded: usize,
    pub rate_limited_60007: usize,
    /// Calls per second between the first and the last arrival.
    pub calls_per_second: f64,
    pub share_of_limit: f64,
    /// The most calls the simulator saw in any 1-second window.
    pub peak_calls_in_any_window: u64,
}

pub async fn client_throughput(params: ClientBenchParams) -> Result<ClientBenchReport, ToolError> {
    let mut config = SimulatorConfig::new(SDKAPPID, ADMIN, KEY);
    config.rate_limit = params.rate_limit;
    config.seed =
        SeedFile::parse(&format!("groups: [{{groupId: \"{GROUP}\", type: AVChatRoom}}]")).map_err(ToolError::Seed)?;
    let listen = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
    let sim = simulator::start(config, listen).await?;
    let base_url = sim.base_url();

    // The product's own wiring: one pool, one limiter per app.
    let pool = ClientPool::new(RateLimit::per_second(params.rate_limit), ClientSettings::default())?;
    let client = pool.client_for(&AppTarget {
        endpoint: Endpoint::parse(&base_url, false)?,
        credentials: AppCredentials {
            sdkappid: SDKAPPID,
            identifier: ADMIN.into(),
            secret_key: Redacted::new(KEY.into()),
        },
    });

    let deadline = Instant::now() + Duration::from_secs(params.seconds);
    let workers: Vec<_> = (0..params.concurrency)
        .map(|worker| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut round = 0usize;
                while Instant::now() < deadline {
                    let members: Vec<String> = (0..20).map(|i| format!("w{worker}r{round}m{i}")).collect();
                    let _ = client.unban_group_member(GROUP, &members).await;
                    round += 1;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }

    let log = sim.fetch_json("/simulator/requests").await?;
    let stats = sim.fetch_json("/simulator/stats").await?;
    sim.stop().await?;

    let requests = log["requests"].as_array().cloned().unwrap_or_default();
    let arrivals: Vec<u64> = requests.iter().filter_map(|r| r["atMs"].as_u64()).collect();
    let code_count = |code: i64| requests.iter().filter(|r| r["errorCode"].as_i64() == Some(code)).count();
    let span_ms = match (arrivals.first(), arrivals.last()) {
        (Some(first), Some(last)) if last > first => (last - first) as f64,
        _ => 0.0,
    };
    let calls_per_second = if span_ms > 0.0 { (arrivals.len() - 1) as f64 * 1000.0 / span_ms } else { 0.0 };
    Ok(ClientBenchReport {
        rate_limit: params.rate_limit,
        seconds: span_ms / 1000.0,
        calls: requests.len(),
        succeeded: code_count(0),
        rate_limited_60007: code_count(60007),
        calls_per_second,
        share_of_limit: calls_per_second / f64::from(params.rate_limit),
        peak_calls_in_any_window: stats["peakRequestsInWindow"].as_u64().unwrap_or(0),
    })
}

/// Parameters of `bench apply`.
#[derive(Debug, Clone, Copy)]
pub struct ApplyBenchParams {
    pub policies: usize,
    pub members: usize,
    pub rate_limit: u32,
    pub fail_10002: f64,
    pub fail_http502: f64,
    /// Run apply with `--state`, saving after every batch of answers.
    pub with_state: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyBenchReport {
    pub policies: usize,
    pub members_per_policy: usize,
    pub rate_limit: u32,
    pub fail_10002: f64,
    pub fail_http502: f64,
    pub with_state: bool,
    pub exit_code: Option<i32>,
    /// The fewest calls that can do the job: one per 20 members.
    pub minimum_calls: usize,
    /// Every request the simulator received, retries included.
    pub calls_made: u64,
    /// minimum_calls / rate_limit.
    pub ideal_seconds: f64,
    /// Spawn to exit of the `apply` process.
    pub wall_seconds: f64,
    pub wall_over_ideal: f64,
    pub peak_rss_kib: u64,
    pub peak_calls_in_any_window: u64,
}

/// Runs `groupban-operator apply` (this same binary) as a child process on
/// generated manifests against an in-process simulator.
pub async fn apply_run(params: ApplyBenchParams) -> Result<ApplyBenchReport, ToolError> {
    let groups: Vec<String> = (0..params.policies).map(|i| format!("@TGS#bench{i:03}")).collect();
    let member_list: Vec<String> = (0..params.members).map(|i| format!("member{i:05}")).collect();
    let banned = member_list.join(", ");
    let seed_groups: Vec<String> =
        groups.iter().map(|g| format!("{{groupId: \"{g}\", type: AVChatRoom, banned: [{banned}]}}")).collect();
    let mut config = SimulatorConfig::new(SDKAPPID, ADMIN, KEY);
    config.rate_limit = params.rate_limit;
    config.seed = SeedFile::parse(&format!("groups: [{}]", seed_groups.join(", "))).map_err(ToolError::Seed)?;
    config.faults.fail_10002 = params.fail_10002;
    config.faults.fail_http502 = params.fail_http502;
    let sim = simulator::start(config, SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))).await?;
    let base_url = sim.base_url();

    let dir = std::env::temp_dir().join(format!("groupban-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let quoted: Vec<String> = member_list.iter().map(|m| format!("\"{m}\"")).collect();
    let mut documents = vec![format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: groupban-credentials}}\nstringData: {{sdkAppId: \"{SDKAPPID}\", identifier: {ADMIN}, secretKey: {KEY}, endpoint: \"{base_url}\"}}\n"
    )];
    for (i, group) in groups.iter().enumerate() {
        documents.push(format!(
            "apiVersion: groupban.dev/v1alpha1\nkind: GroupBanPolicy\nmetadata: {{name: bench-{i:03}}}\nspec:\n  groupId: \"{group}\"\n  unbannedMembers: [{}]\n",
            quoted.join(", ")
        ));
    }
    let manifest = dir.join("manifests.yaml");
    std::fs::write(&manifest, documents.join("---\n"))?;

    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command
        .args(["apply", "-o", "json", "--max-calls-per-second", &params.rate_limit.to_string(), "-f"])
        .arg(&manifest);
    if params.with_state {
        command.arg("--state").arg(dir.join("state.json"));
    }
    let started = std::time::Instant::now();
    let output = command.env("RUST_LOG", "error").stdout(std::process::Stdio::null()).output().await?;
    let wall_seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);

    let stderr = String::from_utf8_lossy(&output.stderr);
    let peak_rss_kib = stderr
        .lines()
        .filter(|line| line.starts_with("summary:"))
        .flat_map(str::split_whitespace)
        .find_map(|field| field.strip_prefix("peakRssKiB="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stats = sim.fetch_json("/simulator/stats").await?;
    sim.stop().await?;

    let minimum_calls = params.policies * params.members.div_ceil(20);
    let ideal_seconds = minimum_calls as f64 / f64::from(params.rate_limit);
    Ok(ApplyBenchReport {
        policies: params.policies,
        members_per_policy: params.members,
        rate_limit: params.rate_limit,
        fail_10002: params.fail_10002,
        fail_http502: params.fail_http502,
        with_state: params.with_state,
        exit_code: output.status.code(),
        minimum_calls,
        calls_made: stats["requests"].as_u64().unwrap_or(0),
        ideal_seconds,
        wall_seconds,
        wall_over_ideal: wall_seconds / ideal_seconds,
        peak_rss_kib,
        peak_calls_in_any_window: stats["peakRequestsInWindow"].as_u64().unwrap_or(0),
    })
}
