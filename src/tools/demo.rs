//! `groupban-operator demo`: the whole product in one command, no account
//! and no cluster. Starts the simulator on loopback with banned members
//! (and some injected faults, to show retries), applies the manifests in
//! `examples/` (embedded in the binary, so the demo runs from anywhere),
//! and prints the resulting status and what the simulator received.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ToolError;
use crate::engine::credentials::keys;
use crate::im::ClientSettings;
use crate::oneshot::apply::{ApplyOptions, OutputFormat, apply_manifests};
use crate::oneshot::manifests::{self, Manifests};
use crate::simulator::{self, Faults, SeedFile, SimulatorConfig};

const CREDENTIALS: &str = include_str!("../../examples/credentials.yaml");
const POLICIES: &str = include_str!("../../examples/policies.yaml");

const SEED: &str = r#"
groups:
  - groupId: "@TGS#aDemoStream"
    type: AVChatRoom
    banned: [viewer01, viewer02, viewer03, viewer04, viewer05, viewer06, viewer07, viewer08, viewer09, viewer10,
             viewer11, viewer12, viewer13, viewer14, viewer15, viewer16, viewer17, viewer18, viewer19, viewer20,
             viewer21, viewer22, viewer23, viewer24, viewer25, viewer26, viewer27, viewer28, viewer29, viewer30,
             viewer31, viewer32, viewer33, viewer34, viewer35, viewer36, viewer37, viewer38, viewer39, viewer40,
             viewer41, viewer42, viewer43, viewer44, viewer45, spammer01, spammer02, spammer03]
  - groupId: "@TGS#aVipLounge"
    type: AVChatRoom
    banned: [alice, bob, mallory]
"#;

pub async fn run() -> Result<(), ToolError> {
    let mut manifests = Manifests::default();
    let mut origins = BTreeMap::new();
    for (text, file) in [(CREDENTIALS, "examples/credentials.yaml"), (POLICIES, "examples/policies.yaml")] {
        manifests::load_text(text, file, &mut manifests, &mut origins).map_err(ToolError::Examples)?;
    }
    let secret = manifests.secrets.values().next().cloned().unwrap_or_default();
    let value = |key: &str| secret.string_data.as_ref().and_then(|d| d.get(key)).cloned().unwrap_or_default();
    let sdkappid = value(keys::SDK_APP_ID).parse().unwrap_or(1_400_000_000);

    let mut config = SimulatorConfig::new(sdkappid, &value(keys::IDENTIFIER), &value(keys::SECRET_KEY));
    config.seed = SeedFile::parse(SEED).map_err(ToolError::Seed)?;
    config.faults = Faults { fail_10002: 0.10, fail_http502: 0.05, latency: Duration::from_millis(5), seed: 42 };
    let loopback = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
    let sim = simulator::start(config, loopback).await?;
    let base_url = sim.base_url();
    for secret in manifests.secrets.values_mut() {
        secret.string_data.get_or_insert_with(Default::default).insert(keys::ENDPOINT.into(), base_url.clone());
    }

    crate::outln!("# IM simulator listening on {base_url}");
    crate::outln!("# It injects faults: 10% of calls answer ErrorCode 10002, 5% answer HTTP 502.");
    crate::outln!("# Applying examples/credentials.yaml and examples/policies.yaml ...\n");
    let options = ApplyOptions {
        state: None,
        output: OutputFormat::Yaml,
        max_calls_per_second: crate::im::DEFAULT_CALLS_PER_SECOND,
        client: ClientSettings::default(),
        stop: None,
    };
    let result = apply_manifests(manifests, &options).await?;
    crate::outln!("# Policies and their status (as `kubectl get gbp -o yaml` would show them):");
    crate::write_stdout(&result.render(OutputFormat::Yaml)?);

    let log = sim.fetch_json("/simulator/requests").await?;
    let state = sim.fetch_json("/simulator/state").await?;
    sim.stop().await?;

    crate::outln!("\n# What the simulator received, in order:");
    crate::outln!("{:>4}  {:<20}  {:<18}  {:>7}  answer", "#", "command", "group", "members");
    for request in log["requests"].as_array().into_iter().flatten() {
        let answer = match (request["httpStatus"].as_u64(), request["errorCode"].as_i64()) {
            (Some(200), Some(0)) => "ErrorCode 0".to_string(),
            (Some(200), Some(code)) => format!("ErrorCode {code} ({})", crate::im::codes::lookup(code).reason),
            (status, _) => format!("HTTP {}", status.unwrap_or_default()),
        };
        crate::outln!(
            "{:>4}  {:<20}  {:<18}  {:>7}  {answer}",
            request["seq"].as_u64().unwrap_or_default(),
            request["command"].as_str().unwrap_or_default(),
            request["groupId"].as_str().unwrap_or("-"),
            request["members"].as_array().map_or(0, Vec::len),
        );
    }
    crate::outln!("\n# Members still banned in the simulator:");
    for group in state["groups"].as_array().into_iter().flatten() {
        let banned: Vec<&str> =
            group["banned"].as_array().into_iter().flatten().filter_map(|b| b["account"].as_str()).collect();
        crate::outln!(
            "{}: {}",
            group["groupId"].as_str().unwrap_or_default(),
            if banned.is_empty() { "(none)".to_string() } else { banned.join(", ") }
        );
    }
    crate::outln!("\n# In short (as `kubectl get gbp` would list them):");
    crate::outln!(
        "{:<18}  {:<18}  {:>7}  {:>8}  {:>9}  {:<5}  reason",
        "NAME",
        "GROUP",
        "DESIRED",
        "UNBANNED",
        "ERRORCODE",
        "READY"
    );
    for item in result.list["items"].as_array().into_iter().flatten() {
        let status = &item["status"];
        let ready = status["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready");
        crate::outln!(
            "{:<18}  {:<18}  {:>7}  {:>8}  {:>9}  {:<5}  {}",
            item["metadata"]["name"].as_str().unwrap_or_default(),
            item["spec"]["groupId"].as_str().unwrap_or_default(),
            status["summary"]["desired"].to_string(),
            status["summary"]["unbanned"].to_string(),
            status["lastErrorCode"].to_string(),
            ready.and_then(|c| c["status"].as_str()).unwrap_or("-"),
            ready.and_then(|c| c["reason"].as_str()).unwrap_or("-"),
        );
    }
    crate::outln!(
        "\n# {} of {} policies are Ready; closed-room is Stalled on purpose (its group does not exist).",
        result.summary.ready,
        result.summary.policies
    );
    Ok(())
}
