//! What `diff` prints and how it exits. The YAML and JSON shape is stable
//! (README, "groupban-operator diff"); the table is for people.
//!
//! Exit codes follow `kubectl diff`: 0 no difference, 1 differences found,
//! 2 when any policy could not be compared (the others are still shown).

use serde::Serialize;

use super::read::{DiffFailure, PolicyDiff};
use crate::cluster::table;

/// Members the table lists per line before it says how many more.
const MEMBERS_SHOWN: usize = 20;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub api_version: &'static str,
    pub kind: &'static str,
    /// True when any policy differs from its group's ban list.
    pub differences: bool,
    /// Policies that could not be compared.
    pub errors: usize,
    pub policies: Vec<PolicyReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    pub namespace: String,
    pub name: String,
    pub group_id: String,
    /// spec.suspend: the operator would not act on the differences.
    pub suspended: bool,
    /// Members in spec.unbannedMembers.
    pub desired: usize,
    /// Members recorded as unbanned (status, or the state file).
    pub recorded: usize,
    /// Entries on the group's ban list (absent when it was not read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub banned_total: Option<u64>,
    /// spec.driftCheckInterval: without one, the operator never notices
    /// `bannedAgain` members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_check_interval: Option<String>,
    /// Desired members not recorded as unbanned and still banned: what the
    /// next pass unbans.
    pub still_banned: Vec<String>,
    /// Desired members not banned: nothing to do.
    pub not_banned: Vec<String>,
    /// Members recorded as unbanned and banned again (drift): a pass does
    /// not call for them; the next drift check does.
    pub banned_again: Vec<String>,
    /// Why the policy could not be compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The IM ErrorCode behind `error`, when the gateway answered one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
}

impl Report {
    pub fn new(diffs: Vec<PolicyDiff>) -> Self {
        let policies: Vec<PolicyReport> = diffs.into_iter().map(PolicyReport::from).collect();
        let differences = policies.iter().any(|p| !p.still_banned.is_empty() || !p.banned_again.is_empty());
        let errors = policies.iter().filter(|p| p.error.is_some()).count();
        Self { api_version: "groupban.dev/v1alpha1", kind: "GroupBanPolicyDiff", differences, errors, policies }
    }

    /// 0 no difference, 1 differences, 2 an error (as `kubectl diff`).
    pub fn exit_code(&self) -> u8 {
        match (self.errors, self.differences) {
            (1.., _) => 2,
            (0, true) => 1,
            (0, false) => 0,
        }
    }

    /// A summary table, then a line for each difference and error.
    pub fn table(&self) -> String {
        let header = ["NAMESPACE", "NAME", "GROUP", "DESIRED", "STILL BANNED", "NOT BANNED", "BANNED AGAIN", "RESULT"];
        let mut rows = vec![header.map(String::from).to_vec()];
        let mut details = String::new();
        for policy in &self.policies {
            let object = format!("{}/{}", policy.namespace, policy.name);
            let result = match (&policy.error, policy.still_banned.is_empty() && policy.banned_again.is_empty()) {
                (Some(error), _) => {
                    details.push_str(&format!("{object}: error: {error}\n"));
                    "error"
                }
                (None, true) => "in sync",
                (None, false) => "differs",
            };
            let suspended = if policy.suspended { " (suspended: the operator will not act)" } else { "" };
            if !policy.still_banned.is_empty() {
                let members = listed(&policy.still_banned);
                details.push_str(&format!("{object}: still banned, the next pass unbans{suspended}: {members}\n"));
            }
            if !policy.banned_again.is_empty() {
                let members = listed(&policy.banned_again);
                let fix = match &policy.drift_check_interval {
                    Some(interval) => format!("the next drift check (every {interval}) unbans them"),
                    None => "no spec.driftCheckInterval, so the operator will not notice".to_string(),
                };
                details.push_str(&format!("{object}: recorded as unbanned but banned again ({fix}): {members}\n"));
            }
            let read = |n: usize| if policy.error.is_some() { "-".to_string() } else { n.to_string() };
            rows.push(vec![
                policy.namespace.clone(),
                policy.name.clone(),
                policy.group_id.clone(),
                policy.desired.to_string(),
                read(policy.still_banned.len()),
                read(policy.not_banned.len()),
                read(policy.banned_again.len()),
                result.to_string(),
            ]);
        }
        let mut text = table::render(&rows);
        if !details.is_empty() {
            text.push('\n');
            text.push_str(&details);
        }
        text
    }
}

/// Up to [`MEMBERS_SHOWN`] members, then how many more.
fn listed(members: &[String]) -> String {
    let shown = members.iter().take(MEMBERS_SHOWN).cloned().collect::<Vec<_>>().join(", ");
    match members.len().saturating_sub(MEMBERS_SHOWN) {
        0 => shown,
        more => format!("{shown} and {more} more (-o yaml lists all)"),
    }
}

impl From<PolicyDiff> for PolicyReport {
    fn from(diff: PolicyDiff) -> Self {
        let input = diff.input;
        let mut report = PolicyReport {
            namespace: input.namespace,
            name: input.name,
            group_id: input.spec.group_id.clone(),
            suspended: input.spec.suspend == Some(true),
            desired: input.spec.unbanned_members.len(),
            recorded: input.recorded.len(),
            drift_check_interval: input.spec.drift_check_interval.clone(),
            banned_total: None,
            still_banned: Vec::new(),
            not_banned: Vec::new(),
            banned_again: Vec::new(),
            error: None,
            error_code: None,
        };
        match diff.result {
            Ok(members) => {
                report.banned_total = Some(members.banned_total);
                report.still_banned = members.still_banned;
                report.not_banned = members.not_banned;
                report.banned_again = members.banned_again;
            }
            Err(failure) => {
                if let DiffFailure::Answered { error_code, .. } = &failure {
                    report.error_code = Some(*error_code);
                }
                report.error = Some(failure.to_string());
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::GroupBanPolicySpec;
    use crate::diff::sources::DiffInput;
    use crate::engine::ban_list::MemberDiff;
    use crate::engine::credentials::CredentialsError;

    fn diff(name: &str, result: Result<MemberDiff, DiffFailure>) -> PolicyDiff {
        let spec = GroupBanPolicySpec {
            group_id: "@TGS#a".into(),
            unbanned_members: vec!["a".into(), "b".into()],
            credentials_secret_ref: None,
            suspend: None,
            drift_check_interval: None,
        };
        let target = Err(CredentialsError::SecretNotFound { secret: "x".into() });
        let input =
            DiffInput { namespace: "ns".into(), name: name.into(), spec, recorded: vec![], spec_error: None, target };
        PolicyDiff { input, result }
    }

    fn members(still: &[&str], again: &[&str]) -> MemberDiff {
        MemberDiff {
            still_banned: still.iter().map(|s| s.to_string()).collect(),
            not_banned: vec![],
            banned_again: again.iter().map(|s| s.to_string()).collect(),
            banned_total: 9,
        }
    }

    #[test]
    fn the_exit_code_says_in_sync_differs_or_error() {
        assert_eq!(Report::new(vec![diff("p", Ok(members(&[], &[])))]).exit_code(), 0);
        assert_eq!(Report::new(vec![]).exit_code(), 0);
        assert_eq!(Report::new(vec![diff("p", Ok(members(&["a"], &[])))]).exit_code(), 1);
        assert_eq!(Report::new(vec![diff("p", Ok(members(&[], &["a"])))]).exit_code(), 1);
        let gone = Err(DiffFailure::Answered { error_code: 10010, description: "gone".into() });
        let report = Report::new(vec![diff("p", Ok(members(&["a"], &[]))), diff("q", gone)]);
        assert_eq!(report.exit_code(), 2, "an error outranks differences");
        assert_eq!(report.policies[1].error_code, Some(10010));
    }

    #[test]
    fn the_table_names_each_difference_and_cuts_long_lists() {
        let many: Vec<String> = (0..25).map(|i| format!("m{i:02}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let text = Report::new(vec![diff("p", Ok(members(&many, &["m01"])))]).table();
        assert!(text.contains("ns/p: still banned, the next pass unbans: m00, m01"), "{text}");
        assert!(text.contains("and 5 more (-o yaml lists all)"), "{text}");
        let drift = "ns/p: recorded as unbanned but banned again (no spec.driftCheckInterval, so the operator will not notice): m01";
        assert!(text.contains(drift), "{text}");
        assert!(text.lines().nth(1).unwrap().ends_with("differs"), "{text}");
    }
}
