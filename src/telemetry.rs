//! Logging setup: structured lines on stderr, filtered by `RUST_LOG`.
//!
//! stdout stays free for command output (`listening on ...`, the `apply`
//! result), so scripts can read it while people read stderr.

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber; `default_filter` applies when `RUST_LOG`
/// is unset. Safe to call twice (the second call does nothing).
pub fn init(default_filter: &str) {
    init_with_format(default_filter, LogFormat::Text);
}

/// [`init`] with a choice of format.
pub fn init_with_format(default_filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
