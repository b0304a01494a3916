//! Drift: members the operator recorded as unbanned that someone banned
//! again behind its back. On `spec.driftCheckInterval` the ban list is read
//! (get_group_ban_member, paged, on its own call budget) and such members
//! leave the record, so the pass that follows unbans them again.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{DriftStatus, GroupBanPolicySpec, GroupBanPolicyStatus, drift_check_interval};
use crate::engine::ban_list::BanComparison;
use crate::engine::fold::describe_answer;
use crate::im::{ImClient, TransportError};

/// Why a drift check found nothing out: it is tried again one interval
/// after this attempt.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// The gateway answered with an error (the group is gone, say).
    #[error("{description}")]
    Answered { error_code: i64, description: String },
    /// No IM answer after the client's retries.
    #[error(transparent)]
    NoAnswer(#[from] TransportError),
    /// Abandoned: a ban-list read has no effect worth waiting for.
    #[error("shutting down")]
    ShuttingDown,
}

impl DriftError {
    /// A bounded label for logs.
    pub fn category(&self) -> &'static str {
        match self {
            DriftError::Answered { .. } => "Answered",
            DriftError::NoAnswer(_) => "NoAnswer",
            DriftError::ShuttingDown => "ShuttingDown",
        }
    }
}

/// How long until the next drift check is due, counted from the last
/// attempt (`None`: never): `None` when the policy has no (valid)
/// interval, zero when it is due now. A failed attempt counts, so a group
/// that is gone is not asked about more than once per interval.
pub fn next_check_in(spec: &GroupBanPolicySpec, last_attempt: Option<Timestamp>, now: Timestamp) -> Option<Duration> {
    let interval = drift_check_interval(spec.drift_check_interval.as_deref()?).ok()?;
    let Some(last_attempt) = last_attempt else {
        return Some(Duration::ZERO);
    };
    let since = now.duration_since(last_attempt);
    let since = Duration::try_from(since).unwrap_or(Duration::ZERO);
    Some(interval.saturating_sub(since))
}

/// Reads the ban list and takes members found banned again out of
/// `recorded`. Returns the drift status to report, or why the list could
/// not be read (the controller tries again one interval after this
/// attempt, not at the next pass: a failing gateway is not read again
/// every few seconds).
pub async fn check(
    client: &ImClient,
    group_id: &str,
    recorded: &mut GroupBanPolicyStatus,
    now: Timestamp,
) -> Result<DriftStatus, DriftError> {
    // Only recorded members found on the list are kept, page by page: a
    // long ban list is never held whole.
    let recorded_members = recorded.unbanned_members.clone();
    let mut comparison = BanComparison::new(&[], &recorded_members);
    let outcome = client
        .for_each_ban_page(group_id, |page| comparison.see_page(page.into_iter().map(|b| b.member_account)))
        .await;
    match outcome.result {
        Ok((answer, ())) if answer.is_success() => {}
        Ok((answer, ())) => {
            let description = describe_answer(answer.error_code, &answer.error_info);
            return Err(DriftError::Answered { error_code: answer.error_code, description });
        }
        Err(error) => return Err(error.into()),
    }
    let again: BTreeSet<String> = comparison.finish().banned_again.into_iter().collect();
    recorded.unbanned_members.retain(|member| !again.contains(member));
    Ok(DriftStatus { last_check_time: Time(now), corrected: u32::try_from(again.len()).unwrap_or(u32::MAX) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(interval: Option<&str>) -> GroupBanPolicySpec {
        GroupBanPolicySpec {
            group_id: "g".into(),
            unbanned_members: vec![],
            credentials_secret_ref: None,
            suspend: None,
            drift_check_interval: interval.map(str::to_string),
        }
    }

    #[test]
    fn a_check_is_due_after_the_interval_since_the_last() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        assert_eq!(next_check_in(&spec(None), None, now), None);
        assert_eq!(next_check_in(&spec(Some("bogus")), None, now), None);
        assert_eq!(next_check_in(&spec(Some("10m")), None, now), Some(Duration::ZERO), "never checked");
        let checked = Some(Timestamp::from_second(1_000_000 - 240).unwrap());
        assert_eq!(next_check_in(&spec(Some("10m")), checked, now), Some(Duration::from_secs(360)));
        assert_eq!(next_check_in(&spec(Some("1m")), checked, now), Some(Duration::ZERO));
    }
}
