//! The simulator's seed file: which groups exist and who is banned.
//!
//! ```yaml
//! groups:
//!   - groupId: "@TGS#demo"
//!     type: AVChatRoom
//!     banned: [alice, bob]
//!   - groupId: locked-room
//!     type: AVChatRoom
//!     failWith: {errorCode: 10007, errorInfo: "no permission"}
//! ```

use std::path::Path;

use serde::Deserialize;

/// Group types the IM service knows (`Work` is the newer name of `Private`).
pub const GROUP_TYPES: &[&str] = &["AVChatRoom", "Public", "Private", "Work", "ChatRoom", "Meeting", "Community"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    #[serde(default)]
    pub groups: Vec<SeedGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedGroup {
    pub group_id: String,
    #[serde(rename = "type")]
    pub group_type: String,
    #[serde(default)]
    pub banned: Vec<String>,
    /// Every call on this group gets this answer: lets users rehearse how the
    /// operator reports a fault such as 10007 (no permission).
    #[serde(default)]
    pub fail_with: Option<ForcedAnswer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForcedAnswer {
    pub error_code: i64,
    #[serde(default)]
    pub error_info: String,
}

/// The largest seed file read: room for a million banned members.
pub const MAX_SEED_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("failed to read seed file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("seed file {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

impl SeedFile {
    pub fn load(path: &Path) -> Result<Self, SeedError> {
        use std::io::Read;
        let read_error = |source| SeedError::Read { path: path.display().to_string(), source };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_SEED_BYTES + 1).read_to_string(&mut text))
            .map_err(read_error)?;
        if text.len() as u64 > MAX_SEED_BYTES {
            let message = format!("larger than {} MiB", MAX_SEED_BYTES >> 20);
            return Err(SeedError::Invalid { path: path.display().to_string(), message });
        }
        Self::parse(&text).map_err(|message| SeedError::Invalid { path: path.display().to_string(), message })
    }

    /// Parses and checks a seed document; the message names the offending group.
    pub fn parse(text: &str) -> Result<Self, String> {
        let seed: SeedFile = if text.trim().is_empty() {
            SeedFile::default()
        } else {
            yaml_serde::from_str(text).map_err(|e| e.to_string())?
        };
        let mut seen = std::collections::HashSet::new();
        for (index, group) in seed.groups.iter().enumerate() {
            let at = format!("groups[{index}] ({:?})", group.group_id);
            if group.group_id.is_empty() {
                return Err(format!("groups[{index}].groupId must not be empty"));
            }
            if !seen.insert(&group.group_id) {
                return Err(format!("{at}: groupId appears twice"));
            }
            if !GROUP_TYPES.contains(&group.group_type.as_str()) {
                return Err(format!("{at}: type {:?} is not one of {}", group.group_type, GROUP_TYPES.join(", ")));
            }
            if let Some(member) = group.banned.iter().find(|m| m.is_empty() || m.len() > 32) {
                return Err(format!("{at}: banned member {member:?} must be 1 to 32 bytes"));
            }
        }
        Ok(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_form_parses() {
        let seed =
            SeedFile::parse("groups: [{groupId: \"@TGS#demo\", type: AVChatRoom, banned: [alice, bob]}]").unwrap();
        assert_eq!(seed.groups[0].group_id, "@TGS#demo");
        assert_eq!(seed.groups[0].banned, ["alice", "bob"]);
    }

    #[test]
    fn mistakes_are_named() {
        let unknown_type = SeedFile::parse("groups: [{groupId: g, type: Chat}]").unwrap_err();
        assert!(unknown_type.contains("groups[0]") && unknown_type.contains("Chat"), "{unknown_type}");
        let twice =
            SeedFile::parse("groups: [{groupId: g, type: AVChatRoom}, {groupId: g, type: AVChatRoom}]").unwrap_err();
        assert!(twice.contains("twice"), "{twice}");
        let typo = SeedFile::parse("groups: [{groupId: g, type: AVChatRoom, baned: [a]}]").unwrap_err();
        assert!(typo.contains("baned"), "{typo}");
    }

    #[test]
    fn an_empty_file_has_no_groups() {
        assert_eq!(SeedFile::parse("").unwrap(), SeedFile::default());
    }
}
