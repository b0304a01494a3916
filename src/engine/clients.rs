//! One client per app identity and endpoint, one limiter per SDKAppID, one
//! connection pool: shared by every policy in the process, so policies of
//! the same app share its call budget and its UserSig.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::credentials::AppTarget;
use crate::im::{ClientSettings, ImClient, LimiterRegistry, RateLimit, TransportError};
use crate::secret::Redacted;

type ClientKey = (String, u64, String, Redacted<String>);

pub struct ClientPool {
    http: reqwest::Client,
    limiters: LimiterRegistry,
    limit: RateLimit,
    settings: ClientSettings,
    clients: Mutex<HashMap<ClientKey, Arc<ImClient>>>,
}

impl ClientPool {
    pub fn new(limit: RateLimit, settings: ClientSettings) -> Result<Self, TransportError> {
        Ok(Self {
            http: crate::im::client::http_client(settings.request_timeout)?,
            limiters: LimiterRegistry::default(),
            limit,
            settings,
            clients: Mutex::new(HashMap::new()),
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
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(key)
            .or_insert_with(|| {
                Arc::new(ImClient::new(
                    self.http.clone(),
                    target.endpoint.clone(),
                    credentials.clone(),
                    self.limiters.for_app(credentials.sdkappid, self.limit),
                    self.settings.clone(),
                ))
            })
            .clone()
    }
}
