//! The handler of `check`: runs every check, again until all pass when
//! `--wait` says so, prints the last round's lines and exits 1 on any
//! failure.

use std::process::ExitCode;
use std::time::Duration;

use kube::Api;

use super::args::CheckArgs;
use super::cluster_commands::target;
use super::handlers::Failure;
use crate::check::cluster::{self, OperatorSetup};
use crate::check::report::{self, Line};
use crate::cluster::connect::{Connection, connect};
use crate::controller::tenancy;
use crate::crd::GroupBanPolicy;
use crate::engine::credentials::secret_for;

/// The pause between rounds under `--wait`.
const RETRY_EVERY: Duration = Duration::from_secs(2);

pub async fn check(args: CheckArgs) -> Result<ExitCode, Failure> {
    crate::telemetry::init("error");
    let connection = connect(&target(&args.kube, None)).await?;
    // Access reviews are made as `--as` (impersonated); the rest as you.
    let reviewer = match &args.as_user {
        Some(user) => connect(&target(&args.kube, Some(user.clone()))).await?.client,
        None => connection.client.clone(),
    };
    let deadline = args.wait.map(|wait| tokio::time::Instant::now() + wait);
    loop {
        // Under --wait a round ends with the deadline, whatever it waits for.
        let lines = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, round(&args, &connection, &reviewer)).await {
                Ok(lines) => lines,
                Err(_) => {
                    vec![Line::fail("wait", format!("the checks did not finish within --wait {}", shown_wait(&args)))]
                }
            },
            None => round(&args, &connection, &reviewer).await,
        };
        let passed = report::all_passed(&lines);
        let time_left = deadline.is_some_and(|d| tokio::time::Instant::now() + RETRY_EVERY < d);
        if passed || !time_left {
            crate::write_stdout(&report::render(&lines));
            return Ok(if passed { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        let failing = lines.iter().filter(|l| l.outcome == report::Outcome::Fail).count();
        eprintln!("{failing} check(s) failing; trying again in {}s", RETRY_EVERY.as_secs());
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

async fn round(args: &CheckArgs, connection: &Connection, reviewer: &kube::Client) -> Vec<Line> {
    let client = &connection.client;
    let setup = OperatorSetup {
        subject: args.as_user.clone(),
        watched: args.watch_namespace.clone(),
        operator_namespace: args.operator_namespace.clone().unwrap_or_else(|| connection.namespace.clone()),
        leader_election: args.leader_elect,
        lease_name: args.lease_name.clone(),
        default_secret: args.default_credentials_secret.clone(),
        namespace_selector: args.default_credentials_namespace_selector.is_some(),
    };
    let mut lines = vec![cluster::kubernetes(client).await, cluster::crd(client).await];
    lines.extend(cluster::permissions(reviewer, &setup).await);
    lines.extend(cluster::operator(client, &setup, args.readyz_url.as_deref()).await);
    lines.extend(credential_lines(args, connection).await);
    lines
}

fn shown_wait(args: &CheckArgs) -> String {
    args.wait.map(crate::cluster::errors::shown).unwrap_or_default()
}

/// The credentials of `--secret`, or of the Secret `--policy` uses.
async fn credential_lines(args: &CheckArgs, connection: &Connection) -> Vec<Line> {
    let (secret, group) = match (&args.secret, &args.policy) {
        (Some(secret), _) => (secret.clone(), args.group.clone()),
        (None, Some(name)) => {
            let policies: Api<GroupBanPolicy> = Api::namespaced(connection.client.clone(), &connection.namespace);
            let read = tokio::time::timeout(Duration::from_secs(10), policies.get(name)).await;
            match read {
                Ok(Ok(policy)) => {
                    let secret =
                        secret_for(&connection.namespace, &policy.spec, args.default_credentials_secret.as_ref());
                    // As `run` decides it: a policy on the shared default in a
                    // namespace outside the selector makes no call at all.
                    let uses_default =
                        policy.spec.credentials_secret_ref.is_none() && args.default_credentials_secret.is_some();
                    if let (true, Some(selector)) = (uses_default, &args.default_credentials_namespace_selector) {
                        let namespace = &connection.namespace;
                        match namespace_matches(&connection.client, namespace, selector).await {
                            Ok(true) => {}
                            Ok(false) => {
                                let refused = tenancy::allowed(false, namespace, &secret, selector).unwrap_err();
                                return vec![Line::fail(
                                    "credentials",
                                    format!("DefaultCredentialsNotAllowed: {refused}"),
                                )];
                            }
                            Err(error) => return vec![Line::fail("credentials", error)],
                        }
                    }
                    (secret, args.group.clone().or(Some(policy.spec.group_id)))
                }
                Ok(Err(error)) => {
                    let object = format!("{}/{name}", connection.namespace);
                    let error = crate::cluster::errors::ClusterError::from_kube("get", &object, error);
                    return vec![Line::fail("credentials", error.to_string())];
                }
                Err(_) => return vec![Line::fail("credentials", format!("no answer reading GroupBanPolicy {name}"))],
            }
        }
        (None, None) => {
            return vec![Line::skip("credentials", "no --secret or --policy to check")];
        }
    };
    crate::check::credentials::credentials(&connection.client, &secret, group.as_deref()).await
}

/// Whether `namespace`'s labels match `selector` (the API server decides).
async fn namespace_matches(client: &kube::Client, namespace: &str, selector: &str) -> Result<bool, String> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let params = kube::api::ListParams::default().labels(selector).fields(&format!("metadata.name={namespace}"));
    match tokio::time::timeout(Duration::from_secs(10), namespaces.list_metadata(&params)).await {
        Ok(Ok(list)) => Ok(!list.items.is_empty()),
        Ok(Err(error)) => {
            Err(format!("cannot read the labels of namespace {namespace}: {}", crate::error_chain(&error)))
        }
        Err(_) => Err(format!("cannot read the labels of namespace {namespace}: no answer within 10s")),
    }
}
