//! Execute: every planned call of every policy, concurrently, bounded only
//! by each app's shared rate limiter.
//!
//! Calls are started round-robin across policies, so a 5,000-member policy
//! does not keep a 20-member one waiting. A terminal answer that concerns
//! the whole group or the credentials stops the policy's remaining calls:
//! those waiting for the limiter or a backoff give up (they have used no
//! budget); a request already sent is always allowed to finish, so no
//! answer that may have taken effect is dropped. Without the stop, the
//! same answer would come back 250 times.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::status::{CallReport, NO_IM_ANSWER};
use crate::im::ImClient;
use crate::im::codes::{self, CodeClass, Reach};

/// The planned calls of one policy.
pub struct PolicyJob {
    /// Index of the policy in the pass.
    pub policy: usize,
    pub group_id: String,
    pub client: Arc<ImClient>,
    pub batches: Vec<Vec<String>>,
}

/// True when an answer stops every other call of the policy.
pub fn halts_policy(error_code: i64) -> bool {
    if error_code == 0 || error_code == NO_IM_ANSWER {
        return false;
    }
    let info = codes::lookup(error_code);
    info.reach == Reach::Policy && matches!(info.class, CodeClass::Terminal | CodeClass::SignatureExpired)
}

/// Runs the jobs; sends each call's final outcome to `reports` as it lands.
pub async fn execute(jobs: Vec<PolicyJob>, reports: mpsc::UnboundedSender<(usize, CallReport)>) {
    let mut calls = JoinSet::new();
    let stops: Vec<Arc<watch::Sender<bool>>> = jobs.iter().map(|_| Arc::new(watch::Sender::new(false))).collect();
    let rounds = jobs.iter().map(|job| job.batches.len()).max().unwrap_or(0);
    for round in 0..rounds {
        for (job, stop) in jobs.iter().zip(&stops) {
            let Some(batch) = job.batches.get(round) else {
                continue;
            };
            let (client, group_id, batch) = (job.client.clone(), job.group_id.clone(), batch.clone());
            let (stop, reports, policy) = (stop.clone(), reports.clone(), job.policy);
            calls.spawn(async move {
                let Some(outcome) = client.unban_group_member_until(&group_id, &batch, stop.subscribe()).await else {
                    return; // stopped before its first request
                };
                let (error_code, error_info) = match outcome.result {
                    Ok((answer, ())) => (answer.error_code, answer.error_info),
                    Err(error) => (NO_IM_ANSWER, error.to_string()),
                };
                if halts_policy(error_code) {
                    stop.send_replace(true);
                }
                let report = CallReport {
                    members: batch,
                    error_code,
                    error_info,
                    attempts: outcome.attempts,
                    at: Timestamp::now(),
                };
                let _ = reports.send((policy, report));
            });
        }
    }
    drop(reports);
    while calls.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_and_credential_faults_halt_the_policy_member_faults_do_not() {
        for code in [10007, 10010, 10015, 60006, 70001, 70009] {
            assert!(halts_policy(code), "{code}");
        }
        for code in [0, -1, 10002, 10004, 10005, 60007, 99999] {
            assert!(!halts_policy(code), "{code}");
        }
    }
}
