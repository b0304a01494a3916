//! The cluster commands, as Flux users know them: `get`, `reconcile`,
//! `suspend` and `resume`, with the user's kubeconfig (or the pod's
//! ServiceAccount). The same binary installed as `kubectl-groupban`
//! answers `kubectl groupban ...`.
//!
//! - [`connect`]: the client and namespace, as kubectl finds them.
//! - [`get`], [`table`]: listing and printing policies.
//! - [`request`]: the writes (own field manager, one field each) and the
//!   wait for a reconcile request to be handled.
//! - [`secrets`]: a credentials Secret read once, for `diff` and `check`.
//! - [`errors`]: failures naming the object and the cause.

pub mod connect;
pub mod errors;
pub mod get;
pub mod request;
pub mod secrets;
pub mod table;
