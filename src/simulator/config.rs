//! What a simulator is started with: the one app it serves, its rate
//! limit, the faults it injects and the groups it holds.

use std::time::Duration;

use super::seed::SeedFile;
use crate::secret::Redacted;

/// Injected faults, drawn per request from an RNG seeded with `seed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Share of calls answered 10002 (internal error) without effect.
    pub fail_10002: f64,
    /// Share of calls answered HTTP 502 without effect.
    pub fail_http502: f64,
    /// Added before every answer.
    pub latency: Duration,
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self { fail_10002: 0.0, fail_http502: 0.0, latency: Duration::ZERO, seed: 1 }
    }
}

#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub sdkappid: u64,
    pub identifier: String,
    pub secret_key: Redacted<String>,
    /// Calls admitted per second for the app; more get 60007.
    pub rate_limit: u32,
    pub faults: Faults,
    pub seed: SeedFile,
    pub allow_any_group_type: bool,
    /// Requests kept for `/simulator/requests`; older ones are dropped.
    pub request_log_limit: usize,
}

impl SimulatorConfig {
    pub fn new(sdkappid: u64, identifier: &str, secret_key: &str) -> Self {
        Self {
            sdkappid,
            identifier: identifier.to_string(),
            secret_key: Redacted::new(secret_key.to_string()),
            rate_limit: crate::im::DEFAULT_CALLS_PER_SECOND,
            faults: Faults::default(),
            seed: SeedFile::default(),
            allow_any_group_type: false,
            request_log_limit: 100_000,
        }
    }
}
