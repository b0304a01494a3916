//! How persistent a call is, and the retry step: from one attempt's
//! answer to what the client does next. Pure: time, jitter and the client
//! are the caller's.

use std::time::Duration;

use rand::Rng;

use super::codes::{self, CodeClass};

/// How persistent a call is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included. A 70001 re-sign is extra.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time, with jitter.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// How long every caller of the app pauses after a rate-limit answer;
    /// doubled for each one that follows closely, up to the limiter's window
    /// (see [`super::limiter::RateLimiter::rate_limited`]).
    pub rate_limit_cooldown: Duration,
    /// Backoff multiplier for undocumented codes: retried, but slowly.
    pub unknown_code_slowdown: u32,
}

impl RetryPolicy {
    /// Attempts per call unless configured otherwise (`--max-attempts`).
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            rate_limit_cooldown: Duration::from_millis(100),
            unknown_code_slowdown: 5,
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with jitter in [d/2, d].
    pub fn backoff(&self, attempt: u32, slowdown: u32) -> Duration {
        self.backoff_at(attempt, slowdown, rand::rng().random::<f64>())
    }

    /// The backoff before attempt `attempt + 1`: `base_delay` doubled per
    /// attempt, times `slowdown`, capped at `max_delay` times `slowdown`,
    /// then placed at `jitter` (0 to 1) between half of that and all of it.
    pub fn backoff_at(&self, attempt: u32, slowdown: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(16);
        let slowdown = slowdown.max(1);
        let full = self
            .base_delay
            .saturating_mul(1 << exponent)
            .saturating_mul(slowdown)
            .min(self.max_delay.saturating_mul(slowdown));
        let half = full / 2;
        half + full.saturating_sub(half).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// What the client does after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// The answer stands: a success, a failure no retry can fix, or the
    /// last attempt the policy allows.
    Done,
    /// The UserSig was refused as expired (70001): sign anew and send again
    /// at once. Once per call, and not counted against `max_attempts`, so
    /// it happens even after the last attempt.
    Resign,
    /// The app's budget is spent (60007, 60011): send again once the
    /// limiter lets this caller through (the client tells the limiter of
    /// every such answer, the last attempt's too, and it pauses every
    /// caller of the app).
    RateLimited,
    /// Send again after this backoff.
    RetryAfter(Duration),
}

/// The retry step: what follows attempt number `attempts` (from 1) that
/// ended with `error_code` (`None`: no IM answer), given whether the call
/// has signed anew already and a `jitter` in 0..1 for the backoff.
pub fn next_step(error_code: Option<i64>, attempts: u32, resigned: bool, policy: &RetryPolicy, jitter: f64) -> Step {
    let wanted = match error_code.map(|code| codes::lookup(code).class) {
        None | Some(CodeClass::Retryable) => Step::RetryAfter(policy.backoff_at(attempts, 1, jitter)),
        Some(CodeClass::Unknown) => Step::RetryAfter(policy.backoff_at(attempts, policy.unknown_code_slowdown, jitter)),
        Some(CodeClass::Success | CodeClass::Terminal) => return Step::Done,
        Some(CodeClass::SignatureExpired) if resigned => return Step::Done,
        Some(CodeClass::SignatureExpired) => Step::Resign,
        Some(CodeClass::RateLimited) => Step::RateLimited,
    };
    // The re-sign's extra attempt does not use up the budget.
    let resigns = u32::from(resigned || wanted == Step::Resign);
    if attempts.saturating_sub(resigns) < policy.max_attempts { wanted } else { Step::Done }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_jitter_and_caps() {
        let policy = RetryPolicy::default();
        for attempt in 1..=10 {
            let full = (policy.base_delay * (1 << (attempt - 1))).min(policy.max_delay);
            let delay = policy.backoff(attempt, 1);
            assert!(delay >= full / 2 && delay <= full, "attempt {attempt}: {delay:?} vs {full:?}");
        }
        assert!(policy.backoff(1, 5) >= policy.base_delay * 5 / 2);
    }

    /// The retry step as a table: each ErrorCode class, early and on the
    /// last attempt, before and after a re-sign.
    #[test]
    fn the_retry_step_follows_the_code_table_and_the_attempt_budget() {
        let policy = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
        let ms = Duration::from_millis;
        // (ErrorCode, attempts so far, signed anew already, jitter) -> step
        let table: &[(Option<i64>, u32, bool, f64, Step)] = &[
            (Some(0), 1, false, 0.0, Step::Done),
            (Some(10010), 1, false, 0.0, Step::Done), // GroupNotFound: terminal
            (None, 1, false, 0.0, Step::RetryAfter(ms(100))),
            (None, 1, false, 1.0, Step::RetryAfter(ms(200))),
            (None, 2, false, 1.0, Step::RetryAfter(ms(400))),
            (None, 3, false, 1.0, Step::Done), // the budget is spent
            (Some(10002), 2, false, 0.5, Step::RetryAfter(ms(300))), // internal error: retryable
            (Some(10002), 3, false, 0.5, Step::Done),
            (Some(12345), 1, false, 1.0, Step::RetryAfter(ms(1000))), // undocumented: five times slower
            (Some(12345), 3, false, 1.0, Step::Done),
            (Some(60007), 1, false, 0.0, Step::RateLimited),
            (Some(60011), 2, false, 0.0, Step::RateLimited),
            (Some(60007), 3, false, 0.0, Step::Done),
            (Some(70001), 1, false, 0.0, Step::Resign),
            (Some(70001), 3, false, 0.0, Step::Resign), // even after the last attempt
            (Some(70001), 2, true, 0.0, Step::Done),    // once per call
            (None, 3, true, 1.0, Step::RetryAfter(ms(800))), // the re-sign was extra
            (None, 4, true, 1.0, Step::Done),
        ];
        for &(code, attempts, resigned, jitter, expected) in table {
            assert_eq!(
                next_step(code, attempts, resigned, &policy, jitter),
                expected,
                "code {code:?}, attempt {attempts}, resigned {resigned}"
            );
        }
    }

    /// The cap holds for undocumented codes too, times their slowdown, and
    /// the jitter stays within [d/2, d] whatever it is given.
    #[test]
    fn backoff_caps_and_clamps_its_jitter() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff_at(30, 1, 1.0), policy.max_delay);
        assert_eq!(policy.backoff_at(30, 5, 1.0), policy.max_delay * 5);
        assert_eq!(policy.backoff_at(1, 1, -3.0), policy.base_delay / 2);
        assert_eq!(policy.backoff_at(1, 1, 7.0), policy.base_delay);
        assert_eq!(policy.backoff_at(0, 0, 1.0), policy.base_delay, "attempt 0 and slowdown 0 read as 1");
    }
}
