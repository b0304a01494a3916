//! The member and policy gauges, counted from the leader's cache of
//! policies just before each scrape.

use std::sync::Arc;

use crate::crd::{GroupBanPolicy, condition_types};
use crate::engine::conditions::find_condition;
use crate::metrics::{ConditionLabels, Metrics, StateLabels};

/// Sets `groupban_members{state}` and `groupban_policies{condition}` from
/// `policies`. `groupban_policies{condition="Suspended"}` counts
/// `spec.suspend`.
pub fn count_policies(metrics: &Metrics, policies: &[Arc<GroupBanPolicy>]) {
    let (mut desired, mut unbanned, mut failed, mut suspended) = (0, 0, 0, 0);
    let conditions = [condition_types::READY, condition_types::RECONCILING, condition_types::STALLED];
    let mut true_counts = [0i64; 3];
    for policy in policies {
        desired += policy.spec.unbanned_members.len() as i64;
        suspended += i64::from(policy.spec.suspend == Some(true));
        let Some(status) = &policy.status else { continue };
        unbanned += status.unbanned_members.len() as i64;
        failed += status.summary.as_ref().map_or(0, |s| i64::from(s.failed));
        for (count, condition) in true_counts.iter_mut().zip(conditions) {
            if find_condition(status, condition).is_some_and(|c| c.status == "True") {
                *count += 1;
            }
        }
    }
    for (state, value) in [("desired", desired), ("unbanned", unbanned), ("failed", failed)] {
        metrics.members.get_or_create(&StateLabels { state }).set(value);
    }
    for (condition, value) in conditions.into_iter().zip(true_counts).chain([("Suspended", suspended)]) {
        metrics.policies.get_or_create(&ConditionLabels { condition }).set(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Health, render};

    /// Members by state and policies by condition, as a scrape shows them.
    #[test]
    fn policies_are_counted_by_condition_and_members_by_state() {
        let policy = |suspend: bool, status: serde_json::Value| -> Arc<GroupBanPolicy> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "groupban.dev/v1alpha1", "kind": "GroupBanPolicy",
                    "metadata": {"name": "p", "namespace": "team"},
                    "spec": {"groupId": "room", "unbannedMembers": ["a", "b", "c"], "suspend": suspend},
                    "status": status,
                }))
                .unwrap(),
            )
        };
        let ready = serde_json::json!({"unbannedMembers": ["a", "b", "c"], "conditions": [
            {"type": "Ready", "status": "True", "reason": "AllMembersUnbanned", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        let stalled = serde_json::json!({"unbannedMembers": ["a"], "summary": {"desired": 3, "unbanned": 1, "pending": 0, "failed": 2}, "conditions": [
            {"type": "Ready", "status": "False", "reason": "GroupNotFound", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Stalled", "status": "True", "reason": "GroupNotFound", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        let metrics = Metrics::new();
        count_policies(&metrics, &[policy(false, ready), policy(true, stalled)]);
        let text = render(&metrics, &Health::default());
        for expected in [
            "groupban_members{state=\"desired\"} 6",
            "groupban_members{state=\"unbanned\"} 4",
            "groupban_members{state=\"failed\"} 2",
            "groupban_policies{condition=\"Ready\"} 1",
            "groupban_policies{condition=\"Stalled\"} 1",
            "groupban_policies{condition=\"Reconciling\"} 0",
            "groupban_policies{condition=\"Suspended\"} 1",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
    }
}
