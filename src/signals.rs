//! SIGTERM (what Kubernetes and CI send) and SIGINT (Ctrl-C).

/// The process could not install its signal handlers.
#[derive(Debug, thiserror::Error)]
#[error("cannot handle signals: {0}")]
pub struct SignalError(std::io::Error);

/// Both signals, registered once: from then on no signal kills the
/// process outright, and none is missed between two waits.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Fails only when the process cannot install signal handlers.
    pub fn new() -> Result<Self, SignalError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(SignalError)?,
            interrupt: signal(SignalKind::interrupt()).map_err(SignalError)?,
        })
    }

    /// The next signal's name.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    match Signals::new() {
        Ok(mut signals) => {
            signals.next().await;
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
