//! The IM side of `check`: a Secret's credentials parse, a UserSig can be
//! made from them, and one harmless read (one get_group_ban_member page of
//! one member, on that API's own budget) answers ErrorCode 0.

use std::time::{SystemTime, UNIX_EPOCH};

use kube::Client;

use super::report::Line;
use crate::engine::clients::ClientPool;
use crate::engine::credentials::{AppTarget, SecretKey};
use crate::im::codes;
use crate::im::usersig::{self, SigRequest};
use crate::im::{ClientSettings, RateLimit};

/// Reads the probe makes at most per second: one is all it needs.
const PROBE_CALLS_PER_SECOND: u32 = 5;

/// The lines for the credentials in `secret`, and a read of `group` with
/// them when one is named.
pub async fn credentials(client: &Client, secret: &SecretKey, group: Option<&str>) -> Vec<Line> {
    let target = match crate::cluster::secrets::read_target(client.clone(), secret).await {
        Ok(target) => target,
        Err(problem) => return vec![Line::fail("credentials", problem.to_string())],
    };
    let mut lines = vec![Line::pass(
        "credentials",
        format!(
            "Secret {secret}: app {} as {}, endpoint {}",
            target.credentials.sdkappid, target.credentials.identifier, target.endpoint
        ),
    )];
    lines.push(sign_line(&target));
    lines.push(match group {
        None => Line::skip("im", "no group to read (--group GROUP, or --policy NAME)"),
        Some(group) => probe_line(&target, group).await,
    });
    lines
}

fn sign_line(target: &AppTarget) -> Line {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let request = SigRequest {
        sdkappid: target.credentials.sdkappid,
        identifier: &target.credentials.identifier,
        time: now,
        expire: 60,
        userbuf: None,
    };
    match usersig::generate(target.credentials.secret_key.expose(), &request) {
        // The UserSig itself is a secret: never shown.
        Ok(_) => Line::pass("usersig", "a UserSig can be made with the secret key"),
        Err(error) => Line::fail("usersig", format!("no UserSig can be made: {error}")),
    }
}

/// The probe's line (pure, from the answer): ErrorCode 0 passes; any other
/// says what it means.
pub fn answer_line(group: &str, error_code: Option<i64>, error_info: &str) -> Line {
    match error_code {
        Some(0) => Line::pass("im", format!("get_group_ban_member on {group} answered ErrorCode 0")),
        Some(code) => {
            let info = codes::lookup(code);
            Line::fail(
                "im",
                format!(
                    "get_group_ban_member on {group} answered ErrorCode {code} ({}): {}; {error_info}",
                    info.reason, info.meaning
                ),
            )
        }
        None => Line::fail("im", format!("get_group_ban_member on {group} got no IM answer: {error_info}")),
    }
}

async fn probe_line(target: &AppTarget, group: &str) -> Line {
    // Few attempts, short timeouts: a check reports, it does not insist.
    let mut settings = ClientSettings { request_timeout: std::time::Duration::from_secs(5), ..Default::default() };
    settings.retry.max_attempts = 2;
    let pool = match ClientPool::new(RateLimit::per_second(PROBE_CALLS_PER_SECOND), settings) {
        Ok(pool) => pool,
        Err(error) => return Line::fail("im", format!("no HTTP client: {error}")),
    };
    let outcome = pool.client_for(target).probe_ban_list(group).await;
    match outcome.result {
        Ok((answer, ())) => answer_line(group, Some(answer.error_code), &answer.error_info),
        Err(error) => answer_line(group, None, &error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::report::Outcome;

    #[test]
    fn an_error_code_is_named_with_its_meaning() {
        assert_eq!(answer_line("g", Some(0), "").outcome, Outcome::Pass);
        let mismatch = answer_line("g", Some(70009), "bad sig");
        assert_eq!(mismatch.outcome, Outcome::Fail);
        assert!(
            mismatch.detail.contains("70009") && mismatch.detail.contains(codes::lookup(70009).reason),
            "{}",
            mismatch.detail
        );
        assert_eq!(answer_line("g", None, "refused").outcome, Outcome::Fail);
    }
}
