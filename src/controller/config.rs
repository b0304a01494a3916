//! How `run` behaves: the options the command line fills, and leader
//! election's settings.

use std::sync::Arc;
use std::time::Duration;

use super::backoff::BackoffPolicy;
use super::triggers::SecretKey;
use crate::im::ClientSettings;
use crate::metrics::{Health, Metrics};

/// The controller's name in Events and logs.
pub const CONTROLLER_NAME: &str = "groupban-operator";

/// How long a graceful shutdown may take before `run` returns anyway:
/// well within Kubernetes' default 30 s grace period.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(20);

/// How `run` behaves; the command line fills it.
#[derive(Clone)]
pub struct RunOptions {
    /// Watch one namespace only (and its Secrets); all when `None`.
    pub namespace: Option<String>,
    /// A label selector: only matching policies are reconciled.
    pub selector: Option<String>,
    pub max_calls_per_second: u32,
    /// The Secret of policies that name none.
    pub default_credentials_secret: Option<SecretKey>,
    /// Labels a namespace must have for its policies that name no Secret
    /// to use `default_credentials_secret` (see [`super::tenancy`]).
    pub default_credentials_namespace_selector: Option<String>,
    /// Policies reconciled at once.
    pub concurrency: u16,
    pub client: ClientSettings,
    /// How often a Stalled policy is tried again without any change.
    pub stalled_recheck: Duration,
    /// How often a converged policy is looked at again (no call, no write
    /// unless something changed).
    pub idle_resync: Duration,
    /// A long pass publishes its progress at most this often.
    pub progress_interval: Duration,
    /// A watch (or any answer) silent this long is cut and restarted.
    pub watch_idle_timeout: Duration,
    pub backoff: BackoffPolicy,
    /// The pod name (or host name), for Events.
    pub instance: Option<String>,
    /// Run as one candidate of several; `None`: act alone.
    pub leader_election: Option<LeaderElection>,
    /// What the probes and the metrics scrape read.
    pub health: Arc<Health>,
    /// Where reconciles, IM calls, the leader status and the policy gauges
    /// are recorded. The controller's IM clients record into it, whatever
    /// `client.observer` says.
    pub metrics: Arc<Metrics>,
}

/// Leader election settings (`--leader-elect` and its companions).
#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub lease_name: String,
    /// The Lease's namespace; when unset, the operator's own (see
    /// [`super::leader::own_namespace`]).
    pub namespace: Option<String>,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            selector: None,
            max_calls_per_second: crate::im::DEFAULT_CALLS_PER_SECOND,
            default_credentials_secret: None,
            default_credentials_namespace_selector: None,
            concurrency: 32,
            client: ClientSettings::default(),
            stalled_recheck: Duration::from_secs(600),
            idle_resync: Duration::from_secs(3600),
            progress_interval: Duration::from_secs(5),
            watch_idle_timeout: Duration::from_secs(120),
            backoff: BackoffPolicy::default(),
            instance: None,
            leader_election: None,
            health: Arc::default(),
            metrics: Arc::default(),
        }
    }
}
