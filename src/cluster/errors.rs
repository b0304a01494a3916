//! What goes wrong talking to the cluster, each naming the object and the
//! cause the way kubectl users read it.

/// Why a cluster command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no usable cluster configuration: {0}")]
    Config(String),
    #[error("GroupBanPolicy {object} not found")]
    NotFound { object: String },
    #[error("forbidden: cannot {action} GroupBanPolicy {object}: {message}")]
    Forbidden { action: &'static str, object: String, message: String },
    #[error("cannot {action} GroupBanPolicy {object}: {message}")]
    Api { action: &'static str, object: String, message: String },
    #[error("timed out after {} waiting for GroupBanPolicy {object} {waiting_for}", shown(*after))]
    TimedOut { object: String, after: std::time::Duration, waiting_for: String },
    #[error("GroupBanPolicy {object} is suspended: resume it to reconcile")]
    Suspended { object: String },
}

/// A duration as the flags take it: "5m", "90s", "1h", "1h30m".
pub fn shown(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs();
    let (hours, minutes, rest) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    let mut text = String::new();
    for (value, unit) in [(hours, "h"), (minutes, "m"), (rest, "s")] {
        if value > 0 {
            text.push_str(&format!("{value}{unit}"));
        }
    }
    if text.is_empty() { format!("{}ms", duration.as_millis()) } else { text }
}

impl ClusterError {
    /// A bounded label for logs.
    pub fn category(&self) -> &'static str {
        match self {
            ClusterError::Config(_) => "Config",
            ClusterError::NotFound { .. } => "NotFound",
            ClusterError::Forbidden { .. } => "Forbidden",
            ClusterError::Api { .. } => "Api",
            ClusterError::TimedOut { .. } => "TimedOut",
            ClusterError::Suspended { .. } => "Suspended",
        }
    }

    /// Names `object` (`NAMESPACE/NAME`, or `in NAMESPACE` for a list) and
    /// the API server's cause for a failed `action`.
    pub fn from_kube(action: &'static str, object: &str, error: kube::Error) -> Self {
        let object = object.to_string();
        match error {
            kube::Error::Api(status) if status.is_not_found() => ClusterError::NotFound { object },
            kube::Error::Api(status) if status.is_forbidden() => {
                ClusterError::Forbidden { action, object, message: status.message.clone() }
            }
            error => ClusterError::Api { action, object, message: crate::error_chain(&error) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_read_as_the_flags_take_them() {
        for (seconds, text) in [(300, "5m"), (90, "1m30s"), (2, "2s"), (3600, "1h"), (5400, "1h30m")] {
            assert_eq!(shown(Duration::from_secs(seconds)), text);
        }
        assert_eq!(shown(Duration::from_millis(500)), "500ms");
    }
}
