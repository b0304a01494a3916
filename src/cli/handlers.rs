//! What each subcommand does with its arguments: the library's calls, and
//! the exit code that tells how they went.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::args::{ApplyArgs, BenchApplyArgs, BenchClientArgs, RunArgs, SimulateArgs, UsersigArgs};
use crate::controller::RunFailure;
use crate::im::usersig::{self, SigRequest};
use crate::oneshot::apply::ApplyError;
use crate::oneshot::interrupt::{EXIT_INTERRUPTED, Interruption};
use crate::signals::{Signals, shutdown_signal};
use crate::simulator::{self, Faults, SeedFile, SimulatorConfig};
use crate::tools::ToolError;

/// Why a command did not complete. Library code never decides exit codes:
/// the command line maps these to 2 and 1.
#[derive(Debug)]
pub enum Failure {
    /// Input the user must fix: exit 2.
    InvalidInput(String),
    /// The work itself failed: exit 1. `category` is a bounded label.
    Failed { category: &'static str, error: Box<dyn std::error::Error + Send + Sync> },
}

impl Failure {
    pub fn failed(category: &'static str, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Failure::Failed { category, error: Box::new(error) }
    }
}

impl From<RunFailure> for Failure {
    fn from(error: RunFailure) -> Self {
        Failure::failed(error.category(), error)
    }
}

impl From<ApplyError> for Failure {
    fn from(error: ApplyError) -> Self {
        match error.is_invalid_input() {
            true => Failure::InvalidInput(error.to_string()),
            false => Failure::failed(error.category(), error),
        }
    }
}

impl From<ToolError> for Failure {
    fn from(error: ToolError) -> Self {
        match error {
            ToolError::Apply(error) => error.into(),
            error => Failure::failed(error.category(), error),
        }
    }
}

pub fn print_usersig(args: UsersigArgs) -> Result<ExitCode, Failure> {
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
    let usersig = usersig::generate(args.secret_key.expose(), &request).map_err(|e| Failure::failed("Sign", e))?;
    crate::outln!("{usersig}");
    Ok(ExitCode::SUCCESS)
}

/// The IM client's settings from `--request-timeout` and `--max-attempts`.
pub(super) fn client_settings(request_timeout_secs: u64, max_attempts: u32) -> crate::im::ClientSettings {
    let mut settings =
        crate::im::ClientSettings { request_timeout: Duration::from_secs(request_timeout_secs), ..Default::default() };
    settings.retry.max_attempts = max_attempts;
    settings
}

/// `run`: the operator until SIGTERM/SIGINT (exit 0 once calls in flight
/// are recorded); a second signal exits at once with 130.
pub async fn run_controller(args: RunArgs) -> Result<ExitCode, Failure> {
    crate::telemetry::init_with_format("info", args.log_format);
    let client = client_settings(args.request_timeout, args.max_attempts);
    let leader_election = leader_election(&args)?;
    let options = crate::controller::RunOptions {
        namespace: args.namespace,
        selector: args.selector,
        max_calls_per_second: args.max_calls_per_second,
        default_credentials_secret: args.default_credentials_secret,
        default_credentials_namespace_selector: args.default_credentials_namespace_selector,
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
    let mut signals = Signals::new().map_err(|e| Failure::failed("Signals", e))?;
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
        result = controller => result.map(|()| ExitCode::SUCCESS).map_err(|failure| {
            tracing::error!(category = failure.category(), error = %crate::error_chain(&failure), "The operator stopped");
            Failure::from(failure)
        }),
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

/// `apply`. A first SIGTERM/SIGINT, or the `--timeout` budget running out,
/// stops it starting calls; calls in flight finish (each within the request
/// timeout), their answers are saved, the List and summary are printed, and
/// it exits [`EXIT_INTERRUPTED`]. A second signal exits 130 at once.
pub async fn apply(args: ApplyArgs) -> Result<ExitCode, Failure> {
    crate::telemetry::init("info");
    let signals = Signals::new().map_err(|e| Failure::failed("Signals", e))?;
    let (interruption, again) = Interruption::watch(signals, args.timeout);
    tokio::spawn(async move {
        if again.await.is_ok() {
            eprintln!("error: second signal: exiting now; answers of calls in flight are not saved");
            std::process::exit(130);
        }
    });
    let stop = interruption.stop.clone();
    let client = client_settings(args.request_timeout, args.max_attempts);
    let options = crate::oneshot::apply::ApplyOptions {
        state: args.state,
        output: args.output,
        max_calls_per_second: args.max_calls_per_second,
        client,
        stop: Some(stop),
    };
    let result = crate::oneshot::apply::apply(&args.paths, &options).await?;
    crate::write_stdout(&result.render(args.output).map_err(|e| Failure::failed("Render", e))?);
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
    if let Some(why) = interruption.reason() {
        eprintln!("interrupted: {why}; what was confirmed is saved; run again to continue");
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    Ok(ExitCode::from(1))
}

pub async fn simulate(args: SimulateArgs) -> Result<ExitCode, Failure> {
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
    running.stop().await.map_err(|e| Failure::failed("Simulator", e))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn bench_client(args: BenchClientArgs) -> Result<ExitCode, Failure> {
    crate::telemetry::init("error");
    let params = crate::tools::bench::ClientBenchParams {
        seconds: args.seconds,
        rate_limit: args.rate_limit,
        concurrency: args.concurrency as usize,
    };
    let report = crate::tools::bench::client_throughput(params).await.map_err(Failure::from)?;
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
    crate::outln!("{}", serde_json::to_string(&report).map_err(|e| Failure::failed("Render", e))?);
    Ok(ExitCode::SUCCESS)
}

pub async fn bench_apply(args: BenchApplyArgs) -> Result<ExitCode, Failure> {
    crate::telemetry::init("error");
    let params = crate::tools::bench::ApplyBenchParams {
        policies: args.policies as usize,
        members: args.members as usize,
        rate_limit: args.rate_limit,
        fail_10002: args.faults.fail_10002,
        fail_http502: args.faults.fail_http502,
        with_state: args.with_state,
    };
    let report = crate::tools::bench::apply_run(params).await.map_err(Failure::from)?;
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
    crate::outln!("{}", serde_json::to_string(&report).map_err(|e| Failure::failed("Render", e))?);
    Ok(ExitCode::SUCCESS)
}
