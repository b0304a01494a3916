//! The one-shot mode: the engine over manifest files, once, with a state
//! file as the status store (`groupban-operator apply`).
//!
//! - [`manifests`]: reads GroupBanPolicy and Secret manifests as kubectl would.
//! - [`state_file`]: the status store, replaced atomically after every answer.
//! - [`apply`]: one pass of the engine over them.
//! - [`interrupt`]: how a run is stopped (signals, `--timeout`).
//! - [`strict_yaml`]: YAML read as the API server would (no duplicate keys).

pub mod apply;
pub mod interrupt;
pub mod manifests;
pub mod state_file;
pub mod strict_yaml;
