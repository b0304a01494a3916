//! The command line: one subcommand per entry point. Parsing and exit codes
//! live here; each subcommand's work lives in its own module.
//!
//! Exit codes: 0 success, 1 the work did not fully succeed, 2 invalid input
//! (clap's own usage errors exit 2 as well); `apply` also exits 3 when a
//! signal or `--timeout` stopped it (what was confirmed is saved), and any
//! command 130 on a second signal (nothing more is waited for).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

use crate::im::usersig::{self, SigRequest};
use crate::im::{DEFAULT_CALLS_PER_SECOND, RetryPolicy};
use crate::secret::Redacted;
use crate::simulator::{self, Faults, SeedFile, SimulatorConfig};

#[derive(Debug, Parser)]
#[command(
    name = "groupban-operator",
    version,
    about = "Unbans Tencent Cloud IM audio-video group members declared in GroupBanPolicy resources"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// Measure against the built-in simulator (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Calls per second one client sustains at the app's limit, and the busiest 1-second window.
    Client(BenchClientArgs),
    /// Wall time, calls and peak memory of `apply` on generated policies.
    Apply(BenchApplyArgs),
}

#[derive(Debug, Args)]
struct BenchApplyArgs {
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    policies: u64,
    /// Members per policy (at most 5000, the schema's limit).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=5000))]
    members: u64,
    #[arg(long, default_value_t = DEFAULT_CALLS_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..=MAX_CALLS_PER_SECOND))]
    rate_limit: u32,
    #[command(flatten)]
    faults: FaultArgs,
    /// Give apply a state file (saved atomically after every batch of answers).
    #[arg(long)]
    with_state: bool,
}

#[derive(Debug, Args)]
struct BenchClientArgs {
    /// How long to keep calls in flight.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(2..=3600))]
    seconds: u64,
    /// The simulator's limit and the client's, in calls per second.
    #[arg(long, default_value_t = DEFAULT_CALLS_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..=MAX_CALLS_PER_SECOND))]
    rate_limit: u32,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,
}

#[derive(Debug, Args)]
struct ApplyArgs {
    /// Files or folders of GroupBanPolicy and Secret manifests (YAML or JSON); `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    paths: Vec<PathBuf>,
    /// JSON file of recorded statuses: loaded first, saved atomically after every answer.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Output format of the resulting List.
    #[arg(short = 'o', long, value_enum, default_value = "yaml")]
    output: crate::oneshot::apply::OutputFormat,
    /// Calls per second per app (SDKAppID); the IM API allows 200.
    #[arg(long, default_value_t = DEFAULT_CALLS_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..=MAX_CALLS_PER_SECOND))]
    max_calls_per_second: u32,
    /// Attempts per call before it is reported failed (retryable answers only).
    #[arg(long, default_value_t = RetryPolicy::DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,
    /// Seconds before a call is abandoned as a timeout (the gateway's own is 3).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(4..=300))]
    request_timeout: u64,
    /// Time budget for the whole run (e.g. `10m`): then it stops as on SIGTERM,
    /// saves, prints and exits 3. No budget when unset.
    #[arg(long, value_parser = parse_duration_flag)]
    timeout: Option<Duration>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Watch GroupBanPolicies (and Secrets) in this namespace only; all namespaces when unset.
    #[arg(long, env = "GROUPBAN_NAMESPACE")]
    namespace: Option<String>,
    /// Reconcile only policies whose labels match (e.g. `shard=a`), so several instances can split a fleet.
    #[arg(long, env = "GROUPBAN_SELECTOR")]
    selector: Option<String>,
    /// Calls per second per app (SDKAppID) and API, for the whole process; the IM API allows 200.
    #[arg(long, default_value_t = DEFAULT_CALLS_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..=MAX_CALLS_PER_SECOND))]
    max_calls_per_second: u32,
    /// NAMESPACE/NAME of the credentials Secret for policies that name none
    /// (default: `groupban-credentials` in the policy's namespace).
    #[arg(long, env = "GROUPBAN_DEFAULT_CREDENTIALS_SECRET")]
    default_credentials_secret: Option<crate::controller::triggers::SecretKey>,
    /// Policies reconciled at once (calls are bounded by the rate limit, not by this).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Attempts per call before it is reported failed (retryable answers only).
    #[arg(long, default_value_t = RetryPolicy::DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,
    /// Seconds before a call is abandoned as a timeout (the gateway's own is
    /// 3; at most 15 so a shutdown finishes within Kubernetes' grace period).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(4..=15))]
    request_timeout: u64,
    /// How often a Stalled policy is tried again with no change to it or its Secret.
    #[arg(long, default_value = "10m", value_parser = parse_duration_flag)]
    stalled_recheck_interval: Duration,
    /// How often a converged policy is looked at again (no IM call, no write).
    #[arg(long, default_value = "1h", value_parser = parse_duration_flag)]
    resync_interval: Duration,
    /// A long pass writes its progress to status at most this often.
    #[arg(long, default_value = "5s", value_parser = parse_duration_flag)]
    progress_interval: Duration,
    /// A watch that delivers neither an event nor a bookmark for this long is cut and restarted
    /// (each watch asks the server to end it a little sooner; at least 6s).
    #[arg(long, default_value = "2m", value_parser = parse_duration_flag)]
    watch_idle_timeout: Duration,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", env = "GROUPBAN_LOG_FORMAT")]
    log_format: crate::telemetry::LogFormat,
    /// Serve `/metrics` (OpenMetrics), `/healthz` and `/readyz` here, e.g. `:8080`.
    #[arg(long, env = "GROUPBAN_METRICS_BIND_ADDRESS", value_parser = parse_bind_address)]
    metrics_bind_address: Option<SocketAddr>,
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
    leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "groupban-operator")]
    leader_election_id: String,
    /// Namespace of the Lease (default: POD_NAMESPACE, else the service account's, else the kubeconfig context's).
    #[arg(long)]
    leader_election_namespace: Option<String>,
    /// How long a Lease not renewed stays its holder's.
    #[arg(long, default_value = "15s", value_parser = parse_duration_flag)]
    leader_election_lease_duration: Duration,
    /// The leader stops making calls when it has not renewed for this long (less than the lease duration).
    #[arg(long, default_value = "10s", value_parser = parse_duration_flag)]
    leader_election_renew_deadline: Duration,
    /// How often candidates try for the Lease, and the leader renews it.
    #[arg(long, default_value = "2s", value_parser = parse_duration_flag)]
    leader_election_retry_period: Duration,
}

#[derive(Debug, Args)]
struct SimulateArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[arg(long)]
    sdkappid: u64,
    /// The App admin account callers must use.
    #[arg(long, default_value = "administrator")]
    identifier: String,
    /// The app's secret key (or set GROUPBAN_SECRET_KEY, which keeps it out of `ps`).
    #[arg(long, env = "GROUPBAN_SECRET_KEY", hide_env_values = true, value_parser = parse_secret)]
    secret_key: Redacted<String>,
    /// YAML file of groups: `groups: [{groupId: "@TGS#demo", type: AVChatRoom, banned: [alice]}]`.
    #[arg(long)]
    seed_file: Option<PathBuf>,
    /// Calls per second the app may make; more get ErrorCode 60007.
    #[arg(long, default_value_t = DEFAULT_CALLS_PER_SECOND, value_parser = clap::value_parser!(u32).range(1..=MAX_CALLS_PER_SECOND))]
    rate_limit: u32,
    #[command(flatten)]
    faults: FaultArgs,
    /// Milliseconds added before every answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Seed of the fault RNG; the same seed and requests give the same faults.
    #[arg(long, default_value_t = 1)]
    fault_seed: u64,
    /// Allow banning in every group type, not only AVChatRoom (the docs disagree).
    #[arg(long)]
    allow_any_group_type: bool,
}

/// Fault injection in the simulator (`simulate`, `bench apply`).
#[derive(Debug, Args)]
struct FaultArgs {
    /// Share of calls (0 to 1) answered ErrorCode 10002 without effect.
    #[arg(long = "fail-10002", default_value_t = 0.0, value_parser = parse_rate)]
    fail_10002: f64,
    /// Share of calls (0 to 1) answered HTTP 502 without effect.
    #[arg(long = "fail-http502", default_value_t = 0.0, value_parser = parse_rate)]
    fail_http502: f64,
}

#[derive(Debug, Args)]
struct UsersigArgs {
    #[arg(long)]
    sdkappid: u64,
    #[arg(long)]
    identifier: String,
    /// The app's secret key (or set GROUPBAN_SECRET_KEY).
    #[arg(long, env = "GROUPBAN_SECRET_KEY", hide_env_values = true, value_parser = parse_secret)]
    secret_key: Redacted<String>,
    /// Seconds of validity (the reference tools default to 180 days).
    #[arg(long, default_value_t = 180 * 86400, value_parser = clap::value_parser!(u64).range(1..))]
    expire: u64,
    /// Text to embed as userbuf.
    #[arg(long)]
    userbuf: Option<String>,
}

/// Far above any IM plan; a bound keeps absurd values from the limiter.
const MAX_CALLS_PER_SECOND: i64 = 100_000;

/// A secret from the command line or the environment: never empty, never
/// printed by a stray `{:?}`.
fn parse_secret(text: &str) -> Result<Redacted<String>, String> {
    if text.trim().is_empty() {
        return Err("the secret key must not be empty".into());
    }
    Ok(Redacted::new(text.trim().to_string()))
}

/// A duration flag of `run`: at least a second, or a converged fleet would
/// be re-read from the API server many times a second.
fn parse_duration_flag(text: &str) -> Result<Duration, String> {
    let duration = crate::crd::parse_duration(text)?;
    if duration < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(duration)
}

/// `HOST:PORT`, or `:PORT` for every address, IPv6 and IPv4 (as
/// controller-runtime writes it).
fn parse_bind_address(text: &str) -> Result<SocketAddr, String> {
    let full = if text.starts_with(':') { format!("[::]{text}") } else { text.to_string() };
    full.parse().map_err(|_| format!("{text:?} is not an address such as :8080 or 127.0.0.1:8080"))
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{text:?} is not a rate between 0 and 1")),
    }
}

/// Exit 2 for what the user must fix, exit 1 for work that failed.
type Failure = crate::RunError;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Prints usage or help; exits 2 for errors, 0 for --help/--version.
        Err(error) => error.exit(),
    };
    crate::install_crypto_provider();
    let outcome = match cli.command {
        Command::Usersig(args) => print_usersig(args),
        Command::Crd => match crate::crd_yaml() {
            Ok(yaml) => {
                crate::write_stdout(&yaml);
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => Err(Failure::Failed(anyhow::Error::new(error).context("failed to render the CRD"))),
        },
        Command::Run(args) => block_on(run_controller(args)),
        Command::Apply(args) => block_on(apply(args)),
        Command::Demo => block_on(async {
            crate::telemetry::init("error");
            crate::tools::demo::run().await.map(|()| ExitCode::SUCCESS)
        }),
        Command::Simulate(args) => block_on(simulate(args)),
        Command::Bench(BenchCommand::Client(args)) => block_on(bench_client(args)),
        Command::Bench(BenchCommand::Apply(args)) => block_on(bench_apply(args)),
    };
    match outcome {
        Ok(code) => code,
        Err(Failure::InvalidInput(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn block_on<F: Future<Output = Result<ExitCode, Failure>>>(future: F) -> Result<ExitCode, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(anyhow::anyhow!("failed to start the async runtime: {e}")))?;
    runtime.block_on(future)
}

fn print_usersig(args: UsersigArgs) -> Result<ExitCode, Failure> {
    if args.identifier.is_empty() {
        return Err(Failure::InvalidInput("--identifier must not be empty".into()));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let request = SigRequest {
        sdkappid: args.sdkappid,
        identifier: &args.identifier,
        time: now,
        expire: args.expire,
        userbuf: args.userbuf.as_deref().map(str::as_bytes),
    };
    crate::outln!("{}", usersig::generate(args.secret_key.expose(), &request));
    Ok(ExitCode::SUCCESS)
}

/// The IM client's settings from `--request-timeout` and `--max-attempts`.
fn client_settings(request_timeout_secs: u64, max_attempts: u32) -> crate::im::ClientSettings {
    let mut settings =
        crate::im::ClientSettings { request_timeout: Duration::from_secs(request_timeout_secs), ..Default::default() };
    settings.retry.max_attempts = max_attempts;
    settings
}

/// `run`: the operator until SIGTERM/SIGINT (exit 0 once calls in flight
/// are recorded); a second signal exits at once with 130.
async fn run_controller(args: RunArgs) -> Result<ExitCode, Failure> {
    crate::telemetry::init_with_format("info", args.log_format);
    let client = client_settings(args.request_timeout, args.max_attempts);
    let leader_election = leader_election(&args)?;
    let options = crate::controller::RunOptions {
        namespace: args.namespace,
        selector: args.selector,
        max_calls_per_second: args.max_calls_per_second,
        default_credentials_secret: args.default_credentials_secret,
        concurrency: args.concurrency,
        client,
        stalled_recheck: args.stalled_recheck_interval,
        idle_resync: args.resync_interval,
        progress_interval: args.progress_interval,
        watch_idle_timeout: args.watch_idle_timeout,
        instance: std::env::var("POD_NAME").ok().or_else(|| std::env::var("HOSTNAME").ok()),
        leader_election,
        ..Default::default()
    };
    if let Some(addr) = args.metrics_bind_address {
        let bound = crate::metrics::serve(addr, options.metrics.clone(), options.health.clone())
            .await
            .map_err(|e| Failure::InvalidInput(format!("cannot serve metrics on {addr}: {e}")))?;
        tracing::info!(addr = %bound, "Serving /metrics, /healthz and /readyz");
    }
    let mut signals = Signals::new().map_err(Failure::Failed)?;
    let (first_signal_tx, first_signal) = tokio::sync::oneshot::channel::<()>();
    let (second_signal_tx, second_signal) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        signals.next().await;
        let _ = first_signal_tx.send(());
        signals.next().await;
        let _ = second_signal_tx.send(());
    });
    let controller = crate::controller::run(options, async move {
        let _ = first_signal.await;
    });
    tokio::select! {
        result = controller => result.map(|()| ExitCode::SUCCESS).map_err(|e| Failure::Failed(e.into())),
        Ok(()) = second_signal => {
            tracing::warn!("Second signal: exiting now; answers of calls in flight are not recorded");
            Ok(ExitCode::from(130))
        }
    }
}

/// The leader election settings, checked: the renew deadline must leave
/// the leader time to step down before a standby may take over.
fn leader_election(args: &RunArgs) -> Result<Option<crate::controller::LeaderElection>, Failure> {
    if !args.leader_elect {
        tracing::warn!(
            "Leader election is off (--leader-elect=false): this process calls the IM API without asking \
             anyone, and a second one started the same way spends the same app's call budget twice \
             over; run exactly one"
        );
        return Ok(None);
    }
    let (duration, deadline, retry) =
        (args.leader_election_lease_duration, args.leader_election_renew_deadline, args.leader_election_retry_period);
    if deadline >= duration || retry >= deadline {
        return Err(Failure::InvalidInput(format!(
            "leader election needs retry period ({retry:?}) < renew deadline ({deadline:?}) < lease duration ({duration:?})"
        )));
    }
    Ok(Some(crate::controller::LeaderElection {
        lease_name: args.leader_election_id.clone(),
        namespace: args.leader_election_namespace.clone(),
        lease_duration: duration,
        renew_deadline: deadline,
        retry_period: retry,
    }))
}

/// The exit code of an `apply` run stopped by a signal or `--timeout`.
pub const EXIT_INTERRUPTED: u8 = 3;

/// `apply`. A first SIGTERM/SIGINT, or the `--timeout` budget running out,
/// stops it starting calls; calls in flight finish (each within the request
/// timeout), their answers are saved, the List and summary are printed, and
/// it exits [`EXIT_INTERRUPTED`]. A second signal exits 130 at once.
async fn apply(args: ApplyArgs) -> Result<ExitCode, Failure> {
    crate::telemetry::init("info");
    let mut signals = Signals::new().map_err(Failure::Failed)?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let budget = args.timeout;
    // Why the run was stopped, set before the stop is sent: whatever the
    // timing, a stopped run reports it.
    let interruption = Arc::new(std::sync::OnceLock::<String>::new());
    let reason = interruption.clone();
    tokio::spawn(async move {
        let why = tokio::select! {
            name = signals.next() => format!("{name} received"),
            () = sleep_for(budget) => format!("the --timeout budget of {budget:?} ran out", budget = budget.unwrap_or_default()),
        };
        tracing::warn!("Stopping: {why}; waiting for calls in flight, then saving (a second signal exits at once)");
        let _ = reason.set(why);
        let _ = stop_tx.send(true);
        signals.next().await;
        eprintln!("error: second signal: exiting now; answers of calls in flight are not saved");
        std::process::exit(130);
    });
    let client = client_settings(args.request_timeout, args.max_attempts);
    let options = crate::oneshot::apply::ApplyOptions {
        state: args.state,
        output: args.output,
        max_calls_per_second: args.max_calls_per_second,
        client,
        stop: Some(stop),
    };
    let result = crate::oneshot::apply::apply(&args.paths, &options).await?;
    crate::write_stdout(&result.render(args.output));
    let summary = result.summary;
    // One line for people and scripts (the benchmark reads it).
    eprintln!(
        "summary: policies={} ready={} notReady={} callsPlanned={} seconds={:.3} peakRssKiB={}",
        summary.policies,
        summary.ready,
        summary.policies - summary.ready,
        summary.calls_planned,
        summary.seconds,
        crate::oneshot::apply::peak_rss_kib().unwrap_or(0),
    );
    if let Some(error) = &result.state_error {
        eprintln!("error: {error}");
        return Ok(ExitCode::from(1));
    }
    if result.all_ready {
        // Done, even if a signal came as it finished.
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(why) = interruption.get() {
        eprintln!("interrupted: {why}; what was confirmed is saved; run again to continue");
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    Ok(ExitCode::from(1))
}

/// Sleeps for `budget`, or forever when there is none.
async fn sleep_for(budget: Option<Duration>) {
    match budget {
        Some(budget) => tokio::time::sleep(budget).await,
        None => std::future::pending().await,
    }
}

async fn simulate(args: SimulateArgs) -> Result<ExitCode, Failure> {
    crate::telemetry::init("info");
    let seed = match &args.seed_file {
        Some(path) => SeedFile::load(path).map_err(|e| Failure::InvalidInput(e.to_string()))?,
        None => SeedFile::default(),
    };
    if args.identifier.is_empty() {
        return Err(Failure::InvalidInput("--identifier must not be empty".into()));
    }
    let mut config = SimulatorConfig::new(args.sdkappid, &args.identifier, args.secret_key.expose());
    config.rate_limit = args.rate_limit;
    config.seed = seed;
    config.allow_any_group_type = args.allow_any_group_type;
    config.faults = Faults {
        fail_10002: args.faults.fail_10002,
        fail_http502: args.faults.fail_http502,
        latency: Duration::from_millis(args.latency_ms),
        seed: args.fault_seed,
    };
    let running = simulator::start(config, args.listen)
        .await
        .map_err(|e| Failure::InvalidInput(format!("failed to listen on {}: {e}", args.listen)))?;
    // The first stdout line is an interface: scripts wait for it.
    crate::outln!("listening on {}", running.base_url());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(addr = %running.addr, rate_limit = args.rate_limit, "Simulator ready");
    shutdown_signal().await;
    running.stop().await.map_err(|e| Failure::Failed(e.into()))?;
    Ok(ExitCode::SUCCESS)
}

async fn bench_client(args: BenchClientArgs) -> Result<ExitCode, Failure> {
    crate::telemetry::init("error");
    let params = crate::tools::bench::ClientBenchParams {
        seconds: args.seconds,
        rate_limit: args.rate_limit,
        concurrency: args.concurrency as usize,
    };
    let report = crate::tools::bench::client_throughput(params).await?;
    crate::outln!(
        "{} calls in {:.2} s: {:.1} calls/s = {:.1}% of the {} calls/s limit; busiest 1-second window: {} calls; 60007 answers: {}",
        report.calls,
        report.seconds,
        report.calls_per_second,
        report.share_of_limit * 100.0,
        report.rate_limit,
        report.peak_calls_in_any_window,
        report.rate_limited_60007,
    );
    crate::outln!("{}", serde_json::to_string(&report).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

async fn bench_apply(args: BenchApplyArgs) -> Result<ExitCode, Failure> {
    crate::telemetry::init("error");
    let params = crate::tools::bench::ApplyBenchParams {
        policies: args.policies as usize,
        members: args.members as usize,
        rate_limit: args.rate_limit,
        fail_10002: args.faults.fail_10002,
        fail_http502: args.faults.fail_http502,
        with_state: args.with_state,
    };
    let report = crate::tools::bench::apply_run(params).await?;
    crate::outln!(
        "{} x {} members, faults 10002={} 502={}, state file {}: apply exited {:?}; {} calls made for a minimum of {}; wall {:.2} s vs ideal {:.2} s ({:+.1}%); peak RSS {:.1} MiB; busiest 1-second window {} calls",
        report.policies,
        report.members_per_policy,
        report.fail_10002,
        report.fail_http502,
        if report.with_state { "yes" } else { "no" },
        report.exit_code,
        report.calls_made,
        report.minimum_calls,
        report.wall_seconds,
        report.ideal_seconds,
        (report.wall_over_ideal - 1.0) * 100.0,
        report.peak_rss_kib as f64 / 1024.0,
        report.peak_calls_in_any_window,
    );
    crate::outln!("{}", serde_json::to_string(&report).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM (what Kubernetes and CI send) and SIGINT (Ctrl-C), registered
/// once: from then on no signal kills the process outright, and none is
/// missed between two waits.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let register = |kind| signal(kind).map_err(|e| anyhow::anyhow!("cannot handle signals: {e}"));
        Ok(Self { term: register(SignalKind::terminate())?, interrupt: register(SignalKind::interrupt())? })
    }

    /// The next signal's name.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    match Signals::new() {
        Ok(mut signals) => {
            signals.next().await;
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
