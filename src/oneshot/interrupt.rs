//! How an `apply` run is stopped: a first SIGTERM/SIGINT, or its
//! `--timeout` budget running out, stops it starting calls (calls in
//! flight finish and their answers are saved); a second signal means stop
//! now.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::signals::Signals;

/// The exit code of an `apply` run stopped by a signal or `--timeout`.
pub const EXIT_INTERRUPTED: u8 = 3;

/// A run's stop signal, and why it was sent.
pub struct Interruption {
    /// Turns true on the first signal or when the budget runs out.
    pub stop: watch::Receiver<bool>,
    reason: Arc<OnceLock<String>>,
}

impl Interruption {
    /// Starts listening to `signals`, with `budget` (none: no limit).
    /// The receiver resolves with a second signal's name: the caller then
    /// stops at once.
    pub fn watch(mut signals: Signals, budget: Option<Duration>) -> (Self, oneshot::Receiver<&'static str>) {
        let (stop_tx, stop) = watch::channel(false);
        let (again_tx, again) = oneshot::channel();
        let reason = Arc::new(OnceLock::<String>::new());
        let noted = reason.clone();
        tokio::spawn(async move {
            let why = tokio::select! {
                name = signals.next() => format!("{name} received"),
                () = sleep_for(budget) => {
                    format!("the --timeout budget of {budget:?} ran out", budget = budget.unwrap_or_default())
                }
            };
            tracing::warn!("Stopping: {why}; waiting for calls in flight, then saving (a second signal exits at once)");
            // Set before the stop is sent: whatever the timing, a stopped
            // run reports why.
            let _ = noted.set(why);
            let _ = stop_tx.send(true);
            let _ = again_tx.send(signals.next().await);
        });
        (Self { stop, reason }, again)
    }

    /// Why the run was stopped, if it was.
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }
}

/// Sleeps for `budget`, or forever when there is none.
async fn sleep_for(budget: Option<Duration>) {
    match budget {
        Some(budget) => tokio::time::sleep(budget).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget running out stops the run and says so; no second
    /// signal comes of it.
    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_stops_the_run_and_says_why() {
        let (mut interruption, mut again) = Interruption::watch(Signals::new().unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(interruption.reason(), None);
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(!*interruption.stop.borrow());
        interruption.stop.wait_for(|stop| *stop).await.unwrap();
        assert_eq!(interruption.reason(), Some("the --timeout budget of 30s ran out"));
        assert!(again.try_recv().is_err());
    }
}
