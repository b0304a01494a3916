//! The Kubernetes driver (`groupban-operator run`): a kube-runtime
//! `Controller` over GroupBanPolicy that runs the engine's pass for each
//! policy, with the API server as the status store.
//!
//! ```text
//! watch policies (generation, reconcile request) ─┐
//! watch Secret metadata (who uses it?) ───────────┴─> reconcile: read Secret -> drift check
//!     -> engine pass (plan -> execute -> fold) -> status by SSA -> Events -> next action
//! ```
//!
//! - [`config`]: the options `run` takes.
//! - [`preflight`]: can policies be listed at all, before anything starts.
//! - [`terms`]: the leader-term loop and one term of the controller.
//! - [`watches`]: the policy and Secret watches behind the controller.
//! - [`context`]: what every reconcile shares; [`memory`]: what is
//!   remembered of each policy (backoff, drift attempts, echoes).
//! - [`reconcile`]: one policy, one pass; the error policy.
//! - [`triggers`]: what wakes a policy (pure), which policies a Secret serves.
//! - [`tenancy`]: which namespaces may use the shared default credentials.
//! - [`permissions`]: every request `run` makes, as RBAC sees it (`check` asks for each).
//! - [`status_writer`]: server-side apply on `/status`, progress of long passes.
//! - [`events`]: Events from the engine's notices.
//! - [`drift`]: the ban-list check behind `spec.driftCheckInterval`.
//! - [`backoff`]: per-policy backoff (kube-runtime keeps none).
//! - [`gauges`]: the member and policy gauges, counted at each scrape.
//! - [`leader`], [`passes`], [`decode`]: the Lease, passes under way,
//!   policies that do not decode.
//!
//! Every pass shares one [`ClientPool`](crate::engine::clients::ClientPool), so every policy of one app shares
//! that app's limiter: the process never exceeds the configured calls per
//! second per app, whatever the concurrency.

pub mod backoff;
pub mod config;
pub mod context;
pub mod decode;
pub mod drift;
pub mod events;
pub mod failure;
pub mod gauges;
pub mod leader;
pub mod memory;
pub mod passes;
pub mod permissions;
pub mod preflight;
pub mod reconcile;
pub mod status_writer;
pub mod tenancy;
pub mod terms;
pub mod triggers;
pub mod trim;
pub mod watches;

use kube::{Api, Client};
use tokio::sync::watch;
use tracing::info;

pub use config::{CONTROLLER_NAME, LeaderElection, RunOptions, SHUTDOWN_BUDGET};
pub use context::Context;
pub use failure::RunFailure;
pub use memory::policy_key;
pub use trim::{trim_for_cache, trim_secret_meta};

use crate::crd::GroupBanPolicy;

/// Connects with the usual Kubernetes configuration (in-cluster, else
/// `KUBECONFIG`, else `~/.kube/config`) and runs until `shutdown` resolves.
pub async fn run(options: RunOptions, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RunFailure> {
    let config = kube::Config::infer().await.map_err(RunFailure::NoKubeConfig)?;
    let client = Client::try_from(config).map_err(RunFailure::KubeClient)?;
    run_with_client(client, options, shutdown).await
}

/// [`run`] with a client made by the caller.
pub async fn run_with_client(
    client: Client,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunFailure> {
    let policies: Api<GroupBanPolicy> = watches::watched(&client, options.namespace.as_deref());
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        info!("Shutting down: no new IM calls; waiting for calls in flight");
        stop.send_replace(true);
    });
    if !preflight::preflight(&policies, options.selector.as_deref(), &options.health, stopped.clone()).await? {
        return Ok(()); // stopped while waiting for the API server
    }
    if let Some(selector) = &options.default_credentials_namespace_selector {
        preflight::check_namespace_selector(&client, selector).await?;
    }
    terms::lead_terms(&client, &options, stopped).await
}
