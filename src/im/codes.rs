//! The one ErrorCode table: what every documented IM answer means and what we
//! do about it.
//!
//! Every decision that depends on an ErrorCode (retry, cool down, regenerate
//! the UserSig, stop the policy, the condition reason, the metric label) reads
//! this table and nothing else. Reason names are stable API: status
//! conditions, Events and metrics carry them, and users alert on them.

use std::fmt;

/// What the caller should do with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeClass {
    /// ErrorCode 0: the call did what it was asked.
    Success,
    /// A passing fault on Tencent's side or on the way there: back off, retry.
    Retryable,
    /// The app's call rate is exhausted: cool down every caller of that
    /// SDKAppID, then retry.
    RateLimited,
    /// The UserSig expired or was invalidated: sign anew and retry once.
    SignatureExpired,
    /// Retrying the same request cannot succeed; a person must act.
    Terminal,
    /// Not in the documentation: retried slowly and shown to the user.
    Unknown,
}

impl CodeClass {
    /// Stable CamelCase name of the class, for metric labels and logs.
    pub fn reason(self) -> &'static str {
        match self {
            CodeClass::Success => "Succeeded",
            CodeClass::Retryable => "Retryable",
            CodeClass::RateLimited => "RateLimited",
            CodeClass::SignatureExpired => "SignatureExpired",
            CodeClass::Terminal => "Terminal",
            CodeClass::Unknown => UNKNOWN_REASON,
        }
    }
}

/// How much a terminal answer stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reach {
    /// Only the batch that got it: other members may still succeed.
    Batch,
    /// The whole policy: the group, the credentials or the app are at fault,
    /// so every other batch would get the same answer.
    Policy,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeInfo {
    pub code: i64,
    pub class: CodeClass,
    pub reach: Reach,
    /// Stable CamelCase name for conditions, Events and metric labels.
    pub reason: &'static str,
    /// What the documentation says it means.
    pub meaning: &'static str,
}

impl CodeInfo {
    pub fn is_success(&self) -> bool {
        self.class == CodeClass::Success
    }
}

impl fmt::Display for CodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}: {})", self.code, self.reason, self.meaning)
    }
}

const fn row(code: i64, class: CodeClass, reach: Reach, reason: &'static str, meaning: &'static str) -> CodeInfo {
    CodeInfo { code, class, reach, reason, meaning }
}

use CodeClass::*;
use Reach::*;

/// Sorted by code; `lookup` relies on it (checked by a test).
pub const TABLE: &[CodeInfo] = &[
    row(0, Success, Batch, "Succeeded", "the call succeeded"),
    // Group service (10xxx).
    row(10002, Retryable, Batch, "InternalError", "internal server error; retry"),
    row(10003, Terminal, Policy, "InvalidCommand", "invalid command word or API name"),
    row(10004, Terminal, Batch, "InvalidParameter", "invalid parameter"),
    row(10005, Terminal, Batch, "TooManyMembers", "too many accounts in one request"),
    row(10006, RateLimited, Policy, "RateLimited", "operation frequency limit hit"),
    row(10007, Terminal, Policy, "PermissionDenied", "no permission for this operation"),
    row(10008, Terminal, Policy, "InvalidRequest", "invalid request (signature check)"),
    row(10010, Terminal, Policy, "GroupNotFound", "group does not exist or was dissolved"),
    row(10011, Terminal, Batch, "InvalidJsonBody", "failed to parse the JSON body"),
    row(10012, Terminal, Policy, "InvalidOperator", "invalid operator identifier"),
    row(10015, Terminal, Policy, "InvalidGroupId", "invalid group ID"),
    row(10019, Terminal, Batch, "AccountNotFound", "requested account does not exist"),
    row(10026, Terminal, Policy, "CommandDisabled", "command word disabled for this SDKAppID"),
    // REST gateway (60xxx).
    row(60002, Terminal, Policy, "HttpParseError", "HTTP parsing error; check the URL format"),
    row(60003, Terminal, Batch, "MalformedJson", "JSON parsing error in the request body"),
    row(60004, Terminal, Policy, "AccountOrSignatureError", "identifier or UserSig is incorrect"),
    row(60005, Terminal, Policy, "AccountOrSignatureError", "identifier or UserSig is incorrect"),
    row(60006, Terminal, Policy, "InvalidSdkAppId", "invalid SDKAppID"),
    row(60007, RateLimited, Policy, "RateLimited", "REST API call frequency limit exceeded"),
    row(60008, Retryable, Batch, "ServiceTimeout", "service request timed out; retry"),
    row(60009, Terminal, Policy, "InvalidRequestUrl", "request resource error; check the URL"),
    row(60010, Terminal, Policy, "IdentifierNotAdmin", "identifier must be an App admin account"),
    row(60011, RateLimited, Policy, "RateLimited", "SDKAppID request frequency exceeded"),
    row(60012, Terminal, Policy, "MissingSdkAppId", "sdkappid is required in the URL"),
    row(60013, Retryable, Batch, "ResponseJsonError", "JSON parsing error in the HTTP response"),
    row(60014, Retryable, Batch, "AccountSwitchTimeout", "account switching timed out"),
    row(60015, Terminal, Batch, "InvalidAccountType", "account type in the body must be a string"),
    row(60016, Terminal, Policy, "SdkAppIdDisabled", "SDKAppID is disabled"),
    row(60017, Terminal, Policy, "RequestDisabled", "request is disabled"),
    row(60018, Retryable, Batch, "TooManyRequests", "too many requests; retry later"),
    row(60019, Retryable, Batch, "TooManyRequests", "too many requests; retry later"),
    row(60020, Terminal, Policy, "PlanNotActive", "Pro plan expired or not yet effective"),
    row(60021, Terminal, Policy, "CallerIpNotAllowed", "caller IP is not allowed"),
    // Account and signature service (70xxx).
    row(70001, SignatureExpired, Policy, "UserSigExpired", "UserSig expired; regenerate it"),
    row(70002, Terminal, Policy, "UserSigEmpty", "UserSig is empty"),
    row(70003, Terminal, Policy, "UserSigMalformed", "UserSig could not be parsed"),
    row(70005, Terminal, Policy, "UserSigInvalid", "UserSig verification failed"),
    row(70009, Terminal, Policy, "UserSigKeyMismatch", "UserSig does not match the secret key or SDKAppID"),
    row(70013, Terminal, Policy, "UserSigIdentifierMismatch", "identifier differs from the one in the UserSig"),
    row(70014, Terminal, Policy, "UserSigSdkAppIdMismatch", "sdkappid differs from the one in the UserSig"),
    row(70016, Terminal, Policy, "SecretKeyNotFound", "no key exists for this SDKAppID"),
    row(70020, Terminal, Policy, "SdkAppIdNotFound", "SDKAppID not found"),
    row(70050, Terminal, Policy, "UserSigLocked", "too many UserSig failures; locked for a minute"),
    row(70051, Terminal, Policy, "AccountBlocked", "account is blocklisted"),
    row(70052, SignatureExpired, Policy, "UserSigInvalidated", "UserSig was invalidated; regenerate it"),
    row(70107, Terminal, Batch, "AccountNotFound", "requested user account does not exist"),
    row(70402, Terminal, Batch, "InvalidParameter", "invalid parameter (account service)"),
    row(70403, Terminal, Policy, "AdminRequired", "operation requires an App admin"),
    row(70500, Retryable, Batch, "AccountServiceError", "internal error in the account service; retry"),
    row(80001, Terminal, Batch, "ContentFiltered", "text hit the security filter"),
    row(80002, Terminal, Batch, "BodyTooLong", "message body too long"),
];

/// Reason for an ErrorCode that no documentation lists.
pub const UNKNOWN_REASON: &str = "UnknownErrorCode";
/// Reason for a call that got no IM answer (HTTP error, timeout, reset).
pub const TRANSPORT_REASON: &str = "TransportError";

/// The row for `code`; an undocumented code gets the `Unknown` class.
pub fn lookup(code: i64) -> CodeInfo {
    match TABLE.binary_search_by_key(&code, |info| info.code) {
        Ok(index) => TABLE[index],
        Err(_) => row(code, Unknown, Batch, UNKNOWN_REASON, "undocumented ErrorCode"),
    }
}

/// Every reason a status condition or metric can carry for an IM answer.
pub fn all_reasons() -> Vec<&'static str> {
    let mut reasons: Vec<_> = TABLE.iter().map(|info| info.reason).collect();
    reasons.extend([UNKNOWN_REASON, TRANSPORT_REASON]);
    reasons.sort_unstable();
    reasons.dedup();
    reasons
}

/// True for the answers that say the app's own budget (all its callers
/// together) is spent: 60007 (per-API calls per second) and 60011 (per-app
/// requests). 10006 is a per-operation frequency limit, not the budget.
pub fn spends_app_budget(error_code: i64) -> bool {
    matches!(error_code, 60007 | 60011)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table_is_sorted_and_has_no_duplicate_codes() {
        assert!(TABLE.windows(2).all(|pair| pair[0].code < pair[1].code));
    }

    #[test]
    fn the_issue_classes_hold() {
        assert_eq!(lookup(0).class, Success);
        for code in [10002, 60008, 60018, 60019] {
            assert_eq!(lookup(code).class, Retryable, "{code}");
        }
        for code in [60007, 60011, 10006] {
            assert_eq!(lookup(code).class, RateLimited, "{code}");
        }
        assert_eq!(lookup(70001).class, SignatureExpired);
        for code in [10003, 10004, 10005, 10007, 10010, 10015, 60006, 60010, 70003, 70009, 70013] {
            assert_eq!(lookup(code).class, Terminal, "{code}");
        }
    }

    /// Group, credential and app faults stop the whole policy; member-level
    /// faults only fail their batch.
    #[test]
    fn terminal_reach_stops_the_policy_only_for_group_or_credential_faults() {
        for code in [10007, 10010, 10015, 60006, 60010, 70001, 70003, 70009, 70013, 70014] {
            assert_eq!(lookup(code).reach, Policy, "{code}");
        }
        for code in [10004, 10005, 70107] {
            assert_eq!(lookup(code).reach, Batch, "{code}");
        }
    }

    #[test]
    fn notable_codes_have_their_stable_reason_names() {
        assert_eq!(lookup(10007).reason, "PermissionDenied");
        assert_eq!(lookup(10010).reason, "GroupNotFound");
        assert_eq!(lookup(10015).reason, "InvalidGroupId");
        assert_eq!(lookup(60007).reason, "RateLimited");
        assert_eq!(lookup(70001).reason, "UserSigExpired");
        assert_eq!(lookup(70009).reason, "UserSigKeyMismatch");
    }

    #[test]
    fn reasons_are_camel_case_identifiers() {
        let classes = [Success, Retryable, RateLimited, SignatureExpired, Terminal, Unknown].map(CodeClass::reason);
        for reason in all_reasons().into_iter().chain(classes) {
            assert!(reason.chars().next().is_some_and(|c| c.is_ascii_uppercase()), "{reason}");
            assert!(reason.chars().all(|c| c.is_ascii_alphanumeric()), "{reason}");
        }
    }

    proptest! {
        /// Any code outside the table is Unknown, never silently a success.
        #[test]
        fn undocumented_codes_are_unknown(code in any::<i64>()) {
            let info = lookup(code);
            prop_assert_eq!(info.code, code);
            if TABLE.iter().all(|row| row.code != code) {
                prop_assert_eq!(info.class, Unknown);
                prop_assert_eq!(info.reason, UNKNOWN_REASON);
            }
        }
    }
}
