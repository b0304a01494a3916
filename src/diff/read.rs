//! The ban-list reads: each policy's group, page by page, a few policies
//! at a time, every page on get_group_ban_member's own limiter. Only the
//! members a policy names are kept (see [`BanComparison`]).

use futures::StreamExt;

use super::sources::DiffInput;
use crate::engine::ban_list::{BanComparison, MemberDiff};
use crate::engine::clients::ClientPool;
use crate::engine::fold::describe_answer;

/// Policies whose lists are read at once: the limiter bounds the rate,
/// this bounds what is held (one page and one policy's sets each).
pub const CONCURRENT_POLICIES: usize = 8;

/// Why a policy could not be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffFailure {
    #[error("invalid spec: {0}")]
    Spec(String),
    #[error("{0}")]
    Credentials(String),
    /// The gateway answered an error (the group is gone, say).
    #[error("ErrorCode {error_code}: {description}")]
    Answered { error_code: i64, description: String },
    #[error("no IM answer: {0}")]
    NoAnswer(String),
}

/// One policy's comparison.
#[derive(Debug, Clone)]
pub struct PolicyDiff {
    pub input: DiffInput,
    pub result: Result<MemberDiff, DiffFailure>,
}

/// Compares every input, in the inputs' order.
pub async fn compare_all(inputs: Vec<DiffInput>, pool: &ClientPool) -> Vec<PolicyDiff> {
    futures::stream::iter(inputs)
        .map(|input| async move {
            let result = compare(&input, pool).await;
            PolicyDiff { input, result }
        })
        .buffered(CONCURRENT_POLICIES)
        .collect()
        .await
}

async fn compare(input: &DiffInput, pool: &ClientPool) -> Result<MemberDiff, DiffFailure> {
    if let Some(error) = &input.spec_error {
        return Err(DiffFailure::Spec(error.clone()));
    }
    let target = input.target.as_ref().map_err(|e| DiffFailure::Credentials(e.to_string()))?;
    let client = pool.client_for(target);
    let mut comparison = BanComparison::new(&input.spec.unbanned_members, &input.recorded);
    let outcome = client
        .for_each_ban_page(&input.spec.group_id, |page| {
            comparison.see_page(page.into_iter().map(|banned| banned.member_account));
        })
        .await;
    match outcome.result {
        Ok((answer, ())) if answer.is_success() => Ok(comparison.finish()),
        Ok((answer, ())) => Err(DiffFailure::Answered {
            error_code: answer.error_code,
            description: describe_answer(answer.error_code, &answer.error_info),
        }),
        Err(error) => Err(DiffFailure::NoAnswer(error.to_string())),
    }
}
