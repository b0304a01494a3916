//! The `apply` command's status store: a JSON file of recorded statuses,
//! keyed by `namespace/name`, replaced atomically on every save.
//!
//! Atomic replace (write a sibling temp file, sync it, rename it over the
//! old one) means a process killed at any moment leaves either the old or
//! the new file, never a torn one. An exclusive lock on a sibling
//! `.NAME.lock` file keeps two runs from interleaving their saves. The file
//! is written once on open, so an unwritable path fails before any call.
//!
//! Entries of policies not in this run are kept: one state file can serve
//! several sets of manifests. A policy deleted and re-created under the
//! same name therefore continues from its old record.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crd::GroupBanPolicyStatus;

const KIND: &str = "GroupBanPolicyState";
const API_VERSION: &str = "groupban.dev/v1alpha1";

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Contents {
    api_version: String,
    kind: String,
    #[serde(default)]
    policies: BTreeMap<String, GroupBanPolicyStatus>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("state file {path} is not a {KIND} file ({reason}); fix or move it, it was left untouched")]
    Invalid { path: String, reason: String },
    #[error("cannot save state file {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("state file {path} is in use by another run (lock {lock} is held)")]
    Locked { path: String, lock: String },
}

pub struct StateFile {
    path: PathBuf,
    contents: Contents,
    // Held for the life of the value; the OS releases it if we are killed.
    _lock: std::fs::File,
}

impl StateFile {
    /// Locks and opens `path` (a missing file is an empty state), then
    /// writes it back to prove it can be saved.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let display = path.display().to_string();
        let lock_path = sibling(path, "lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StateError::Write { path: display.clone(), source })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked { path: display, lock: lock_path.display().to_string() });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StateError::Write { path: display, source });
            }
        }
        let contents = match std::fs::read(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Contents { api_version: API_VERSION.into(), kind: KIND.into(), policies: BTreeMap::new() }
            }
            Err(source) => {
                return Err(StateError::Read { path: display, source });
            }
            Ok(bytes) => {
                let contents: Contents = serde_json::from_slice(&bytes)
                    .map_err(|e| StateError::Invalid { path: display.clone(), reason: e.to_string() })?;
                if contents.kind != KIND {
                    return Err(StateError::Invalid { path: display, reason: format!("kind is {:?}", contents.kind) });
                }
                contents
            }
        };
        let mut state = Self { path: path.to_path_buf(), contents, _lock: lock };
        state.save([])?;
        Ok(state)
    }

    pub fn recorded(&self, key: &str) -> GroupBanPolicyStatus {
        self.contents.policies.get(key).cloned().unwrap_or_default()
    }

    /// Records `statuses` and replaces the file atomically.
    pub fn save<'a>(
        &mut self,
        statuses: impl IntoIterator<Item = (String, &'a GroupBanPolicyStatus)>,
    ) -> Result<(), StateError> {
        for (key, status) in statuses {
            self.contents.policies.insert(key, status.clone());
        }
        let error = |source| StateError::Write { path: self.path.display().to_string(), source };
        let bytes = serde_json::to_vec(&self.contents).map_err(|e| error(e.into()))?;
        let file_name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = self.path.with_file_name(format!(".{file_name}.tmp"));
        let mut file = std::fs::File::create(&temp).map_err(error)?;
        file.write_all(&bytes).map_err(error)?;
        file.sync_data().map_err(error)?;
        drop(file);
        std::fs::rename(&temp, &self.path).map_err(error)
    }
}

/// `.NAME.EXT` beside `path`.
fn sibling(path: &Path, extension: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{extension}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_statuses_load_back_and_other_entries_survive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut state = StateFile::open(&path).unwrap();
        let status = GroupBanPolicyStatus { unbanned_members: vec!["a".into()], ..Default::default() };
        state.save([("ns/one".to_string(), &status)]).unwrap();
        state.save([("ns/two".to_string(), &GroupBanPolicyStatus::default())]).unwrap();
        drop(state); // releases the lock, as a finished run does
        let reopened = StateFile::open(&path).unwrap();
        assert_eq!(reopened.recorded("ns/one").unbanned_members, ["a"]);
        assert_eq!(reopened.recorded("ns/missing"), GroupBanPolicyStatus::default());
    }

    #[test]
    fn a_second_opener_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let first = StateFile::open(&path).unwrap();
        let second = StateFile::open(&path);
        assert!(matches!(second, Err(StateError::Locked { .. })), "{:?}", second.err());
        drop(first);
        assert!(StateFile::open(&path).is_ok());
    }

    #[test]
    fn an_unwritable_location_fails_on_open() {
        let error = StateFile::open(Path::new("/nonexistent-dir/state.json")).err().unwrap();
        assert!(error.to_string().contains("/nonexistent-dir/state.json"), "{error}");
    }

    #[test]
    fn a_corrupt_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{not json").unwrap();
        let error = StateFile::open(&path).err().unwrap().to_string();
        assert!(error.contains("state.json") && error.contains("untouched"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{not json");
    }
}
