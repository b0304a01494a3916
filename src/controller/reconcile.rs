//! One reconcile of one policy:
//!
//! ```text
//! wait if the cache lacks our last status write (its echo)
//!   -> read the Secret (GET, values never cached) -> drift check (when due)
//!   -> engine pass (plan, execute, fold; progress published every few seconds)
//!   -> a Verdict, computed without I/O: the status to write (only if more
//!      than timestamps changed), the Events, and what decides the next action
//!   -> carry_out: write status (server-side apply) -> Events -> next action
//!      (action_for: the one place a policy's backoff grows or resets)
//! ```

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tokio::sync::watch;
use tracing::{debug, info, instrument, warn};

use super::config::RunOptions;
use super::context::Context;
use super::memory::policy_key;
use super::passes::PassFor;
use super::status_writer::{StatusApi, StatusTarget, Written, is_forbidden, publish_progress, write_status};
use super::triggers::{SecretKey, credentials_secret};
use super::trim::trim_for_cache;
use super::{decode, drift, events};
use crate::crd::{DriftStatus, GroupBanPolicy, GroupBanPolicyStatus, RECONCILE_REQUESTED_AT, condition_types, reasons};
use crate::engine::changes::{Notice, PassCalls, differs_beyond_timestamps, notices};
use crate::engine::conditions::{Decision, find_condition};
use crate::engine::credentials::{self, AppTarget, CredentialsError};
use crate::engine::{PassOutcome, PolicyInput, run_one};
use crate::im::codes;

/// What stops a reconcile before it could conclude. Problems a person must
/// fix in the policy or its Secret are not errors: they end up in status.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("policy {0} has no namespace")]
    NotNamespaced(String),
    #[error("failed to read Secret {secret}")]
    ReadSecret { secret: SecretKey, source: kube::Error },
    /// The namespaces allowed the default credentials are not listed yet:
    /// a passing problem, retried on backoff like a Secret read.
    #[error("{0}")]
    NamespacesNotListed(String),
    #[error("failed to write the status of {policy}")]
    WriteStatus { policy: String, source: kube::Error },
    #[error("failed to read {policy} afresh")]
    ReadPolicy { policy: String, source: kube::Error },
    #[error(
        "may not write the status of {policy}: RBAC must allow patch on groupbanpolicies/status (the chart's role does); \
         members unbanned meanwhile are called again at each retry"
    )]
    StatusForbidden { policy: String, source: kube::Error },
}

impl ReconcileError {
    /// A bounded label for logs and metrics (never an object name).
    pub fn category(&self) -> &'static str {
        match self {
            ReconcileError::NotNamespaced(_) => "NotNamespaced",
            ReconcileError::ReadSecret { .. } => "ReadSecret",
            ReconcileError::NamespacesNotListed(_) => "NamespacesNotListed",
            ReconcileError::WriteStatus { .. } => "WriteStatus",
            ReconcileError::ReadPolicy { .. } => "ReadPolicy",
            ReconcileError::StatusForbidden { .. } => "StatusForbidden",
        }
    }
}

/// `reconcile_once`, counted and timed in the controller-runtime metrics.
pub async fn reconcile(policy: Arc<GroupBanPolicy>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    // kube-runtime takes the object from the cache when it dispatches the
    // reconcile, which may be a moment before this first runs; the echo of
    // our last status write can land in between (and clear what the echo
    // wait looks for). Seen on a real API server: dispatched with the
    // creation version, the echo arrived, and the pass called again. When
    // the cache now shows our last write, start from it.
    let key = policy_key(&policy);
    let ours = ctx.memory.last_written(&key);
    let policy = match (ctx.policies.get(&ObjectRef::from_obj(policy.as_ref())), &ours) {
        (Some(now), Some(ours)) if now.uid() == policy.uid() && now.resource_version().as_ref() == Some(ours) => now,
        _ => policy,
    };
    if ctx.memory.awaits_echo(&key, policy.resource_version().as_deref()) {
        // The cache has not caught up with our last status write: a pass
        // now would call again for the members it recorded. Not counted as
        // a reconcile.
        debug!(policy = %key, version = ?policy.resource_version(), "Waiting for the echo of our status write");
        return Ok(Action::requeue(Duration::from_millis(250)));
    }
    let started = std::time::Instant::now();
    let policy = match fresh_if_cache_differs(policy, &key, ours.as_deref(), &ctx).await {
        Ok(Some(policy)) => policy,
        // Gone, made again, or unreadable: the watch brings that news.
        Ok(None) => return Ok(Action::await_change()),
        Err(error) => {
            ctx.metrics.observe_reconcile(false, started.elapsed());
            return Err(error);
        }
    };
    let mut result = reconcile_once(policy.clone(), ctx.clone()).await;
    // Deleted while this reconcile ran: the Delete event has forgotten the
    // policy already, and kube-runtime will not reconcile it again, so a
    // backoff or drift attempt this pass recorded would stay for ever; an
    // error (a status write to a policy that is gone) needs no retry, and
    // is not counted as one (mass deletions would set off the alert).
    if forget_if_deleted(&policy, &ctx) {
        if let Err(error) = &result {
            debug!(policy = %policy_key(&policy), error = %crate::error_chain(error), "Policy deleted during its reconcile");
        }
        result = Ok(Action::await_change());
    }
    ctx.metrics.observe_reconcile(result.is_ok(), started.elapsed());
    result
}

/// The policy to reconcile: the cached one, unless it shows another
/// version than `ours`, our last status write to it (see
/// [`super::status_writer::PendingEchoes::last_written`]); then the API
/// server's own, read afresh, so that a pass never plans from a record
/// older than one we wrote. `None` when that read finds the policy gone,
/// made again (another uid) or unreadable.
async fn fresh_if_cache_differs(
    policy: Arc<GroupBanPolicy>,
    key: &str,
    ours: Option<&str>,
    ctx: &Context,
) -> Result<Option<Arc<GroupBanPolicy>>, ReconcileError> {
    let Some(ours) = ours else {
        return Ok(Some(policy));
    };
    if policy.resource_version().as_deref() == Some(ours) {
        return Ok(Some(policy));
    }
    let namespace = policy.namespace().ok_or_else(|| ReconcileError::NotNamespaced(key.to_string()))?;
    let api = StatusApi::new(ctx.client.clone(), &namespace, ctx.metrics.clone());
    let fresh = api
        .get_opt(&policy.name_any())
        .await
        .map_err(|source| ReconcileError::ReadPolicy { policy: key.to_string(), source })?;
    debug!(policy = %key, cached = ?policy.resource_version(), ours = %ours, fresh = ?fresh.as_ref().and_then(|f| f.metadata.resource_version.clone()), "Read the policy afresh");
    Ok(fresh
        .filter(|fresh| fresh.metadata.uid == policy.metadata.uid)
        .and_then(|fresh| decode::decode(fresh).ok())
        .map(|mut fresh| {
            trim_for_cache(&mut fresh);
            Arc::new(fresh)
        }))
}

/// Forgets what is remembered about `policy` if the controller's cache no
/// longer holds it; true when it did.
fn forget_if_deleted(policy: &GroupBanPolicy, ctx: &Context) -> bool {
    let deleted = !ctx.is_live(policy);
    if deleted {
        ctx.forget_policy(&policy_key(policy));
    }
    deleted
}

#[instrument(skip(policy, ctx), fields(policy = %policy_key(&policy)))]
async fn reconcile_once(policy: Arc<GroupBanPolicy>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let key = policy_key(&policy);
    let namespace = policy.namespace().ok_or_else(|| ReconcileError::NotNamespaced(key.clone()))?;
    if *ctx.shutdown.borrow() {
        // Shutting down: start nothing new; the next leader or run takes over.
        return Ok(Action::await_change());
    }
    let api = StatusApi::new(ctx.client.clone(), &namespace, ctx.metrics.clone());
    let recorded = policy.status.clone().unwrap_or_default();
    debug!(version = ?policy.resource_version(), recorded = recorded.unbanned_members.len(), "Reconciling");

    let secret = credentials_secret(&policy, ctx.options.default_credentials_secret.as_ref());
    // A Secret the API server cannot hand out now still ends in a status
    // (Ready=False, saying why) before the error takes the backoff path.
    let uses_default = policy.spec.credentials_secret_ref.is_none() && ctx.options.default_credentials_secret.is_some();
    let admission = match (&ctx.shared_scope, uses_default) {
        (Some(scope), true) => scope.admits(&namespace, &secret).await,
        _ => Ok(Ok(())),
    };
    let read = match admission {
        Ok(Ok(())) => read_credentials(&ctx, &secret).await,
        // Not read at all: this namespace may not see the shared Secret.
        Ok(Err(refused)) => Ok(Err(refused)),
        // Not known yet whether it may: the same path as a Secret the API
        // server cannot hand out (a Stalled policy keeps its reason).
        Err(reason) => Err(ReconcileError::NamespacesNotListed(reason)),
    };
    let (target, read_failure) = match read {
        Ok(target) => (target, None),
        // A Stalled policy keeps saying why it is Stalled (a missing Secret,
        // say) through an API-server blip: no status, just the backoff.
        Err(failure) if is_stalled(&recorded) => return Err(failure),
        Err(failure) => {
            let reason = match &failure {
                ReconcileError::ReadSecret { source, .. } => crate::cut_text(&crate::error_chain(source), 512),
                other => other.to_string(),
            };
            (Err(CredentialsError::Unavailable { secret: secret.to_string(), reason }), Some(failure))
        }
    };

    let sdkappid = target.as_ref().ok().map(|t| t.credentials.sdkappid);
    let runnable = policy.spec.suspend != Some(true) && crate::crd::validate_spec(&policy.spec).is_ok();
    let mut for_pass = recorded.clone();
    let drift_status = match (&target, runnable) {
        (Ok(target), true) => check_drift_if_due(&ctx, &key, &policy, target, &mut for_pass).await,
        _ => None,
    }
    .or_else(|| recorded.drift.clone());

    let for_pass_members = for_pass.unbanned_members.clone();
    let input = PolicyInput {
        key: key.clone(),
        spec: policy.spec.clone(),
        generation: policy.meta().generation,
        recorded: for_pass,
        target,
    };
    let target = StatusTarget::of(&policy);
    // Stops starting calls on shutdown, and as soon as the watch shows the
    // policy edited, deleted or made again.
    let pass = ctx.passes.start(&key, PassFor::of(&policy), ctx.shutdown.clone());
    // An event between this reconcile's start and the registration just
    // above found no pass to stop; the cache (written before events are
    // handed on) shows what it brought.
    match ctx.policies.get(&ObjectRef::from_obj(policy.as_ref())) {
        Some(cached) => ctx.passes.seen(&key, &PassFor::of(&cached)),
        None => ctx.passes.deleted(&key),
    }
    let (outcome, progress_written) =
        run_with_progress(&ctx, &api, &policy, &target, input, &recorded, pass.stop.clone()).await;
    let PassOutcome { mut status, decision, calls_succeeded, calls_failed, budget_answers, app_budget_answers_lately } =
        outcome;
    status.drift = drift_status;
    status.last_handled_reconcile_at =
        policy.annotations().get(RECONCILE_REQUESTED_AT).cloned().or(recorded.last_handled_reconcile_at.clone());
    if calls_succeeded + calls_failed > 0 {
        info!(calls_succeeded, calls_failed, ?decision, "Pass done");
    }
    let calls = PassCalls { succeeded: calls_succeeded, budget_answers, app_budget_answers_lately };
    if calls.met_a_shared_budget() {
        warn!(
            answers = budget_answers,
            app_answers_last_minute = app_budget_answers_lately,
            sdkappid = ?sdkappid,
            "The IM gateway keeps answering that the app's budget is spent (60007/60011) although calls stay under \
             --max-calls-per-second: another client is likely spending this app's budget"
        );
    }
    let drift_due = match (decision, runnable) {
        (Decision::Idle, true) => {
            drift::next_check_in(&policy.spec, ctx.memory.last_drift_attempt(&key, &status), Timestamp::now())
        }
        _ => None,
    };
    let verdict = Verdict::of(PassEnd {
        // Members the drift check took out and the pass unbanned again
        // count as newly unbanned in the Event.
        before: GroupBanPolicyStatus { unbanned_members: for_pass_members, ..recorded.clone() },
        on_server: progress_written.unwrap_or(recorded),
        after: status,
        calls,
        decision,
        read_failure,
        drift_due,
    });
    carry_out(&ctx, &api, &policy, &target, &key, verdict, &|| pass.changed()).await
}

/// Everything a reconcile knows once its pass has ended.
struct PassEnd {
    /// The record the pass started from (after the drift check).
    before: GroupBanPolicyStatus,
    /// What the API server holds: the last progress write, else the record.
    on_server: GroupBanPolicyStatus,
    /// The status the pass concluded.
    after: GroupBanPolicyStatus,
    calls: PassCalls,
    decision: Decision,
    /// The Secret could not be read (the status says so); the error goes
    /// to the error policy, which retries on the backoff.
    read_failure: Option<ReconcileError>,
    /// When the next drift check is due, for a converged policy.
    drift_due: Option<Duration>,
}

/// What a reconcile concluded, as one value (computed without I/O), which
/// [`carry_out`] applies: the status to write, the Events, and what decides
/// what comes next (see [`Verdict::next`]).
#[derive(Debug)]
struct Verdict {
    /// Written when it differs from the server's beyond timestamps.
    write: Option<GroupBanPolicyStatus>,
    notices: Vec<Notice>,
    read_failure: Option<ReconcileError>,
    decision: Decision,
    drift_due: Option<Duration>,
}

/// What follows a reconcile; the one place a policy's backoff changes is
/// [`action_for`], which turns this into kube-runtime's action.
#[derive(Debug)]
enum Next {
    /// Fails the reconcile: the error policy retries it on the backoff.
    Fail(ReconcileError),
    /// Nothing until the policy changes: the watch event that stopped the
    /// pass schedules the next reconcile (no backoff: nothing failed), or
    /// the process is shutting down.
    AwaitChange,
    /// Work is left: run again after the policy's backoff, which grows.
    Retry,
    /// Settled (done, suspended or stalled): the backoff starts over, and
    /// the policy is looked at again after this long.
    Settle(Duration),
}

impl Verdict {
    fn of(end: PassEnd) -> Self {
        let write = differs_beyond_timestamps(&end.on_server, &end.after).then(|| end.after.clone());
        let notices = notices(&end.before, &end.after, end.calls);
        Self { write, notices, read_failure: end.read_failure, decision: end.decision, drift_due: end.drift_due }
    }

    /// What follows, once the status is written and the Events are out:
    /// `policy_changed` and `shutting_down` are read then, so that an edit
    /// made while they went out still waits for its own watch event.
    fn next(self, policy_changed: bool, shutting_down: bool, options: &RunOptions) -> Next {
        match self.read_failure {
            Some(failure) => Next::Fail(failure),
            None => next_after(self.decision, policy_changed, shutting_down, self.drift_due, options),
        }
    }
}

/// When to look at the policy again, from the pass's decision (and, for a
/// converged policy, when its next drift check is due).
fn next_after(
    decision: Decision,
    policy_changed: bool,
    shutting_down: bool,
    drift_due: Option<Duration>,
    options: &RunOptions,
) -> Next {
    if policy_changed || shutting_down {
        return Next::AwaitChange;
    }
    // A drift check due sooner comes first (at least a second away).
    let settle = |wait: Duration| Next::Settle(drift_due.map_or(wait, |due| wait.min(due.max(Duration::from_secs(1)))));
    match decision {
        Decision::Retry => Next::Retry,
        Decision::Idle | Decision::Suspended => settle(options.idle_resync),
        // A person must act; the slow re-check catches fixes made outside
        // the cluster (a permission granted in the IM console, say).
        Decision::Stalled => settle(options.stalled_recheck),
    }
}

/// Applies a verdict: the status write, then the Events, then the next
/// action. A policy deleted or made again meanwhile gets none of them.
async fn carry_out(
    ctx: &Context,
    api: &StatusApi,
    policy: &GroupBanPolicy,
    target: &StatusTarget,
    key: &str,
    verdict: Verdict,
    policy_changed: &(dyn Fn() -> Option<&'static str> + Sync),
) -> Result<Action, ReconcileError> {
    if let Some(status) = &verdict.write {
        let written = write_status(api, target, status, &|version| ctx.wrote_status(policy, version)).await.map_err(
            |source| match is_forbidden(&source) {
                true => ReconcileError::StatusForbidden { policy: key.to_string(), source },
                false => ReconcileError::WriteStatus { policy: key.to_string(), source },
            },
        )?;
        if written == Written::ObjectReplaced {
            // Deleted, or made again under its name: the new object has a
            // reconcile of its own; nothing of this pass is its.
            debug!("Policy deleted or replaced during its reconcile; status not written");
            return Ok(Action::await_change());
        }
    }
    publish_events(ctx, policy, &verdict.notices).await;
    let changed = policy_changed();
    if let (Some(why), None) = (changed, &verdict.read_failure) {
        info!(why, "Pass stopped: its policy changed");
    }
    let next = verdict.next(changed.is_some(), *ctx.shutdown.borrow(), &ctx.options);
    action_for(ctx, key, next)
}

/// kube-runtime's action for `next`, changing the policy's backoff: the
/// only place it changes.
fn action_for(ctx: &Context, key: &str, next: Next) -> Result<Action, ReconcileError> {
    match next {
        Next::Fail(error) => Err(error),
        Next::AwaitChange => Ok(Action::await_change()),
        Next::Retry => Ok(Action::requeue(ctx.memory.backoff_after_failure(key))),
        Next::Settle(wait) => {
            ctx.memory.settled(key);
            Ok(Action::requeue(wait))
        }
    }
}

/// The drift check, when due: members found banned again leave `record`
/// (the one the pass gets, which then unbans them). Returns the new drift
/// status, or `None` when no check was due or it failed (it is tried
/// again an interval after this attempt, not sooner).
async fn check_drift_if_due(
    ctx: &Context,
    key: &str,
    policy: &GroupBanPolicy,
    target: &AppTarget,
    record: &mut GroupBanPolicyStatus,
) -> Option<DriftStatus> {
    let now = Timestamp::now();
    if drift::next_check_in(&policy.spec, ctx.memory.last_drift_attempt(key, record), now) != Some(Duration::ZERO) {
        return None;
    }
    ctx.memory.drift_attempted(key, now);
    let client = ctx.pool.client_for(target);
    let mut shutdown = ctx.shutdown.clone();
    let checked = tokio::select! {
        checked = drift::check(&client, &policy.spec.group_id, record, now) => checked,
        // A ban-list read has no effect: abandon it on shutdown.
        _ = shutdown.wait_for(|stop| *stop) => Err(drift::DriftError::ShuttingDown),
    };
    match checked {
        Ok(checked) => {
            if checked.corrected > 0 {
                info!(members = checked.corrected, "Found members banned again");
            }
            Some(checked)
        }
        Err(problem) => {
            warn!(category = problem.category(), problem = %crate::cut_text(&problem.to_string(), 1024), "Drift check failed; trying again next interval");
            None
        }
    }
}

/// Runs the pass and, beside it, publishes its progress at most every
/// `progress_interval`. Returns the outcome and the last status written.
async fn run_with_progress(
    ctx: &Context,
    api: &StatusApi,
    policy: &GroupBanPolicy,
    target: &StatusTarget,
    input: PolicyInput,
    recorded: &GroupBanPolicyStatus,
    stop: watch::Receiver<bool>,
) -> (PassOutcome, Option<GroupBanPolicyStatus>) {
    let (progress_tx, progress_rx) = watch::channel(None);
    let mut gate = ProgressGate::new(ctx.options.progress_interval, recorded);
    let pass = async move {
        let outcome = run_one(&input, &ctx.pool, stop, |status, progress| {
            let calls_left = progress.calls_done < progress.calls_planned;
            if gate.admits(status, calls_left, tokio::time::Instant::now()) {
                progress_tx.send_replace(Some(status.clone()));
            }
        })
        .await;
        drop(progress_tx);
        outcome
    };
    let on_written = |version| ctx.wrote_status(policy, version);
    let publisher = publish_progress(api, target, progress_rx, recorded, &on_written);
    tokio::join!(pass, publisher)
}

/// Which of a pass's statuses are published as progress: one every
/// `interval`, and early the first time it shows a cause for not being
/// Ready while calls are still to end (a refused connection, a 10002 being
/// retried), so a user is not left without a condition while the first
/// call's retries run. One such early write per pass at most; none for a
/// rate limit (the limiter's to handle); none when the last call has
/// ended (its answer is in the pass's own write): a healthy pass costs no
/// extra write. (Calls that a halt stops before their first request do not
/// count as ended, so a halted pass may still write early once.)
struct ProgressGate {
    interval: Duration,
    last_sent: tokio::time::Instant,
    /// The Ready reason last published (at first: recorded).
    last_reason: Option<String>,
    sent_early: bool,
}

impl ProgressGate {
    fn new(interval: Duration, recorded: &GroupBanPolicyStatus) -> Self {
        Self {
            interval,
            last_sent: tokio::time::Instant::now(),
            last_reason: ready_reason(recorded).map(str::to_string),
            sent_early: false,
        }
    }

    fn admits(&mut self, status: &GroupBanPolicyStatus, calls_left: bool, now: tokio::time::Instant) -> bool {
        let reason = ready_reason(status);
        // A rate limit is the limiter's to handle (a persistent one makes a
        // Warning Event): it waits for the interval like healthy progress.
        let quiet = [reasons::UNBAN_PENDING, reasons::ALL_MEMBERS_UNBANNED, codes::lookup(60007).reason];
        let news = calls_left && reason.is_some_and(|r| !quiet.contains(&r)) && reason != self.last_reason.as_deref();
        let early = news && !self.sent_early;
        if !early && now.duration_since(self.last_sent) < self.interval {
            return false;
        }
        self.sent_early |= early;
        self.last_sent = now;
        self.last_reason = reason.map(str::to_string);
        true
    }
}

fn is_stalled(status: &GroupBanPolicyStatus) -> bool {
    find_condition(status, condition_types::STALLED).is_some_and(|c| c.status == "True")
}

fn ready_reason(status: &GroupBanPolicyStatus) -> Option<&str> {
    find_condition(status, condition_types::READY).map(|c| c.reason.as_str())
}

/// Reads the credentials Secret by GET (values are never cached). A
/// missing or unusable Secret is the policy's problem, shown in its status;
/// an API server that cannot answer is an error, retried with backoff.
async fn read_credentials(
    ctx: &Context,
    secret: &SecretKey,
) -> Result<Result<AppTarget, CredentialsError>, ReconcileError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &secret.namespace);
    match secrets.get_opt(&secret.name).await {
        Ok(Some(found)) => Ok(credentials::from_secret(&found, &secret.to_string())),
        Ok(None) => Ok(Err(CredentialsError::SecretNotFound { secret: secret.to_string() })),
        // Access denied is a configuration a person must fix (RBAC, or a
        // Secret in a namespace the operator may not read): show it.
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(Err(CredentialsError::Unreadable {
            secret: secret.to_string(),
            reason: format!("access denied ({})", crate::cut_text(&status.message, 512)),
        })),
        Err(source) => Err(ReconcileError::ReadSecret { secret: secret.clone(), source }),
    }
}

async fn publish_events(ctx: &Context, policy: &GroupBanPolicy, notices: &[Notice]) {
    let reference = policy.object_ref(&());
    for notice in notices {
        let event = events::event_for(notice);
        match ctx.recorders.publish(&event, &reference).await {
            Ok(()) => {}
            Err(error) if is_forbidden(&error.source) => {
                ctx.metrics.observe_forbidden(error.verb, events::EVENTS_RESOURCE);
                warn!(
                    reason = %event.reason,
                    error = %crate::error_chain(&error),
                    "May not publish Events (RBAC must allow create and patch on events.k8s.io events); going on without them"
                );
            }
            Err(error) => {
                warn!(reason = %event.reason, error = %crate::error_chain(&error), "Failed to publish an Event");
            }
        }
    }
}

/// kube-runtime's error policy: the policy's own backoff.
pub fn error_policy(policy: Arc<GroupBanPolicy>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    // This runs on the controller's task, after the reconcile's own check:
    // a Delete event handled in between must not get a backoff put back.
    if forget_if_deleted(&policy, &ctx) {
        return Action::await_change();
    }
    let key = policy_key(&policy);
    let delay = ctx.memory.backoff_after_failure(&key);
    warn!(
        policy = %key,
        category = error.category(),
        error = %crate::error_chain(error),
        retry_in_s = delay.as_secs(),
        "Reconcile failed"
    );
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;

    fn with_ready(reason: &str) -> GroupBanPolicyStatus {
        GroupBanPolicyStatus {
            conditions: vec![Condition {
                type_: condition_types::READY.into(),
                status: "False".into(),
                reason: reason.into(),
                message: String::new(),
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            ..GroupBanPolicyStatus::default()
        }
    }

    /// Progress is published every interval; a first cause for not being
    /// Ready goes out at once, but only one early write per pass.
    #[test]
    fn the_first_cause_is_published_at_once_and_the_rest_on_the_interval() {
        let interval = Duration::from_secs(5);
        let start = tokio::time::Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut gate =
            ProgressGate { last_sent: start, ..ProgressGate::new(interval, &GroupBanPolicyStatus::default()) };
        assert!(!gate.admits(&with_ready(reasons::UNBAN_PENDING), true, at(10)), "healthy progress waits");
        assert!(!gate.admits(&with_ready("RateLimited"), true, at(15)), "a rate limit waits");
        assert!(gate.admits(&with_ready("TransportError"), true, at(20)), "the first cause at once");
        assert!(!gate.admits(&with_ready("InternalError"), true, at(30)), "a second cause waits");
        assert!(!gate.admits(&with_ready("TransportError"), true, at(4_000)));
        assert!(gate.admits(&with_ready("RateLimited"), true, at(5_100)), "the interval passed");

        // A cause the status already showed before the pass is no news.
        let recorded = with_ready("TransportError");
        let mut gate = ProgressGate { last_sent: start, ..ProgressGate::new(interval, &recorded) };
        assert!(!gate.admits(&with_ready("TransportError"), true, at(10)));
        assert!(gate.admits(&with_ready("InternalError"), true, at(20)));

        // The last call failed: the pass's own write follows at once.
        let mut gate =
            ProgressGate { last_sent: start, ..ProgressGate::new(interval, &GroupBanPolicyStatus::default()) };
        assert!(!gate.admits(&with_ready("GroupNotFound"), false, at(10)));
    }

    /// What follows a pass, from its decision: a change or a shutdown
    /// waits for the watch; a retry takes the backoff; a settled policy is
    /// looked at again after the resync or the stalled re-check, or when
    /// its drift check is due, if sooner (but not within a second).
    #[test]
    fn the_next_step_follows_the_decision() {
        let options = RunOptions::default();
        let (idle, stalled) = (options.idle_resync, options.stalled_recheck);
        let minute = Duration::from_secs(60);
        let step = |decision, changed, stopping, drift| {
            format!("{:?}", next_after(decision, changed, stopping, drift, &options))
        };
        let settle = |wait: Duration| format!("{:?}", Next::Settle(wait));
        assert_eq!(step(Decision::Retry, false, false, None), "Retry");
        assert_eq!(step(Decision::Retry, true, false, None), "AwaitChange");
        assert_eq!(step(Decision::Idle, false, true, None), "AwaitChange");
        assert_eq!(step(Decision::Idle, false, false, None), settle(idle));
        assert_eq!(step(Decision::Suspended, false, false, None), settle(idle));
        assert_eq!(step(Decision::Stalled, false, false, None), settle(stalled));
        assert_eq!(step(Decision::Idle, false, false, Some(minute)), settle(minute));
        assert_eq!(step(Decision::Idle, false, false, Some(Duration::ZERO)), settle(Duration::from_secs(1)));
        assert_eq!(step(Decision::Stalled, false, false, Some(stalled * 2)), settle(stalled));
    }
}
