//! The engine. One pass over a set of policies runs:
//!
//! ```text
//! read (Secret, policy, recorded status) -> plan (pure) -> execute (IM calls, rate-limited)
//!     -> fold outcomes into status (pure) -> write status (the caller's store)
//! ```
//!
//! The same pass serves the one-shot `apply` command (status store: a state
//! file) and the Kubernetes controller (status store: the API server).
//! Reading and writing belong to the caller; `run_pass` gets the inputs and
//! hands statuses to an observer after every batch of answers.

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

use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::crd::reasons;
use crate::crd::{GroupBanPolicySpec, GroupBanPolicyStatus, validate_spec};
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

/// Runs one pass. `observe` sees the statuses after every batch of answers
/// (answers that land together are folded together, so a slow store never
/// holds up the calls), with summary and conditions already brought up to
/// date; the concluded outcomes are returned, not observed.
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
    mut observe: impl FnMut(&[GroupBanPolicyStatus], PassProgress),
) -> Vec<PassOutcome> {
    let mut halts: Vec<Option<Halt>> = vec![None; inputs.len()];
    let mut statuses = Vec::with_capacity(inputs.len());
    let mut jobs = Vec::new();
    for (index, input) in inputs.iter().enumerate() {
        let target = input.target.as_ref().ok();
        let owner = target.map(|t| (t.credentials.sdkappid, t.endpoint.to_string()));
        let owner = owner.as_ref().map(|(sdkappid, endpoint)| RecordOwner { sdkappid: *sdkappid, endpoint });
        statuses.push(fold::prepare(input.recorded.clone(), &input.spec, owner));

        if let Err(problem) = validate_spec(&input.spec) {
            halts[index] = Some(Halt::Config(problem.into()));
            continue;
        }
        if input.spec.suspend == Some(true) {
            halts[index] = Some(Halt::Suspended);
            continue;
        }
        let target = match &input.target {
            Ok(target) => target,
            Err(problem) if problem.is_passing() => {
                let message = problem.to_string();
                halts[index] = Some(Halt::Unavailable { reason: reasons::CREDENTIALS_UNAVAILABLE, message });
                continue;
            }
            Err(problem) => {
                halts[index] = Some(Halt::Config(problem.clone().into()));
                continue;
            }
        };
        let plan = plan::plan(&input.spec.unbanned_members, &statuses[index].unbanned_members);
        debug!(policy = %input.key, calls = plan.batches.len(), members = plan.members_to_unban(), "Planned");
        if !plan.batches.is_empty() {
            jobs.push(PolicyJob {
                policy: index,
                group_id: input.spec.group_id.clone(),
                client: pool.client_for(target),
                batches: plan.batches,
            });
        }
    }

    let desired: Vec<DesiredMembers<'_>> = inputs.iter().map(|input| DesiredMembers::of(&input.spec)).collect();
    let mut failed_in_pass: Vec<BTreeSet<String>> = vec![BTreeSet::new(); inputs.len()];
    let mut succeeded = vec![0usize; inputs.len()];
    let mut failed = vec![0usize; inputs.len()];
    let mut budget_answers = vec![0u32; inputs.len()];
    let mut retrying: Vec<Option<RetryCause>> = vec![None; inputs.len()];
    let limiters: Vec<Option<std::sync::Arc<crate::im::RateLimiter>>> = {
        let mut limiters = vec![None; inputs.len()];
        for job in &jobs {
            limiters[job.policy] = Some(job.client.limiter(crate::im::Command::UnbanGroupMember).clone());
        }
        limiters
    };
    // prepare() may have emptied or trimmed a record: bring every summary
    // and condition up to date before anything can be saved.
    let now = Timestamp::now();
    for (index, status) in statuses.iter_mut().enumerate() {
        conditions::refresh(
            status,
            pass_view(&inputs[index], &desired[index], &halts[index], &failed_in_pass[index], &None),
            now,
        );
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
                let report = match event {
                    CallEvent::Retrying(cause) => {
                        retrying[index] = Some(cause);
                        continue;
                    }
                    CallEvent::Done(report) => report,
                };
                progress.calls_done += 1;
                budget_answers[index] = budget_answers[index].saturating_add(report.budget_answers);
                let input = &inputs[index];
                if report.error_code == 0 {
                    succeeded[index] += 1;
                    debug!(policy = %input.key, group = %input.spec.group_id, members = report.members.len(), attempts = report.attempts, "Unbanned batch");
                    for member in &report.members {
                        failed_in_pass[index].remove(member);
                    }
                    // The gateway answers again: an older retry's cause is
                    // no longer news (a call still retrying tells again).
                    retrying[index] = None;
                } else {
                    failed[index] += 1;
                    warn!(policy = %input.key, group = %input.spec.group_id, members = report.members.len(), error_code = report.error_code, attempts = report.attempts, "Batch failed");
                    failed_in_pass[index].extend(report.members.iter().cloned());
                }
                if halts_policy(report.error_code) && halts[index].is_none() {
                    halts[index] =
                        Some(Halt::Terminal { error_code: report.error_code, error_info: report.error_info.clone() });
                }
                fold::record_call(&mut statuses[index], &desired[index], &report);
            }
            let now = Timestamp::now();
            for index in touched {
                let view =
                    pass_view(&inputs[index], &desired[index], &halts[index], &failed_in_pass[index], &retrying[index]);
                conditions::refresh(&mut statuses[index], view, now);
            }
            observe(&statuses, progress);
        }
    };
    // The fold ends when the last call's report has been sent.
    tokio::join!(calls, fold);

    let now = Timestamp::now();
    statuses
        .into_iter()
        .enumerate()
        .map(|(index, status)| {
            // Every call has ended: nothing is being retried any more.
            let view = pass_view(&inputs[index], &desired[index], &halts[index], &failed_in_pass[index], &None);
            let (status, decision) = conditions::conclude(status, view, now);
            PassOutcome {
                status,
                decision,
                calls_succeeded: succeeded[index],
                calls_failed: failed[index],
                budget_answers: budget_answers[index],
                app_budget_answers_lately: limiters[index]
                    .as_ref()
                    .map_or(0, |limiter| limiter.budget_answers_lately(tokio::time::Instant::now())),
            }
        })
        .collect()
}

fn pass_view<'a>(
    input: &'a PolicyInput,
    desired: &'a DesiredMembers<'a>,
    halt: &'a Option<Halt>,
    failed_in_pass: &'a BTreeSet<String>,
    retrying: &'a Option<RetryCause>,
) -> PassView<'a> {
    PassView { desired, generation: input.generation, halt: halt.as_ref(), failed_in_pass, retrying: retrying.as_ref() }
}
