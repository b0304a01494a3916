//! The terms of the controller. Without leader election, one term from
//! start to shutdown. With it, a term each time this process wins the
//! Lease, ended by shutdown or by losing the Lease; the Lease is released
//! only after the last term has drained.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use kube::runtime::reflector;
use kube::runtime::watcher;
use tokio::sync::watch;
use tracing::{info, warn};

use super::config::{CONTROLLER_NAME, RunOptions, SHUTDOWN_BUDGET};
use super::context::Context;
use super::failure::RunFailure;
use super::tenancy::SharedScope;
use super::{gauges, leader, reconcile, watches};

/// Runs terms until `stopped` turns true: as the only controller, or as a
/// candidate of the leader election `options` names.
pub async fn lead_terms(
    client: &Client,
    options: &RunOptions,
    stopped: watch::Receiver<bool>,
) -> Result<(), RunFailure> {
    let metrics = &options.metrics;
    let Some(election) = options.leader_election.clone() else {
        metrics.set_leader(CONTROLLER_NAME, true);
        return run_term(client, options, stopped).await;
    };
    let namespace = election.namespace.clone().unwrap_or_else(|| leader::own_namespace(client.default_namespace()));
    let config = leader::ElectionConfig {
        lease_name: election.lease_name.clone(),
        namespace,
        identity: leader::own_identity(),
        lease_duration: election.lease_duration,
        renew_deadline: election.renew_deadline,
        retry_period: election.retry_period,
    };
    info!(lease = %config.lease_name, namespace = %config.namespace, identity = %config.identity, "Joining the leader election");
    let lease_name = config.lease_name.clone();
    // The Lease is released only after the last term has drained.
    let (release, released) = watch::channel(false);
    // A candidate is ready while it reaches the API server: a standby that
    // cannot read the Lease (RBAC, say) shows as not ready.
    let health = options.health.clone();
    let (mut leading, election_task) =
        leader::spawn(client.clone(), config, released, move |reached| health.set_ready(reached));
    metrics.set_leader(&lease_name, false);
    let mut process_stop = stopped.clone();
    let mut led = false;
    let outcome = loop {
        tokio::select! {
            _ = leading.wait_for(|leads| *leads) => {}
            _ = process_stop.wait_for(|stop| *stop) => break Ok(()),
        }
        led = true;
        metrics.set_leader(&lease_name, true);
        // This term ends on shutdown or when the Lease is lost, whichever
        // comes first: either way, no new call starts.
        let (term_stop, term_stopped) = watch::channel(false);
        let (mut lost, mut shutting_down) = (leading.clone(), stopped.clone());
        let ender = tokio::spawn(async move {
            tokio::select! {
                _ = lost.wait_for(|leads| !*leads) => {}
                _ = shutting_down.wait_for(|stop| *stop) => {}
            }
            term_stop.send_replace(true);
        });
        let result = run_term(client, options, term_stopped).await;
        ender.abort();
        metrics.set_leader(&lease_name, false);
        if result.is_err() || *stopped.borrow() {
            break result;
        }
    };
    if led {
        // The last call started at least a second before a standby can
        // take the Lease and start its own: never two leaders in a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    release.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), election_task).await;
    outcome
}

/// One term of the controller: from the start (or from winning the Lease)
/// until `stopped` turns true. Returns once running reconciles have written
/// what they confirmed, or fails after [`SHUTDOWN_BUDGET`].
async fn run_term(client: &Client, options: &RunOptions, stopped: watch::Receiver<bool>) -> Result<(), RunFailure> {
    let (reader, writer) = reflector::store();
    let (scope, namespaces) = match &options.default_credentials_namespace_selector {
        Some(selector) => {
            let (scope, writer) = SharedScope::new(selector.clone());
            (Some(scope), Some(writer))
        }
        None => (None, None),
    };
    let ctx = Arc::new(
        Context::new(client.clone(), options.clone(), reader.clone(), stopped.clone())
            .map_err(RunFailure::ImClient)?
            .with_shared_scope(scope),
    );
    // The policy gauges are counted from this term's cache at each scrape.
    let counted = reader.clone();
    options.health.set_before_scrape(Some(Box::new(move |metrics| gauges::count_policies(metrics, &counted.state()))));
    let controller = watches::controller(client, options, &ctx, &reader, writer, namespaces, stopped.clone());

    // When stopped: passes stop starting calls, the controller stops
    // scheduling and lets running reconciles write what they confirmed.
    let graceful = {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };

    info!(
        namespace = options.namespace.as_deref().unwrap_or("(all)"),
        selector = options.selector.as_deref().unwrap_or(""),
        max_calls_per_second = options.max_calls_per_second,
        concurrency = options.concurrency,
        "Controller started"
    );
    let config = kube::runtime::controller::Config::default().concurrency(options.concurrency);
    let runs = controller
        .with_config(config)
        .graceful_shutdown_on(graceful)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                log_controller_error(&error);
            }
        });
    let mut stopped_for_budget = stopped;
    let budget = async move {
        let _ = stopped_for_budget.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_BUDGET).await;
    };
    let outcome = tokio::select! {
        () = runs => {
            info!("Controller stopped");
            Ok(())
        }
        () = budget => Err(RunFailure::ShutdownOverran),
    };
    options.health.set_before_scrape(None);
    options.metrics.forget_policies();
    outcome
}

fn log_controller_error(error: &ControllerError) {
    match error {
        // Logged by the error policy, with its category.
        ControllerError::ReconcilerFailed(..) => {}
        // A policy deleted while a reconcile was scheduled: expected.
        ControllerError::ObjectNotFound(object) => tracing::debug!(%object, "Scheduled policy is gone"),
        // Watch and queue problems.
        other => warn!(error = %crate::error_chain(other), "Controller error"),
    }
}

type ControllerError = kube::runtime::controller::Error<reconcile::ReconcileError, watcher::Error>;
