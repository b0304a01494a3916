//! One client per app identity and endpoint, one limiter per SDKAppID and
//! API, one connection pool: shared by every policy in the process, so
//! policies of the same app share its call budget and its UserSig.
//!
//! A process that runs for months sees apps come and go and secret keys
//! rotate; every key of the client map holds a secret key. Clients unused
//! for [`IDLE_CLIENT_TTL`] are dropped (and with them the rotated key), and
//! limiters nobody holds are dropped once quiet (see
//! [`LimiterRegistry::evict_unused`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::credentials::AppTarget;
use crate::im::{ClientSettings, ImClient, LimiterRegistry, RateLimit, TransportError};
use crate::secret::Redacted;

/// How long a client may go unused before it is dropped.
pub const IDLE_CLIENT_TTL: Duration = Duration::from_secs(15 * 60);
/// How often `client_for` looks for idle clients (a sweep is a map walk).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

type ClientKey = (String, u64, String, Redacted<String>);

struct PooledClient {
    client: Arc<ImClient>,
    last_used: Instant,
}

struct Clients {
    by_key: HashMap<ClientKey, PooledClient>,
    last_sweep: Instant,
}

pub struct ClientPool {
    http: reqwest::Client,
    limiters: LimiterRegistry,
    limit: RateLimit,
    settings: ClientSettings,
    clients: Mutex<Clients>,
}

impl ClientPool {
    pub fn new(limit: RateLimit, settings: ClientSettings) -> Result<Self, TransportError> {
        Ok(Self {
            http: crate::im::client::http_client(settings.request_timeout)?,
            limiters: LimiterRegistry::default(),
            limit,
            settings,
            clients: Mutex::new(Clients { by_key: HashMap::new(), last_sweep: Instant::now() }),
        })
    }

    pub fn client_for(&self, target: &AppTarget) -> Arc<ImClient> {
        let credentials = &target.credentials;
        let key = (
            target.endpoint.to_string(),
            credentials.sdkappid,
            credentials.identifier.clone(),
            credentials.secret_key.clone(),
        );
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(clients.last_sweep) >= SWEEP_EVERY {
            clients.last_sweep = now;
            Self::sweep(&mut clients, &self.limiters, now);
        }
        let pooled = clients.by_key.entry(key).or_insert_with(|| PooledClient {
            client: Arc::new(ImClient::new(
                self.http.clone(),
                target.endpoint.clone(),
                credentials.clone(),
                self.limiters.for_app(credentials.sdkappid, self.limit),
                self.settings.clone(),
            )),
            last_used: now,
        });
        pooled.last_used = now;
        pooled.client.clone()
    }

    /// Drops clients idle for [`IDLE_CLIENT_TTL`] that no call holds, then
    /// the limiters no client holds. Returns (clients, limiters) left.
    pub fn evict_idle(&self) -> (usize, usize) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        Self::sweep(&mut clients, &self.limiters, Instant::now())
    }

    fn sweep(clients: &mut Clients, limiters: &LimiterRegistry, now: Instant) -> (usize, usize) {
        clients.by_key.retain(|_, pooled| {
            Arc::strong_count(&pooled.client) > 1 || now.duration_since(pooled.last_used) < IDLE_CLIENT_TTL
        });
        (clients.by_key.len(), limiters.evict_unused(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im::{AppCredentials, Endpoint};

    fn target(key: &str) -> AppTarget {
        AppTarget {
            endpoint: Endpoint::parse("http://127.0.0.1:9", false).unwrap(),
            credentials: AppCredentials {
                sdkappid: 1400000000,
                identifier: "admin".into(),
                secret_key: Redacted::new(key.into()),
            },
        }
    }

    /// After a key rotation the old client (and the old key it holds) goes
    /// once idle; the app's limiter stays shared by old and new meanwhile.
    #[tokio::test(start_paused = true)]
    async fn a_rotated_key_is_forgotten_once_idle() {
        crate::install_crypto_provider();
        let pool = ClientPool::new(RateLimit::per_second(200), ClientSettings::default()).unwrap();
        let old = pool.client_for(&target("old-key"));
        let new = pool.client_for(&target("new-key"));
        assert!(Arc::ptr_eq(
            old.limiter(crate::im::Command::UnbanGroupMember),
            new.limiter(crate::im::Command::UnbanGroupMember)
        ));
        assert!(Arc::ptr_eq(&pool.client_for(&target("old-key")), &old), "reused while in use");
        drop(old);
        tokio::time::advance(IDLE_CLIENT_TTL / 2).await;
        pool.client_for(&target("new-key"));
        assert_eq!(pool.evict_idle().0, 2, "not idle long enough yet");
        tokio::time::advance(IDLE_CLIENT_TTL / 2).await;
        assert_eq!(pool.evict_idle().0, 1, "the old key's client is gone");
        drop(new);
        tokio::time::advance(IDLE_CLIENT_TTL).await;
        assert_eq!(pool.evict_idle(), (0, 0), "no client, no limiter left");
    }

    /// A client in use is kept however long since it was handed out; the
    /// pool sweeps idle ones by itself, at most once a minute, as clients
    /// are asked for; idle means a quarter of an hour.
    #[tokio::test(start_paused = true)]
    async fn clients_in_use_stay_and_idle_ones_are_swept_as_clients_are_asked_for() {
        crate::install_crypto_provider();
        assert_eq!(IDLE_CLIENT_TTL, Duration::from_secs(15 * 60), "the README's 15 minutes");
        let pool = ClientPool::new(RateLimit::per_second(200), ClientSettings::default()).unwrap();
        let held = pool.client_for(&target("held"));
        let idle = Arc::downgrade(&pool.client_for(&target("idle")));
        tokio::time::advance(IDLE_CLIENT_TTL + SWEEP_EVERY).await;
        let again = pool.client_for(&target("held"));
        assert!(Arc::ptr_eq(&again, &held), "a client in use is never swept");
        assert!(idle.upgrade().is_none(), "asking for a client swept the idle one");
        let fresh = Arc::downgrade(&pool.client_for(&target("fresh")));
        drop(again);
        tokio::time::advance(IDLE_CLIENT_TTL).await;
        pool.client_for(&target("held"));
        assert!(fresh.upgrade().is_none(), "a minute after the last sweep, the next request sweeps");
    }
}
