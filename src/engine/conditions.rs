//! Conditions (pure): a pass's facts into summary, Ready, Reconciling and
//! Stalled (kstatus's conventions), and, from the same facts, what the
//! driver does next, so the two can never disagree.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::credentials::CredentialsError;
use super::fold::{DesiredMembers, NO_IM_ANSWER, RetryCause, describe_answer, reason_of, summarize};
use crate::crd::{GroupBanPolicyStatus, SpecError, condition_types, reasons};
use crate::im::codes::{self, CodeClass};

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
            ConfigProblem::Credentials(CredentialsError::NotAllowed { .. }) => reasons::DEFAULT_CREDENTIALS_NOT_ALLOWED,
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

/// The condition of `kind`, if present.
pub fn find_condition<'a>(status: &'a GroupBanPolicyStatus, kind: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Summary;
    use crate::engine::changes::differs_beyond_timestamps;
    use crate::engine::fixtures::*;
    use crate::engine::fold::{CallReport, prepare, record_call};
    use crate::im::codes::TRANSPORT_REASON;

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
    fn missing_credentials_stall_without_calls() {
        let spec = spec(&["a"]);
        let halt = Halt::Config(CredentialsError::SecretNotFound { secret: "default/x".into() }.into());
        let status = run(&spec, &[], Some(&halt));
        assert_eq!(cond(&status, "Stalled"), ("True", "CredentialsInvalid"));
        assert_eq!(status.last_error_code, None);
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
        let bad_spec = Halt::Config(SpecError::GroupId(String::new()).into());
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

    /// Members neither confirmed nor failed (a pass stopped early) keep the
    /// policy Reconciling, saying how many are pending.
    #[test]
    fn members_not_yet_called_are_pending_and_reconciling() {
        let status = run(&spec(&["a", "b", "c"]), &[report(&["a"], 0)], None);
        assert_eq!(cond(&status, "Reconciling"), ("True", "UnbanPending"));
        assert_eq!(status.summary.as_ref().map(|s| s.pending), Some(2));
    }
}
