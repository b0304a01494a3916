//! The engine. One pass over a set of policies runs:
//!
//! ```text
//! read (Secret, policy, recorded status) -> plan (pure) -> execute (IM calls, rate-limited)
//!     -> fold outcomes into the record (pure) -> conditions and decision (pure)
//!     -> write status (the caller's store); changes: what is worth writing, what deserves an Event
//! ```
//!
//! - [`plan`], [`execute`], [`fold`], [`conditions`], [`changes`]: the steps.
//! - [`credentials`]: the app target from a Secret; [`clients`]: the shared pool.
//! - [`ban_list`]: what a group's ban list says about a policy's members (`diff`, drift).
//!
//! The same pass serves the one-shot `apply` command (status store: a state
//! file; [`run_pass`] over every policy) and the Kubernetes controller
//! (status store: the API server; [`run_one`] per reconcile). Reading and
//! writing belong to the caller; the pass gets the inputs and hands statuses
//! to an observer after every batch of answers.

pub mod ban_list;
pub mod changes;
pub mod clients;
pub mod conditions;
pub mod credentials;
pub mod execute;
#[cfg(test)]
mod fixtures;
pub mod fold;
pub mod plan;

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::crd::reasons;
use crate::crd::{GroupBanPolicySpec, GroupBanPolicyStatus, validate_spec};
use crate::im::{Command, RateLimiter};
use clients::ClientPool;
use conditions::{Decision, Halt, PassView};
use credentials::{AppTarget, CredentialsError};
use execute::{CallEvent, PolicyJob, halts_policy};
use fold::{DesiredMembers, RecordOwner, RetryCause};

/// What a pass needs to know about one policy.
#[derive(Debug, Clone)]
pub struct PolicyInput {
    /// `namespace/name`, for logs.
    pub key: String,
    pub spec: GroupBanPolicySpec,
    pub generation: Option<i64>,
    /// The recorded status from the store (default when there is none).
    pub recorded: GroupBanPolicyStatus,
    /// The resolved credentials, or why they could not be resolved.
    pub target: Result<AppTarget, CredentialsError>,
}

/// How far a pass has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassProgress {
    pub calls_planned: usize,
    pub calls_done: usize,
}

/// What a pass concluded about one policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PassOutcome {
    pub status: GroupBanPolicyStatus,
    /// What the driver should do next; decided with the conditions.
    pub decision: Decision,
    /// Calls answered ErrorCode 0 in this pass.
    pub calls_succeeded: usize,
    /// Calls whose final outcome was a failure in this pass.
    pub calls_failed: usize,
    /// Answers that the app's budget was spent (60007, 60011), retried
    /// attempts included.
    pub budget_answers: u32,
    /// Such answers to every call to the policy's app in the last minute,
    /// at the end of the pass (0 when it made no call).
    pub app_budget_answers_lately: usize,
}

/// What a pass learns about one policy beside its status.
#[derive(Debug, Default)]
struct Tally {
    /// Why the pass stopped short of the policy's planned calls, if it did.
    halt: Option<Halt>,
    /// Members whose latest call in this pass failed.
    failed_in_pass: BTreeSet<String>,
    /// The latest retried attempt, while no later call has succeeded.
    retrying: Option<RetryCause>,
    calls_succeeded: usize,
    calls_failed: usize,
    budget_answers: u32,
    /// The limiter of the policy's app, when it made calls.
    limiter: Option<Arc<RateLimiter>>,
}

/// Runs one pass. `observe` sees the statuses after every batch of answers
/// (answers that land together are folded together, so a slow store never
/// holds up the calls), with summary and conditions already brought up to
/// date; the concluded outcomes are returned, one per input, in order.
///
/// Stopping: once `shutdown` turns true, no new call starts (calls waiting
/// for the limiter or a backoff give up); requests already on the wire
/// finish and their answers are folded in, so the returned statuses hold
/// everything that was confirmed. Dropping the future instead also stops
/// every call from starting; answers of requests then in flight are lost,
/// which is safe (nothing unconfirmed is ever recorded) but wasteful.
pub async fn run_pass(
    inputs: &[PolicyInput],
    pool: &ClientPool,
    shutdown: watch::Receiver<bool>,
    observe: impl FnMut(&[GroupBanPolicyStatus], PassProgress),
) -> Vec<PassOutcome> {
    let desired: Vec<DesiredMembers<'_>> = inputs.iter().map(|input| DesiredMembers::of(&input.spec)).collect();
    let mut statuses: Vec<GroupBanPolicyStatus> = inputs.iter().map(prepared).collect();
    let mut tallies: Vec<Tally> = inputs.iter().map(|_| Tally::default()).collect();
    drive(inputs, &desired, &mut statuses, &mut tallies, pool, shutdown, observe).await;
    let concluded = inputs.iter().zip(&desired).zip(statuses).zip(tallies);
    concluded.map(|(((input, desired), status), tally)| conclude(input, desired, status, tally)).collect()
}

/// [`run_pass`] over one policy: what the controller runs per reconcile.
/// `observe` sees the policy's status after every batch of its answers.
pub async fn run_one(
    input: &PolicyInput,
    pool: &ClientPool,
    shutdown: watch::Receiver<bool>,
    mut observe: impl FnMut(&GroupBanPolicyStatus, PassProgress),
) -> PassOutcome {
    let desired = [DesiredMembers::of(&input.spec)];
    let mut statuses = [prepared(input)];
    let mut tallies = [Tally::default()];
    let inputs = std::slice::from_ref(input);
    drive(inputs, &desired, &mut statuses, &mut tallies, pool, shutdown, |statuses, progress| {
        for status in statuses {
            observe(status, progress);
        }
    })
    .await;
    let ([desired], [status], [tally]) = (desired, statuses, tallies);
    conclude(input, &desired, status, tally)
}

/// The recorded status made ready for a pass (see [`fold::prepare`]).
fn prepared(input: &PolicyInput) -> GroupBanPolicyStatus {
    let target = input.target.as_ref().ok();
    let owner = target.map(|t| (t.credentials.sdkappid, t.endpoint.to_string()));
    let owner = owner.as_ref().map(|(sdkappid, endpoint)| RecordOwner { sdkappid: *sdkappid, endpoint });
    fold::prepare(input.recorded.clone(), &input.spec, owner)
}

/// Why no call can be made for `input`, if none can.
fn halt_before_calls(input: &PolicyInput) -> Option<Halt> {
    if let Err(problem) = validate_spec(&input.spec) {
        return Some(Halt::Config(problem.into()));
    }
    if input.spec.suspend == Some(true) {
        return Some(Halt::Suspended);
    }
    match &input.target {
        Ok(_) => None,
        Err(problem) if problem.is_passing() => {
            Some(Halt::Unavailable { reason: reasons::CREDENTIALS_UNAVAILABLE, message: problem.to_string() })
        }
        Err(problem) => Some(Halt::Config(problem.clone().into())),
    }
}

/// Plans, executes and folds: `statuses` and `tallies` (one per input,
/// as `desired` is) hold what the pass found when it returns.
async fn drive(
    inputs: &[PolicyInput],
    desired: &[DesiredMembers<'_>],
    statuses: &mut [GroupBanPolicyStatus],
    tallies: &mut [Tally],
    pool: &ClientPool,
    shutdown: watch::Receiver<bool>,
    mut observe: impl FnMut(&[GroupBanPolicyStatus], PassProgress),
) {
    let mut jobs = Vec::new();
    for (index, input) in inputs.iter().enumerate() {
        tallies[index].halt = halt_before_calls(input);
        let Ok(target) = &input.target else { continue };
        if tallies[index].halt.is_some() {
            continue;
        }
        let plan = plan::plan(&input.spec.unbanned_members, &statuses[index].unbanned_members);
        debug!(policy = %input.key, calls = plan.batches.len(), members = plan.members_to_unban(), "Planned");
        if !plan.batches.is_empty() {
            let client = pool.client_for(target);
            tallies[index].limiter = Some(client.limiter(Command::UnbanGroupMember).clone());
            jobs.push(PolicyJob {
                policy: index,
                group_id: input.spec.group_id.clone(),
                client,
                batches: plan.batches,
            });
        }
    }

    // prepare() may have emptied or trimmed a record: bring every summary
    // and condition up to date before anything can be saved.
    let now = Timestamp::now();
    for (index, status) in statuses.iter_mut().enumerate() {
        conditions::refresh(status, pass_view(&inputs[index], &desired[index], &tallies[index], false), now);
    }
    let mut progress = PassProgress { calls_planned: jobs.iter().map(|j| j.batches.len()).sum(), calls_done: 0 };
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    // The executor runs inside this future, not detached: dropping the pass
    // drops its calls.
    let calls = execute::execute(jobs, reports_tx, shutdown);
    let fold = async {
        while let Some(first) = reports.recv().await {
            let mut landed = vec![first];
            while let Ok(next) = reports.try_recv() {
                landed.push(next);
            }
            let mut touched = BTreeSet::new();
            for (index, event) in landed {
                touched.insert(index);
                let tally = &mut tallies[index];
                let report = match event {
                    CallEvent::Retrying(cause) => {
                        tally.retrying = Some(cause);
                        continue;
                    }
                    CallEvent::Done(report) => report,
                };
                progress.calls_done += 1;
                tally.budget_answers = tally.budget_answers.saturating_add(report.budget_answers);
                let input = &inputs[index];
                if report.error_code == 0 {
                    tally.calls_succeeded += 1;
                    debug!(policy = %input.key, group = %input.spec.group_id, members = report.members.len(), attempts = report.attempts, "Unbanned batch");
                    for member in &report.members {
                        tally.failed_in_pass.remove(member);
                    }
                    // The gateway answers again: an older retry's cause is
                    // no longer news (a call still retrying tells again).
                    tally.retrying = None;
                } else {
                    tally.calls_failed += 1;
                    warn!(policy = %input.key, group = %input.spec.group_id, members = report.members.len(), error_code = report.error_code, attempts = report.attempts, "Batch failed");
                    tally.failed_in_pass.extend(report.members.iter().cloned());
                }
                if halts_policy(report.error_code) && tally.halt.is_none() {
                    tally.halt =
                        Some(Halt::Terminal { error_code: report.error_code, error_info: report.error_info.clone() });
                }
                fold::record_call(&mut statuses[index], &desired[index], &report);
            }
            let now = Timestamp::now();
            for index in touched {
                let view = pass_view(&inputs[index], &desired[index], &tallies[index], true);
                conditions::refresh(&mut statuses[index], view, now);
            }
            observe(statuses, progress);
        }
    };
    // The fold ends when the last call's report has been sent.
    tokio::join!(calls, fold);
}

/// The outcome of one policy once every call has ended.
fn conclude(
    input: &PolicyInput,
    desired: &DesiredMembers<'_>,
    status: GroupBanPolicyStatus,
    tally: Tally,
) -> PassOutcome {
    // Every call has ended: nothing is being retried any more.
    let view = pass_view(input, desired, &tally, false);
    let (status, decision) = conditions::conclude(status, view, Timestamp::now());
    PassOutcome {
        status,
        decision,
        calls_succeeded: tally.calls_succeeded,
        calls_failed: tally.calls_failed,
        budget_answers: tally.budget_answers,
        app_budget_answers_lately: tally
            .limiter
            .as_ref()
            .map_or(0, |limiter| limiter.budget_answers_lately(tokio::time::Instant::now())),
    }
}

/// What the conditions are computed from; `retrying` says whether a call
/// may still be retrying (during the pass) or not (at its end).
fn pass_view<'a>(
    input: &'a PolicyInput,
    desired: &'a DesiredMembers<'a>,
    tally: &'a Tally,
    retrying: bool,
) -> PassView<'a> {
    PassView {
        desired,
        generation: input.generation,
        halt: tally.halt.as_ref(),
        failed_in_pass: &tally.failed_in_pass,
        retrying: tally.retrying.as_ref().filter(|_| retrying),
    }
}
