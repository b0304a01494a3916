//! Logging setup: structured lines on stderr, filtered by `RUST_LOG`.
//!
//! stdout stays free for command output (`listening on ...`, the `apply`
//! result), so scripts can read it while people read stderr.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `default_filter` applies when `RUST_LOG`
/// is unset. Safe to call twice (the second call does nothing).
pub fn init(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
