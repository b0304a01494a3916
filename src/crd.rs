//! The `GroupBanPolicy` API (`groupban.dev/v1alpha1`): types only, no I/O.
//!
//! `///` comments on fields are what `kubectl explain` shows users; notes for
//! developers use `//`. Optional fields carry no schema defaults, so GitOps
//! tools never see drift the API server injected.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Members one policy may list. Larger sets go into several policies for
/// the same group.
pub const MAX_MEMBERS: usize = 5000;
/// Bytes in a group ID.
pub const MAX_GROUP_ID_BYTES: usize = 48;
/// Bytes in a member account (an IM UserID).
pub const MAX_MEMBER_BYTES: usize = 32;
/// Entries kept in `status.failures`.
pub const MAX_FAILURE_ENTRIES: usize = 20;
/// The Secret a policy uses when it names none.
pub const DEFAULT_CREDENTIALS_SECRET: &str = "groupban-credentials";
/// Shortest spec.driftCheckInterval: the ban list is paged at 100 a call.
pub const MIN_DRIFT_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Annotation that asks for a reconcile now; its value is echoed into
/// status.lastHandledReconcileAt (the Flux convention).
pub const RECONCILE_REQUESTED_AT: &str = "groupban.dev/reconcile-requested-at";

/// Unbans members of a Tencent Cloud IM audio-video group (AVChatRoom).
///
/// The operator compares `spec.unbannedMembers` with the members it has
/// recorded as unbanned (`status.unbannedMembers`) and calls the IM REST API
/// `unban_group_member` for the difference, 20 members a call, within the
/// app's call-rate limit.
// Each printcolumn(...) is its own column; clippy mistakes the repeated
// `type_ = ...` keys for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "groupban.dev",
    version = "v1alpha1",
    kind = "GroupBanPolicy",
    plural = "groupbanpolicies",
    shortname = "gbp",
    namespaced,
    status = "GroupBanPolicyStatus",
    doc = "GroupBanPolicy declares members of a Tencent Cloud IM audio-video group (AVChatRoom) that must be unbanned.",
    printcolumn(name = "Group", type_ = "string", json_path = ".spec.groupId"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".status.summary.desired"),
    printcolumn(name = "Unbanned", type_ = "integer", json_path = ".status.summary.unbanned"),
    printcolumn(name = "ErrorCode", type_ = "integer", json_path = ".status.lastErrorCode"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct GroupBanPolicySpec {
    /// ID of the AVChatRoom group, as the IM console or API shows it (for
    /// example "@TGS#aXXXXXXXX"): 1 to 48 bytes of printable ASCII.
    #[schemars(length(min = 1, max = 48), regex(pattern = r"^[ -~]+$"))]
    pub group_id: String,

    /// Member accounts (IM UserIDs) that must be unbanned in the group. A set:
    /// no duplicates, at most 5000 entries, each 1 to 32 bytes of printable
    /// ASCII. Removing a member stops tracking it (it is not banned again);
    /// adding it back unbans it again.
    #[schemars(
        length(max = 5000),
        inner(length(min = 1, max = 32), regex(pattern = r"^[ -~]+$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub unbanned_members: Vec<String>,

    /// The Secret, in this policy's namespace, holding the IM app's
    /// credentials: keys `sdkAppId`, `identifier` (an App admin account) and
    /// `secretKey`; optionally `region` (china, singapore, seoul, tokyo,
    /// frankfurt, mumbai, silicon-valley, jakarta; add "-backup" for the
    /// backup domain) or `endpoint` (a base URL). When unset, the Secret
    /// named "groupban-credentials" is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,

    /// When true, the operator makes no IM calls for this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// How often to read the group's ban list and unban desired members
    /// found banned again behind the operator's back, as a duration the way
    /// Flux writes them ("30s", "10m", "1h", "1h30m"); at least 1s. Unset:
    /// no drift check. The check uses get_group_ban_member, whose call
    /// budget is separate from unban_group_member's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // The API server refuses what the operator would report as SpecInvalid:
    // the syntax by pattern, the bounds by CEL (its duration() reads the
    // same Go syntax). check_spec keeps the same rules for `apply` and for
    // servers older than CEL validation.
    #[schemars(
        length(max = 64),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"),
        extend("x-kubernetes-validations" = [
            {"rule": "duration(self) >= duration('1s')", "message": "must be at least 1s"},
            {"rule": "duration(self) <= duration('8760h')", "message": "must be at most a year (8760h)"}
        ])
    )]
    pub drift_check_interval: Option<String>,
}

/// A reference to a Secret in the policy's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
// A misspelt or cross-namespace `namespace:` key must not be ignored.
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What the operator has done and observed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupBanPolicyStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The group the recorded members belong to; when spec.groupId changes,
    /// the record starts over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,

    /// The app (SDKAppID) the recorded members were unbanned in; when the
    /// credentials name another app, the record starts over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk_app_id: Option<u64>,

    /// The IM endpoint (base URL, no credentials) the recorded members were
    /// unbanned through; when it changes, the record starts over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// Members confirmed unbanned by an ErrorCode 0 answer and still
    /// desired, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unbanned_members: Vec<String>,

    /// Counts of desired members by state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,

    /// ErrorCode of the most recent IM answer: 0 on success, -1 when the
    /// call got no IM answer (HTTP error, timeout, connection failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_code: Option<i64>,

    /// ErrorInfo of the most recent IM answer ("" on success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_info: Option<String>,

    /// Calls that did not succeed, newest first, at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<FailureRecord>,

    /// How many older failure entries were left out of `failures`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures_truncated: Option<u32>,

    /// When the operator last finished a pass that changed this status
    /// (passes that would change only timestamps are not written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,

    /// The value of the annotation groupban.dev/reconcile-requested-at that
    /// the operator last acted on (the Flux convention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,

    /// The last drift check, when spec.driftCheckInterval is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftStatus>,

    /// Ready (every desired member recorded as unbanned), Reconciling (calls
    /// pending or being retried) and Stalled (a terminal ErrorCode or a
    /// configuration error stops progress), in the kstatus convention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Counts of the desired members.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Summary {
    /// Members in spec.unbannedMembers.
    pub desired: u32,
    /// Desired members confirmed unbanned.
    pub unbanned: u32,
    /// Desired members not yet unbanned and not failed.
    pub pending: u32,
    /// Desired members whose last call failed.
    pub failed: u32,
}

/// The outcome of the last drift check that changed something: a check
/// that finds nothing is not written (it would change only a time).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftStatus {
    /// When the ban list was last read.
    pub last_check_time: Time,
    /// Desired members found banned again in that check (and unbanned).
    pub corrected: u32,
}

/// One call that did not succeed.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureRecord {
    /// The members the call carried.
    pub members: Vec<String>,
    /// The IM ErrorCode, or -1 when the call got no IM answer.
    pub error_code: i64,
    /// The IM ErrorInfo, or what went wrong on the way.
    pub error_info: String,
    /// Attempts made for this call.
    pub attempts: u32,
    /// When the last attempt was made.
    pub last_attempt_time: Time,
}

/// Condition types, in the kstatus convention Flux and Argo CD read.
pub mod condition_types {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
}

/// Condition reasons that are not IM ErrorCode reasons (those come from
/// `im::codes`). Stable API: users alert on them.
pub mod reasons {
    /// Ready=True: every desired member is recorded as unbanned.
    pub const ALL_MEMBERS_UNBANNED: &str = "AllMembersUnbanned";
    /// Ready=False / Reconciling=True: calls are still to be made.
    pub const UNBAN_PENDING: &str = "UnbanPending";
    /// Reconciling=True: calls failed with a retryable answer and will be retried.
    pub const RETRY_PENDING: &str = "RetryPending";
    /// Reconciling=False / Stalled=False: nothing is in progress or stuck.
    pub const IDLE: &str = "Idle";
    pub const NOT_STALLED: &str = "NotStalled";
    /// spec.suspend is true.
    pub const SUSPENDED: &str = "Suspended";
    /// The credentials Secret is missing or unusable.
    pub const CREDENTIALS_INVALID: &str = "CredentialsInvalid";
    /// Ready=False: the API server could not hand out the credentials
    /// Secret (5xx, unreachable); retried on backoff.
    pub const CREDENTIALS_UNAVAILABLE: &str = "CredentialsUnavailable";
    /// Stalled: the policy names no Secret and its namespace may not use
    /// the shared default credentials (--default-credentials-namespace-selector).
    pub const DEFAULT_CREDENTIALS_NOT_ALLOWED: &str = "DefaultCredentialsNotAllowed";
    /// The spec breaks a rule the schema could not enforce.
    pub const SPEC_INVALID: &str = "SpecInvalid";
}

/// The status a policy reads before any operator wrote one:
/// `observedGeneration: 0`, the API server's default for a missing status
/// (applied when the object is read). kstatus, and so Flux's `wait: true`
/// and Argo CD, read a generation ahead of its observed one as InProgress;
/// with no status at all, kstatus would call a policy nobody has looked at
/// Current. The operator's first write replaces it.
pub const UNOBSERVED_STATUS: &str = r#"{"observedGeneration": 0}"#;

/// Sets [`UNOBSERVED_STATUS`] as the default of `status` in every version
/// of the CRD (a JSON value of it).
pub fn unobserved_until_reconciled(crd: &mut serde_json::Value) {
    let default: serde_json::Value = serde_json::from_str(UNOBSERVED_STATUS).unwrap_or_default();
    for version in crd["spec"]["versions"].as_array_mut().into_iter().flatten() {
        if let Some(status) = version.pointer_mut("/schema/openAPIV3Schema/properties/status") {
            status["default"] = default.clone();
        }
    }
}

/// Rewrites the integer formats schemars derives from Rust types into the
/// ones Kubernetes knows, keeping the range they promised as bounds.
///
/// schemars writes `format: uint32` for a `u32`; the API server recognizes
/// only `int32` and `int64` for integers, ignores anything else (so the
/// range was never enforced) and, from 1.34, warns `unrecognized format` on
/// every apply of the CRD.
pub fn kubernetes_integer_formats(schema: &mut serde_json::Value) {
    use serde_json::Value;
    match schema {
        Value::Object(object) => {
            let bounds = match object.get("format").and_then(Value::as_str) {
                Some("uint8") => Some((0, Some(u64::from(u8::MAX)))),
                Some("uint16") => Some((0, Some(u64::from(u16::MAX)))),
                Some("uint32") => Some((0, Some(u64::from(u32::MAX)))),
                // int64's own maximum is below u64's: the API server stores
                // integers as int64 and refuses larger ones anyway.
                Some("uint64") | Some("uint") => Some((0, None)),
                _ => None,
            };
            if let Some((minimum, maximum)) = bounds {
                object.insert("format".into(), Value::from("int64"));
                // A bound the field already has (a schemars range) wins
                // where it is tighter than the type's.
                let tighter_min = object.get("minimum").and_then(Value::as_f64).is_some_and(|m| m > minimum as f64);
                if !tighter_min {
                    object.insert("minimum".into(), Value::from(minimum));
                }
                if let Some(maximum) = maximum {
                    let tighter_max = object.get("maximum").and_then(Value::as_f64).is_some_and(|m| m < maximum as f64);
                    if !tighter_max {
                        object.insert("maximum".into(), Value::from(maximum));
                    }
                }
            }
            object.values_mut().for_each(kubernetes_integer_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(kubernetes_integer_formats),
        _ => {}
    }
}

/// A spec that breaks a rule: which rule, naming the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("spec.groupId {0:?} must be 1 to {MAX_GROUP_ID_BYTES} bytes of printable ASCII")]
    GroupId(String),
    #[error("spec.unbannedMembers has {0} entries; at most {MAX_MEMBERS} (split larger sets over several policies)")]
    TooManyMembers(usize),
    #[error("spec.unbannedMembers[{index}] {member:?} must be 1 to {MAX_MEMBER_BYTES} bytes of printable ASCII")]
    Member { index: usize, member: String },
    #[error("spec.unbannedMembers[{index}] {member:?} appears more than once")]
    DuplicateMember { index: usize, member: String },
    #[error("spec.credentialsSecretRef.name must not be empty")]
    EmptySecretName,
    #[error("spec.driftCheckInterval {0}")]
    DriftCheckInterval(String),
}

/// Checks the rules of the schema in code: `apply` reads files no API
/// server has validated, and the controller double-checks. Returns the
/// first problem, naming the field.
pub fn validate_spec(spec: &GroupBanPolicySpec) -> Result<(), SpecError> {
    check_spec(spec)?;
    if let Some(text) = &spec.drift_check_interval {
        drift_check_interval(text).map_err(SpecError::DriftCheckInterval)?;
    }
    Ok(())
}

/// Parses a duration as Go and Flux write them: a sequence of decimal
/// numbers with a unit each (ms, s, m, h), e.g. "1h30m", "1.5s".
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("{text:?} is not a duration like 30s, 10m, 1h or 1h30m");
    if text.is_empty() || text.len() > 64 {
        return Err(invalid());
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(invalid)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        if !rest[..number_len].starts_with(|c: char| c.is_ascii_digit()) {
            return Err(invalid());
        }
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    // A year is far beyond any sensible interval; it also keeps the value
    // inside what Duration and timers can hold.
    if !total.is_finite() || total > 365.0 * 86400.0 {
        return Err(format!("{text:?} is longer than a year"));
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

/// spec.driftCheckInterval as a Duration, at least [`MIN_DRIFT_CHECK_INTERVAL`].
pub fn drift_check_interval(text: &str) -> Result<std::time::Duration, String> {
    let interval = parse_duration(text)?;
    if interval < MIN_DRIFT_CHECK_INTERVAL {
        return Err(format!("{text:?} is shorter than the minimum of 1s"));
    }
    Ok(interval)
}

fn check_spec(spec: &GroupBanPolicySpec) -> Result<(), SpecError> {
    let printable = |text: &str| text.bytes().all(|b| (0x20..=0x7e).contains(&b));
    if spec.group_id.is_empty() || spec.group_id.len() > MAX_GROUP_ID_BYTES || !printable(&spec.group_id) {
        return Err(SpecError::GroupId(cut_value(&spec.group_id)));
    }
    if spec.unbanned_members.len() > MAX_MEMBERS {
        return Err(SpecError::TooManyMembers(spec.unbanned_members.len()));
    }
    let mut seen = std::collections::HashSet::with_capacity(spec.unbanned_members.len());
    for (index, member) in spec.unbanned_members.iter().enumerate() {
        if member.is_empty() || member.len() > MAX_MEMBER_BYTES || !printable(member) {
            return Err(SpecError::Member { index, member: cut_value(member) });
        }
        if !seen.insert(member.as_str()) {
            return Err(SpecError::DuplicateMember { index, member: member.clone() });
        }
    }
    if let Some(secret) = &spec.credentials_secret_ref
        && secret.name.is_empty()
    {
        return Err(SpecError::EmptySecretName);
    }
    Ok(())
}

/// A value quoted in a [`SpecError`], cut so that a huge one cannot make
/// a status or an Event large.
fn cut_value(value: &str) -> String {
    crate::cut_text(value, 256)
}

/// The CustomResourceDefinition as YAML: what `groupban-operator crd`
/// prints and `crds/groupbanpolicies.yaml` holds. Fails only if the types
/// cannot be serialized, which would be a bug worth failing loudly on.
pub fn render_yaml() -> Result<String, CrdRenderError> {
    use kube::CustomResourceExt;
    let mut crd = GroupBanPolicy::crd();
    // Helm keeps the CRD, and with it every policy, when the chart is
    // uninstalled; kubectl ignores the annotation.
    crd.metadata.annotations = Some([("helm.sh/resource-policy".to_string(), "keep".to_string())].into());
    let mut value = serde_json::to_value(&crd)?;
    kubernetes_integer_formats(&mut value);
    unobserved_until_reconciled(&mut value);
    Ok(yaml_serde::to_string(&value)?)
}

/// Why the CRD could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum CrdRenderError {
    #[error("failed to convert the CRD to JSON")]
    Json(#[from] serde_json::Error),
    #[error("failed to write the CRD as YAML")]
    Yaml(#[from] yaml_serde::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(group: &str, members: &[&str]) -> GroupBanPolicySpec {
        GroupBanPolicySpec {
            group_id: group.into(),
            unbanned_members: members.iter().map(|m| m.to_string()).collect(),
            credentials_secret_ref: None,
            suspend: None,
            drift_check_interval: None,
        }
    }

    #[test]
    fn durations_read_as_flux_writes_them() {
        let secs = |text: &str| parse_duration(text).map(|d| d.as_secs_f64());
        assert_eq!(secs("30s"), Ok(30.0));
        assert_eq!(secs("10m"), Ok(600.0));
        assert_eq!(secs("1h30m"), Ok(5400.0));
        assert_eq!(secs("1.5s"), Ok(1.5));
        assert_eq!(secs("250ms"), Ok(0.25));
        for bad in ["", "10", "s", "1d", "-1s", ".5s", "1h30", "1 s", "9999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(drift_check_interval("999ms").unwrap_err().contains("minimum"));
        assert!(drift_check_interval("1s").is_ok());
        let mut with_drift = spec("g", &["a"]);
        with_drift.drift_check_interval = Some("5x".into());
        assert!(validate_spec(&with_drift).unwrap_err().to_string().contains("spec.driftCheckInterval"));
    }

    proptest::proptest! {
        /// Any text at all parses or is refused, never panics, and what
        /// parses is within a year.
        #[test]
        fn parse_duration_never_panics(text in ".{0,40}") {
            if let Ok(duration) = parse_duration(&text) {
                proptest::prop_assert!(duration.as_secs() <= 365 * 86400);
            }
        }
    }

    /// Every format in the rendered CRD is one Kubernetes knows, and the
    /// unsigned fields keep their range as bounds the server enforces.
    #[test]
    fn the_crd_uses_only_formats_kubernetes_recognizes() {
        let crd: serde_json::Value = yaml_serde::from_str(&render_yaml().unwrap()).unwrap();
        let mut formats = Vec::new();
        fn collect<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a serde_json::Value>) {
            match value {
                serde_json::Value::Object(object) => {
                    if object.get("format").is_some_and(|f| f.is_string()) {
                        found.push(value);
                    }
                    object.values().for_each(|v| collect(v, found));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, found)),
                _ => {}
            }
        }
        collect(&crd, &mut formats);
        assert!(!formats.is_empty());
        for schema in formats {
            let format = schema["format"].as_str().unwrap();
            assert!(["int32", "int64", "date-time"].contains(&format), "unrecognized format {format}: {schema}");
        }
        let summary = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["summary"]
            ["properties"]["desired"];
        assert_eq!(summary["minimum"], 0);
        assert_eq!(summary["maximum"], u64::from(u32::MAX));
    }

    /// The rewrite keeps a field's own tighter bounds.
    #[test]
    fn integer_formats_keep_tighter_bounds() {
        let mut schema = serde_json::json!({"properties": {
            "a": {"type": "integer", "format": "uint32", "minimum": 1.0, "maximum": 10.0},
            "b": {"type": "integer", "format": "uint64", "minimum": 0.0},
        }});
        kubernetes_integer_formats(&mut schema);
        assert_eq!(
            schema["properties"]["a"],
            serde_json::json!({"type": "integer", "format": "int64", "minimum": 1.0, "maximum": 10.0})
        );
        assert_eq!(schema["properties"]["b"], serde_json::json!({"type": "integer", "format": "int64", "minimum": 0}));
    }

    #[test]
    fn a_plain_spec_is_valid() {
        assert_eq!(validate_spec(&spec("@TGS#room", &["alice", "bob"])), Ok(()));
    }

    #[test]
    fn violations_name_the_field() {
        let duplicate = validate_spec(&spec("g", &["a", "a"])).unwrap_err().to_string();
        assert!(duplicate.contains("spec.unbannedMembers[1]"), "{duplicate}");
        let long = validate_spec(&spec("g", &[&"x".repeat(33)])).unwrap_err().to_string();
        assert!(long.contains("spec.unbannedMembers[0]"), "{long}");
        assert!(validate_spec(&spec("", &[])).unwrap_err().to_string().contains("spec.groupId"));
        assert!(validate_spec(&spec(&"g".repeat(49), &[])).is_err());
        assert!(validate_spec(&spec("g\u{e9}", &[])).is_err(), "non-ASCII bytes");
        let many: Vec<String> = (0..5001).map(|i| format!("m{i}")).collect();
        let mut big = spec("g", &[]);
        big.unbanned_members = many;
        assert!(validate_spec(&big).unwrap_err().to_string().contains("5001"));
    }
}
