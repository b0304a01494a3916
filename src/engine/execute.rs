//! Execute: every planned call of every policy, concurrently, bounded only
//! by each app's shared rate limiter.
//!
//! Fairness: each policy keeps at most [`LANE_DEPTH`] calls queued at its
//! app's limiter at a time, and the limiter serves its queue in arrival
//! order. A 5,000-member policy therefore holds two places in the queue,
//! not 250, and a 20-member policy that arrives a moment later (in this
//! pass or another one running beside it) waits for a few calls, not all.
//!
//! A terminal answer that concerns the whole group or the credentials stops
//! the policy's remaining calls: those waiting for the limiter or a backoff
//! give up (they have used no budget); a request already sent is always
//! allowed to finish, so no answer that may have taken effect is dropped.
//! Without the stop, the same answer would come back 250 times. A shutdown
//! stops every policy the same way.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::fold::{CallReport, NO_IM_ANSWER, RetryCause};
use crate::im::client::RetryNotice;
use crate::im::codes::{self, CodeClass, Reach};
use crate::im::{CallControl, ImClient};

/// Calls of one policy that may wait at the limiter at once. Two keep the
/// limiter busy (one is granted while the next waits) at any call rate.
pub const LANE_DEPTH: usize = 2;

/// The planned calls of one policy.
pub struct PolicyJob {
    /// Index of the policy in the pass.
    pub policy: usize,
    pub group_id: String,
    pub client: Arc<ImClient>,
    pub batches: Vec<Vec<String>>,
}

/// What a call tells the pass: an attempt that is being retried, or the
/// call's final outcome (exactly one per call that made an attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    Retrying(RetryCause),
    Done(CallReport),
}

/// True when an answer stops every other call of the policy.
pub fn halts_policy(error_code: i64) -> bool {
    // 0 is a success and NO_IM_ANSWER (no answer at all) an unknown code in
    // the table: neither is terminal, so neither needs a case of its own.
    let info = codes::lookup(error_code);
    info.reach == Reach::Policy && matches!(info.class, CodeClass::Terminal | CodeClass::SignatureExpired)
}

/// Runs the jobs; sends each retried attempt and each call's final outcome
/// to `reports` as it happens. Returns when every call has ended. Dropping
/// it aborts the calls.
pub async fn execute(
    jobs: Vec<PolicyJob>,
    reports: mpsc::UnboundedSender<(usize, CallEvent)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut calls = JoinSet::new();
    // A pass that begins after the shutdown signal starts nothing.
    let already_stopped = *shutdown.borrow();
    let stops: Vec<Arc<watch::Sender<bool>>> =
        jobs.iter().map(|_| Arc::new(watch::Sender::new(already_stopped))).collect();
    let lanes: Vec<Arc<Semaphore>> = jobs.iter().map(|_| Arc::new(Semaphore::new(LANE_DEPTH))).collect();
    let rounds = jobs.iter().map(|job| job.batches.len()).max().unwrap_or(0);
    for round in 0..rounds {
        for ((job, stop), lane) in jobs.iter().zip(&stops).zip(&lanes) {
            let Some(batch) = job.batches.get(round) else {
                continue;
            };
            let (client, group_id, batch) = (job.client.clone(), job.group_id.clone(), batch.clone());
            let (stop, lane, reports, policy) = (stop.clone(), lane.clone(), reports.clone(), job.policy);
            calls.spawn(async move {
                let on_retry = |notice: &RetryNotice| {
                    let cause = RetryCause {
                        error_code: notice.error_code.unwrap_or(NO_IM_ANSWER),
                        error_info: notice.detail.clone(),
                    };
                    let _ = reports.send((policy, CallEvent::Retrying(cause)));
                };
                let control =
                    CallControl { stop: Some(stop.subscribe()), lane: Some(&lane), on_retry: Some(&on_retry) };
                let outcome = client.unban_group_member_until(&group_id, &batch, control).await;
                let Some(outcome) = outcome else {
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
                    budget_answers: outcome.budget_answers,
                    at: Timestamp::now(),
                };
                let _ = reports.send((policy, CallEvent::Done(report)));
            });
        }
    }
    drop(reports);
    let mut watching_shutdown = true;
    loop {
        tokio::select! {
            joined = calls.join_next() => {
                if joined.is_none() {
                    return;
                }
            }
            signal = shutdown.wait_for(|stop| *stop), if watching_shutdown => {
                watching_shutdown = false;
                // A dropped sender is no signal: keep going.
                if signal.is_ok() {
                    for stop in &stops {
                        stop.send_replace(true);
                    }
                }
            }
        }
    }
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
