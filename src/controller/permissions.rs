//! Every request `run` makes, as RBAC sees it: the chart grants these and
//! `check` asks the API server (SelfSubjectAccessReview) whether each is
//! allowed. Kept in one table so the three cannot drift apart silently.

/// Where a permission must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// In the watched namespace (every namespace without `--namespace`).
    Watched,
    /// In the namespace of the leader-election Lease.
    Lease,
    /// Cluster-wide (namespaces are not namespaced).
    Cluster,
    /// In the namespace of `--default-credentials-secret`.
    DefaultSecret,
}

/// When a permission is needed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needed {
    Always,
    /// With leader election (on by default).
    WithLeaderElection,
    /// With `--default-credentials-namespace-selector`.
    WithNamespaceSelector,
    /// With `--default-credentials-secret`.
    WithDefaultSecret,
}

/// One resource and the verbs `run` uses on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
    pub needed: Needed,
    /// What `run` does with it, for messages.
    pub purpose: &'static str,
}

impl Permission {
    /// `resource[/subresource][.group]`, as kubectl names it.
    pub fn name(&self) -> String {
        let mut name = self.resource.to_string();
        if !self.subresource.is_empty() {
            name = format!("{name}/{}", self.subresource);
        }
        if !self.group.is_empty() {
            name = format!("{name}.{}", self.group);
        }
        name
    }
}

pub const RUN_PERMISSIONS: &[Permission] = &[
    Permission {
        group: "groupban.dev",
        resource: "groupbanpolicies",
        subresource: "",
        verbs: &["get", "list", "watch"],
        scope: Scope::Watched,
        needed: Needed::Always,
        purpose: "watch the policies",
    },
    Permission {
        group: "groupban.dev",
        resource: "groupbanpolicies",
        subresource: "status",
        verbs: &["get", "patch"],
        scope: Scope::Watched,
        needed: Needed::Always,
        purpose: "record what was unbanned",
    },
    Permission {
        group: "",
        resource: "secrets",
        subresource: "",
        verbs: &["get", "list", "watch"],
        scope: Scope::Watched,
        needed: Needed::Always,
        purpose: "read the credentials and notice their changes",
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        subresource: "",
        verbs: &["create", "patch"],
        scope: Scope::Watched,
        needed: Needed::Always,
        purpose: "publish Events (it goes on without them)",
    },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        subresource: "",
        verbs: &["get", "create", "update"],
        scope: Scope::Lease,
        needed: Needed::WithLeaderElection,
        purpose: "hold the leader Lease",
    },
    Permission {
        group: "",
        resource: "namespaces",
        subresource: "",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        needed: Needed::WithNamespaceSelector,
        purpose: "read which namespaces may use the default credentials",
    },
    Permission {
        group: "",
        resource: "secrets",
        subresource: "",
        verbs: &["get", "list", "watch"],
        scope: Scope::DefaultSecret,
        needed: Needed::WithDefaultSecret,
        purpose: "read the default credentials",
    },
];
