//! groupban-operator: makes the Tencent Cloud IM REST API unban the members of
//! audio-video groups that `GroupBanPolicy` resources declare.
//!
//! - [`crd`]: the `GroupBanPolicy` API types, no I/O.
//! - [`im`]: the IM REST layer (UserSig, client, ErrorCode table, limiter).
//! - [`engine`]: one pass over policies: plan (pure), execute, fold (pure).
//! - [`controller`]: the Kubernetes driver around the engine (`run`).
//! - [`oneshot`]: the engine over manifest files (`apply`).
//! - [`simulator`]: a faithful local IM gateway for trials, tests, benchmarks.
//! - [`tools`]: `demo` and `bench`, driven against the simulator.
//! - [`label_selector`]: label selectors checked as the API server reads them.
//! - [`metrics`]: `/metrics`, `/healthz` and `/readyz` for `run`.
//! - [`secret`]: a wrapper that keeps secret values out of logs and debug output.
//! - [`signals`]: SIGTERM and SIGINT, for `run`, `apply` and `simulate`.
//! - [`telemetry`]: log lines on stderr, text or JSON, filtered by `RUST_LOG`.
//! - [`cluster`]: `get`, `reconcile`, `suspend`, `resume` against a cluster (and as a kubectl plugin).
//! - [`check`]: is everything in place for `run` (version, CRD, RBAC, operator, credentials)?
//! - [`diff`]: each policy against its group's real ban list, with no unban call.
//! - [`cli`]: the command line.
// One exception, in oneshot::strict_yaml::check_nesting: libyaml's parser
// API, driven as yaml_serde drives it.
#![deny(unsafe_code)]

pub mod check;
pub mod cli;
pub mod cluster;
pub mod controller;
pub mod crd;
pub mod diff;
pub mod engine;
pub mod im;
pub mod label_selector;
pub mod metrics;
pub mod oneshot;
pub mod secret;
pub mod signals;
pub mod simulator;
pub mod telemetry;
pub mod tools;

/// Writes to stdout without panicking when the reader has gone away
/// (`groupban-operator apply ... | head` closes the pipe early); `print!`
/// would panic on that broken pipe.
pub fn write_stdout(text: &str) {
    let _ = try_write_stdout(text);
}

/// [`write_stdout`] that says whether the text got out: false once the
/// reader has gone (`get --watch | head -3` ends when `head` does).
pub fn try_write_stdout(text: &str) -> bool {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).is_ok()
}

/// `println!` for command output, safe on a closed pipe.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Formats an error with its whole `source()` chain joined by ": ".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some libraries repeat their cause in their own message.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Cuts `text` to at most `max_bytes` bytes on a character boundary,
/// marking the cut, for free text that lands in statuses, Events and logs.
pub fn cut_text(text: &str, max_bytes: usize) -> String {
    const MARK: &str = "... (cut)";
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// rustls needs one process-wide crypto provider; we use ring only (no
/// second crypto stack). Safe to call many times.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// Never longer than asked, never split inside a character, and
        /// untouched when short enough.
        #[test]
        fn cut_text_respects_the_bound_and_characters(text in ".{0,300}", max in 10usize..200) {
            let cut = super::cut_text(&text, max);
            prop_assert!(cut.len() <= max.max(text.len().min(max)));
            if text.len() <= max {
                prop_assert_eq!(cut, text);
            } else {
                prop_assert!(cut.ends_with("... (cut)"));
            }
        }
    }
}
