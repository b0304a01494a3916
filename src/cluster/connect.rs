//! Connecting as kubectl does: `--kubeconfig`, else `KUBECONFIG`, else
//! `~/.kube/config`, else the pod's ServiceAccount; `--context` picks a
//! context; the namespace is `-n`, else the context's, else `default`.

use std::path::PathBuf;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::errors::ClusterError;

/// Where the cluster commands connect, as the user gave it.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    /// Act as this user (impersonation, as `kubectl --as`).
    pub impersonate: Option<String>,
}

/// A client and the namespace commands act in when none is named.
pub struct Connection {
    pub client: Client,
    pub namespace: String,
}

pub async fn connect(target: &Target) -> Result<Connection, ClusterError> {
    let options = KubeConfigOptions { context: target.context.clone(), ..Default::default() };
    let unusable = |e: &dyn std::error::Error| ClusterError::Config(crate::error_chain(e));
    let config = match (&target.kubeconfig, &target.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| ClusterError::Config(format!("cannot read kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| unusable(&e))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options).await.map_err(|e| unusable(&e))?,
        (None, None) => kube::Config::infer().await.map_err(|e| unusable(&e))?,
    };
    let mut config = config;
    // `--as` replaces whatever impersonation the kubeconfig sets (groups
    // included: a leftover group would change what the reviews answer);
    // without it, the kubeconfig's own stays as kubectl would use it.
    if let Some(user) = &target.impersonate {
        config.auth_info.impersonate = Some(user.clone());
        config.auth_info.impersonate_groups = None;
        config.auth_info.impersonate_uid = None;
        config.auth_info.impersonate_user_extra = None;
    }
    let namespace = target.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| ClusterError::Config(crate::error_chain(&e)))?;
    Ok(Connection { client, namespace })
}
