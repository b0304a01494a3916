//! Credentials from a Secret: which app to call, as whom, and where.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use crate::crd::{DEFAULT_CREDENTIALS_SECRET, GroupBanPolicySpec};
use crate::im::endpoint::DEFAULT_REGION;
use crate::im::{AppCredentials, Endpoint};
use crate::secret::Redacted;

/// Where and as whom a policy's calls go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTarget {
    pub endpoint: Endpoint,
    pub credentials: AppCredentials,
}

/// A Secret by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for SecretKey {
    type Err = String;

    /// `NAMESPACE/NAME`, as `--default-credentials-secret` takes it.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self { namespace: namespace.into(), name: name.into() })
            }
            _ => Err(format!("{text:?} is not NAMESPACE/NAME")),
        }
    }
}

/// The Secret a policy in `namespace` takes its credentials from: its own
/// `spec.credentialsSecretRef` (in its namespace), else the operator-wide
/// `default`, else `groupban-credentials` in its namespace. `apply` and the
/// controller both ask this.
pub fn secret_for(namespace: &str, spec: &GroupBanPolicySpec, default: Option<&SecretKey>) -> SecretKey {
    match (&spec.credentials_secret_ref, default) {
        (Some(reference), _) => SecretKey { namespace: namespace.into(), name: reference.name.clone() },
        (None, Some(default)) => default.clone(),
        (None, None) => SecretKey { namespace: namespace.into(), name: DEFAULT_CREDENTIALS_SECRET.into() },
    }
}

/// Secret keys, as users write them.
pub mod keys {
    pub const SDK_APP_ID: &str = "sdkAppId";
    pub const IDENTIFIER: &str = "identifier";
    pub const SECRET_KEY: &str = "secretKey";
    pub const REGION: &str = "region";
    pub const ENDPOINT: &str = "endpoint";
    /// "true" allows a plain-http endpoint that is not loopback (for a
    /// simulator running as a Service in CI); never for the real gateway.
    pub const ALLOW_INSECURE_HTTP: &str = "allowInsecureHttp";
}

/// What is wrong with a credentials Secret. Messages name the Secret and
/// the key, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("Secret {secret} not found")]
    SecretNotFound { secret: String },
    #[error("Secret {secret} cannot be read: {reason}")]
    Unreadable { secret: String, reason: String },
    #[error("Secret {secret} has no key {key:?}")]
    MissingKey { secret: String, key: &'static str },
    #[error("Secret {secret} key {key:?} is not valid UTF-8")]
    NotUtf8 { secret: String, key: &'static str },
    #[error("Secret {secret} key \"sdkAppId\" must be a positive integer")]
    InvalidSdkAppId { secret: String },
    #[error("Secret {secret} sets both \"region\" and \"endpoint\"; set one")]
    RegionAndEndpoint { secret: String },
    #[error("Secret {secret}: {source}")]
    Endpoint { secret: String, source: crate::im::endpoint::EndpointError },
    /// The policy names no Secret, and its namespace may not use the shared
    /// default (`--default-credentials-namespace-selector`).
    #[error(
        "namespace {namespace} may not use the shared default credentials (Secret {secret}): its labels do not match {selector:?}; label the namespace, or name a Secret of its own in spec.credentialsSecretRef"
    )]
    NotAllowed { namespace: String, secret: String, selector: String },
    /// The API server could not hand the Secret out for now (a 5xx, a
    /// timeout, a lost connection): not a person's to fix.
    #[error("cannot read Secret {secret} now: {reason}")]
    Unavailable { secret: String, reason: String },
}

impl CredentialsError {
    /// True for a problem that goes away by itself: retried on backoff,
    /// never Stalled.
    pub fn is_passing(&self) -> bool {
        matches!(self, CredentialsError::Unavailable { .. })
    }
}

/// Reads the app target from a Secret's `data` and `stringData` (the
/// latter wins, as the API server merges them). Values are trimmed: a
/// trailing newline from `echo ... | base64` is a classic cause of 70009.
pub fn from_secret(secret: &Secret, secret_name: &str) -> Result<AppTarget, CredentialsError> {
    let mut values: BTreeMap<&str, Result<String, ()>> = BTreeMap::new();
    for (key, bytes) in secret.data.iter().flatten() {
        values.insert(key, String::from_utf8(bytes.0.clone()).map_err(|_| ()));
    }
    for (key, text) in secret.string_data.iter().flatten() {
        values.insert(key, Ok(text.clone()));
    }
    let optional = |key: &'static str| -> Result<Option<String>, CredentialsError> {
        match values.get(key) {
            None => Ok(None),
            Some(Ok(text)) if text.trim().is_empty() => Ok(None),
            Some(Ok(text)) => Ok(Some(text.trim().to_string())),
            Some(Err(())) => Err(CredentialsError::NotUtf8 { secret: secret_name.to_string(), key }),
        }
    };
    let required = |key: &'static str| -> Result<String, CredentialsError> {
        optional(key)?.ok_or(CredentialsError::MissingKey { secret: secret_name.to_string(), key })
    };

    let sdkappid = required(keys::SDK_APP_ID)?
        .parse::<u64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| CredentialsError::InvalidSdkAppId { secret: secret_name.to_string() })?;
    let identifier = required(keys::IDENTIFIER)?;
    let secret_key = required(keys::SECRET_KEY)?;
    let allow_insecure_http = optional(keys::ALLOW_INSECURE_HTTP)?.is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let endpoint_error = |source| CredentialsError::Endpoint { secret: secret_name.to_string(), source };
    let endpoint = match (optional(keys::REGION)?, optional(keys::ENDPOINT)?) {
        (Some(_), Some(_)) => {
            return Err(CredentialsError::RegionAndEndpoint { secret: secret_name.to_string() });
        }
        (None, Some(url)) => Endpoint::parse(&url, allow_insecure_http).map_err(endpoint_error)?,
        (Some(region), None) => Endpoint::region(&region).map_err(endpoint_error)?,
        (None, None) => Endpoint::region(DEFAULT_REGION).map_err(endpoint_error)?,
    };
    Ok(AppTarget {
        endpoint,
        credentials: AppCredentials { sdkappid, identifier, secret_key: Redacted::new(secret_key) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            string_data: Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Secret::default()
        }
    }

    #[test]
    fn secret_keys_parse_as_namespace_slash_name() {
        for bad in ["", "name", "/name", "ns/", "a/b/c"] {
            assert!(bad.parse::<SecretKey>().is_err(), "{bad:?}");
        }
        let key: SecretKey = "ops/im-app".parse().unwrap();
        assert_eq!((key.namespace.as_str(), key.name.as_str()), ("ops", "im-app"));
        assert_eq!(key.to_string(), "ops/im-app");
    }

    /// Only a Secret the API server could not hand out is a passing
    /// problem (retried, never Stalled).
    #[test]
    fn only_an_unavailable_secret_is_passing() {
        let unavailable = CredentialsError::Unavailable { secret: "ns/s".into(), reason: "HTTP 503".into() };
        let missing = CredentialsError::SecretNotFound { secret: "ns/s".into() };
        assert!(unavailable.is_passing() && !missing.is_passing());
    }

    /// A key whose value is only blanks reads as missing; an SDKAppID of 0
    /// is refused, 1 is accepted.
    #[test]
    fn blank_values_are_missing_and_the_sdkappid_is_positive() {
        let blank = secret(&[("sdkAppId", "1"), ("identifier", " \n"), ("secretKey", "k")]);
        assert!(matches!(from_secret(&blank, "s"), Err(CredentialsError::MissingKey { key: "identifier", .. })));
        let zero = secret(&[("sdkAppId", "0"), ("identifier", "admin"), ("secretKey", "k")]);
        assert!(matches!(from_secret(&zero, "s"), Err(CredentialsError::InvalidSdkAppId { .. })));
        let one = secret(&[("sdkAppId", "1"), ("identifier", "admin"), ("secretKey", "k")]);
        assert_eq!(from_secret(&one, "s").unwrap().credentials.sdkappid, 1);
    }

    #[test]
    fn a_complete_secret_resolves_with_the_default_region() {
        let target = from_secret(
            &secret(&[("sdkAppId", "1400000000\n"), ("identifier", "admin"), ("secretKey", "k\n")]),
            "ns/s",
        )
        .unwrap();
        assert_eq!(target.credentials.sdkappid, 1400000000);
        assert_eq!(target.credentials.secret_key.expose(), "k");
        assert_eq!(target.endpoint.to_string(), "https://console.tim.qq.com");
    }

    #[test]
    fn base64_data_and_string_data_merge_with_string_data_winning() {
        let mut s = secret(&[("identifier", "admin"), ("secretKey", "k")]);
        s.data = Some(
            [
                ("sdkAppId".to_string(), ByteString(b"7".to_vec())),
                ("identifier".to_string(), ByteString(b"old".to_vec())),
            ]
            .into(),
        );
        let target = from_secret(&s, "ns/s").unwrap();
        assert_eq!((target.credentials.sdkappid, target.credentials.identifier.as_str()), (7, "admin"));
    }

    #[test]
    fn each_problem_names_the_secret_and_key_but_no_value() {
        let base = [("sdkAppId", "1"), ("identifier", "admin"), ("secretKey", "sekrit")];
        let without = |key: &str| secret(&base.iter().copied().filter(|(k, _)| *k != key).collect::<Vec<_>>());
        for key in ["sdkAppId", "identifier", "secretKey"] {
            let error = from_secret(&without(key), "ns/creds").unwrap_err().to_string();
            assert!(error.contains("ns/creds") && error.contains(key), "{error}");
        }
        let mut bad_id = base.to_vec();
        bad_id[0] = ("sdkAppId", "14e8");
        assert!(matches!(from_secret(&secret(&bad_id), "s"), Err(CredentialsError::InvalidSdkAppId { .. })));
        let mut region = base.to_vec();
        region.push(("region", "atlantis"));
        let error = from_secret(&secret(&region), "s").unwrap_err().to_string();
        assert!(error.contains("atlantis") && !error.contains("sekrit"), "{error}");
        region.push(("endpoint", "https://x"));
        assert!(matches!(from_secret(&secret(&region), "s"), Err(CredentialsError::RegionAndEndpoint { .. })));
        let mut insecure = base.to_vec();
        insecure.push(("endpoint", "http://sim.ci.svc:8080"));
        assert!(from_secret(&secret(&insecure), "s").is_err());
        insecure.push(("allowInsecureHttp", "true"));
        assert!(from_secret(&secret(&insecure), "s").is_ok());
    }
}
