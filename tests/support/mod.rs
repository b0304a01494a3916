//! Shared helpers for integration tests: a simulator on loopback and
//! clients pointed at it.
#![allow(dead_code)] // each test binary uses a different subset

pub mod apply;
pub mod cluster;
pub mod control_plane;
pub mod fake_apiserver;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use groupban_operator::im::{AppCredentials, ClientSettings, Endpoint, ImClient, RateLimit, RateLimiter, RetryPolicy};
use groupban_operator::secret::Redacted;
use groupban_operator::simulator::{self, RunningSimulator, SeedFile, SimulatorConfig};
use serde_json::Value;

pub const SDKAPPID: u64 = 1_400_000_000;
pub const ADMIN: &str = "administrator";
pub const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A simulator config with the test app and the given seed YAML.
pub fn config(seed_yaml: &str) -> SimulatorConfig {
    let mut config = SimulatorConfig::new(SDKAPPID, ADMIN, KEY);
    config.seed = SeedFile::parse(seed_yaml).expect("test seed parses");
    config
}

pub async fn start(config: SimulatorConfig) -> RunningSimulator {
    groupban_operator::install_crypto_provider();
    simulator::start(config, loopback()).await.expect("simulator starts")
}

/// Fast retries so tests that exhaust them finish quickly.
pub fn quick_settings() -> ClientSettings {
    ClientSettings {
        request_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            rate_limit_cooldown: Duration::from_millis(300),
            unknown_code_slowdown: 2,
        },
        ..ClientSettings::default()
    }
}

pub fn credentials(identifier: &str, key: &str) -> AppCredentials {
    AppCredentials { sdkappid: SDKAPPID, identifier: identifier.into(), secret_key: Redacted::new(key.into()) }
}

pub fn client_for(
    base_url: &str,
    credentials: AppCredentials,
    settings: ClientSettings,
    calls_per_second: u32,
) -> ImClient {
    let http = groupban_operator::im::client::http_client(settings.request_timeout).expect("HTTP client");
    let endpoint = Endpoint::parse(base_url, false).expect("loopback endpoint");
    let limiter = Arc::new(RateLimiter::new(RateLimit::per_second(calls_per_second)));
    ImClient::new(http, endpoint, credentials, limiter, settings)
}

pub fn admin_client(sim: &RunningSimulator) -> ImClient {
    client_for(&sim.base_url(), credentials(ADMIN, KEY), quick_settings(), 200)
}

pub async fn get_json(sim_url: &str, path: &str) -> Value {
    reqwest::get(format!("{sim_url}{path}")).await.expect("GET").json().await.expect("JSON")
}

/// The ErrorCodes of every request the simulator logged, in order.
pub async fn logged_codes(sim_url: &str) -> Vec<Option<i64>> {
    get_json(sim_url, "/simulator/requests").await["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["errorCode"].as_i64())
        .collect()
}

pub fn members(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Seed YAML: AVChatRoom groups, each with members `m0..mN` banned.
pub fn seed_banned(groups: &[(&str, usize)]) -> String {
    let groups: Vec<String> = groups
        .iter()
        .map(|(id, n)| format!("{{groupId: \"{id}\", type: AVChatRoom, banned: [{}]}}", members("m", *n).join(", ")))
        .collect();
    format!("groups: [{}]", groups.join(", "))
}

/// True when `python3` can import `modules` (comma-separated). When it
/// cannot, the test is skipped with a notice, except under
/// GROUPBAN_REQUIRE_PYTHON_TESTS (set by CI), where that is a failure.
pub fn python_modules_available(test: &str, modules: &str) -> bool {
    let probe = std::process::Command::new("python3").args(["-c", &format!("import {modules}")]).output();
    if probe.is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(
        std::env::var_os("GROUPBAN_REQUIRE_PYTHON_TESTS").is_none(),
        "{test}: GROUPBAN_REQUIRE_PYTHON_TESTS is set but python3 cannot import {modules}: pip install -r tests/python/requirements.txt"
    );
    eprintln!("SKIPPED {test}: pip install -r tests/python/requirements.txt");
    false
}

/// True when `program` runs (`program version_arg` succeeds). When it does
/// not, the test is skipped with a notice, except under `required_by` (an
/// environment variable CI sets), where that is a failure.
pub fn tool_available(program: &str, version_arg: &str, required_by: &str, install: &str) -> bool {
    let probe = std::process::Command::new(program).arg(version_arg).output();
    if probe.is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(std::env::var_os(required_by).is_none(), "{required_by} is set but {program} does not run: {install}");
    eprintln!("SKIPPED: no {program} ({install})");
    false
}
