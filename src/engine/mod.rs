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

pub mod clients;
pub mod credentials;
pub mod execute;
pub mod plan;
pub mod status;

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::crd::{GroupBanPolicySpec, GroupBanPolicyStatus, reasons, validate_spec};
use clients::ClientPool;
use credentials::AppTarget;
use execute::{PolicyJob, halts_policy};
use status::{Halt, PassView, RecordOwner};

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
    pub target: Result<AppTarget, String>,
}

/// How far a pass has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassProgress {
    pub calls_planned: usize,
    pub calls_done: usize,
}

/// Runs one pass. `observe` sees the statuses after every batch of answers
/// (answers that land together are folded together, so a slow store never
/// holds up the calls), with summary and conditions already brought up to
/// date; the concluded statuses are returned, not observed.
pub async fn run_pass(
    inputs: &[PolicyInput],
    pool: &ClientPool,
    mut observe: impl FnMut(&[GroupBanPolicyStatus], PassProgress),
) -> Vec<GroupBanPolicyStatus> {
    let mut halts: Vec<Option<Halt>> = vec![None; inputs.len()];
    let mut statuses = Vec::with_capacity(inputs.len());
    let mut jobs = Vec::new();
    for (index, input) in inputs.iter().enumerate() {
        let target = input.target.as_ref().ok();
        let owner = target.map(|t| (t.credentials.sdkappid, t.endpoint.to_string()));
        let owner = owner.as_ref().map(|(sdkappid, endpoint)| RecordOwner { sdkappid: *sdkappid, endpoint });
        statuses.push(status::prepare(input.recorded.clone(), &input.spec, owner));

        if let Err(problem) = validate_spec(&input.spec) {
            halts[index] = Some(Halt::Config { reason: reasons::SPEC_INVALID, message: problem });
            continue;
        }
        if input.spec.suspend == Some(true) {
            halts[index] = Some(Halt::Suspended);
            continue;
        }
        let target = match &input.target {
            Ok(target) => target,
            Err(problem) => {
                halts[index] = Some(Halt::Config { reason: reasons::CREDENTIALS_INVALID, message: problem.clone() });
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

    let mut failed_in_pass: Vec<BTreeSet<String>> = vec![BTreeSet::new(); inputs.len()];
    // prepare() may have emptied or trimmed a record: bring every summary
    // and condition up to date before anything can be saved.
    let now = Timestamp::now();
    for (index, status) in statuses.iter_mut().enumerate() {
        status::refresh(status, pass_view(&inputs[index], &halts[index], &failed_in_pass[index]), now);
    }
    let mut progress = PassProgress { calls_planned: jobs.iter().map(|j| j.batches.len()).sum(), calls_done: 0 };
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let calls = tokio::spawn(execute::execute(jobs, reports_tx));
    while let Some(first) = reports.recv().await {
        let mut landed = vec![first];
        while let Ok(next) = reports.try_recv() {
            landed.push(next);
        }
        let mut touched = BTreeSet::new();
        for (index, report) in landed {
            progress.calls_done += 1;
            touched.insert(index);
            let input = &inputs[index];
            if report.error_code == 0 {
                debug!(policy = %input.key, group = %input.spec.group_id, members = report.members.len(), attempts = report.attempts, "Unbanned batch");
                for member in &report.members {
                    failed_in_pass[index].remove(member);
                }
            } else {
                warn!(policy = %input.key, group = %input.spec.group_id, members = report.members.len(), error_code = report.error_code, attempts = report.attempts, "Batch failed");
                failed_in_pass[index].extend(report.members.iter().cloned());
            }
            if halts_policy(report.error_code) && halts[index].is_none() {
                halts[index] =
                    Some(Halt::Terminal { error_code: report.error_code, error_info: report.error_info.clone() });
            }
            status::record_call(&mut statuses[index], &input.spec, &report);
        }
        let now = Timestamp::now();
        for index in touched {
            let view = pass_view(&inputs[index], &halts[index], &failed_in_pass[index]);
            status::refresh(&mut statuses[index], view, now);
        }
        observe(&statuses, progress);
    }
    // The executor only ends after its last report; a panic in it would
    // surface here as a JoinError, which leaves those calls unrecorded.
    let _ = calls.await;

    let now = Timestamp::now();
    statuses
        .into_iter()
        .enumerate()
        .map(|(index, status)| {
            status::conclude(status, pass_view(&inputs[index], &halts[index], &failed_in_pass[index]), now)
        })
        .collect()
}

fn pass_view<'a>(input: &'a PolicyInput, halt: &'a Option<Halt>, failed_in_pass: &'a BTreeSet<String>) -> PassView<'a> {
    PassView { spec: &input.spec, generation: input.generation, halt: halt.as_ref(), failed_in_pass }
}
