//! The command line's arguments: what each subcommand takes, with the
//! bounds and parsers that check it before any work starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::im::{DEFAULT_CALLS_PER_SECOND, RetryPolicy};
use crate::secret::Redacted;

#[derive(Debug, Parser)]
#[command(
    name = "groupban-operator",
    version,
    about = "Unbans Tencent Cloud IM audio-video group members declared in GroupBanPolicy resources"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator: reconcile GroupBanPolicies in a Kubernetes cluster until stopped.
    Run(RunArgs),
    /// Reconcile GroupBanPolicy manifests once against the IM REST API.
    Apply(ApplyArgs),
    /// Try it all: a local IM simulator, the examples applied, the results shown.
    Demo,
    /// Run a local IM REST gateway (unban, ban, ban list) for trials and tests.
    Simulate(SimulateArgs),
    /// Print a UserSig, to check a console setup by hand.
    Usersig(UsersigArgs),
    /// Print the GroupBanPolicy CustomResourceDefinition (YAML).
    Crd,
    /// Check the cluster, the CRD, the operator's permissions, a running operator and credentials; exits 1 on any failure.
    Check(CheckArgs),
    /// Show each policy against its group's real ban list (no unban call); exits 1 when they differ.
    Diff(DiffArgs),
    /// List policies with their progress and Ready condition.
    Get(GetArgs),
    /// Ask the operator to reconcile a policy now, wait for it, and print the outcome.
    Reconcile(ReconcileArgs),
    /// Stop the operator's IM calls for a policy (spec.suspend: true).
    Suspend(SuspendArgs),
    /// Let the operator act on a policy again, and reconcile it now.
    Resume(ResumeArgs),
    /// Measure against the built-in simulator (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// The cluster, as kubectl finds it.
#[derive(Debug, Args)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then the pod's ServiceAccount).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// The namespace (default: the context's, else `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Check the permissions of this user instead of yours, as `kubectl auth can-i --as`
    /// (e.g. `system:serviceaccount:ops:groupban-operator`; you need impersonation rights).
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,
    /// The namespace the operator runs in (its Lease); default: -n, else the context's.
    #[arg(long)]
    pub operator_namespace: Option<String>,
    /// The operator's `--namespace` (watchNamespace); every namespace when unset.
    #[arg(long)]
    pub watch_namespace: Option<String>,
    /// The leader Lease's name (the chart's is RELEASE-groupban-operator); found in the
    /// operator namespace when unset.
    #[arg(long)]
    pub lease_name: Option<String>,
    /// Whether the operator elects a leader (as `run --leader-elect`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub leader_elect: bool,
    /// The operator's `--default-credentials-secret` (NAMESPACE/NAME): its permissions are checked,
    /// and a `--policy` that names no Secret uses it.
    #[arg(long)]
    pub default_credentials_secret: Option<crate::engine::credentials::SecretKey>,
    /// The operator's `--default-credentials-namespace-selector`: its permissions are checked.
    #[arg(long, value_parser = crate::label_selector::parse)]
    pub default_credentials_namespace_selector: Option<String>,
    /// The operator's `/readyz` (e.g. http://127.0.0.1:8080/readyz after a port-forward).
    #[arg(long, value_name = "URL")]
    pub readyz_url: Option<String>,
    /// Check the credentials in this Secret (NAMESPACE/NAME).
    #[arg(long, conflicts_with = "policy")]
    pub secret: Option<crate::engine::credentials::SecretKey>,
    /// Check the credentials this policy (in -n) uses, and read its group.
    #[arg(long)]
    pub policy: Option<String>,
    /// The group to read once with the credentials (default: the policy's).
    #[arg(long)]
    pub group: Option<String>,
    /// Retry until every check passes or this long has gone (e.g. `2m`), for install scripts.
    #[arg(long, value_parser = parse_duration_flag)]
    pub wait: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// One policy by name; all when unset.
    #[arg(conflicts_with = "selector")]
    pub name: Option<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Policies in every namespace.
    #[arg(short = 'A', long, conflicts_with_all = ["namespace", "name"])]
    pub all_namespaces: bool,
    /// Only policies whose labels match, e.g. `team=a,tier!=canary`.
    #[arg(short = 'l', long, value_parser = crate::label_selector::parse)]
    pub selector: Option<String>,
    /// `wide` adds pending, failed, suspended and last sync; `yaml` and `json` print the objects.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<GetOutput>,
    /// After the table, print a row each time a policy changes, until interrupted
    /// (with the default or the wide table).
    #[arg(short = 'w', long)]
    pub watch: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GetOutput {
    Wide,
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    pub name: String,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// How long to wait for the operator to handle the request.
    #[arg(long, default_value = "5m", value_parser = parse_duration_flag)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct SuspendArgs {
    pub name: String,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    pub name: String,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// How long to wait for the operator to handle the reconcile that resuming requests.
    #[arg(long, default_value = "5m", value_parser = parse_duration_flag)]
    pub timeout: Duration,
    /// Do not wait for the reconcile; exit once the policy is resumed.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Files or folders of GroupBanPolicy and Secret manifests, as `apply` reads them
    /// (`-` reads stdin); without it, the policies in the cluster.
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// With `-f`: the state file `apply` keeps, for what it recorded as unbanned (only read).
    #[arg(long, value_name = "FILE", requires = "paths")]
    pub state: Option<PathBuf>,
    /// From the cluster: one policy by name.
    #[arg(conflicts_with_all = ["paths", "selector"])]
    pub name: Option<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// From the cluster: policies in every namespace.
    #[arg(short = 'A', long, conflicts_with_all = ["namespace", "name", "paths"])]
    pub all_namespaces: bool,
    /// From the cluster: only policies whose labels match.
    #[arg(short = 'l', long, conflicts_with = "paths", value_parser = crate::label_selector::parse)]
    pub selector: Option<String>,
    /// From the cluster: NAMESPACE/NAME of the Secret for policies that name none, as `run`
    /// takes it (ignored with -f: the files' own Secrets are used).
    #[arg(long, env = "GROUPBAN_DEFAULT_CREDENTIALS_SECRET")]
    pub default_credentials_secret: Option<crate::engine::credentials::SecretKey>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: DiffOutput,
    /// get_group_ban_member calls per second per app. That API has its own budget of 200, which a
    /// running operator's drift checks share: the default leaves them most of it.
    #[arg(long, default_value_t = DIFF_CALLS_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..=MAX_CALLS_PER_SECOND))]
    pub max_calls_per_second: u32,
    /// Attempts per call before it is reported failed (retryable answers only).
    #[arg(long, default_value_t = RetryPolicy::DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Seconds before a call is abandoned as a timeout.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(4..=300))]
    pub request_timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffOutput {
    Table,
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Calls per second one client sustains at the app's limit, and the busiest 1-second window.
    Client(BenchClientArgs),
    /// Wall time, calls and peak memory of `apply` on generated policies.
    Apply(BenchApplyArgs),
}

#[derive(Debug, Args)]
pub struct BenchApplyArgs {
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub policies: u64,
    /// Members per policy (at most 5000, the schema's limit).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=5000))]
    pub members: u64,
    #[arg(long, default_value_t = DEFAULT_CALLS_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..=MAX_CALLS_PER_SECOND))]
    pub rate_limit: u32,
    #[command(flatten)]
    pub faults: FaultArgs,
    /// Give apply a state file (saved atomically after every batch of answers).
    #[arg(long)]
    pub with_state: bool,
}

#[derive(Debug, Args)]
pub struct BenchClientArgs {
    /// How long to keep calls in flight.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub seconds: u64,
    /// The simulator's limit and the client's, in calls per second.
    #[arg(long, default_value_t = DEFAULT_CALLS_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..=MAX_CALLS_PER_SECOND))]
    pub rate_limit: u32,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Files or folders of GroupBanPolicy and Secret manifests (YAML or JSON); `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// JSON file of recorded statuses: loaded first, saved atomically after every batch of answers.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Output format of the resulting List.
    #[arg(short = 'o', long, value_enum, default_value = "yaml")]
    pub output: crate::oneshot::apply::OutputFormat,
    /// Calls per second per app (SDKAppID); the IM API allows 200.
    #[arg(long, default_value_t = DEFAULT_CALLS_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..=MAX_CALLS_PER_SECOND))]
    pub max_calls_per_second: u32,
    /// Attempts per call before it is reported failed (retryable answers only).
    #[arg(long, default_value_t = RetryPolicy::DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Seconds before a call is abandoned as a timeout (the gateway's own is 3).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(4..=300))]
    pub request_timeout: u64,
    /// Time budget for the whole run (e.g. `10m`): then it stops as on SIGTERM,
    /// saves, prints and exits 3. No budget when unset.
    #[arg(long, value_parser = parse_duration_flag)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Watch GroupBanPolicies (and Secrets) in this namespace only; all namespaces when unset.
    #[arg(long, env = "GROUPBAN_NAMESPACE")]
    pub namespace: Option<String>,
    /// Reconcile only policies whose labels match (e.g. `shard=a`), so several instances can split a fleet.
    #[arg(long, env = "GROUPBAN_SELECTOR", value_parser = crate::label_selector::parse)]
    pub selector: Option<String>,
    /// Calls per second per app (SDKAppID) and API, for the whole process; the IM API allows 200.
    #[arg(long, default_value_t = DEFAULT_CALLS_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..=MAX_CALLS_PER_SECOND))]
    pub max_calls_per_second: u32,
    /// NAMESPACE/NAME of the credentials Secret for policies that name none
    /// (default: `groupban-credentials` in the policy's namespace).
    #[arg(long, env = "GROUPBAN_DEFAULT_CREDENTIALS_SECRET")]
    pub default_credentials_secret: Option<crate::controller::triggers::SecretKey>,
    /// Only policies in namespaces whose labels match (e.g. `groupban.dev/shared-credentials=true`)
    /// may use --default-credentials-secret; others that name no Secret are Stalled
    /// (DefaultCredentialsNotAllowed). Every namespace when unset. Needs list/watch on namespaces.
    #[arg(
        long,
        env = "GROUPBAN_DEFAULT_CREDENTIALS_NAMESPACE_SELECTOR",
        requires = "default_credentials_secret",
        value_parser = crate::label_selector::parse
    )]
    pub default_credentials_namespace_selector: Option<String>,
    /// Policies reconciled at once (calls are bounded by the rate limit, not by this).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Attempts per call before it is reported failed (retryable answers only).
    #[arg(long, default_value_t = RetryPolicy::DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Seconds before a call is abandoned as a timeout (the gateway's own is
    /// 3; at most 15 so a shutdown finishes within Kubernetes' grace period).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(4..=15))]
    pub request_timeout: u64,
    /// How often a Stalled policy is tried again with no change to it or its Secret.
    #[arg(long, default_value = "10m", value_parser = parse_duration_flag)]
    pub stalled_recheck_interval: Duration,
    /// How often a converged policy is looked at again (no IM call, no write).
    #[arg(long, default_value = "1h", value_parser = parse_duration_flag)]
    pub resync_interval: Duration,
    /// A long pass writes its progress to status at most this often.
    #[arg(long, default_value = "5s", value_parser = parse_duration_flag)]
    pub progress_interval: Duration,
    /// A watch that delivers neither an event nor a bookmark for this long is cut and restarted
    /// (each watch asks the server to end it a little sooner; at least 6s).
    #[arg(long, default_value = "2m", value_parser = parse_duration_flag)]
    pub watch_idle_timeout: Duration,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", env = "GROUPBAN_LOG_FORMAT")]
    pub log_format: crate::telemetry::LogFormat,
    /// Serve `/metrics` (OpenMetrics), `/healthz` and `/readyz` here, e.g. `:8080`.
    #[arg(long, env = "GROUPBAN_METRICS_BIND_ADDRESS", value_parser = parse_bind_address)]
    pub metrics_bind_address: Option<SocketAddr>,
    /// Elect one leader on a Lease; only the leader makes IM calls and writes status. On by
    /// default, so two processes started the same way never both spend one app's budget;
    /// `--leader-elect=false` for a process that must act alone (it says so loudly).
    #[arg(
        long,
        env = "GROUPBAN_LEADER_ELECT",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "groupban-operator")]
    pub leader_election_id: String,
    /// Namespace of the Lease (default: POD_NAMESPACE, else the service account's, else the kubeconfig context's).
    #[arg(long)]
    pub leader_election_namespace: Option<String>,
    /// How long a Lease not renewed stays its holder's.
    #[arg(long, default_value = "15s", value_parser = parse_duration_flag)]
    pub leader_election_lease_duration: Duration,
    /// The leader stops making calls when it has not renewed for this long (less than the lease duration).
    #[arg(long, default_value = "10s", value_parser = parse_duration_flag)]
    pub leader_election_renew_deadline: Duration,
    /// How often candidates try for the Lease, and the leader renews it.
    #[arg(long, default_value = "2s", value_parser = parse_duration_flag)]
    pub leader_election_retry_period: Duration,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    #[arg(long)]
    pub sdkappid: u64,
    /// The App admin account callers must use.
    #[arg(long, default_value = "administrator")]
    pub identifier: String,
    /// The app's secret key (or set GROUPBAN_SECRET_KEY, which keeps it out of `ps`).
    #[arg(long, env = "GROUPBAN_SECRET_KEY", hide_env_values = true, value_parser = parse_secret)]
    pub secret_key: Redacted<String>,
    /// YAML file of groups: `groups: [{groupId: "@TGS#demo", type: AVChatRoom, banned: [alice]}]`.
    #[arg(long)]
    pub seed_file: Option<PathBuf>,
    /// Calls per second the app may make; more get ErrorCode 60007.
    #[arg(long, default_value_t = DEFAULT_CALLS_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..=MAX_CALLS_PER_SECOND))]
    pub rate_limit: u32,
    #[command(flatten)]
    pub faults: FaultArgs,
    /// Milliseconds added before every answer.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Seed of the fault RNG; the same seed and requests give the same faults.
    #[arg(long, default_value_t = 1)]
    pub fault_seed: u64,
    /// Allow banning in every group type, not only AVChatRoom (the docs disagree).
    #[arg(long)]
    pub allow_any_group_type: bool,
}

/// Fault injection in the simulator (`simulate`, `bench apply`).
#[derive(Debug, Args)]
pub struct FaultArgs {
    /// Share of calls (0 to 1) answered ErrorCode 10002 without effect.
    #[arg(long = "fail-10002", default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_10002: f64,
    /// Share of calls (0 to 1) answered HTTP 502 without effect.
    #[arg(long = "fail-http502", default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_http502: f64,
}

#[derive(Debug, Args)]
pub struct UsersigArgs {
    #[arg(long)]
    pub sdkappid: u64,
    #[arg(long)]
    pub identifier: String,
    /// The app's secret key (or set GROUPBAN_SECRET_KEY).
    #[arg(long, env = "GROUPBAN_SECRET_KEY", hide_env_values = true, value_parser = parse_secret)]
    pub secret_key: Redacted<String>,
    /// Seconds of validity (the reference tools default to 180 days).
    #[arg(long, default_value_t = 180 * 86400, value_parser = clap::value_parser!(u64).range(1..))]
    pub expire: u64,
    /// Text to embed as userbuf.
    #[arg(long)]
    pub userbuf: Option<String>,
}

/// `diff`'s default rate of ban-list reads: a quarter of the API's 200, so
/// a CI step does not starve the operator's drift checks on the same app
/// (a 100,000-member list still reads in 20 s).
pub const DIFF_CALLS_PER_SECOND: u32 = 50;

/// Far above any IM plan; a bound keeps absurd values from the limiter.
pub const MAX_CALLS_PER_SECOND: i64 = 100_000;

/// A secret from the command line or the environment: never empty, never
/// printed by a stray `{:?}`.
pub fn parse_secret(text: &str) -> Result<Redacted<String>, String> {
    if text.trim().is_empty() {
        return Err("the secret key must not be empty".into());
    }
    Ok(Redacted::new(text.trim().to_string()))
}

/// A duration flag of `run`: at least a second, or a converged fleet would
/// be re-read from the API server many times a second.
pub fn parse_duration_flag(text: &str) -> Result<Duration, String> {
    let duration = crate::crd::parse_duration(text)?;
    if duration < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(duration)
}

/// `HOST:PORT`, or `:PORT` for every address, IPv6 and IPv4 (as
/// controller-runtime writes it).
pub fn parse_bind_address(text: &str) -> Result<SocketAddr, String> {
    let full = if text.starts_with(':') { format!("[::]{text}") } else { text.to_string() };
    full.parse().map_err(|_| format!("{text:?} is not an address such as :8080 or 127.0.0.1:8080"))
}

pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{text:?} is not a rate between 0 and 1")),
    }
}
