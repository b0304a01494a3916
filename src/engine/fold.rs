//! Fold (pure): call outcomes into status. The one rule that matters
//! most: a member enters `unbannedMembers` only when a call that carried
//! it was answered ErrorCode 0.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{FailureRecord, GroupBanPolicySpec, GroupBanPolicyStatus, MAX_FAILURE_ENTRIES, Summary};
use crate::im::codes::{self, TRANSPORT_REASON};

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

pub(crate) fn reason_of(error_code: i64) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::conditions::{Decision, conclude, find_condition};
    use crate::engine::fixtures::*;
    use proptest::prelude::*;

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

    #[test]
    fn a_later_success_clears_the_failure_entry() {
        let spec = spec(&["a"]);
        let status = run(&spec, &[report(&["a"], 10002), report(&["a"], 0)], None);
        assert!(status.failures.is_empty());
        assert_eq!(cond(&status, "Ready").0, "True");
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
