//! The simulated group service: groups, bans, and the three commands'
//! business rules. Pure: the time is passed in and no I/O happens here.
//!
//! Where the documentation is silent the choice is marked UNCONFIRMED and
//! matches the fact sheet's most plausible reading.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::seed::{ForcedAnswer, SeedFile};

pub use crate::im::MAX_MEMBERS_PER_CALL;
/// Entries per ban-list page (documented maximum of `Limit`).
pub const MAX_BAN_LIST_PAGE: u64 = 100;
/// Seeded bans last this long.
const SEEDED_BAN_SECS: u64 = 30 * 24 * 3600;

/// An answer of the group service: ErrorCode, ErrorInfo and any extra fields.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceAnswer {
    pub code: i64,
    pub info: String,
    pub extra: serde_json::Map<String, Value>,
}

impl ServiceAnswer {
    pub fn ok() -> Self {
        Self { code: 0, info: String::new(), extra: Default::default() }
    }

    pub fn error(code: i64, info: impl Into<String>) -> Self {
        Self { code, info: info.into(), extra: Default::default() }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    #[serde(rename = "type")]
    pub group_type: String,
    /// Member → Unix second at which the ban ends.
    pub banned: BTreeMap<String, u64>,
    #[serde(skip)]
    pub fail_with: Option<ForcedAnswer>,
}

#[derive(Debug, Clone, Default)]
pub struct Groups {
    groups: BTreeMap<String, Group>,
    /// Accept ban commands on every group type (a newer doc revision says
    /// all types support them; the others say AVChatRoom only).
    pub allow_any_group_type: bool,
}

impl Groups {
    pub fn from_seed(seed: &SeedFile, now: u64) -> Self {
        let groups = seed
            .groups
            .iter()
            .map(|g| {
                let banned = g.banned.iter().map(|m| (m.clone(), now + SEEDED_BAN_SECS)).collect();
                (g.group_id.clone(), Group { group_type: g.group_type.clone(), banned, fail_with: g.fail_with.clone() })
            })
            .collect();
        Self { groups, allow_any_group_type: false }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Group)> {
        self.groups.iter()
    }

    /// Members whose ban is still running at `now`.
    pub fn active_bans(&self, group_id: &str, now: u64) -> Vec<(String, u64)> {
        self.groups
            .get(group_id)
            .map(|g| g.banned.iter().filter(|(_, until)| **until > now).map(|(m, u)| (m.clone(), *u)).collect())
            .unwrap_or_default()
    }

    /// `unban_group_member`. Unbanning a member who is not banned succeeds
    /// (UNCONFIRMED; by analogy with delete_group_member, which documents
    /// success for a member not in the group).
    pub fn unban(&mut self, body: &Value) -> ServiceAnswer {
        let (group_id, members) = match self.group_and_members(body) {
            Ok(found) => found,
            Err(answer) => return answer,
        };
        if let Some(group) = self.groups.get_mut(&group_id) {
            for member in &members {
                group.banned.remove(member);
            }
        }
        ServiceAnswer::ok()
    }

    /// `ban_group_member`: `Duration` seconds (1..=u32::MAX; 0 is refused
    /// as 10004, UNCONFIRMED), optional `Description` up to 1000 bytes.
    pub fn ban(&mut self, body: &Value, now: u64) -> ServiceAnswer {
        let (group_id, members) = match self.group_and_members(body) {
            Ok(found) => found,
            Err(answer) => return answer,
        };
        let duration = match body.get("Duration").and_then(Value::as_u64) {
            Some(d) if (1..=u64::from(u32::MAX)).contains(&d) => d,
            _ => {
                return ServiceAnswer::error(10004, "Duration must be an integer from 1 to 4294967295");
            }
        };
        match body.get("Description") {
            None => {}
            Some(Value::String(text)) if text.len() <= 1000 => {}
            Some(_) => {
                return ServiceAnswer::error(10004, "Description must be a string of at most 1000 bytes");
            }
        }
        if let Some(group) = self.groups.get_mut(&group_id) {
            for member in members {
                group.banned.insert(member, now + duration);
            }
        }
        ServiceAnswer::ok()
    }

    /// `get_group_ban_member`: pages of at most 100 in account order;
    /// `NextOffset` 0 ends the list. A `Limit` above 100 is served as 100
    /// (UNCONFIRMED: the gateway may refuse it instead).
    pub fn ban_list(&self, body: &Value, now: u64) -> ServiceAnswer {
        let group_id = match self.existing_group(body) {
            Ok(id) => id,
            Err(answer) => return answer,
        };
        let Some(offset) = body.get("Offset").and_then(Value::as_u64) else {
            return ServiceAnswer::error(10004, "Offset is required and must be a non-negative integer");
        };
        let limit = match body.get("Limit") {
            None => MAX_BAN_LIST_PAGE,
            Some(v) => match v.as_u64() {
                Some(l) if l >= 1 => l.min(MAX_BAN_LIST_PAGE),
                _ => return ServiceAnswer::error(10004, "Limit must be a positive integer"),
            },
        };
        // Walks the list without copying it: a page of a 100,000-member
        // list costs one pass over the map, not a copy of it.
        let Some(group) = self.groups.get(&group_id) else {
            return ServiceAnswer::error(10010, format!("group {group_id} does not exist or was dissolved"));
        };
        let mut active = group.banned.iter().filter(|(_, until)| **until > now);
        let page: Vec<Value> = active
            .by_ref()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(limit as usize)
            .map(|(member, until)| json!({"Member_Account": member, "BannedUntil": until}))
            .collect();
        let end = offset.saturating_add(page.len() as u64);
        let next_offset = if active.next().is_some() { end } else { 0 };
        let mut answer = ServiceAnswer::ok();
        answer.extra.insert("BannedAccountList".into(), Value::Array(page));
        answer.extra.insert("NextOffset".into(), json!(next_offset));
        answer
    }

    /// Validates `GroupId` and `Members_Account` and finds the group.
    fn group_and_members(&self, body: &Value) -> Result<(String, Vec<String>), ServiceAnswer> {
        let group_id = self.existing_group(body)?;
        let Some(list) = body.get("Members_Account").and_then(Value::as_array) else {
            return Err(ServiceAnswer::error(10004, "Members_Account is required and must be an array"));
        };
        if list.is_empty() {
            return Err(ServiceAnswer::error(10004, "Members_Account must not be empty"));
        }
        if list.len() > MAX_MEMBERS_PER_CALL {
            return Err(ServiceAnswer::error(
                10005,
                format!("Members_Account has {} accounts; at most {MAX_MEMBERS_PER_CALL} per request", list.len()),
            ));
        }
        let mut members = Vec::with_capacity(list.len());
        for item in list {
            match item.as_str() {
                Some(m) if !m.is_empty() && m.len() <= 32 => members.push(m.to_string()),
                Some(m) => {
                    return Err(ServiceAnswer::error(10004, format!("account {m:?} must be 1 to 32 bytes")));
                }
                None => {
                    return Err(ServiceAnswer::error(60015, "every Members_Account entry must be a string"));
                }
            }
        }
        Ok((group_id, members))
    }

    /// Validates `GroupId` (10004 missing, 10015 malformed, 10010 unknown),
    /// the group's type, and any forced answer seeded for it.
    fn existing_group(&self, body: &Value) -> Result<String, ServiceAnswer> {
        let Some(group_id) = body.get("GroupId").and_then(Value::as_str) else {
            return Err(ServiceAnswer::error(10004, "GroupId is required and must be a string"));
        };
        // What makes an ID malformed is UNCONFIRMED; IDs are at most 48 bytes
        // of printable text.
        if group_id.is_empty() || group_id.len() > 48 || group_id.chars().any(char::is_control) {
            return Err(ServiceAnswer::error(10015, format!("invalid GroupId {group_id:?}")));
        }
        let Some(group) = self.groups.get(group_id) else {
            return Err(ServiceAnswer::error(10010, format!("group {group_id} does not exist or was dissolved")));
        };
        if group.group_type != "AVChatRoom" && !self.allow_any_group_type {
            // UNCONFIRMED: the code for a non-AVChatRoom group is undocumented.
            return Err(ServiceAnswer::error(
                10004,
                format!(
                    "group {group_id} is a {} group; member banning applies to AVChatRoom groups",
                    group.group_type
                ),
            ));
        }
        if let Some(forced) = &group.fail_with {
            return Err(ServiceAnswer::error(forced.error_code, forced.error_info.clone()));
        }
        Ok(group_id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn groups() -> Groups {
        let seed = SeedFile::parse(
            "groups: [{groupId: room, type: AVChatRoom, banned: [alice, bob]}, {groupId: pub, type: Public, banned: [x]}, {groupId: locked, type: AVChatRoom, failWith: {errorCode: 10007, errorInfo: denied}}]",
        )
        .unwrap();
        Groups::from_seed(&seed, NOW)
    }

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("m{i}")).collect()
    }

    #[test]
    fn unban_removes_the_ban_and_is_idempotent() {
        let mut g = groups();
        assert_eq!(g.unban(&json!({"GroupId": "room", "Members_Account": ["alice"]})).code, 0);
        assert_eq!(g.active_bans("room", NOW), vec![("bob".to_string(), NOW + SEEDED_BAN_SECS)]);
        assert_eq!(g.unban(&json!({"GroupId": "room", "Members_Account": ["alice"]})).code, 0);
    }

    #[test]
    fn twenty_members_pass_and_twenty_one_get_10005() {
        let mut g = groups();
        assert_eq!(g.unban(&json!({"GroupId": "room", "Members_Account": members(20)})).code, 0);
        assert_eq!(g.unban(&json!({"GroupId": "room", "Members_Account": members(21)})).code, 10005);
    }

    #[test]
    fn group_faults_get_their_documented_codes() {
        let mut g = groups();
        let call = |g: &mut Groups, body: Value| g.unban(&body).code;
        assert_eq!(call(&mut g, json!({"GroupId": "nope", "Members_Account": ["a"]})), 10010);
        assert_eq!(call(&mut g, json!({"GroupId": "", "Members_Account": ["a"]})), 10015);
        assert_eq!(call(&mut g, json!({"GroupId": "x".repeat(49), "Members_Account": ["a"]})), 10015);
        assert_eq!(call(&mut g, json!({"Members_Account": ["a"]})), 10004);
        assert_eq!(call(&mut g, json!({"GroupId": "room"})), 10004);
        assert_eq!(call(&mut g, json!({"GroupId": "room", "Members_Account": []})), 10004);
        assert_eq!(call(&mut g, json!({"GroupId": "room", "Members_Account": [7]})), 60015);
        assert_eq!(call(&mut g, json!({"GroupId": "pub", "Members_Account": ["x"]})), 10004);
        assert_eq!(call(&mut g, json!({"GroupId": "locked", "Members_Account": ["a"]})), 10007);
        g.allow_any_group_type = true;
        assert_eq!(call(&mut g, json!({"GroupId": "pub", "Members_Account": ["x"]})), 0);
    }

    #[test]
    fn ban_then_list_pages_through_every_active_ban() {
        let mut g = groups();
        for chunk in members(250).chunks(20) {
            assert_eq!(g.ban(&json!({"GroupId": "room", "Members_Account": chunk, "Duration": 60}), NOW).code, 0);
        }
        let mut seen = Vec::new();
        let mut offset = 0;
        loop {
            let page = g.ban_list(&json!({"GroupId": "room", "Offset": offset, "Limit": 100}), NOW + 1);
            assert_eq!(page.code, 0);
            let list = page.extra["BannedAccountList"].as_array().unwrap();
            assert!(list.len() <= 100);
            seen.extend(list.iter().map(|e| e["Member_Account"].as_str().unwrap().to_string()));
            offset = page.extra["NextOffset"].as_u64().unwrap();
            if offset == 0 {
                break;
            }
        }
        assert_eq!(seen.len(), 252); // 250 + alice + bob
        // Bans of 60 s are gone a minute later.
        assert_eq!(g.active_bans("room", NOW + 61).len(), 2);
    }

    #[test]
    fn ban_list_and_ban_refuse_bad_parameters() {
        let mut g = groups();
        assert_eq!(g.ban_list(&json!({"GroupId": "room"}), NOW).code, 10004);
        assert_eq!(g.ban_list(&json!({"GroupId": "room", "Offset": 0, "Limit": 0}), NOW).code, 10004);
        assert_eq!(g.ban(&json!({"GroupId": "room", "Members_Account": ["a"], "Duration": 0}), NOW).code, 10004);
        assert_eq!(g.ban(&json!({"GroupId": "room", "Members_Account": ["a"]}), NOW).code, 10004);
    }
}
