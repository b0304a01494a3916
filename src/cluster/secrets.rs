//! Reading a credentials Secret as a person's tool does (`diff`, `check`):
//! one GET, bounded in time, every failure a [`CredentialsError`] that
//! names the Secret. (`run` reads its own way: a read the API server cannot
//! serve now is retried on the policy's backoff, not reported.)

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::engine::credentials::{self, AppTarget, CredentialsError, SecretKey};

/// The longest a Secret read waits.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The app target in Secret `key`.
pub async fn read_target(client: Client, key: &SecretKey) -> Result<AppTarget, CredentialsError> {
    let secrets: Api<Secret> = Api::namespaced(client, &key.namespace);
    let shown = key.to_string();
    match tokio::time::timeout(READ_TIMEOUT, secrets.get_opt(&key.name)).await {
        Ok(Ok(Some(secret))) => credentials::from_secret(&secret, &shown),
        Ok(Ok(None)) => Err(CredentialsError::SecretNotFound { secret: shown }),
        Ok(Err(kube::Error::Api(status))) if status.is_forbidden() || status.is_not_found() => {
            Err(CredentialsError::Unreadable { secret: shown, reason: status.message.clone() })
        }
        Ok(Err(error)) => Err(CredentialsError::Unavailable { secret: shown, reason: crate::error_chain(&error) }),
        Err(_) => Err(CredentialsError::Unavailable {
            secret: shown,
            reason: format!("no answer within {}s", READ_TIMEOUT.as_secs()),
        }),
    }
}
