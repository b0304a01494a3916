//! `groupban-operator bench client`: how close the client gets to the app's
//! call-rate limit without crossing it, measured at the simulator.
//!
//! Starts the simulator in-process on loopback with its limit at N calls/s,
//! keeps many unban calls in flight for the given duration through one
//! client (and so one shared limiter), then reads the simulator's own
//! record: arrival times, answers, and the busiest 1-second window.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::im::{AppCredentials, ClientSettings, Endpoint, ImClient, RateLimit, RateLimiter};
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

pub async fn client_throughput(params: ClientBenchParams) -> anyhow::Result<ClientBenchReport> {
    let mut config = SimulatorConfig::new(SDKAPPID, ADMIN, KEY);
    config.rate_limit = params.rate_limit;
    config.seed = SeedFile::parse(&format!(
        "groups: [{{groupId: \"{GROUP}\", type: AVChatRoom}}]"
    ))
    .map_err(anyhow::Error::msg)?;
    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    let sim = simulator::start(config, listen).await?;
    let base_url = sim.base_url();

    let settings = ClientSettings::default();
    let client = Arc::new(ImClient::new(
        crate::im::client::http_client(settings.request_timeout),
        Endpoint::parse(&base_url, false)?,
        AppCredentials {
            sdkappid: SDKAPPID,
            identifier: ADMIN.into(),
            secret_key: Redacted::new(KEY.into()),
        },
        Arc::new(RateLimiter::new(RateLimit::per_second(params.rate_limit))),
        settings,
    ));

    let deadline = Instant::now() + Duration::from_secs(params.seconds);
    let workers: Vec<_> = (0..params.concurrency)
        .map(|worker| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut round = 0usize;
                while Instant::now() < deadline {
                    let members: Vec<String> =
                        (0..20).map(|i| format!("w{worker}r{round}m{i}")).collect();
                    let _ = client.unban_group_member(GROUP, &members).await;
                    round += 1;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }

    let http = reqwest::Client::new();
    let log: Value = http
        .get(format!("{base_url}/simulator/requests"))
        .send()
        .await?
        .json()
        .await?;
    let stats: Value = http
        .get(format!("{base_url}/simulator/stats"))
        .send()
        .await?
        .json()
        .await?;
    sim.stop().await?;

    let requests = log["requests"].as_array().cloned().unwrap_or_default();
    let arrivals: Vec<u64> = requests.iter().filter_map(|r| r["atMs"].as_u64()).collect();
    let code_count = |code: i64| {
        requests
            .iter()
            .filter(|r| r["errorCode"].as_i64() == Some(code))
            .count()
    };
    let span_ms = match (arrivals.first(), arrivals.last()) {
        (Some(first), Some(last)) if last > first => (last - first) as f64,
        _ => 0.0,
    };
    let calls_per_second = if span_ms > 0.0 {
        (arrivals.len() - 1) as f64 * 1000.0 / span_ms
    } else {
        0.0
    };
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
