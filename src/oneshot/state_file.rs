//! The `apply` command's status store: a JSON file of recorded statuses,
//! keyed by `namespace/name`, replaced atomically on every save.
//!
//! Atomic replace (write a sibling temp file, sync it, rename it over the
//! old one) means a process killed at any moment leaves either the old or
//! the new file, never a torn one. An exclusive lock on a sibling
//! `.NAME.lock` file keeps two runs from interleaving their saves. The file
//! is written once on open, so an unwritable path fails before any call.
//!
//! The folder may be shared (`/tmp`, a team's folder), so nothing here
//! follows a symbolic link someone could plant: a state path that is a link
//! is refused, the lock is opened with `O_NOFOLLOW`, and the temp file has
//! an unpredictable name and is created exclusively. New state files are
//! private (0600); a replaced file keeps its mode.
//!
//! Entries of policies not in this run are kept: one state file can serve
//! several sets of manifests. A policy deleted and re-created under the
//! same name therefore continues from its old record.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
    #[error(
        "{path} is a symbolic link; give the path of the state file itself (a link in a shared folder could point anywhere)"
    )]
    Symlink { path: String },
    #[error("{path} is not a regular file")]
    NotAFile { path: String },
}

/// The largest state file read: far above 10,000 policies of 100 members.
pub const MAX_STATE_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// The mode of a state file this run creates.
const NEW_FILE_MODE: u32 = 0o600;

pub struct StateFile {
    path: PathBuf,
    /// Permission bits the file is written with.
    mode: u32,
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
        let lock_display = lock_path.display().to_string();
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(NEW_FILE_MODE)
            // No link, and no blocking on a FIFO planted in its place.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&lock_path)
            .map_err(|source| match source.raw_os_error() {
                Some(libc::ELOOP) => StateError::Symlink { path: lock_display.clone() },
                _ => StateError::Write { path: display.clone(), source },
            })?;
        if !lock.metadata().is_ok_and(|m| m.is_file()) {
            return Err(StateError::NotAFile { path: lock_display });
        }
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked { path: display, lock: lock_display });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StateError::Write { path: display, source });
            }
        }
        // Looked at under the lock: a run that finished a moment ago has
        // saved by now, and its file is read rather than overwritten.
        let existing = match std::fs::symlink_metadata(path) {
            Ok(metadata) if metadata.file_type().is_symlink() => return Err(StateError::Symlink { path: display }),
            Ok(metadata) if !metadata.is_file() => return Err(StateError::NotAFile { path: display }),
            Ok(metadata) => Some(metadata),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(StateError::Read { path: display, source }),
        };
        let contents = match existing {
            None => Contents { api_version: API_VERSION.into(), kind: KIND.into(), policies: BTreeMap::new() },
            Some(_) => parse(&read_bounded(path).map_err(|source| match source.raw_os_error() {
                Some(libc::ELOOP) => StateError::Symlink { path: display.clone() },
                _ => StateError::Read { path: display.clone(), source },
            })?)
            .map_err(|reason| StateError::Invalid { path: display.clone(), reason })?,
        };
        let mode = existing.map_or(NEW_FILE_MODE, |metadata| metadata.permissions().mode() & 0o7777);
        let mut state = Self { path: path.to_path_buf(), mode, contents, _lock: lock };
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
        let temp = sibling(&self.path, &format!("{:016x}.tmp", rand::random::<u64>()));
        let written = write_new(&temp, &bytes, self.mode).and_then(|()| std::fs::rename(&temp, &self.path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.map_err(error)?;
        // The rename is durable once the folder is synced too.
        let folder = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if let Ok(folder) = File::open(folder) {
            let _ = folder.sync_all();
        }
        Ok(())
    }
}

/// Creates `path`, which must not exist (not even as a link), and writes
/// and syncs `bytes` with permission bits `mode` (umask aside).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(mode).custom_flags(libc::O_NOFOLLOW).open(path)?;
    file.set_permissions(Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The statuses a state file records, read without locking or writing it
/// (`diff` only looks). Unlike `apply`, a missing file is an error: a
/// mistyped path must not read as "nothing recorded".
pub fn read_recorded(path: &Path) -> Result<BTreeMap<String, GroupBanPolicyStatus>, StateError> {
    let display = path.display().to_string();
    let bytes = match read_bounded(path) {
        Ok(bytes) => bytes,
        Err(source) if source.raw_os_error() == Some(libc::ELOOP) => {
            return Err(StateError::Symlink { path: display });
        }
        Err(source) => return Err(StateError::Read { path: display, source }),
    };
    let contents = parse(&bytes).map_err(|reason| StateError::Invalid { path: display, reason })?;
    Ok(contents.policies)
}

/// Reads a state file without following a link, at most
/// [`MAX_STATE_FILE_BYTES`].
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_STATE_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STATE_FILE_BYTES {
        return Err(std::io::Error::other(format!("larger than {} MiB", MAX_STATE_FILE_BYTES >> 20)));
    }
    Ok(bytes)
}

/// Parses a state file's bytes; the error says what is wrong with them.
fn parse(bytes: &[u8]) -> Result<Contents, String> {
    let contents: Contents = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if contents.kind != KIND {
        return Err(format!("kind is {:?}", contents.kind));
    }
    if contents.api_version != API_VERSION {
        return Err(format!("apiVersion is {:?}, not {API_VERSION}", contents.api_version));
    }
    Ok(contents)
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
    fn a_read_only_look_sees_what_was_saved_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(matches!(read_recorded(&path), Err(StateError::Read { .. })), "a missing file is named, not empty");
        let status = GroupBanPolicyStatus { unbanned_members: vec!["a".into()], ..Default::default() };
        StateFile::open(&path).unwrap().save([("ns/p".to_string(), &status)]).unwrap();
        let before = std::fs::read(&path).unwrap();
        let held = StateFile::open(&path).unwrap();
        assert_eq!(read_recorded(&path).unwrap().get("ns/p"), Some(&status), "read while another run holds the lock");
        drop(held);
        assert_eq!(std::fs::read(&path).unwrap(), before);
        std::fs::write(&path, "{}").unwrap();
        assert!(matches!(read_recorded(&path), Err(StateError::Invalid { .. })));
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(read_recorded(&link), Err(StateError::Symlink { .. })));
    }

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

    #[test]
    fn a_state_path_that_is_a_link_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere.json");
        std::fs::write(&target, "precious").unwrap();
        let link = dir.path().join("state.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = StateFile::open(&link).err().unwrap();
        assert!(matches!(error, StateError::Symlink { .. }), "{error}");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    }

    #[test]
    fn a_planted_lock_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("state.json");
        std::os::unix::fs::symlink(&victim, sibling(&path, "lock")).unwrap();
        let error = StateFile::open(&path).err().unwrap();
        assert!(error.to_string().contains(".state.json.lock is a symbolic link"), "{error}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn new_files_are_private_and_existing_ones_keep_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        drop(StateFile::open(&path).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        StateFile::open(&path).unwrap().save([]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no temp file is left behind");
    }

    #[test]
    fn a_planted_fifo_is_refused_not_waited_on() {
        for planted in ["state.json", ".state.json.lock"] {
            let dir = tempfile::tempdir().unwrap();
            let fifo = dir.path().join(planted);
            let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
            assert!(made.success());
            let error = StateFile::open(&dir.path().join("state.json")).err().unwrap().to_string();
            assert!(error.contains("not a regular file") || error.contains("cannot"), "{planted}: {error}");
        }
    }

    #[test]
    fn an_unknown_api_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, r#"{"apiVersion":"groupban.dev/v9","kind":"GroupBanPolicyState","policies":{}}"#)
            .unwrap();
        let error = StateFile::open(&path).err().unwrap().to_string();
        assert!(error.contains("apiVersion is \"groupban.dev/v9\""), "{error}");
    }

    proptest::proptest! {
        /// Whatever the bytes, reading a state file never panics: it loads,
        /// or it is refused with a message and left as it was.
        #[test]
        fn any_bytes_are_loaded_or_refused_with_a_message(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.json");
            std::fs::write(&path, &bytes).unwrap();
            match StateFile::open(&path) {
                Ok(_) => {}
                Err(error) => {
                    proptest::prop_assert!(error.to_string().contains("state.json"));
                    proptest::prop_assert_eq!(std::fs::read(&path).unwrap(), bytes);
                }
            }
        }
    }
}
