//! `check`: is everything in place for `run`? As `cmctl check api` and
//! `flux check --pre` do, one line per check, each passing, failing (with
//! what to do) or skipped, and a non-zero exit on any failure.
//!
//! - [`cluster`]: the API server's version, the CRD, the operator's
//!   permissions (SelfSubjectAccessReview, as the operator or `--as`), a
//!   running operator (its Lease, `/readyz`).
//! - [`credentials`]: a Secret's credentials parse, sign, and one harmless
//!   ban-list read answers ErrorCode 0.
//! - [`report`]: the lines, how they print, the exit code.

pub mod cluster;
pub mod credentials;
pub mod report;
