//! What goes over the wire: the REST commands this operator uses, the
//! common part of every answer, and the bodies of requests and answers.
//! Pure data; the client sends and reads them.

use serde::{Deserialize, Serialize};

/// The REST commands this operator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    UnbanGroupMember,
    BanGroupMember,
    GetGroupBanMember,
}

impl Command {
    pub fn path(self) -> &'static str {
        match self {
            Command::UnbanGroupMember => "group_open_http_svc/unban_group_member",
            Command::BanGroupMember => "group_open_http_svc/ban_group_member",
            Command::GetGroupBanMember => "group_open_http_svc/get_group_ban_member",
        }
    }

    pub fn name(self) -> &'static str {
        self.path().rsplit('/').next().unwrap_or_default()
    }
}

/// The common part of every IM answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    #[serde(rename = "ActionStatus", default)]
    pub action_status: String,
    #[serde(rename = "ErrorCode")]
    pub error_code: i64,
    #[serde(rename = "ErrorInfo", default)]
    pub error_info: String,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        self.error_code == 0
    }
}

/// The body of `unban_group_member` and (with `Duration`) `ban_group_member`.
#[derive(Serialize)]
pub(super) struct MembersBody<'a> {
    #[serde(rename = "GroupId")]
    pub group_id: &'a str,
    #[serde(rename = "Members_Account")]
    pub members: &'a [String],
    #[serde(rename = "Duration", skip_serializing_if = "Option::is_none")]
    pub duration: Option<u32>,
}

#[derive(Deserialize)]
pub(super) struct Envelope<T> {
    #[serde(flatten)]
    pub answer: Answer,
    // Unknown fields (RequestId, ErrorDisplay, ...) are ignored.
    #[serde(flatten)]
    pub data: T,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Empty {}

/// A member on a group's ban list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BannedAccount {
    #[serde(rename = "Member_Account")]
    pub member_account: String,
    /// Unix seconds at which the ban ends.
    #[serde(rename = "BannedUntil", default)]
    pub banned_until: u64,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct BanPage {
    #[serde(rename = "BannedAccountList", default)]
    pub banned_accounts: Vec<BannedAccount>,
    #[serde(rename = "NextOffset", default)]
    pub next_offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_ignores_unknown_fields_and_reads_the_answer() {
        let body = r#"{"ActionStatus":"FAIL","ErrorInfo":"group not found","ErrorCode":10010,"RequestId":"Id-1","ErrorDisplay":"x"}"#;
        let envelope: Envelope<Empty> = serde_json::from_str(body).unwrap();
        assert_eq!(envelope.answer.error_code, 10010);
        assert_eq!(envelope.answer.error_info, "group not found");
    }

    #[test]
    fn ban_page_reads_the_documented_sample() {
        let body = r#"{"ActionStatus":"OK","BannedAccountList":[{"BannedUntil":1660875916,"Member_Account":"brennanli1"}],"ErrorCode":0,"ErrorInfo":"","NextOffset":2}"#;
        let envelope: Envelope<BanPage> = serde_json::from_str(body).unwrap();
        assert_eq!(envelope.data.next_offset, 2);
        assert_eq!(envelope.data.banned_accounts[0].member_account, "brennanli1");
        assert_eq!(envelope.data.banned_accounts[0].banned_until, 1660875916);
    }

    #[test]
    fn command_names_are_the_last_path_segment() {
        assert_eq!(Command::UnbanGroupMember.name(), "unban_group_member");
        assert_eq!(Command::GetGroupBanMember.path(), "group_open_http_svc/get_group_ban_member");
    }
}
