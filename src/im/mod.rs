//! The Tencent IM side: UserSig, the REST client, the one ErrorCode table,
//! the per-app rate limiter and the regional endpoints.

//!
//! - [`wire`]: commands, answers and bodies as the gateway sees them.
//! - [`client`]: signs, rate-limits, sends and retries one call.
//! - [`retry`]: the retry policy and the pure retry step.
//! - [`redact`]: keeps the UserSig out of what the gateway echoes.
//! - [`observe`]: what the client tells whoever counts its calls.
//! - [`limiter`]: the per-app, per-API rate limiter.
//! - [`window_counter`]: events counted over a sliding window.
//! - [`codes`], [`endpoint`], [`proxy`], [`usersig`]: the table of
//!   ErrorCodes, regional endpoints, proxies from the environment, UserSig.

pub mod client;
pub mod codes;
pub mod endpoint;
pub mod limiter;
pub mod observe;
pub mod proxy;
pub mod redact;
pub mod retry;
pub mod usersig;
pub mod window_counter;
pub mod wire;

pub use client::{AppCredentials, BAN_LIST_PAGE_SIZE, CallControl, ClientSettings, ImClient, Outcome, TransportError};
pub use endpoint::Endpoint;
pub use limiter::{DEFAULT_CALLS_PER_SECOND, LimiterRegistry, RateLimit, RateLimiter};
pub use observe::{CallObserver, NoObserver};
pub use retry::RetryPolicy;
pub use wire::{Answer, Command};

/// Members one `unban_group_member` / `ban_group_member` call may carry;
/// the gateway answers 10005 for more.
pub const MAX_MEMBERS_PER_CALL: usize = 20;
