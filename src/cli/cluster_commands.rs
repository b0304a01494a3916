//! The handlers of `get`, `reconcile`, `suspend`, `resume` and `diff`:
//! progress on stderr, results on stdout, and the exit code.

use std::process::ExitCode;

use k8s_openapi::jiff::Timestamp;

use super::args::{DiffArgs, DiffOutput, GetArgs, GetOutput, KubeArgs, ReconcileArgs, ResumeArgs, SuspendArgs};
use super::handlers::{Failure, client_settings};
use crate::cluster::connect::{Connection, Target, connect};
use crate::cluster::errors::ClusterError;
use crate::cluster::get::{self, Query};
use crate::cluster::request::{self, PolicyRef};
use crate::cluster::table::Layout;
use crate::diff::report::Report;
use crate::diff::{read, sources};
use crate::engine::clients::ClientPool;
use crate::im::RateLimit;

impl From<ClusterError> for Failure {
    fn from(error: ClusterError) -> Self {
        Failure::failed(error.category(), error)
    }
}

/// The cluster as the flags name it, acting as `impersonate` when given.
pub(super) fn target(kube: &KubeArgs, impersonate: Option<String>) -> Target {
    Target {
        kubeconfig: kube.kubeconfig.clone(),
        context: kube.context.clone(),
        namespace: kube.namespace.clone(),
        impersonate,
    }
}

async fn connect_with(kube: &KubeArgs) -> Result<Connection, Failure> {
    Ok(connect(&target(kube, None)).await?)
}

/// The policy `name` in the namespace the flags (or the context) name.
async fn named_policy(kube: &KubeArgs, name: &str) -> Result<PolicyRef, Failure> {
    let connection = connect_with(kube).await?;
    Ok(PolicyRef::new(connection.client, &connection.namespace, name))
}

fn to_yaml(value: &impl serde::Serialize) -> Result<String, Failure> {
    yaml_serde::to_string(value).map_err(|e| Failure::failed("Render", e))
}

fn to_json(value: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string_pretty(value).map(|text| text + "\n").map_err(|e| Failure::failed("Render", e))
}

pub async fn get(args: GetArgs) -> Result<ExitCode, Failure> {
    crate::telemetry::init("warn");
    if args.watch && matches!(args.output, Some(GetOutput::Yaml | GetOutput::Json)) {
        return Err(Failure::InvalidInput("--watch prints table rows: use it with no -o, or -o wide".into()));
    }
    let connection = connect_with(&args.kube).await?;
    let query = Query {
        namespace: (!args.all_namespaces).then(|| connection.namespace.clone()),
        name: args.name.clone(),
        selector: args.selector.clone(),
    };
    let layout = Layout { namespace: args.all_namespaces, wide: args.output == Some(GetOutput::Wide) };
    if args.watch {
        let print = crate::try_write_stdout;
        get::watch(connection.client, &query, layout, print, crate::signals::shutdown_signal()).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let policies = get::list(connection.client, &query).await?;
    let text = match args.output {
        None | Some(GetOutput::Wide) if policies.is_empty() => {
            match &query.namespace {
                Some(namespace) => eprintln!("No resources found in {namespace} namespace."),
                None => eprintln!("No resources found"),
            }
            return Ok(ExitCode::SUCCESS);
        }
        None | Some(GetOutput::Wide) => get::render_table(&policies, layout, Timestamp::now()),
        Some(GetOutput::Yaml) => to_yaml(&get::document(&policies, args.name.is_some()))?,
        Some(GetOutput::Json) => to_json(&get::document(&policies, args.name.is_some()))?,
    };
    crate::write_stdout(&text);
    Ok(ExitCode::SUCCESS)
}

pub async fn reconcile(args: ReconcileArgs) -> Result<ExitCode, Failure> {
    crate::telemetry::init("warn");
    let policy = named_policy(&args.kube, &args.name).await?;
    let token = request::request_reconcile(&policy).await?;
    eprintln!("requested a reconcile of GroupBanPolicy {} ({token}); waiting for the operator", policy.object());
    report_outcome(&policy, &token, args.timeout).await
}

pub async fn suspend(args: SuspendArgs) -> Result<ExitCode, Failure> {
    crate::telemetry::init("warn");
    let policy = named_policy(&args.kube, &args.name).await?;
    request::suspend(&policy).await?;
    crate::outln!("GroupBanPolicy {} suspended: the operator makes no IM calls for it", policy.object());
    Ok(ExitCode::SUCCESS)
}

pub async fn resume(args: ResumeArgs) -> Result<ExitCode, Failure> {
    crate::telemetry::init("warn");
    let policy = named_policy(&args.kube, &args.name).await?;
    let token = request::resume(&policy).await?;
    if args.no_wait {
        crate::outln!("GroupBanPolicy {} resumed; a reconcile is requested ({token})", policy.object());
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "resumed GroupBanPolicy {} and requested a reconcile ({token}); waiting for the operator",
        policy.object()
    );
    report_outcome(&policy, &token, args.timeout).await
}

/// Waits for the request `token` to be handled, prints the outcome, and
/// exits 0 only when the policy is Ready.
async fn report_outcome(policy: &PolicyRef, token: &str, timeout: std::time::Duration) -> Result<ExitCode, Failure> {
    let (policy_now, note) = match request::wait_handled(policy, token, timeout).await? {
        request::Waited::Settled(found) => (found, String::new()),
        request::Waited::StillReconciling(found) => {
            (found, format!(" (still reconciling after {})", crate::cluster::errors::shown(timeout)))
        }
    };
    let (ready, line) = request::outcome_line(&policy_now);
    crate::outln!("GroupBanPolicy {} reconciled{note}: {line}", policy.object());
    Ok(if ready { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub async fn diff(args: DiffArgs) -> Result<ExitCode, Failure> {
    // Warnings matter here: a manifest skipped as neither a policy nor a
    // Secret (a misspelt kind), an IM call being retried.
    crate::telemetry::init("warn");
    let inputs = if args.paths.is_empty() {
        let connection = connect_with(&args.kube).await?;
        let query = Query {
            namespace: (!args.all_namespaces).then(|| connection.namespace.clone()),
            name: args.name.clone(),
            selector: args.selector.clone(),
        };
        sources::from_cluster(connection.client, &query, args.default_credentials_secret.as_ref()).await?
    } else {
        let manifests =
            crate::oneshot::manifests::load(&args.paths).map_err(|e| Failure::InvalidInput(e.to_string()))?;
        if manifests.policies.is_empty() {
            // As `kubectl diff` refuses empty input: a CI step over the
            // wrong folder must not pass as "no difference".
            let shown: Vec<String> = args.paths.iter().map(|p| p.display().to_string()).collect();
            return Err(Failure::InvalidInput(format!("no GroupBanPolicy found in {}", shown.join(", "))));
        }
        let recorded = match &args.state {
            Some(path) => {
                crate::oneshot::state_file::read_recorded(path).map_err(|e| Failure::InvalidInput(e.to_string()))?
            }
            None => Default::default(),
        };
        sources::from_manifests(&manifests, &recorded)
    };
    let settings = client_settings(args.request_timeout, args.max_attempts);
    let pool = ClientPool::new(RateLimit::per_second(args.max_calls_per_second), settings)
        .map_err(|e| Failure::failed("HttpClient", e))?;
    let report = Report::new(read::compare_all(inputs, &pool).await);
    let text = match args.output {
        DiffOutput::Table if report.policies.is_empty() => "No policies found.\n".to_string(),
        DiffOutput::Table => report.table(),
        DiffOutput::Yaml => to_yaml(&report)?,
        DiffOutput::Json => to_json(&report)?,
    };
    crate::write_stdout(&text);
    Ok(ExitCode::from(report.exit_code()))
}
