//! `diff`: each policy against its group's real ban list, read with
//! `get_group_ban_member` (paged, on that API's own call budget). It
//! reports, per policy, the desired members still banned (what the next
//! pass unbans), those not banned (nothing to do) and the recorded members
//! banned again (drift). It never calls `unban_group_member`.
//!
//! - [`sources`]: the policies, their records and credentials, from
//!   manifest files (and a state file) or from the cluster.
//! - [`read`]: the ban-list reads, a few policies at a time.
//! - [`report`]: the stable output (table, YAML, JSON) and the exit code.

pub mod read;
pub mod report;
pub mod sources;
