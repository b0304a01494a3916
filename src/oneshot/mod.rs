//! The one-shot mode: the engine over manifest files, once, with a state
//! file as the status store (`groupban-operator apply`).
//!
//! - [`manifests`]: reads GroupBanPolicy and Secret manifests as kubectl would.
//! - [`state_file`]: the status store, replaced atomically after every answer.
//! - [`apply`]: one pass of the engine over them.

pub mod apply;
pub mod manifests;
pub mod state_file;
pub mod strict_yaml;
