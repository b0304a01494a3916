//! The REST client: signs, rate-limits, sends, classifies and retries.
//!
//! One [`ImClient`] serves one app identity (SDKAppID, admin identifier,
//! secret key) at one endpoint. It shares a connection pool and the app's
//! [`RateLimiter`] with every other client in the process.
//!
//! Credentials never leave through logs or errors: the URL carries the
//! UserSig, so no error keeps it (reqwest's are stripped of their URL), no
//! log line prints it, and redirects are refused (they would resend it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, watch};
use tracing::debug;

use super::codes::{self, CodeClass};
use super::endpoint::Endpoint;
use super::limiter::{ApiLimiters, CallSlot, RateLimiter};
use super::observe::{CallObserver, NoObserver};
use super::redact::redact_usersig;
use super::retry::{RetryPolicy, Step, next_step};
use super::usersig::{self, SigRequest};
use super::wire::{Answer, BanPage, BannedAccount, Command, Empty, Envelope, MembersBody};
use crate::error_chain;
use crate::secret::Redacted;

/// What identifies a caller to the IM gateway.
#[derive(Clone, PartialEq, Eq)]
pub struct AppCredentials {
    pub sdkappid: u64,
    /// An App admin account.
    pub identifier: String,
    pub secret_key: Redacted<String>,
}

impl std::fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCredentials")
            .field("sdkappid", &self.sdkappid)
            .field("identifier", &self.identifier)
            .field("secret_key", &self.secret_key)
            .finish()
    }
}

/// A call that got no IM answer. Always retryable: the request may or may
/// not have been carried out, so nothing is recorded from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("IM gateway answered HTTP {status}")]
    HttpStatus { status: u16 },
    #[error("IM request timed out after {0:?}")]
    Timeout(Duration),
    #[error("could not connect to the IM gateway: {0}")]
    Connect(String),
    #[error("IM request failed: {0}")]
    Request(String),
    #[error("IM answer is not a valid JSON envelope: {0}")]
    InvalidBody(String),
}

/// A get_group_ban_member request.
#[derive(Serialize)]
struct BanListBody<'a> {
    #[serde(rename = "GroupId")]
    group_id: &'a str,
    #[serde(rename = "Limit")]
    limit: u32,
    #[serde(rename = "Offset")]
    offset: u64,
}

/// Members a get_group_ban_member page asks for: the documented maximum.
pub const BAN_LIST_PAGE_SIZE: u32 = 100;

/// The last answer of a call and how many attempts it took.
#[derive(Debug)]
pub struct Outcome<T> {
    pub result: Result<(Answer, T), TransportError>,
    pub attempts: u32,
    /// Attempts answered that the app's budget was spent (60007, 60011).
    pub budget_answers: u32,
}

impl<T> Outcome<T> {
    /// The ErrorCode of the final answer, if there was one.
    pub fn error_code(&self) -> Option<i64> {
        self.result.as_ref().ok().map(|(answer, _)| answer.error_code)
    }

    fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        Outcome {
            result: self.result.map(|(answer, data)| (answer, f(data))),
            attempts: self.attempts,
            budget_answers: self.budget_answers,
        }
    }
}

/// Resolves once `stop` is true; never when there is no stop signal (or
/// its sender is gone).
async fn stopped(stop: &mut Option<watch::Receiver<bool>>) {
    if let Some(receiver) = stop
        && receiver.wait_for(|halted| *halted).await.is_ok()
    {
        return;
    }
    std::future::pending::<()>().await
}

/// How a caller steers one call beyond its body: when to give up, where to
/// queue, and whom to tell about each attempt that will be retried.
#[derive(Default)]
pub struct CallControl<'a> {
    /// Gives up (while waiting, never with a request on the wire) once true.
    pub stop: Option<watch::Receiver<bool>>,
    /// A caller's share of the limiter's queue: each wait for the limiter
    /// first takes one of its permits, so one caller with many calls cannot
    /// fill the queue ahead of others.
    pub lane: Option<&'a Semaphore>,
    /// Told about every failed attempt that is about to be retried, so a
    /// caller can show the cause before the call's final outcome is in.
    pub on_retry: Option<&'a (dyn Fn(&RetryNotice) + Send + Sync)>,
}

/// An attempt that failed and will be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryNotice {
    /// The attempt that failed, from 1.
    pub attempt: u32,
    /// The IM ErrorCode, or `None` when there was no IM answer.
    pub error_code: Option<i64>,
    /// The answer's ErrorInfo, or what went wrong without an answer.
    pub detail: String,
    pub retry_in: Duration,
}

/// Waits for the limiter, holding a place in `lane` (if any) while queued.
async fn acquire_in_lane<'a>(limiter: &'a RateLimiter, lane: Option<&Semaphore>) -> CallSlot<'a> {
    // A closed semaphore is no lane: queue without one.
    let _place = match lane {
        Some(lane) => lane.acquire().await.ok(),
        None => None,
    };
    limiter.acquire().await
}

/// Unix seconds; injectable so tests can make the client's clock lag.
pub type UnixClock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub fn system_clock() -> UnixClock {
    Arc::new(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
}

/// Tunables of a client.
#[derive(Clone)]
pub struct ClientSettings {
    /// Per-request timeout. The gateway gives up after 3 s itself, so this
    /// must be longer or we would abandon calls that are still succeeding.
    pub request_timeout: Duration,
    /// Validity written into each UserSig.
    pub usersig_ttl: Duration,
    pub retry: RetryPolicy,
    pub clock: UnixClock,
    /// Told about every attempt (see [`CallObserver`]); `run` passes its
    /// metrics, the one-shot commands count nothing.
    pub observer: Arc<dyn CallObserver>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(6),
            usersig_ttl: Duration::from_secs(24 * 3600),
            retry: RetryPolicy::default(),
            clock: system_clock(),
            observer: Arc::new(NoObserver),
        }
    }
}

/// The largest answer body read. Real answers are a few hundred bytes (a
/// ban-list page of 100 members a few KiB); a gateway that streams more is
/// broken or hostile, and reading on would only grow memory.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The most of an `ErrorInfo` kept. It is copied into statuses, Events, the
/// state file and logs, so an answer cannot make any of them large.
pub const MAX_ERROR_INFO_BYTES: usize = 1024;

/// The process-wide HTTP connection pool. Redirects are refused: following
/// one would send the UserSig in the query to wherever it points. Fails
/// only if TLS cannot be set up; there is deliberately no fallback to a
/// default client, which would follow redirects.
///
/// Proxies are taken from the environment as kubectl and other Go tools do
/// (see [`super::proxy`]): never for loopback, never for `NO_PROXY` hosts.
pub fn http_client(request_timeout: Duration) -> Result<reqwest::Client, TransportError> {
    crate::install_crypto_provider();
    let rules = super::proxy::ProxyEnv::read().rules();
    // With no rule of ours, reqwest would read the environment itself
    // (ALL_PROXY included, loopback not excepted).
    let mut builder = if rules.is_empty() { reqwest::Client::builder().no_proxy() } else { reqwest::Client::builder() };
    for rule in rules {
        builder = builder.proxy(rule);
    }
    builder
        .redirect(reqwest::redirect::Policy::none())
        .timeout(request_timeout)
        .connect_timeout(request_timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| {
            TransportError::Request(format!("cannot set up the HTTP client: {}", error_chain(&e.without_url())))
        })
}

/// One signature per client, renewed at half its life.
struct SigCache {
    current: Mutex<Option<CachedSig>>,
}

struct CachedSig {
    usersig: Redacted<String>,
    renew_at: u64,
}

/// A client for one app identity at one endpoint.
pub struct ImClient {
    http: reqwest::Client,
    endpoint: Endpoint,
    credentials: AppCredentials,
    limiters: ApiLimiters,
    settings: ClientSettings,
    sig_cache: SigCache,
}

impl ImClient {
    pub fn new(
        http: reqwest::Client,
        endpoint: Endpoint,
        credentials: AppCredentials,
        limiters: impl Into<ApiLimiters>,
        settings: ClientSettings,
    ) -> Self {
        let limiters = limiters.into();
        Self { http, endpoint, credentials, limiters, settings, sig_cache: SigCache { current: Mutex::new(None) } }
    }

    /// The limiter `command`'s calls wait for.
    pub fn limiter(&self, command: Command) -> &Arc<RateLimiter> {
        self.limiters.for_command(command)
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn credentials(&self) -> &AppCredentials {
        &self.credentials
    }

    /// Unbans up to 20 members. The caller batches; the gateway answers
    /// 10005 for more.
    pub async fn unban_group_member(&self, group_id: &str, members: &[String]) -> Outcome<()> {
        let body = MembersBody { group_id, members, duration: None };
        self.call::<_, Empty>(Command::UnbanGroupMember, &body).await.map(|_| ())
    }

    /// [`ImClient::unban_group_member`] steered by `control`; see
    /// [`ImClient::call_until`].
    pub async fn unban_group_member_until(
        &self,
        group_id: &str,
        members: &[String],
        control: CallControl<'_>,
    ) -> Option<Outcome<()>> {
        let body = MembersBody { group_id, members, duration: None };
        let outcome = self.call_until::<_, Empty>(Command::UnbanGroupMember, &body, control).await;
        outcome.map(|o| o.map(|_| ()))
    }

    /// Bans members for `duration_secs`; tests use it to set a group up
    /// the way an app would.
    pub async fn ban_group_member(&self, group_id: &str, members: &[String], duration_secs: u32) -> Outcome<()> {
        let body = MembersBody { group_id, members, duration: Some(duration_secs) };
        self.call::<_, Empty>(Command::BanGroupMember, &body).await.map(|_| ())
    }

    /// Reads the whole ban list into memory; see
    /// [`ImClient::for_each_ban_page`]. An error answer gives an empty list.
    pub async fn get_group_ban_members(&self, group_id: &str) -> Outcome<Vec<BannedAccount>> {
        let mut banned = Vec::new();
        let outcome = self.for_each_ban_page(group_id, |page| banned.extend(page)).await;
        let succeeded = outcome.result.as_ref().is_ok_and(|(answer, ())| answer.is_success());
        outcome.map(|()| if succeeded { banned } else { Vec::new() })
    }

    /// Reads the ban list page by page (`Limit` [`BAN_LIST_PAGE_SIZE`],
    /// `Offset` from the previous `NextOffset`, until `NextOffset` is 0),
    /// handing each page to `each_page` as it arrives, so a list of any
    /// length is never held whole. Every page waits on
    /// get_group_ban_member's own limiter, never the unban budget. Stops at
    /// the first page that fails and returns its outcome; a success is the
    /// last page's answer.
    pub async fn for_each_ban_page(
        &self,
        group_id: &str,
        mut each_page: impl FnMut(Vec<BannedAccount>),
    ) -> Outcome<()> {
        let mut offset = 0;
        let (mut attempts, mut budget_answers) = (0, 0);
        loop {
            let body = BanListBody { group_id, limit: BAN_LIST_PAGE_SIZE, offset };
            let page = self.call::<_, BanPage>(Command::GetGroupBanMember, &body).await;
            attempts += page.attempts;
            budget_answers += page.budget_answers;
            match page.result {
                Ok((answer, page)) if answer.is_success() => {
                    each_page(page.banned_accounts);
                    // A NextOffset that does not advance would loop forever.
                    if page.next_offset == 0 || page.next_offset <= offset {
                        return Outcome { result: Ok((answer, ())), attempts, budget_answers };
                    }
                    offset = page.next_offset;
                }
                Ok((answer, _)) => return Outcome { result: Ok((answer, ())), attempts, budget_answers },
                Err(error) => return Outcome { result: Err(error), attempts, budget_answers },
            }
        }
    }

    /// One ban-list page of one member (`Limit` 1, `Offset` 0): a harmless
    /// read that proves the credentials and the group (`check`).
    pub async fn probe_ban_list(&self, group_id: &str) -> Outcome<()> {
        let body = BanListBody { group_id, limit: 1, offset: 0 };
        self.call::<_, BanPage>(Command::GetGroupBanMember, &body).await.map(|_| ())
    }

    /// Sends `body` to `command` until it succeeds, fails for good, or runs
    /// out of attempts; see [`RetryPolicy`] and the code table for which
    /// answers are retried and how.
    pub async fn call<B: Serialize, T: DeserializeOwned + Default>(&self, command: Command, body: &B) -> Outcome<T> {
        match self.call_until(command, body, CallControl::default()).await {
            Some(outcome) => outcome,
            // Without a stop signal every call makes at least one attempt.
            None => Outcome {
                result: Err(TransportError::Request("stopped before any attempt".into())),
                attempts: 0,
                budget_answers: 0,
            },
        }
    }

    /// [`ImClient::call`] that gives up when `control.stop` turns true, but
    /// only while it waits (for the limiter or a backoff), never with a
    /// request on the wire: an answer that may have taken effect is never
    /// dropped. Returns the last answer, or `None` if it stopped before the
    /// first.
    pub async fn call_until<B: Serialize, T: DeserializeOwned + Default>(
        &self,
        command: Command,
        body: &B,
        control: CallControl<'_>,
    ) -> Option<Outcome<T>> {
        let CallControl { mut stop, lane, on_retry } = control;
        let limiter = self.limiters.for_command(command);
        let policy = self.settings.retry;
        let (mut attempts, mut budget_answers) = (0, 0);
        let mut resigned = false;
        // The previous attempt's answer: what a stop while waiting reports.
        let mut last: Option<Result<(Answer, T), TransportError>> = None;
        let observer = &self.settings.observer;
        loop {
            let waiting = tokio::time::Instant::now();
            let slot = tokio::select! {
                biased;
                _ = stopped(&mut stop) => return last.map(|result| Outcome { result, attempts, budget_answers }),
                slot = acquire_in_lane(limiter, lane) => slot,
            };
            attempts += 1;
            let started = tokio::time::Instant::now();
            observer.limiter_waited(command.name(), started - waiting);
            // reqwest's own timeout bounds this already; this one holds for
            // any client, so a hung gateway cannot keep a slot for ever.
            let result = tokio::time::timeout(self.settings.request_timeout, self.send_once::<B, T>(command, body))
                .await
                .unwrap_or(Err(TransportError::Timeout(self.settings.request_timeout)));
            // With an answer in, the limiter knows when the call can at the
            // latest have reached the gateway; without one, it assumes now.
            match &result {
                Ok(_) | Err(TransportError::HttpStatus { .. } | TransportError::InvalidBody(_)) => slot.answered(),
                Err(_) => drop(slot),
            }
            let code = result.as_ref().ok().map(|(answer, _)| answer.error_code);
            observer.attempt_ended(command.name(), code, started.elapsed());
            if code.is_some_and(codes::spends_app_budget) {
                budget_answers += 1;
                limiter.note_budget_answer(tokio::time::Instant::now());
            }
            if code.is_some_and(|code| codes::lookup(code).class == CodeClass::RateLimited) {
                // The limiter holds every caller of the app back and widens
                // its window, whether or not this call tries again.
                limiter.rate_limited(started, tokio::time::Instant::now(), policy.rate_limit_cooldown);
            }
            let delay = match next_step(code, attempts, resigned, &policy, rand::rng().random()) {
                Step::Done => return Some(Outcome { result, attempts, budget_answers }),
                // A re-sign is routine (a UserSig past its time), not a
                // failure a caller is told about.
                Step::Resign => {
                    resigned = true;
                    self.invalidate_usersig();
                    debug!(command = command.name(), attempt = attempts, "Signing anew after 70001; retrying at once");
                    last = Some(result);
                    continue;
                }
                // The pause is the limiter's (see above).
                Step::RateLimited => Duration::ZERO,
                Step::RetryAfter(delay) => delay,
            };
            let detail = match &result {
                Ok((answer, _)) => answer.error_info.clone(),
                Err(error) => error.to_string(),
            };
            debug!(command = command.name(), attempt = attempts, error_code = ?code, %detail, retry_in_ms = delay.as_millis() as u64, "Retrying IM call");
            if let Some(on_retry) = on_retry {
                on_retry(&RetryNotice { attempt: attempts, error_code: code, detail, retry_in: delay });
            }
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => return Some(Outcome { result, attempts, budget_answers }),
                _ = tokio::time::sleep(delay) => {}
            }
            last = Some(result);
        }
    }

    /// One HTTP exchange, no retry.
    async fn send_once<B: Serialize, T: DeserializeOwned + Default>(
        &self,
        command: Command,
        body: &B,
    ) -> Result<(Answer, T), TransportError> {
        let usersig = self.usersig().map_err(|e| TransportError::Request(e.to_string()))?;
        let mut url = self.endpoint.command_url(command.path());
        url.query_pairs_mut()
            .append_pair("sdkappid", &self.credentials.sdkappid.to_string())
            .append_pair("identifier", &self.credentials.identifier)
            .append_pair("usersig", usersig.expose())
            .append_pair("random", &rand::rng().random::<u32>().to_string())
            .append_pair("contenttype", "json");
        let payload = serde_json::to_vec(body).map_err(|e| TransportError::Request(e.to_string()))?;

        let response = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(payload)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(TransportError::HttpStatus { status: status.as_u16() });
        }
        let bytes = read_bounded(response, MAX_ANSWER_BYTES).await.map_err(|e| match e {
            BodyError::Read(e) => self.transport_error(e),
            BodyError::TooLarge => {
                TransportError::InvalidBody(format!("the answer is larger than {} KiB", MAX_ANSWER_BYTES / 1024))
            }
        })?;
        // Defence in depth: never let a gateway echo of our UserSig reach a
        // status, the state file or a log, whole, cut short or encoded.
        let clean = |text: &str| redact_usersig(&crate::cut_text(text, MAX_ERROR_INFO_BYTES), usersig.expose());
        let envelope: Envelope<T> =
            serde_json::from_slice(&bytes).map_err(|e| TransportError::InvalidBody(clean(&e.to_string())))?;
        let mut answer = envelope.answer;
        answer.error_info = clean(&answer.error_info);
        debug!(command = command.name(), error_code = answer.error_code, "IM answered");
        Ok((answer, envelope.data))
    }

    fn transport_error(&self, error: reqwest::Error) -> TransportError {
        // The URL carries the UserSig: drop it before anything can print it.
        let error = error.without_url();
        if error.is_timeout() {
            TransportError::Timeout(self.settings.request_timeout)
        } else if error.is_connect() {
            TransportError::Connect(error_chain(&error))
        } else {
            TransportError::Request(error_chain(&error))
        }
    }

    fn usersig(&self) -> Result<Redacted<String>, usersig::SignError> {
        let now = (self.settings.clock)();
        let mut cache = self.sig_cache.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = cache.as_ref().filter(|c| now < c.renew_at) {
            return Ok(cached.usersig.clone());
        }
        let ttl = self.settings.usersig_ttl.as_secs().max(1);
        let request = SigRequest {
            sdkappid: self.credentials.sdkappid,
            identifier: &self.credentials.identifier,
            time: now,
            expire: ttl,
            userbuf: None,
        };
        let usersig = Redacted::new(usersig::generate(self.credentials.secret_key.expose(), &request)?);
        *cache = Some(CachedSig { usersig: usersig.clone(), renew_at: now + ttl / 2 });
        Ok(usersig)
    }

    fn invalidate_usersig(&self) {
        *self.sig_cache.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

enum BodyError {
    Read(reqwest::Error),
    TooLarge,
}

/// Reads a body of at most `limit` bytes, stopping as soon as it is over.
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_the_key() {
        let credentials =
            AppCredentials { sdkappid: 1, identifier: "admin".into(), secret_key: Redacted::new("k3y".into()) };
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("k3y") && shown.contains("sdkappid: 1") && shown.contains("admin"), "{shown}");
    }

    /// One UserSig per client, signed anew at half its life or when the
    /// gateway refused it (70001), not before.
    #[test]
    fn the_usersig_is_kept_until_half_its_life_or_a_refusal() {
        use std::sync::atomic::{AtomicU64, Ordering};
        crate::install_crypto_provider();
        let now = Arc::new(AtomicU64::new(1_000));
        let clock = now.clone();
        let settings = ClientSettings {
            usersig_ttl: Duration::from_secs(100),
            clock: Arc::new(move || clock.load(Ordering::SeqCst)),
            ..ClientSettings::default()
        };
        let credentials =
            AppCredentials { sdkappid: 1, identifier: "admin".into(), secret_key: Redacted::new("k3y".into()) };
        let limiter = Arc::new(RateLimiter::new(super::super::RateLimit::per_second(200)));
        let endpoint = Endpoint::parse("http://127.0.0.1:9", true).unwrap();
        let client =
            ImClient::new(http_client(Duration::from_secs(1)).unwrap(), endpoint, credentials, limiter, settings);
        let sig = |at: u64| {
            now.store(at, Ordering::SeqCst);
            client.usersig().unwrap().expose().clone()
        };
        let first = sig(1_000);
        assert_eq!(sig(1_049), first, "kept until half its life");
        let renewed = sig(1_050);
        assert_ne!(renewed, first, "signed anew at half its life");
        assert_eq!(sig(1_060), renewed);
        client.invalidate_usersig();
        assert_ne!(sig(1_061), renewed, "signed anew after a refusal");
    }
}
