//! The Tencent IM side: UserSig, the REST client, the one ErrorCode table,
//! the per-app rate limiter and the regional endpoints.

pub mod client;
pub mod codes;
pub mod endpoint;
pub mod limiter;
pub mod proxy;
pub mod usersig;

pub use client::{
    Answer, AppCredentials, CallControl, ClientSettings, Command, ImClient, Outcome, RetryPolicy, TransportError,
};
pub use endpoint::Endpoint;
pub use limiter::{DEFAULT_CALLS_PER_SECOND, LimiterRegistry, RateLimit, RateLimiter};

/// Members one `unban_group_member` / `ban_group_member` call may carry;
/// the gateway answers 10005 for more.
pub const MAX_MEMBERS_PER_CALL: usize = 20;
