//! Fold (pure): call outcomes into status, and the pass's conclusion into
//! summary and conditions.
//!
//! The one rule that matters most: a member enters `unbannedMembers` only
//! when a call that carried it was answered ErrorCode 0.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::credentials::CredentialsError;
use crate::crd::{
    FailureRecord, GroupBanPolicySpec, GroupBanPolicyStatus, MAX_FAILURE_ENTRIES, SpecError, Summary, condition_types,
    reasons,
};
use crate::im::codes::{self, CodeClass, TRANSPORT_REASON};

/// `lastErrorCode` for a call that got no IM answer.
pub const NO_IM_ANSWER: i64 = -1;

/// The final outcome of one call (after the client's retries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallReport {
    pub members: Vec<String>,
    /// The IM ErrorCode, or [`NO_IM_ANSWER`].
    pub error_code: i64,
    pub error_info: String,
    pub attempts: u32,
    /// Attempts answered that the app's budget was spent (60007, 60011).
    pub budget_answers: u32,
    pub at: Timestamp,
}

/// The latest failed attempt of a call that is being retried: shown in
/// Ready before the call's final outcome is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryCause {
    /// The IM ErrorCode, or [`NO_IM_ANSWER`].
    pub error_code: i64,
    pub error_info: String,
}

/// How many answers that the app's budget is spent (60007, 60011) the
/// process may draw in a minute, all its calls to the app together, before
/// they read as another client spending the same budget. Alone, the
/// limiter draws none against a gateway that counts as documented; where
/// one counts differently, an episode of a call or two, after which the
/// limiter widens its window. A second client at the same rate draws
/// several a second.
pub const CONTENDED_BUDGET_ANSWERS: usize = 5;

/// Why a pass stopped short of making every planned call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    /// `spec.suspend` is true.
    Suspended,
    /// The spec or the credentials are unusable; no call was made.
    Config(ConfigProblem),
    /// An answer that concerns the whole group, app or credentials.
    Terminal { error_code: i64, error_info: String },
    /// A passing problem (the API server could not hand out the Secret)
    /// stopped every call before it began; retried on backoff.
    Unavailable { reason: &'static str, message: String },
}

/// A configuration a person must fix before any call can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

impl ConfigProblem {
    /// The condition and Event reason (stable API).
    pub fn reason(&self) -> &'static str {
        match self {
            ConfigProblem::Spec(_) => reasons::SPEC_INVALID,
            ConfigProblem::Credentials(_) => reasons::CREDENTIALS_INVALID,
        }
    }
}

/// What the driver should do after a pass, decided by the same rules that
/// set the conditions (so the two can never disagree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Every desired member is recorded; wait for a change.
    Idle,
    /// Calls are pending or failed with answers a later attempt may fix:
    /// run again after a backoff.
    Retry,
    /// A person must act (a terminal ErrorCode, bad spec or credentials):
    /// wait for a change, with only a slow re-check.
    Stalled,
    /// spec.suspend is true: no calls until it is not.
    Suspended,
}

/// "ErrorCode 10010 (GroupNotFound): group x does not exist".
pub fn describe_answer(error_code: i64, error_info: &str) -> String {
    if error_code == NO_IM_ANSWER {
        return format!("no IM answer ({TRANSPORT_REASON}): {error_info}");
    }
    let reason = codes::lookup(error_code).reason;
    if error_info.is_empty() {
        format!("ErrorCode {error_code} ({reason})")
    } else {
        format!("ErrorCode {error_code} ({reason}): {error_info}")
    }
}

fn reason_of(error_code: i64) -> &'static str {
    if error_code == NO_IM_ANSWER { TRANSPORT_REASON } else { codes::lookup(error_code).reason }
}

/// The app and endpoint a record belongs to: members unbanned in one app
/// (or in the simulator) say nothing about another app with the same group ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordOwner<'a> {
    pub sdkappid: u64,
    pub endpoint: &'a str,
}

/// Readies a recorded status for a pass over `spec`. The record starts over
/// when the group, the app or the endpoint differs from the one it was made
/// for (or is unknown); members no longer desired leave it. `owner` is
/// `None` when the credentials are unusable: no call will be made, so the
/// record is kept as it is.
pub fn prepare(
    mut status: GroupBanPolicyStatus,
    spec: &GroupBanPolicySpec,
    owner: Option<RecordOwner<'_>>,
) -> GroupBanPolicyStatus {
    let same_group = status.group_id.as_deref() == Some(spec.group_id.as_str());
    let same_owner =
        owner.is_none_or(|o| status.sdk_app_id == Some(o.sdkappid) && status.endpoint.as_deref() == Some(o.endpoint));
    if !same_group || !same_owner {
        status.unbanned_members.clear();
        status.failures.clear();
        status.group_id = Some(spec.group_id.clone());
    }
    if let Some(owner) = owner {
        status.sdk_app_id = Some(owner.sdkappid);
        status.endpoint = Some(owner.endpoint.to_string());
    }
    let desired = DesiredMembers::of(spec);
    status.unbanned_members.retain(|m| desired.contains(m));
    status.unbanned_members.sort();
    status.unbanned_members.dedup();
    for failure in &mut status.failures {
        failure.members.retain(|m| desired.contains(m));
    }
    status.failures.retain(|f| !f.members.is_empty());
    // Counts the entries left out during one pass; retries of the same
    // batches in later passes must not add up forever.
    status.failures_truncated = None;
    status
}

/// A policy's desired members as a set. Built once per pass: every answer
/// is checked against it, and rebuilding it per answer was a tenth of the
/// operator's CPU with 10,000 policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredMembers<'a> {
    /// Sorted, without duplicates.
    sorted: Vec<&'a str>,
}

impl<'a> DesiredMembers<'a> {
    pub fn of(spec: &'a GroupBanPolicySpec) -> Self {
        let mut sorted: Vec<&str> = spec.unbanned_members.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        Self { sorted }
    }

    pub fn contains(&self, member: &str) -> bool {
        self.sorted.binary_search(&member).is_ok()
    }

    /// The distinct desired members of `recorded`, sorted. A record sorted
    /// already (as prepare and record_call leave it) is merged with the
    /// desired members in one linear walk; any other is sorted first.
    pub fn recorded_among<'r>(&self, recorded: &'r [String]) -> Vec<&'r str> {
        let mut sorted: Vec<&str> = recorded.iter().map(String::as_str).collect();
        if !sorted.is_sorted() {
            sorted.sort_unstable();
        }
        let mut found = Vec::with_capacity(sorted.len().min(self.sorted.len()));
        let mut wanted = self.sorted.iter().peekable();
        for member in sorted {
            while wanted.next_if(|w| **w < member).is_some() {}
            if wanted.peek().is_some_and(|w| **w == member) && found.last() != Some(&member) {
                found.push(member);
            }
        }
        found
    }

    /// How many distinct members are desired.
    pub fn count(&self) -> usize {
        self.sorted.len()
    }
}

/// Folds one call's outcome into the status. After a success,
/// `unbannedMembers` comes out sorted and without duplicates, whatever it
/// was before (a failure leaves it as it was; prepare sorted it).
pub fn record_call(status: &mut GroupBanPolicyStatus, desired: &DesiredMembers<'_>, report: &CallReport) {
    status.last_error_code = Some(report.error_code);
    status.last_error_info = Some(report.error_info.clone());
    // A newer outcome for a member replaces any older failure entry for it.
    // (At most 20 entries of at most 20 members against a batch of 20.)
    for failure in &mut status.failures {
        failure.members.retain(|m| !report.members.contains(m));
    }
    status.failures.retain(|f| !f.members.is_empty());

    if report.error_code == 0 {
        let recorded = &mut status.unbanned_members;
        recorded.extend(report.members.iter().filter(|m| desired.contains(m)).cloned());
        // A stable sort finds the sorted record and the appended batch as two
        // runs and merges them in linear time.
        recorded.sort();
        recorded.dedup();
    } else {
        status.failures.insert(
            0,
            FailureRecord {
                members: report.members.clone(),
                error_code: report.error_code,
                error_info: report.error_info.clone(),
                attempts: report.attempts,
                last_attempt_time: Time(report.at),
            },
        );
        if status.failures.len() > MAX_FAILURE_ENTRIES {
            let dropped = (status.failures.len() - MAX_FAILURE_ENTRIES) as u32;
            status.failures.truncate(MAX_FAILURE_ENTRIES);
            status.failures_truncated = Some(status.failures_truncated.unwrap_or(0).saturating_add(dropped));
        }
    }
    if status.failures.is_empty() {
        status.failures_truncated = None;
    }
}

/// Counts desired members by state. `failed_in_pass` holds the members
/// whose latest call in this pass failed: `failures` keeps only 20 entries,
/// so it alone would undercount a large failure.
pub fn summarize(
    status: &GroupBanPolicyStatus,
    desired: &DesiredMembers<'_>,
    failed_in_pass: &BTreeSet<String>,
) -> Summary {
    let unbanned = desired.recorded_among(&status.unbanned_members);
    let mut failed: Vec<&str> = status
        .failures
        .iter()
        .flat_map(|f| f.members.iter())
        .chain(failed_in_pass.iter())
        .map(String::as_str)
        .filter(|m| desired.contains(m) && unbanned.binary_search(m).is_err())
        .collect();
    failed.sort_unstable();
    failed.dedup();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Summary {
        desired: count(desired.count()),
        unbanned: count(unbanned.len()),
        failed: count(failed.len()),
        pending: count(desired.count() - unbanned.len() - failed.len()),
    }
}

/// Everything a pass knows about a policy besides its status.
#[derive(Debug, Clone, Copy)]
pub struct PassView<'a> {
    pub desired: &'a DesiredMembers<'a>,
    pub generation: Option<i64>,
    pub halt: Option<&'a Halt>,
    pub failed_in_pass: &'a BTreeSet<String>,
    /// The latest retried attempt, while no later call has succeeded.
    pub retrying: Option<&'a RetryCause>,
}

/// Ends a pass: summary, conditions, observedGeneration and lastSyncTime,
/// and what the driver should do next.
pub fn conclude(
    mut status: GroupBanPolicyStatus,
    view: PassView<'_>,
    now: Timestamp,
) -> (GroupBanPolicyStatus, Decision) {
    let decision = refresh(&mut status, view, now);
    status.observed_generation = view.generation;
    status.last_sync_time = Some(Time(now));
    (status, decision)
}

/// Recomputes summary and conditions, during a pass or at its end, and
/// decides from the same facts what the driver should do next.
pub fn refresh(status: &mut GroupBanPolicyStatus, view: PassView<'_>, now: Timestamp) -> Decision {
    let summary = summarize(status, view.desired, view.failed_in_pass);
    status.summary = Some(summary);
    let work_left = summary.unbanned < summary.desired;
    let newest_failure = status.failures.first();
    // The newest failure that no retry can fix, if any.
    let terminal_failure = status
        .failures
        .iter()
        .find(|f| f.error_code != NO_IM_ANSWER && codes::lookup(f.error_code).class == CodeClass::Terminal);

    // Stalled only while there is work left: broken credentials do not
    // matter to a policy whose members are all unbanned already.
    let stalled: Option<(&str, String)> = match view.halt {
        _ if !work_left => None,
        Some(Halt::Config(problem)) => Some((problem.reason(), problem.to_string())),
        Some(Halt::Terminal { error_code, error_info }) => {
            Some((reason_of(*error_code), describe_answer(*error_code, error_info)))
        }
        Some(Halt::Suspended | Halt::Unavailable { .. }) | None => terminal_failure.map(|f| {
            let described = describe_answer(f.error_code, &f.error_info);
            (reason_of(f.error_code), format!("{described} for {} member(s)", f.members.len()))
        }),
    };
    let suspended = matches!(view.halt, Some(Halt::Suspended));
    let unavailable = match view.halt {
        Some(Halt::Unavailable { reason, message }) => Some((*reason, message)),
        _ => None,
    };
    let progress = format!("{} of {} members unbanned", summary.unbanned, summary.desired);

    let ready = if !work_left {
        (true, reasons::ALL_MEMBERS_UNBANNED, progress.clone())
    } else if suspended {
        (false, reasons::SUSPENDED, format!("{progress}; spec.suspend is true"))
    } else if let Some((reason, message)) = &stalled {
        (false, *reason, format!("{progress}; {message}"))
    } else if let Some((reason, message)) = unavailable {
        (false, reason, format!("{progress}; {message}; retrying"))
    } else if let Some(cause) = view.retrying {
        // What goes wrong now, before what went wrong in an earlier call.
        let last = describe_answer(cause.error_code, &cause.error_info);
        let failed = match summary.failed {
            0 => String::new(),
            n => format!("{n} failed, "),
        };
        (
            false,
            reason_of(cause.error_code),
            format!("{progress}; {failed}{} pending, retrying after {last}", summary.pending),
        )
    } else if let Some(failure) = newest_failure {
        let last = describe_answer(failure.error_code, &failure.error_info);
        (false, reason_of(failure.error_code), format!("{progress}; {} failed, last: {last}", summary.failed))
    } else {
        (false, reasons::UNBAN_PENDING, format!("{progress}; {} pending", summary.pending))
    };

    // Failures a later attempt may fix (transport errors, retryable and
    // unknown codes), as opposed to terminal ones that wait for a person.
    // Every failed member has an entry: `failures` drops only its oldest
    // entries, and only when newer ones are there, so looking at the
    // entries is enough.
    let retryable_failures = status
        .failures
        .iter()
        .any(|f| f.error_code == NO_IM_ANSWER || codes::lookup(f.error_code).class != CodeClass::Terminal);
    let reconciling = if suspended && work_left {
        (false, reasons::SUSPENDED, "spec.suspend is true; no calls are made".to_string())
    } else if let (Some(_), Some((reason, message))) = (view.halt, &stalled) {
        (false, *reason, format!("no calls are made until this is fixed: {message}"))
    } else if let (true, Some((_, message))) = (work_left, unavailable) {
        (true, reasons::RETRY_PENDING, format!("no calls yet: {message}"))
    } else if summary.pending > 0 {
        (true, reasons::UNBAN_PENDING, format!("{} members pending", summary.pending))
    } else if work_left && retryable_failures {
        let last = newest_failure.map(|f| describe_answer(f.error_code, &f.error_info)).unwrap_or_default();
        (true, reasons::RETRY_PENDING, format!("{} members to retry; last: {last}", summary.failed))
    } else {
        (false, reasons::IDLE, "no calls pending".to_string())
    };

    let decision = if !work_left {
        Decision::Idle
    } else if reconciling.0 {
        Decision::Retry
    } else if suspended {
        Decision::Suspended
    } else if stalled.is_some() {
        Decision::Stalled
    } else {
        // Work left, nothing pending, no failure: cannot happen (pending
        // is what is neither unbanned nor failed); retrying is the safe answer.
        Decision::Retry
    };
    let stalled = match stalled {
        Some((reason, message)) => (true, reason, message),
        None => (false, reasons::NOT_STALLED, "progress is not blocked".to_string()),
    };

    let previous = std::mem::take(&mut status.conditions);
    status.conditions = [
        (condition_types::READY, ready),
        (condition_types::RECONCILING, reconciling),
        (condition_types::STALLED, stalled),
    ]
    .into_iter()
    .map(|(kind, (value, reason, message))| condition(&previous, kind, value, reason, message, view.generation, now))
    .collect();
    decision
}

/// A condition that keeps its lastTransitionTime while its status holds.
fn condition(
    previous: &[Condition],
    kind: &str,
    value: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if value { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: kind.to_string(),
        status,
        reason: reason.to_string(),
        message,
        last_transition_time,
        observed_generation: generation,
    }
}

/// The conditions of a policy whose spec cannot be read at all (it does
/// not match the types; see `controller::decode`): not Ready, Stalled on
/// [`reasons::SPEC_INVALID`] naming the field, nothing in progress. The
/// record of unbanned members stays as it was.
pub fn mark_unreadable(status: &mut GroupBanPolicyStatus, problem: &str, generation: Option<i64>, now: Timestamp) {
    let message = format!("the spec cannot be read: {problem}");
    let previous = std::mem::take(&mut status.conditions);
    status.conditions = [
        (condition_types::READY, (false, reasons::SPEC_INVALID, message.clone())),
        (
            condition_types::RECONCILING,
            (false, reasons::SPEC_INVALID, format!("no calls are made until this is fixed: {message}")),
        ),
        (condition_types::STALLED, (true, reasons::SPEC_INVALID, message)),
    ]
    .into_iter()
    .map(|(kind, (value, reason, message))| condition(&previous, kind, value, reason, message, generation, now))
    .collect();
    status.observed_generation = generation;
}

/// True when two statuses differ in more than timestamps: the controller
/// skips a status write otherwise (a write that changes nothing but times
/// re-triggers the watch and becomes a hot loop).
pub fn differs_beyond_timestamps(a: &GroupBanPolicyStatus, b: &GroupBanPolicyStatus) -> bool {
    fn without_times(status: &GroupBanPolicyStatus) -> GroupBanPolicyStatus {
        let mut status = status.clone();
        status.last_sync_time = None;
        for condition in &mut status.conditions {
            condition.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        for failure in &mut status.failures {
            failure.last_attempt_time = Time(Timestamp::UNIX_EPOCH);
        }
        if let Some(drift) = &mut status.drift {
            drift.last_check_time = Time(Timestamp::UNIX_EPOCH);
        }
        status
    }
    without_times(a) != without_times(b)
}

/// Something a person should hear about (an Event), found by comparing a
/// policy's status before and after a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Members newly recorded as unbanned, and the calls that did it.
    Unbanned { members: usize, calls: usize },
    /// The policy became Stalled, or is Stalled for a different cause.
    Stalled { reason: String, message: String },
    /// This pass met answers that the app's budget was spent, while the
    /// app drew many of them lately although calls kept under the
    /// configured limit: someone else spends the app's budget.
    BudgetShared { answers: u32, app_answers_lately: usize },
}

/// What a pass did, as far as Events care.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassCalls {
    /// Calls answered ErrorCode 0.
    pub succeeded: usize,
    /// This pass's answers that the app's budget was spent, retried
    /// attempts included.
    pub budget_answers: u32,
    /// Such answers to every call to the app in the last minute.
    pub app_budget_answers_lately: usize,
}

impl PassCalls {
    /// True when this pass met the app's budget spent by someone else.
    pub fn met_a_shared_budget(&self) -> bool {
        self.budget_answers > 0 && self.app_budget_answers_lately >= CONTENDED_BUDGET_ANSWERS
    }
}

/// What changed between `before` and `after` that deserves an Event. A
/// state that did not change yields nothing, so a slow re-check of a
/// Stalled policy repeats no Warning.
pub fn notices(before: &GroupBanPolicyStatus, after: &GroupBanPolicyStatus, calls: PassCalls) -> Vec<Notice> {
    let mut notices = Vec::new();
    let known: BTreeSet<&String> = before.unbanned_members.iter().collect();
    let newly_unbanned = after.unbanned_members.iter().filter(|m| !known.contains(m)).count();
    if newly_unbanned > 0 {
        notices.push(Notice::Unbanned { members: newly_unbanned, calls: calls.succeeded });
    }
    if calls.met_a_shared_budget() {
        notices.push(Notice::BudgetShared {
            answers: calls.budget_answers,
            app_answers_lately: calls.app_budget_answers_lately,
        });
    }
    let stalled = |status| find_condition(status, condition_types::STALLED).filter(|c| c.status == "True");
    if let Some(now) = stalled(after) {
        let same = stalled(before).is_some_and(|was| was.reason == now.reason && was.message == now.message);
        if !same {
            notices.push(Notice::Stalled { reason: now.reason.clone(), message: now.message.clone() });
        }
    }
    notices
}

/// The condition of `kind`, if present.
pub fn find_condition<'a>(status: &'a GroupBanPolicyStatus, kind: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OWNER: RecordOwner<'static> = RecordOwner { sdkappid: 1400000000, endpoint: "https://console.tim.qq.com" };

    fn view<'a>(desired: &'a DesiredMembers<'a>, halt: Option<&'a Halt>, failed: &'a BTreeSet<String>) -> PassView<'a> {
        PassView { desired, generation: Some(3), halt, failed_in_pass: failed, retrying: None }
    }

    fn spec(members: &[&str]) -> GroupBanPolicySpec {
        GroupBanPolicySpec {
            group_id: "room".into(),
            unbanned_members: members.iter().map(|m| m.to_string()).collect(),
            credentials_secret_ref: None,
            suspend: None,
            drift_check_interval: None,
        }
    }

    fn report(members: &[&str], error_code: i64) -> CallReport {
        CallReport {
            members: members.iter().map(|m| m.to_string()).collect(),
            error_code,
            error_info: if error_code == 0 { String::new() } else { format!("info {error_code}") },
            attempts: 1,
            budget_answers: 0,
            at: Timestamp::UNIX_EPOCH,
        }
    }

    fn cond<'a>(status: &'a GroupBanPolicyStatus, kind: &str) -> (&'a str, &'a str) {
        let c = find_condition(status, kind).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    fn run(spec: &GroupBanPolicySpec, reports: &[CallReport], halt: Option<&Halt>) -> GroupBanPolicyStatus {
        let mut status = prepare(GroupBanPolicyStatus::default(), spec, Some(OWNER));
        let desired = DesiredMembers::of(spec);
        for r in reports {
            record_call(&mut status, &desired, r);
        }
        conclude(status, view(&desired, halt, &BTreeSet::new()), Timestamp::UNIX_EPOCH).0
    }

    #[test]
    fn all_confirmed_is_ready_and_idle() {
        let spec = spec(&["a", "b"]);
        let status = run(&spec, &[report(&["a", "b"], 0)], None);
        assert_eq!(status.unbanned_members, ["a", "b"]);
        assert_eq!(cond(&status, "Ready"), ("True", "AllMembersUnbanned"));
        assert_eq!(cond(&status, "Reconciling"), ("False", "Idle"));
        assert_eq!(cond(&status, "Stalled"), ("False", "NotStalled"));
        assert_eq!((status.last_error_code, status.observed_generation), (Some(0), Some(3)));
        assert_eq!(status.summary, Some(Summary { desired: 2, unbanned: 2, pending: 0, failed: 0 }));
    }

    #[test]
    fn group_not_found_stalls_with_its_reason_and_code() {
        let spec = spec(&["a"]);
        let halt = Halt::Terminal { error_code: 10010, error_info: "group room does not exist".into() };
        let status = run(&spec, &[report(&["a"], 10010)], Some(&halt));
        assert_eq!(cond(&status, "Stalled"), ("True", "GroupNotFound"));
        assert_eq!(cond(&status, "Ready"), ("False", "GroupNotFound"));
        assert_eq!(cond(&status, "Reconciling"), ("False", "GroupNotFound"));
        let message = &find_condition(&status, "Stalled").unwrap().message;
        assert!(message.contains("ErrorCode 10010") && message.contains("does not exist"), "{message}");
    }

    /// A status that arrives with more failure entries than are kept (an
    /// older writer, a hand edit) is cut to the limit, and every dropped
    /// entry is counted.
    #[test]
    fn an_oversized_failure_list_is_cut_and_counted() {
        let spec = spec(&["a", "x"]);
        let entry = |i: usize| FailureRecord {
            members: vec![format!("old{i}")],
            error_code: 10002,
            error_info: String::new(),
            attempts: 1,
            last_attempt_time: Time(Timestamp::UNIX_EPOCH),
        };
        let mut status =
            GroupBanPolicyStatus { failures: (0..MAX_FAILURE_ENTRIES + 2).map(entry).collect(), ..Default::default() };
        record_call(&mut status, &DesiredMembers::of(&spec), &report(&["x"], 10002));
        assert_eq!(status.failures.len(), MAX_FAILURE_ENTRIES);
        assert_eq!(status.failures_truncated, Some(3));
    }

    /// A call that got no IM answer is reported as the README documents it:
    /// `lastErrorCode: -1`, reason TransportError, and retried.
    #[test]
    fn a_call_without_an_answer_reads_as_minus_one_and_transport_error() {
        let spec = spec(&["a"]);
        let status = run(&spec, &[report(&["a"], NO_IM_ANSWER)], None);
        assert_eq!(status.last_error_code, Some(-1));
        assert_eq!(cond(&status, "Ready"), ("False", "TransportError"));
        assert_eq!(cond(&status, "Reconciling"), ("True", "RetryPending"));
    }

    #[test]
    fn exhausted_retries_keep_reconciling_not_stalled() {
        let spec = spec(&["a", "b"]);
        let status = run(&spec, &[report(&["a"], 0), report(&["b"], 10002)], None);
        assert_eq!(cond(&status, "Reconciling"), ("True", "RetryPending"));
        assert_eq!(cond(&status, "Stalled"), ("False", "NotStalled"));
        assert_eq!(cond(&status, "Ready"), ("False", "InternalError"));
        assert_eq!(status.summary, Some(Summary { desired: 2, unbanned: 1, pending: 0, failed: 1 }));
    }

    #[test]
    fn a_later_success_clears_the_failure_entry() {
        let spec = spec(&["a"]);
        let status = run(&spec, &[report(&["a"], 10002), report(&["a"], 0)], None);
        assert!(status.failures.is_empty());
        assert_eq!(cond(&status, "Ready").0, "True");
    }

    #[test]
    fn missing_credentials_stall_without_calls() {
        let spec = spec(&["a"]);
        let halt = Halt::Config(CredentialsError::SecretNotFound { secret: "default/x".into() }.into());
        let status = run(&spec, &[], Some(&halt));
        assert_eq!(cond(&status, "Stalled"), ("True", "CredentialsInvalid"));
        assert_eq!(status.last_error_code, None);
    }

    #[test]
    fn a_changed_group_starts_the_record_over() {
        let mut status = run(&spec(&["a"]), &[report(&["a"], 0)], None);
        let mut moved = spec(&["a"]);
        moved.group_id = "other".into();
        status = prepare(status, &moved, Some(OWNER));
        assert!(status.unbanned_members.is_empty());
    }

    /// Members unbanned through one app or endpoint (the simulator, say)
    /// say nothing about another with the same group ID.
    #[test]
    fn a_changed_app_or_endpoint_starts_the_record_over() {
        let spec = spec(&["a"]);
        let recorded = run(&spec, &[report(&["a"], 0)], None);
        let other_app = RecordOwner { sdkappid: 1400000001, ..OWNER };
        assert!(prepare(recorded.clone(), &spec, Some(other_app)).unbanned_members.is_empty());
        let other_endpoint = RecordOwner { endpoint: "http://127.0.0.1:8080", ..OWNER };
        assert!(prepare(recorded.clone(), &spec, Some(other_endpoint)).unbanned_members.is_empty());
        assert_eq!(prepare(recorded.clone(), &spec, Some(OWNER)).unbanned_members, ["a"]);
        // Unusable credentials: no call is made, the record stays.
        assert_eq!(prepare(recorded, &spec, None).unbanned_members, ["a"]);
    }

    #[test]
    fn a_record_of_unknown_origin_starts_over() {
        let spec = spec(&["a"]);
        let orphan = GroupBanPolicyStatus { unbanned_members: vec!["a".into()], ..Default::default() };
        assert!(prepare(orphan, &spec, Some(OWNER)).unbanned_members.is_empty());
    }

    /// Broken credentials do not matter when every member is unbanned
    /// already: Ready, not Stalled (kstatus would read both as Failed).
    #[test]
    fn unusable_credentials_with_nothing_left_to_do_is_ready_not_stalled() {
        let spec = spec(&["a"]);
        let done = run(&spec, &[report(&["a"], 0)], None);
        let halt = Halt::Config(CredentialsError::SecretNotFound { secret: "default/gone".into() }.into());
        let (status, decision) =
            conclude(done, view(&DesiredMembers::of(&spec), Some(&halt), &BTreeSet::new()), Timestamp::UNIX_EPOCH);
        assert_eq!(decision, Decision::Idle);
        assert_eq!(cond(&status, "Ready"), ("True", "AllMembersUnbanned"));
        assert_eq!(cond(&status, "Stalled"), ("False", "NotStalled"));
    }

    /// 30 failed batches leave 20 entries, but all 600 members count as failed.
    #[test]
    fn failed_count_includes_members_beyond_the_kept_entries() {
        let names: Vec<String> = (0..600).map(|i| format!("m{i:03}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let spec = spec(&refs);
        let mut status = prepare(GroupBanPolicyStatus::default(), &spec, Some(OWNER));
        let mut failed = BTreeSet::new();
        for batch in names.chunks(20) {
            let r = CallReport {
                members: batch.to_vec(),
                error_code: 10002,
                error_info: String::new(),
                budget_answers: 0,
                attempts: 8,
                at: Timestamp::UNIX_EPOCH,
            };
            record_call(&mut status, &DesiredMembers::of(&spec), &r);
            failed.extend(batch.iter().cloned());
        }
        let (status, decision) =
            conclude(status, view(&DesiredMembers::of(&spec), None, &failed), Timestamp::UNIX_EPOCH);
        assert_eq!(decision, Decision::Retry);
        assert_eq!(status.failures.len(), 20);
        assert_eq!(status.failures_truncated, Some(10));
        assert_eq!(status.summary, Some(Summary { desired: 600, unbanned: 0, pending: 0, failed: 600 }));
        assert_eq!(cond(&status, "Reconciling"), ("True", "RetryPending"));
        // The next pass counts its own left-out entries, not on top of these.
        assert_eq!(prepare(status, &spec, Some(OWNER)).failures_truncated, None);
    }

    #[test]
    fn suspended_says_so_in_ready_and_reconciling() {
        let spec = spec(&["a"]);
        let status = run(&spec, &[], Some(&Halt::Suspended));
        assert_eq!(cond(&status, "Ready"), ("False", "Suspended"));
        assert_eq!(cond(&status, "Reconciling"), ("False", "Suspended"));
        assert_eq!(cond(&status, "Stalled"), ("False", "NotStalled"));
    }

    #[test]
    fn transition_time_holds_while_the_status_holds() {
        let spec = spec(&["a"]);
        let first = run(&spec, &[report(&["a"], 0)], None);
        let no_failures = BTreeSet::new();
        let later = conclude(
            first.clone(),
            view(&DesiredMembers::of(&spec), None, &no_failures),
            Timestamp::from_second(1000).unwrap(),
        )
        .0;
        assert_eq!(find_condition(&later, "Ready"), find_condition(&first, "Ready"));
        assert!(!differs_beyond_timestamps(&first, &later));
    }

    /// One batch refused for good (10004 concerns only its members) while
    /// another failed for a passing reason: the policy is Stalled for the
    /// first and still Reconciling for the second, and the driver retries.
    #[test]
    fn a_terminal_batch_beside_a_retryable_one_stalls_and_keeps_retrying() {
        let spec = spec(&["a", "b"]);
        let status = run(&spec, &[report(&["a"], 10004), report(&["b"], 10002)], None);
        assert_eq!(cond(&status, "Stalled"), ("True", codes::lookup(10004).reason));
        assert_eq!(cond(&status, "Reconciling"), ("True", "RetryPending"));
        let (_, decision) =
            conclude(status, view(&DesiredMembers::of(&spec), None, &BTreeSet::new()), Timestamp::UNIX_EPOCH);
        assert_eq!(decision, Decision::Retry);
    }

    /// Only terminal answers left: nothing to retry, a person must act.
    #[test]
    fn only_terminal_failures_left_is_stalled_and_not_retried() {
        let spec = spec(&["a", "b"]);
        let status = run(&spec, &[report(&["a"], 0), report(&["b"], 10004)], None);
        assert_eq!(cond(&status, "Reconciling"), ("False", "Idle"));
        assert_eq!(cond(&status, "Stalled").0, "True");
        let (_, decision) =
            conclude(status, view(&DesiredMembers::of(&spec), None, &BTreeSet::new()), Timestamp::UNIX_EPOCH);
        assert_eq!(decision, Decision::Stalled);
    }

    #[test]
    fn decisions_follow_the_conditions() {
        let spec = spec(&["a"]);
        let decide = |reports: &[CallReport], halt: Option<&Halt>| {
            let mut status = prepare(GroupBanPolicyStatus::default(), &spec, Some(OWNER));
            for r in reports {
                record_call(&mut status, &DesiredMembers::of(&spec), r);
            }
            conclude(status, view(&DesiredMembers::of(&spec), halt, &BTreeSet::new()), Timestamp::UNIX_EPOCH).1
        };
        assert_eq!(decide(&[report(&["a"], 0)], None), Decision::Idle);
        assert_eq!(decide(&[], Some(&Halt::Suspended)), Decision::Suspended);
        assert_eq!(decide(&[], None), Decision::Retry, "members pending, no halt");
        assert_eq!(decide(&[report(&["a"], -1)], None), Decision::Retry);
        let gone = Halt::Terminal { error_code: 10010, error_info: String::new() };
        assert_eq!(decide(&[report(&["a"], 10010)], Some(&gone)), Decision::Stalled);
        let bad_spec = Halt::Config(SpecError("spec.groupId is bad".into()).into());
        assert_eq!(decide(&[], Some(&bad_spec)), Decision::Stalled);
    }

    /// lastTransitionTime moves when, and only when, a condition's status
    /// flips: kstatus and people read it as "since when".
    #[test]
    fn transition_time_moves_when_the_status_flips() {
        let spec = spec(&["a"]);
        let pending = run(&spec, &[], None);
        let later = Timestamp::from_second(1000).unwrap();
        let mut status = pending.clone();
        record_call(&mut status, &DesiredMembers::of(&spec), &report(&["a"], 0));
        let (done, _) = conclude(status, view(&DesiredMembers::of(&spec), None, &BTreeSet::new()), later);
        let ready = find_condition(&done, "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.last_transition_time.0), ("True", later));
        // Stalled stayed False: its time holds.
        assert_eq!(
            find_condition(&done, "Stalled").unwrap().last_transition_time,
            find_condition(&pending, "Stalled").unwrap().last_transition_time
        );
    }

    #[test]
    fn statuses_that_differ_in_more_than_time_are_told_apart() {
        let spec = spec(&["a", "b"]);
        let base = run(&spec, &[report(&["a"], 0)], None);
        let mut more = base.clone();
        more.unbanned_members.push("b".into());
        assert!(differs_beyond_timestamps(&base, &more));
        let mut reason = base.clone();
        reason.conditions[0].reason = "Other".into();
        assert!(differs_beyond_timestamps(&base, &reason));
        let mut code = base.clone();
        code.last_error_code = Some(10002);
        assert!(differs_beyond_timestamps(&base, &code));
        let mut times = base.clone();
        times.last_sync_time = Some(Time(Timestamp::from_second(99).unwrap()));
        times.conditions[1].last_transition_time = Time(Timestamp::from_second(99).unwrap());
        assert!(!differs_beyond_timestamps(&base, &times));
    }

    /// An unreadable spec: Stalled naming the field; the record is kept.
    #[test]
    fn an_unreadable_spec_stalls_and_keeps_the_record() {
        let mut status = run(&spec(&["a", "b"]), &[report(&["a"], 0)], None);
        mark_unreadable(&mut status, "spec.groupId: invalid type: integer `42`", Some(7), Timestamp::UNIX_EPOCH);
        assert_eq!(cond(&status, "Ready"), ("False", reasons::SPEC_INVALID));
        assert_eq!(cond(&status, "Stalled"), ("True", reasons::SPEC_INVALID));
        assert_eq!(cond(&status, "Reconciling"), ("False", reasons::SPEC_INVALID));
        assert!(find_condition(&status, "Ready").unwrap().message.contains("spec.groupId"));
        assert_eq!(
            (status.unbanned_members.as_slice(), status.observed_generation),
            (["a".to_string()].as_slice(), Some(7))
        );
    }

    fn calls(succeeded: usize) -> PassCalls {
        PassCalls { succeeded, ..PassCalls::default() }
    }

    /// Before a call's final outcome, its latest retried attempt says why
    /// the policy is not Ready yet (a refused connection, a 60007); a
    /// final failure, once in, takes over.
    #[test]
    fn a_retried_attempt_shows_its_cause_in_ready() {
        let spec = spec(&["a", "b"]);
        let desired = DesiredMembers::of(&spec);
        let none = BTreeSet::new();
        let cause = RetryCause { error_code: NO_IM_ANSWER, error_info: "connection refused".into() };
        let mut status = prepare(GroupBanPolicyStatus::default(), &spec, Some(OWNER));
        let decision = refresh(
            &mut status,
            PassView { retrying: Some(&cause), ..view(&desired, None, &none) },
            Timestamp::UNIX_EPOCH,
        );
        let ready = find_condition(&status, "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", TRANSPORT_REASON));
        assert!(
            ready.message.contains("2 pending, retrying after") && ready.message.contains("connection refused"),
            "{}",
            ready.message
        );
        assert_eq!(cond(&status, "Reconciling"), ("True", reasons::UNBAN_PENDING));
        assert_eq!(decision, Decision::Retry);

        let limited = RetryCause { error_code: 60007, error_info: "too many requests".into() };
        refresh(
            &mut status,
            PassView { retrying: Some(&limited), ..view(&desired, None, &none) },
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(cond(&status, "Ready"), ("False", "RateLimited"));

        // A failure recorded before (this pass's or an earlier one's) does
        // not hide what goes wrong now; it is counted in the message.
        record_call(&mut status, &desired, &report(&["a"], 10002));
        refresh(&mut status, PassView { retrying: Some(&cause), ..view(&desired, None, &none) }, Timestamp::UNIX_EPOCH);
        let ready = find_condition(&status, "Ready").unwrap();
        assert_eq!(ready.reason, TRANSPORT_REASON);
        assert!(ready.message.contains("1 failed, 1 pending, retrying after"), "{}", ready.message);
        // With nothing being retried, the failure is the cause.
        refresh(&mut status, view(&desired, None, &none), Timestamp::UNIX_EPOCH);
        assert_eq!(cond(&status, "Ready"), ("False", codes::lookup(10002).reason));
    }

    /// The Secret could not be read for a passing cause: not Ready, saying
    /// why, retried (Reconciling) and not Stalled; a policy with nothing
    /// left to do stays Ready.
    #[test]
    fn an_unavailable_secret_is_not_ready_and_retried_not_stalled() {
        let halt = Halt::Unavailable {
            reason: reasons::CREDENTIALS_UNAVAILABLE,
            message: "cannot read Secret ns/s: 500".into(),
        };
        let spec = spec(&["a"]);
        let status = run(&spec, &[], Some(&halt));
        let ready = find_condition(&status, "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", reasons::CREDENTIALS_UNAVAILABLE));
        assert!(ready.message.contains("cannot read Secret ns/s: 500"), "{}", ready.message);
        assert_eq!(cond(&status, "Reconciling"), ("True", reasons::RETRY_PENDING));
        assert_eq!(cond(&status, "Stalled"), ("False", reasons::NOT_STALLED));
        let desired = DesiredMembers::of(&spec);
        assert_eq!(
            refresh(&mut status.clone(), view(&desired, Some(&halt), &BTreeSet::new()), Timestamp::UNIX_EPOCH),
            Decision::Retry
        );

        let done = run(&spec, &[report(&["a"], 0)], Some(&halt));
        assert_eq!(cond(&done, "Ready"), ("True", reasons::ALL_MEMBERS_UNBANNED));
    }

    /// A pass that met the budget spent, while the app drew many such
    /// answers lately, says so; a pass that met none, or an app that drew
    /// only an episode, does not.
    #[test]
    fn a_shared_budget_makes_a_notice() {
        let status = run(&spec(&["a"]), &[report(&["a"], 0)], None);
        let met =
            |answers, lately| PassCalls { succeeded: 1, budget_answers: answers, app_budget_answers_lately: lately };
        assert_eq!(notices(&status, &status, met(1, CONTENDED_BUDGET_ANSWERS - 1)), []);
        assert_eq!(notices(&status, &status, met(0, 100)), []);
        assert_eq!(
            notices(&status, &status, met(1, CONTENDED_BUDGET_ANSWERS)),
            [Notice::BudgetShared { answers: 1, app_answers_lately: CONTENDED_BUDGET_ANSWERS }]
        );
    }

    #[test]
    fn newly_unbanned_members_make_one_notice_with_the_calls() {
        let spec = spec(&["a", "b", "c"]);
        let before = run(&spec, &[report(&["a"], 0)], None);
        let after = run(&spec, &[report(&["a"], 0), report(&["b", "c"], 0)], None);
        assert_eq!(notices(&before, &after, calls(1)), [Notice::Unbanned { members: 2, calls: 1 }]);
        assert_eq!(notices(&after, &after, calls(0)), []);
    }

    /// A Warning for a new stall, none for the same stall seen again (the
    /// slow re-check), another for a different cause.
    #[test]
    fn a_stall_is_noticed_once_per_cause() {
        let spec = spec(&["a"]);
        let pending = run(&spec, &[], None);
        let gone = Halt::Terminal { error_code: 10010, error_info: "no such group".into() };
        let stalled = run(&spec, &[report(&["a"], 10010)], Some(&gone));
        let noticed = notices(&pending, &stalled, calls(0));
        assert!(
            matches!(&noticed[..], [Notice::Stalled { reason, message }] if reason == "GroupNotFound" && message.contains("10010") && message.contains("no such group")),
            "{noticed:?}"
        );
        assert_eq!(notices(&stalled, &stalled, calls(0)), []);
        let bad_key = Halt::Terminal { error_code: 70009, error_info: String::new() };
        let other = run(&spec, &[report(&["a"], 70009)], Some(&bad_key));
        assert!(matches!(&notices(&stalled, &other, calls(0))[..], [Notice::Stalled { .. }]));
        // The same reason with a different ErrorInfo is news too.
        let renamed = Halt::Terminal { error_code: 10010, error_info: "group was dissolved".into() };
        let again = run(&spec, &[report(&["a"], 10010)], Some(&renamed));
        assert!(
            matches!(&notices(&stalled, &again, calls(0))[..], [Notice::Stalled { .. }]),
            "{stalled:?} vs {again:?}"
        );
    }

    /// Members neither confirmed nor failed (a pass stopped early) keep the
    /// policy Reconciling, saying how many are pending.
    #[test]
    fn members_not_yet_called_are_pending_and_reconciling() {
        let status = run(&spec(&["a", "b", "c"]), &[report(&["a"], 0)], None);
        assert_eq!(cond(&status, "Reconciling"), ("True", "UnbanPending"));
        assert_eq!(status.summary.as_ref().map(|s| s.pending), Some(2));
    }

    /// Failure entries follow the spec: a member removed from it leaves its
    /// entry, and an entry left with no member goes.
    #[test]
    fn prepare_trims_failure_entries_to_desired_members() {
        let spec_ab = spec(&["a", "b", "c"]);
        let failed = run(&spec_ab, &[report(&["a", "b"], 10002), report(&["c"], 10002)], None);
        let only_b = spec(&["b"]);
        let trimmed = prepare(failed, &only_b, Some(OWNER));
        assert_eq!(trimmed.failures.len(), 1);
        assert_eq!(trimmed.failures[0].members, ["b"]);
    }

    /// failuresTruncated counts exactly the entries left out, and goes
    /// when no failure is left.
    #[test]
    fn failures_truncated_counts_each_left_out_entry() {
        let names: Vec<String> = (0..22).map(|i| format!("m{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let spec = spec(&refs);
        let mut status = prepare(GroupBanPolicyStatus::default(), &spec, Some(OWNER));
        for (i, name) in names.iter().enumerate() {
            record_call(&mut status, &DesiredMembers::of(&spec), &report(&[name], 10002));
            let expected = i.checked_sub(MAX_FAILURE_ENTRIES - 1).filter(|n| *n > 0).map(|n| n as u32);
            assert_eq!(status.failures_truncated, expected, "after {} failures", i + 1);
        }
        for chunk in names.chunks(20) {
            let members: Vec<&str> = chunk.iter().map(String::as_str).collect();
            record_call(&mut status, &DesiredMembers::of(&spec), &report(&members, 0));
        }
        assert!(status.failures.is_empty());
        assert_eq!(status.failures_truncated, None);
    }

    proptest! {
        /// The summary counts distinct desired members, whatever order and
        /// repetitions a record (one a person wrote, say) comes in: the
        /// same counts sets give.
        #[test]
        fn summary_counts_distinct_members_in_any_order(
            desired in proptest::collection::vec("[a-f]", 0..8),
            recorded in proptest::collection::vec("[a-h]", 0..10),
            failed_entries in proptest::collection::vec(proptest::collection::vec("[a-h]", 1..4), 0..4),
            failed_in_pass in proptest::collection::btree_set("[a-h]", 0..4),
        ) {
            let spec = GroupBanPolicySpec { unbanned_members: desired.clone(), ..spec(&[]) };
            let status = GroupBanPolicyStatus {
                unbanned_members: recorded.clone(),
                failures: failed_entries
                    .iter()
                    .map(|members| FailureRecord {
                        members: members.clone(),
                        error_code: 10002,
                        error_info: String::new(),
                        attempts: 1,
                        last_attempt_time: Time(Timestamp::UNIX_EPOCH),
                    })
                    .collect(),
                ..Default::default()
            };
            let wanted: BTreeSet<&String> = desired.iter().collect();
            let unbanned: BTreeSet<&String> = recorded.iter().filter(|m| wanted.contains(m)).collect();
            let failed: BTreeSet<&String> = failed_entries
                .iter()
                .flatten()
                .chain(&failed_in_pass)
                .filter(|m| wanted.contains(m) && !unbanned.contains(m))
                .collect();
            let summary = summarize(&status, &DesiredMembers::of(&spec), &failed_in_pass);
            prop_assert_eq!(
                summary,
                Summary {
                    desired: wanted.len() as u32,
                    unbanned: unbanned.len() as u32,
                    failed: failed.len() as u32,
                    pending: (wanted.len() - unbanned.len() - failed.len()) as u32,
                }
            );
        }

        /// Whatever the answers, a member is recorded only if a call that
        /// carried it was answered 0 and it is still desired; failures stay
        /// within 20 entries; the summary adds up.
        #[test]
        fn fold_never_records_an_unconfirmed_member(
            desired in proptest::collection::btree_set("[a-f]", 0..6),
            calls in proptest::collection::vec(
                (proptest::collection::btree_set("[a-h]", 1..4), prop_oneof![Just(0i64), Just(10002), Just(10004), Just(-1)]),
                0..40,
            ),
        ) {
            let spec = GroupBanPolicySpec {
                group_id: "g".into(),
                unbanned_members: desired.iter().cloned().collect(),
                credentials_secret_ref: None,
                suspend: None,
                drift_check_interval: None,
            };
            let mut status = prepare(GroupBanPolicyStatus::default(), &spec, Some(OWNER));
            let mut confirmed = BTreeSet::new();
            for (members, code) in &calls {
                let r = CallReport { members: members.iter().cloned().collect(), error_code: *code, error_info: String::new(), attempts: 1, budget_answers: 0, at: Timestamp::UNIX_EPOCH };
                record_call(&mut status, &DesiredMembers::of(&spec), &r);
                if *code == 0 { confirmed.extend(members.iter().cloned()); }
                for m in &status.unbanned_members {
                    prop_assert!(confirmed.contains(m) && desired.contains(m));
                }
                prop_assert!(status.failures.len() <= MAX_FAILURE_ENTRIES);
            }
            let (status, decision) = conclude(status, view(&DesiredMembers::of(&spec), None, &BTreeSet::new()), Timestamp::UNIX_EPOCH);
            let s = status.summary.unwrap();
            prop_assert_eq!(decision == Decision::Idle, s.unbanned == s.desired);
            prop_assert_eq!(s.unbanned + s.pending + s.failed, s.desired);
            prop_assert_eq!(s.unbanned as usize, desired.iter().filter(|m| confirmed.contains(*m)).count());
            prop_assert!(status.unbanned_members.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
            prop_assert_eq!(find_condition(&status, "Ready").unwrap().status == "True", s.unbanned == s.desired);
        }
    }
}
