//! Logging setup: structured lines on stderr, filtered by `RUST_LOG`.
//!
//! stdout stays free for command output (`listening on ...`, the `apply`
//! result), so scripts can read it while people read stderr.

use std::io::IsTerminal;

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

/// Lines left out unless `RUST_LOG` names their target. kube's HTTP trace
/// layer logs every 5xx and transport error as a bare ERROR (`failed with
/// status 500`, not saying which request), sometimes twice for one. A
/// failure that kube gives up on reaches our code, which logs it with what
/// failed and what happens next; the 429/503/504 answers that kube's own
/// retry layer retries and then gets past are seen only with
/// `RUST_LOG=...,kube_client=debug` (the README says so).
const QUIET_BY_DEFAULT: &str = "kube_client::client::builder=off";

/// Installs the global subscriber; `default_filter` applies when `RUST_LOG`
/// is unset. Safe to call twice (the second call does nothing).
pub fn init(default_filter: &str) {
    init_with_format(default_filter, LogFormat::Text);
}

/// [`init`] with a choice of format.
pub fn init_with_format(default_filter: &str, format: LogFormat) {
    let directives = filter_directives(default_filter, std::env::var("RUST_LOG").ok().as_deref());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(colour_allowed(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR")));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// `RUST_LOG` (or the default when unset or empty), quieting
/// [`QUIET_BY_DEFAULT`] unless it names kube's client itself.
fn filter_directives(default_filter: &str, rust_log: Option<&str>) -> String {
    let asked = rust_log.map(str::trim).filter(|value| !value.is_empty()).unwrap_or(default_filter);
    if asked.contains("kube_client") { asked.to_string() } else { format!("{asked},{QUIET_BY_DEFAULT}") }
}

/// Colour codes only for a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (the no-color convention): a log file or
/// a CI log must not fill with escape sequences.
fn colour_allowed(is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    is_terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubes_bare_http_errors_are_quiet_unless_asked_for() {
        assert_eq!(filter_directives("info", None), "info,kube_client::client::builder=off");
        assert_eq!(filter_directives("info", Some(" ")), "info,kube_client::client::builder=off");
        assert_eq!(filter_directives("info", Some("debug")), "debug,kube_client::client::builder=off");
        assert_eq!(filter_directives("info", Some("info,kube_client=debug")), "info,kube_client=debug");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_allowed(true, None));
        assert!(colour_allowed(true, Some("".into())));
        assert!(!colour_allowed(true, Some("1".into())));
        assert!(!colour_allowed(false, None));
    }
}
