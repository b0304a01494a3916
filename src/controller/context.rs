//! What every reconcile shares: the clients, the options, the cache of
//! policies, what is remembered of each policy, and the passes under way.
//! Tests build one with [`Context::new`], as a term does.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tracing::warn;

use super::config::{CONTROLLER_NAME, RunOptions};
use super::memory::PolicyMemory;
use super::memory::policy_key;
use super::passes::RunningPasses;
use super::tenancy::SharedScope;
use super::{decode, events, status_writer};
use crate::crd::GroupBanPolicy;
use crate::engine::clients::ClientPool;
use crate::im::{ClientSettings, RateLimit, TransportError};
use crate::metrics::Metrics;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub pool: ClientPool,
    pub recorders: events::EventRecorders,
    pub options: RunOptions,
    /// Where reconciles and refused requests are counted (the same set as
    /// `options.metrics`, which the IM clients record into too).
    pub metrics: Arc<Metrics>,
    /// Backoffs, drift attempts and status-write echoes, per policy.
    pub memory: PolicyMemory,
    /// True once shutdown began: passes start no new call.
    pub shutdown: watch::Receiver<bool>,
    /// The controller's cache of policies: tells whether a policy still
    /// exists when a reconcile of it ends.
    pub policies: reflector::Store<GroupBanPolicy>,
    /// Passes under way, stopped when their policy changes or goes.
    pub passes: RunningPasses,
    /// Which namespaces may use the default credentials, when limited.
    pub shared_scope: Option<SharedScope>,
    /// Policies that do not decode, by uid, with the generation reported:
    /// each bad generation is logged and announced once.
    undecodable: Mutex<HashMap<String, Option<i64>>>,
}

impl Context {
    /// The context of one term: IM clients that record into
    /// `options.metrics`, Events as [`CONTROLLER_NAME`], and nothing
    /// remembered yet. Fails only when the HTTP client cannot be set up.
    pub fn new(
        client: Client,
        options: RunOptions,
        policies: reflector::Store<GroupBanPolicy>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, TransportError> {
        let metrics = options.metrics.clone();
        let settings = ClientSettings { observer: metrics.clone(), ..options.client.clone() };
        let pool = ClientPool::new(RateLimit::per_second(options.max_calls_per_second), settings)?;
        metrics.call_limit.set(i64::from(options.max_calls_per_second));
        metrics.declare_forbidden(status_writer::STATUS_WRITE.0, status_writer::STATUS_WRITE.1);
        for verb in events::EVENT_VERBS {
            metrics.declare_forbidden(verb, events::EVENTS_RESOURCE);
        }
        let reporter = Reporter { controller: CONTROLLER_NAME.into(), instance: options.instance.clone() };
        Ok(Self {
            recorders: events::EventRecorders::new(client.clone(), reporter),
            memory: PolicyMemory::new(options.backoff, metrics.retrying.clone()),
            client,
            pool,
            options,
            metrics,
            shutdown,
            policies,
            passes: RunningPasses::default(),
            shared_scope: None,
            undecodable: Mutex::default(),
        })
    }

    /// Limits the default credentials to the namespaces `scope` watches.
    pub fn with_shared_scope(mut self, scope: Option<SharedScope>) -> Self {
        self.shared_scope = scope;
        self
    }

    /// Drops what is remembered about policies that no longer exist:
    /// kube-runtime does not reconcile a deleted object, and a process that
    /// runs for months sees many come and go.
    pub fn forget_policies_except(&self, live: &HashSet<String>) {
        self.memory.forget_all_except(live);
    }

    /// A policy that reads again (or is really gone) may be reported
    /// unreadable again later.
    pub fn readable_again(&self, uid: &str) {
        self.undecodable.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }

    /// True while the cache holds this policy: same namespace and name, and
    /// the same object (a policy deleted and made again under its name is
    /// another one, whose reconciles wait for this one's to end).
    pub fn is_live(&self, policy: &GroupBanPolicy) -> bool {
        self.policies.get(&ObjectRef::from_obj(policy)).is_some_and(|cached| cached.uid() == policy.uid())
    }

    /// Notes our status write of `policy` at `version` (see
    /// [`super::status_writer::PendingEchoes`]).
    pub fn wrote_status(&self, policy: &GroupBanPolicy, version: String) {
        let cached = || self.policies.get(&ObjectRef::from_obj(policy)).and_then(|p| p.resource_version());
        tracing::debug!(policy = %policy_key(policy), %version, "Wrote status");
        self.memory.wrote_status(&policy_key(policy), version, cached);
    }

    /// Says once per generation that a policy cannot be read, and why: a
    /// log line and a Warning Event on it, naming the field.
    pub fn report_undecodable(self: &Arc<Self>, bad: Box<decode::Undecodable>) {
        let key = bad.uid.clone().unwrap_or_else(|| format!("{}/{}", bad.namespace, bad.name));
        let first = self.undecodable.lock().unwrap_or_else(|e| e.into_inner()).insert(key, bad.generation)
            != Some(bad.generation);
        if !first {
            return;
        }
        warn!(
            policy = %format!("{}/{}", bad.namespace, bad.name),
            problem = %bad.problem,
            "Policy cannot be read; it is left out until its spec is fixed"
        );
        let ctx = self.clone();
        tokio::spawn(async move {
            let regarding = k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("groupban.dev/v1alpha1".into()),
                kind: Some("GroupBanPolicy".into()),
                namespace: Some(bad.namespace.clone()),
                name: Some(bad.name.clone()),
                uid: bad.uid.clone(),
                ..Default::default()
            };
            let event = kube::runtime::events::Event {
                type_: kube::runtime::events::EventType::Warning,
                reason: crate::crd::reasons::SPEC_INVALID.into(),
                note: Some(crate::cut_text(
                    &format!("the policy cannot be read: {}", bad.problem),
                    events::MAX_NOTE_BYTES,
                )),
                action: "Read".into(),
                secondary: None,
            };
            if let Err(error) = ctx.recorders.publish(&event, &regarding).await {
                warn!(error = %crate::error_chain(&error), "Failed to publish an Event");
            }
            ctx.write_unreadable_status(*bad).await;
        });
    }

    /// Says in the policy's own status that its spec cannot be read (what
    /// kstatus, Argo CD and `kubectl wait` look at), keeping its record.
    ///
    /// Computed from a fresh read each time, never from the watch event's
    /// copy: a pass stopped by the breaking edit may have written members
    /// since, and the spec may have been fixed meanwhile. Skipped when the
    /// object is another one, at another generation, readable again, or
    /// its status cannot be read either.
    async fn write_unreadable_status(&self, bad: decode::Undecodable) {
        let api = status_writer::StatusApi::new(self.client.clone(), &bad.namespace, self.metrics.clone());
        let policy = format!("{}/{}", bad.namespace, bad.name);
        for _ in 0..3 {
            let current = match api.get_opt(&bad.name).await {
                Ok(Some(current)) => current,
                Ok(None) => return,
                Err(error) => {
                    warn!(%policy, error = %crate::error_chain(&error), "Cannot read a policy that cannot be read, to say so in its status");
                    return;
                }
            };
            if current.metadata.uid != bad.uid || current.metadata.generation != bad.generation {
                return;
            }
            let Err(still_bad) = decode::decode(current) else {
                return;
            };
            let Ok(stored) = still_bad.status else {
                return;
            };
            let mut status = stored.clone().unwrap_or_default();
            crate::engine::conditions::mark_unreadable(
                &mut status,
                &still_bad.problem,
                still_bad.generation,
                k8s_openapi::jiff::Timestamp::now(),
            );
            if stored.is_some_and(|stored| !crate::engine::changes::differs_beyond_timestamps(&stored, &status)) {
                return;
            }
            match status_writer::write_status_at(&api, &bad.name, &status, still_bad.resource_version.as_deref()).await
            {
                Ok(_) => return,
                // Written to meanwhile: read again and decide again.
                Err(kube::Error::Api(answer)) if answer.code == 409 => continue,
                Err(error) => {
                    warn!(%policy, error = %crate::error_chain(&error), "Failed to write the status of a policy that cannot be read");
                    return;
                }
            }
        }
    }

    pub fn forget_policy(&self, key: &str) {
        self.memory.forget(key);
    }
}
