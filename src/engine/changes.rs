//! Changes (pure): whether a status is worth writing, and what deserves
//! an Event, found by comparing a policy's status before and after a pass.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::conditions::find_condition;
use crate::crd::{GroupBanPolicyStatus, condition_types};

/// How many answers that the app's budget is spent (60007, 60011) the
/// process may draw in a minute, all its calls to the app together, before
/// they read as another client spending the same budget. Alone, the
/// limiter draws none against a gateway that counts as documented; where
/// one counts differently, an episode of a call or two, after which the
/// limiter widens its window. A second client at the same rate draws
/// several a second.
pub const CONTENDED_BUDGET_ANSWERS: usize = 5;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::conditions::Halt;
    use crate::engine::fixtures::*;

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

    fn calls(succeeded: usize) -> PassCalls {
        PassCalls { succeeded, ..PassCalls::default() }
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
}
