//! What the engine's pure tests share: a spec, a report, a pass view and
//! a whole fold from an empty record.

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;

use super::conditions::{Halt, PassView, conclude, find_condition};
use super::fold::{CallReport, DesiredMembers, RecordOwner, prepare, record_call};
use crate::crd::{GroupBanPolicySpec, GroupBanPolicyStatus};

pub const OWNER: RecordOwner<'static> = RecordOwner { sdkappid: 1400000000, endpoint: "https://console.tim.qq.com" };

pub fn view<'a>(desired: &'a DesiredMembers<'a>, halt: Option<&'a Halt>, failed: &'a BTreeSet<String>) -> PassView<'a> {
    PassView { desired, generation: Some(3), halt, failed_in_pass: failed, retrying: None }
}

pub fn spec(members: &[&str]) -> GroupBanPolicySpec {
    GroupBanPolicySpec {
        group_id: "room".into(),
        unbanned_members: members.iter().map(|m| m.to_string()).collect(),
        credentials_secret_ref: None,
        suspend: None,
        drift_check_interval: None,
    }
}

pub fn report(members: &[&str], error_code: i64) -> CallReport {
    CallReport {
        members: members.iter().map(|m| m.to_string()).collect(),
        error_code,
        error_info: if error_code == 0 { String::new() } else { format!("info {error_code}") },
        attempts: 1,
        budget_answers: 0,
        at: Timestamp::UNIX_EPOCH,
    }
}

pub fn cond<'a>(status: &'a GroupBanPolicyStatus, kind: &str) -> (&'a str, &'a str) {
    let c = find_condition(status, kind).unwrap();
    (c.status.as_str(), c.reason.as_str())
}

pub fn run(spec: &GroupBanPolicySpec, reports: &[CallReport], halt: Option<&Halt>) -> GroupBanPolicyStatus {
    let mut status = prepare(GroupBanPolicyStatus::default(), spec, Some(OWNER));
    let desired = DesiredMembers::of(spec);
    for r in reports {
        record_call(&mut status, &desired, r);
    }
    conclude(status, view(&desired, halt, &BTreeSet::new()), Timestamp::UNIX_EPOCH).0
}
