//! What the IM client tells whoever counts its calls. The client is handed
//! an observer when it is made (see [`super::ClientSettings::observer`]),
//! so the IM layer knows nothing of Prometheus, and a test or a tool can
//! count calls of its own without sharing a process-wide set.

use std::time::Duration;

/// Receives a note of every attempt the IM client makes.
pub trait CallObserver: Send + Sync {
    /// An attempt of `api` waited `waited` for the rate limiter (and the
    /// caller's lane) before it started.
    fn limiter_waited(&self, api: &'static str, waited: Duration);

    /// An attempt of `api` ended after `took`, with the answer's ErrorCode,
    /// or `None` when no IM answer came (a transport error).
    fn attempt_ended(&self, api: &'static str, error_code: Option<i64>, took: Duration);
}

/// Counts nothing: `apply`, `demo` and `bench` serve no metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl CallObserver for NoObserver {
    fn limiter_waited(&self, _api: &'static str, _waited: Duration) {}
    fn attempt_ended(&self, _api: &'static str, _error_code: Option<i64>, _took: Duration) {}
}
