//! The Kubernetes driver (`groupban-operator run`): a kube-runtime
//! `Controller` over GroupBanPolicy that runs the engine's pass for each
//! policy, with the API server as the status store.
//!
//! ```text
//! watch policies (generation, reconcile request) ─┐
//! watch Secret metadata (who uses it?) ───────────┴─> reconcile: read Secret -> drift check
//!     -> engine pass (plan -> execute -> fold) -> status by SSA -> Events -> next action
//! ```
//!
//! - [`reconcile`]: one policy, one pass; the error policy.
//! - [`triggers`]: what wakes a policy (pure), which policies a Secret serves.
//! - [`status_writer`]: server-side apply on `/status`, progress of long passes.
//! - [`events`]: Events from the engine's notices.
//! - [`drift`]: the ban-list check behind `spec.driftCheckInterval`.
//! - [`backoff`]: per-policy backoff (kube-runtime keeps none).
//!
//! Every pass shares one [`ClientPool`], so every policy of one app shares
//! that app's limiter: the process never exceeds the configured calls per
//! second per app, whatever the concurrency.

pub mod backoff;
pub mod decode;
pub mod drift;
pub mod events;
pub mod leader;
pub mod passes;
pub mod reconcile;
pub mod status_writer;
pub mod triggers;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, ListParams, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::Controller;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::crd::GroupBanPolicy;
use crate::engine::clients::ClientPool;
use crate::im::{ClientSettings, RateLimit};
use backoff::{BackoffPolicy, Backoffs};
use triggers::{SecretKey, policies_using};

/// The controller's name in Events and logs.
pub const CONTROLLER_NAME: &str = "groupban-operator";

/// How `run` behaves; the command line fills it.
#[derive(Clone)]
pub struct RunOptions {
    /// Watch one namespace only (and its Secrets); all when `None`.
    pub namespace: Option<String>,
    /// A label selector: only matching policies are reconciled.
    pub selector: Option<String>,
    pub max_calls_per_second: u32,
    /// The Secret of policies that name none.
    pub default_credentials_secret: Option<SecretKey>,
    /// Policies reconciled at once.
    pub concurrency: u16,
    pub client: ClientSettings,
    /// How often a Stalled policy is tried again without any change.
    pub stalled_recheck: Duration,
    /// How often a converged policy is looked at again (no call, no write
    /// unless something changed).
    pub idle_resync: Duration,
    /// A long pass publishes its progress at most this often.
    pub progress_interval: Duration,
    /// A watch (or any answer) silent this long is cut and restarted.
    pub watch_idle_timeout: Duration,
    pub backoff: BackoffPolicy,
    /// The pod name (or host name), for Events.
    pub instance: Option<String>,
    /// Run as one candidate of several; `None`: act alone.
    pub leader_election: Option<LeaderElection>,
    /// What the probes and the metrics scrape read.
    pub health: Arc<crate::metrics::Health>,
}

/// Leader election settings (`--leader-elect` and its companions).
#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub lease_name: String,
    /// The Lease's namespace; when unset, the operator's own (see
    /// [`leader::own_namespace`]).
    pub namespace: Option<String>,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            selector: None,
            max_calls_per_second: crate::im::DEFAULT_CALLS_PER_SECOND,
            default_credentials_secret: None,
            concurrency: 32,
            client: ClientSettings::default(),
            stalled_recheck: Duration::from_secs(600),
            idle_resync: Duration::from_secs(3600),
            progress_interval: Duration::from_secs(5),
            watch_idle_timeout: Duration::from_secs(120),
            backoff: BackoffPolicy::default(),
            instance: None,
            leader_election: None,
            health: Arc::default(),
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub pool: ClientPool,
    pub recorders: events::EventRecorders,
    pub options: RunOptions,
    pub backoffs: Backoffs,
    /// True once shutdown began: passes start no new call.
    pub shutdown: watch::Receiver<bool>,
    /// When each policy's drift check was last attempted (successful or
    /// not). Kept here rather than written: a check that finds nothing
    /// changes nothing a user needs to see.
    pub drift_attempts: std::sync::Mutex<std::collections::HashMap<String, k8s_openapi::jiff::Timestamp>>,
    /// The controller's cache of policies: tells whether a policy still
    /// exists when a reconcile of it ends.
    pub policies: reflector::Store<GroupBanPolicy>,
    /// Status writes the cache has not shown yet.
    pub echoes: status_writer::PendingEchoes,
    /// Passes under way, stopped when their policy changes or goes.
    pub passes: passes::RunningPasses,
    /// Policies that do not decode, by uid, with the generation reported:
    /// each bad generation is logged and announced once.
    pub undecodable: std::sync::Mutex<std::collections::HashMap<String, Option<i64>>>,
}

impl Context {
    /// Drops what is remembered about policies that no longer exist (their
    /// backoff and last drift attempt): kube-runtime does not reconcile a
    /// deleted object, and a process that runs for months sees many come
    /// and go.
    pub fn forget_policies_except(&self, live: &std::collections::HashSet<String>) {
        self.backoffs.retain(|key| live.contains(key));
        self.drift_attempts.lock().unwrap_or_else(|e| e.into_inner()).retain(|key, _| live.contains(key));
    }

    /// True while the cache holds this policy: same namespace and name, and
    /// the same object (a policy deleted and made again under its name is
    /// another one, whose reconciles wait for this one's to end).
    pub fn is_live(&self, policy: &GroupBanPolicy) -> bool {
        self.policies.get(&ObjectRef::from_obj(policy)).is_some_and(|cached| cached.uid() == policy.uid())
    }

    /// Notes our status write of `policy` at `version` (see
    /// [`status_writer::PendingEchoes`]).
    pub fn wrote_status(&self, policy: &GroupBanPolicy, version: String) {
        let cached = || self.policies.get(&ObjectRef::from_obj(policy)).and_then(|p| p.resource_version());
        tracing::debug!(policy = %reconcile::policy_key(policy), %version, "Wrote status");
        self.echoes.wrote(&reconcile::policy_key(policy), version, cached);
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
        let api = status_writer::status_api(self.client.clone(), &bad.namespace);
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
            crate::engine::status::mark_unreadable(
                &mut status,
                &still_bad.problem,
                still_bad.generation,
                k8s_openapi::jiff::Timestamp::now(),
            );
            if stored.is_some_and(|stored| !crate::engine::status::differs_beyond_timestamps(&stored, &status)) {
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
        self.echoes.forget(key);
        self.backoffs.reset(key);
        self.drift_attempts.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// The later of the remembered attempt and the last check in status
    /// (which survives a restart).
    pub fn last_drift_attempt(
        &self,
        key: &str,
        status: &crate::crd::GroupBanPolicyStatus,
    ) -> Option<k8s_openapi::jiff::Timestamp> {
        let remembered = self.drift_attempts.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied();
        let written = status.drift.as_ref().map(|d| d.last_check_time.0);
        remembered.max(written)
    }
}

/// How long a graceful shutdown may take before `run` returns anyway:
/// well within Kubernetes' default 30 s grace period.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(20);

/// Connects with the usual Kubernetes configuration (in-cluster, else
/// `KUBECONFIG`, else `~/.kube/config`) and runs until `shutdown` resolves.
pub async fn run(options: RunOptions, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let config = kube::Config::infer().await.context("failed to find a Kubernetes configuration")?;
    let client = Client::try_from(config).context("failed to create a Kubernetes client")?;
    run_with_client(client, options, shutdown).await
}

/// [`run`] with a client made by the caller.
pub async fn run_with_client(
    client: Client,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let policies: Api<GroupBanPolicy> = watched(&client, options.namespace.as_deref());
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        info!("Shutting down: no new IM calls; waiting for calls in flight");
        stop.send_replace(true);
    });
    if !preflight(&policies, options.selector.as_deref(), &options.health, stopped.clone()).await? {
        return Ok(()); // stopped while waiting for the API server
    }
    let metrics = crate::metrics::global();
    let Some(election) = options.leader_election.clone() else {
        metrics.set_leader(CONTROLLER_NAME, true);
        return run_term(&client, &options, stopped).await;
    };
    let namespace = election.namespace.clone().unwrap_or_else(|| leader::own_namespace(client.default_namespace()));
    let config = leader::ElectionConfig {
        lease_name: election.lease_name.clone(),
        namespace,
        identity: leader::own_identity(),
        lease_duration: election.lease_duration,
        renew_deadline: election.renew_deadline,
        retry_period: election.retry_period,
    };
    info!(lease = %config.lease_name, namespace = %config.namespace, identity = %config.identity, "Joining the leader election");
    let lease_name = config.lease_name.clone();
    // The Lease is released only after the last term has drained.
    let (release, released) = watch::channel(false);
    // A candidate is ready while it reaches the API server: a standby that
    // cannot read the Lease (RBAC, say) shows as not ready.
    let health = options.health.clone();
    let (mut leading, election_task) =
        leader::spawn(client.clone(), config, released, move |reached| health.set_ready(reached));
    metrics.set_leader(&lease_name, false);
    let mut process_stop = stopped.clone();
    let mut led = false;
    let outcome = loop {
        tokio::select! {
            _ = leading.wait_for(|leads| *leads) => {}
            _ = process_stop.wait_for(|stop| *stop) => break Ok(()),
        }
        led = true;
        metrics.set_leader(&lease_name, true);
        // This term ends on shutdown or when the Lease is lost, whichever
        // comes first: either way, no new call starts.
        let (term_stop, term_stopped) = watch::channel(false);
        let (mut lost, mut shutting_down) = (leading.clone(), stopped.clone());
        let ender = tokio::spawn(async move {
            tokio::select! {
                _ = lost.wait_for(|leads| !*leads) => {}
                _ = shutting_down.wait_for(|stop| *stop) => {}
            }
            term_stop.send_replace(true);
        });
        let result = run_term(&client, &options, term_stopped).await;
        ender.abort();
        metrics.set_leader(&lease_name, false);
        if result.is_err() || *stopped.borrow() {
            break result;
        }
    };
    if led {
        // The last call started at least a second before a standby can
        // take the Lease and start its own: never two leaders in a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    release.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), election_task).await;
    outcome
}

/// One term of the controller: from the start (or from winning the Lease)
/// until `stopped` turns true. Returns once running reconciles have written
/// what they confirmed, or fails after [`SHUTDOWN_BUDGET`].
async fn run_term(client: &Client, options: &RunOptions, stopped: watch::Receiver<bool>) -> anyhow::Result<()> {
    let pool = ClientPool::new(RateLimit::per_second(options.max_calls_per_second), options.client.clone())
        .context("failed to set up the IM HTTP client")?;
    let reporter = Reporter { controller: CONTROLLER_NAME.into(), instance: options.instance.clone() };
    let (reader, writer) = reflector::store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        pool,
        recorders: events::EventRecorders::new(client.clone(), reporter),
        backoffs: Backoffs::new(options.backoff),
        options: options.clone(),
        shutdown: stopped.clone(),
        drift_attempts: Default::default(),
        policies: reader.clone(),
        echoes: Default::default(),
        passes: Default::default(),
        undecodable: Default::default(),
    });

    let mut policy_watch = watch_config(options);
    if let Some(selector) = &options.selector {
        policy_watch = policy_watch.labels(selector);
    }
    // The store sees every change; only spec and reconcile-request changes
    // wake a policy (our own status writes do not).
    // Ready once the first list is in the cache (the watcher's InitDone).
    options.health.set_policies(Some(reader.clone()));
    let health = options.health.clone();
    let (forgetting, cache) = (ctx.clone(), reader.clone());
    // Untyped, decoded one object at a time (see decode): one bad policy
    // must not stop the watch of all the others.
    let untyped: Api<DynamicObject> = {
        let resource = ApiResource::erase::<GroupBanPolicy>(&());
        match &options.namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        }
    };
    let reporting = ctx.clone();
    let recovery = Arc::new(WatchRecovery::new(client, options, stopped.clone()));
    let policy_stream = watcher(untyped, policy_watch)
        .default_backoff()
        .filter_map(move |event| {
            let decoded = event.map(|event| {
                let (event, bad) = decode::decode_event(event);
                match (&event, bad) {
                    (_, Some(bad)) => reporting.report_undecodable(bad),
                    // What was reported unreadable is forgotten when the
                    // object reads well again or is really deleted; not on
                    // the Delete that a breaking update becomes (it comes
                    // with `bad`), or the echo of our own status write
                    // would report it a second time.
                    (
                        Some(
                            watcher::Event::Apply(policy)
                            | watcher::Event::InitApply(policy)
                            | watcher::Event::Delete(policy),
                        ),
                        None,
                    ) => {
                        if let Some(uid) = &policy.metadata.uid {
                            reporting.undecodable.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
                        }
                    }
                    _ => {}
                }
                event
            });
            std::future::ready(decoded.transpose())
        })
        .modify(trim_for_cache)
        .reflect(writer)
        .inspect(move |event| match event {
            Err(error) => recovery.failed(error),
            Ok(event) => {
                // Anything the watch delivers means it works again.
                recovery.recovered();
                on_policy_event(event, &forgetting, &cache, &health, &recovery);
            }
        })
        .applied_objects()
        .predicate_filter(triggers::wake_hash, Default::default());

    let mut controller = Controller::for_stream(policy_stream, reader.clone());
    for secrets in secret_watches(client, options) {
        let (store, default) = (reader.clone(), options.default_credentials_secret.clone());
        let stream = watcher(secrets.api, secrets.config).default_backoff().modify(trim_secret_meta).touched_objects();
        controller = controller.watches_stream(stream, move |secret| -> Vec<ObjectRef<GroupBanPolicy>> {
            let key = SecretKey { namespace: secret.namespace().unwrap_or_default(), name: secret.name_any() };
            policies_using(&key, &store.state(), default.as_ref())
        });
    }

    // When stopped: passes stop starting calls, the controller stops
    // scheduling and lets running reconciles write what they confirmed.
    let graceful = {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };

    info!(
        namespace = options.namespace.as_deref().unwrap_or("(all)"),
        selector = options.selector.as_deref().unwrap_or(""),
        max_calls_per_second = options.max_calls_per_second,
        concurrency = options.concurrency,
        "Controller started"
    );
    let config = kube::runtime::controller::Config::default().concurrency(options.concurrency);
    let runs = controller
        .with_config(config)
        .graceful_shutdown_on(graceful)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                log_controller_error(&error);
            }
        });
    let mut stopped_for_budget = stopped;
    let budget = async move {
        let _ = stopped_for_budget.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_BUDGET).await;
    };
    let outcome = tokio::select! {
        () = runs => {
            info!("Controller stopped");
            Ok(())
        }
        () = budget => Err(anyhow::anyhow!(
            "shutdown took longer than {} s; answers of calls still in flight were not recorded",
            SHUTDOWN_BUDGET.as_secs()
        )),
    };
    options.health.set_policies(None);
    crate::metrics::global().forget_policies();
    outcome
}

/// What the controller keeps in step with each policy event: echoes of
/// our writes, passes under way, what it remembers of deleted policies,
/// and readiness once a (re)list is in.
fn on_policy_event(
    event: &watcher::Event<GroupBanPolicy>,
    ctx: &Context,
    cache: &reflector::Store<GroupBanPolicy>,
    health: &crate::metrics::Health,
    recovery: &WatchRecovery,
) {
    match event {
        watcher::Event::Apply(policy) => {
            let key = reconcile::policy_key(policy);
            tracing::debug!(policy = %key, version = ?policy.resource_version(), "Watched a policy change");
            ctx.echoes.seen(&key, policy.resource_version().as_deref());
            ctx.passes.seen(&key, &passes::PassFor::of(policy));
        }
        watcher::Event::Delete(policy) => {
            let key = reconcile::policy_key(policy);
            ctx.passes.deleted(&key);
            ctx.forget_policy(&key);
        }
        watcher::Event::InitDone => {
            tracing::debug!(policies = cache.state().len(), "Policy list done");
            health.set_ready(true);
            health.set_waiting_for(None);
            recovery.synced();
            ctx.passes.check_all(|key| {
                let (namespace, name) = key.split_once('/')?;
                cache.get(&ObjectRef::new(name).within(namespace)).map(|p| passes::PassFor::of(&p))
            });
            // A relist fills the cache only now (InitApply goes to a
            // buffer): echoes it brought are seen now, others time out;
            // and it brings no Delete for what went during the gap.
            let mut live = std::collections::HashSet::new();
            for policy in cache.state() {
                let key = reconcile::policy_key(&policy);
                ctx.echoes.seen(&key, policy.resource_version().as_deref());
                live.insert(key);
            }
            ctx.forget_policies_except(&live);
        }
        watcher::Event::Init | watcher::Event::InitApply(_) => {}
    }
}

/// `/readyz` while the policy watch recovers from a failure (an API server
/// restarting, say): not ready, saying why, until the watch delivers again
/// or, once the cache has synced, the API server answers a list (a resumed
/// watch says nothing in a quiet cluster, which may have no event for
/// hours). The watcher restarts on its own backoff either way.
struct WatchRecovery {
    policies: Api<GroupBanPolicy>,
    health: Arc<crate::metrics::Health>,
    stopped: watch::Receiver<bool>,
    troubled: std::sync::atomic::AtomicBool,
    synced: std::sync::atomic::AtomicBool,
    probing: std::sync::atomic::AtomicBool,
}

impl WatchRecovery {
    fn new(client: &Client, options: &RunOptions, stopped: watch::Receiver<bool>) -> Self {
        Self {
            policies: watched(client, options.namespace.as_deref()),
            health: options.health.clone(),
            stopped,
            troubled: Default::default(),
            synced: Default::default(),
            probing: Default::default(),
        }
    }

    fn synced(&self) {
        self.synced.store(true, Ordering::SeqCst);
        self.recovered();
    }

    fn recovered(&self) {
        if self.troubled.swap(false, Ordering::SeqCst) {
            self.health.set_waiting_for(None);
        }
    }

    fn failed(self: &Arc<Self>, error: &watcher::Error) {
        let problem = crate::cut_text(&crate::error_chain(error), 512);
        warn!(error = %problem, "The policy watch failed; restarting it");
        self.troubled.store(true, Ordering::SeqCst);
        // A set waiting_for makes /readyz 503 whatever else says ready.
        self.health.set_waiting_for(Some(format!("the policy watch failed and is restarting: {problem}")));
        if !self.synced.load(Ordering::SeqCst) || self.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let recovery = self.clone();
        tokio::spawn(async move {
            let mut stopped = recovery.stopped.clone();
            while recovery.troubled.load(Ordering::SeqCst) {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stopped.wait_for(|stop| *stop) => break,
                }
                if recovery.policies.list_metadata(&ListParams::default().limit(1)).await.is_ok() {
                    recovery.recovered();
                }
            }
            recovery.probing.store(false, Ordering::SeqCst);
        });
    }
}

/// The annotation `kubectl apply` (client-side) keeps a whole copy of the
/// object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from a watched policy what the operator never reads before the
/// cache keeps it: `managedFields` (with Argo CD or Flux applying a policy
/// of 5,000 members, one entry per member per field manager, several times
/// the spec's size) and kubectl's last-applied copy of the whole object.
pub fn trim_for_cache(policy: &mut GroupBanPolicy) {
    let meta = policy.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// Keeps of a Secret's metadata only what finds the policies using it
/// (namespace and name): its labels and annotations can be large, and a
/// last-applied annotation would hold the Secret's values in the clear.
pub fn trim_secret_meta(secret: &mut PartialObjectMeta<Secret>) {
    let meta = &mut secret.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.labels = None;
    meta.owner_references = None;
}

/// Every watch asks the API server to end it after a little less than
/// `--watch-idle-timeout`, and kube's watcher cuts one that has delivered
/// nothing (no event, no bookmark) for that server timeout plus 5 s: a
/// hung watch is restarted after `--watch-idle-timeout`, not after the
/// default 295 s.
fn watch_config(options: &RunOptions) -> watcher::Config {
    let server_timeout = options.watch_idle_timeout.saturating_sub(Duration::from_secs(5)).max(Duration::from_secs(1));
    watcher::Config::default().timeout(u32::try_from(server_timeout.as_secs()).unwrap_or(u32::MAX))
}

/// The objects of kind `K` in the watched namespace, or in all.
fn watched<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// One metadata-only watch of Secrets: their values are never received.
struct SecretWatch {
    api: Api<PartialObjectMeta<Secret>>,
    config: watcher::Config,
}

/// Secrets to watch by metadata: those of the watched namespace (or all),
/// plus the default credentials Secret when it lives elsewhere.
fn secret_watches(client: &Client, options: &RunOptions) -> Vec<SecretWatch> {
    let mut watches =
        vec![SecretWatch { api: watched(client, options.namespace.as_deref()), config: watch_config(options) }];
    if let (Some(namespace), Some(default)) = (&options.namespace, &options.default_credentials_secret)
        && default.namespace != *namespace
    {
        watches.push(SecretWatch {
            api: Api::namespaced(client.clone(), &default.namespace),
            config: watch_config(options).fields(&format!("metadata.name={}", default.name)),
        });
    }
    watches
}

/// Checks that policies can be listed before the controller starts. What
/// retrying cannot fix (no CRD: 404; forbidden: 403; a bad selector: 400)
/// fails at once with a message that says what to do. Anything else (an
/// API server restarting: 5xx, refused connections, timeouts) is retried
/// with backoff, saying what it waits for in the log and in `/readyz`:
/// exiting would only turn an API-server restart into a CrashLoopBackOff.
/// Returns false when shutdown came first.
async fn preflight(
    policies: &Api<GroupBanPolicy>,
    selector: Option<&str>,
    health: &crate::metrics::Health,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let mut params = ListParams::default().limit(1);
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    let mut delay = PREFLIGHT_FIRST_RETRY;
    loop {
        let error = match policies.list_metadata(&params).await {
            Ok(_) => {
                health.set_waiting_for(None);
                return Ok(true);
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(anyhow::anyhow!(
                    "the GroupBanPolicy CRD (groupbanpolicies.groupban.dev) is not installed: kubectl apply -f crds/groupbanpolicies.yaml, or install the Helm chart"
                ));
            }
            Err(kube::Error::Api(status)) if status.code == 403 => {
                return Err(anyhow::anyhow!(
                    "access denied listing GroupBanPolicies ({}); the service account needs get/list/watch on groupbanpolicies.groupban.dev",
                    status.message
                ));
            }
            Err(kube::Error::Api(status)) if status.code == 400 => {
                return Err(anyhow::anyhow!("the API server refused the list: {} (check --selector)", status.message));
            }
            Err(error) => error,
        };
        let problem = crate::cut_text(&crate::error_chain(&error), 512);
        warn!(error = %problem, retry_in_s = delay.as_secs(), "Waiting for the API server: cannot list GroupBanPolicies yet");
        health.set_waiting_for(Some(format!("waiting for the API server to list GroupBanPolicies: {problem}")));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stopped.wait_for(|stop| *stop) => return Ok(false),
        }
        delay = (delay * 2).min(PREFLIGHT_MAX_RETRY);
    }
}

/// The first wait before listing policies again, and the longest.
const PREFLIGHT_FIRST_RETRY: Duration = Duration::from_secs(1);
const PREFLIGHT_MAX_RETRY: Duration = Duration::from_secs(30);

fn log_controller_error(error: &ControllerError) {
    match error {
        // Logged by the error policy, with its category.
        ControllerError::ReconcilerFailed(..) => {}
        // A policy deleted while a reconcile was scheduled: expected.
        ControllerError::ObjectNotFound(object) => tracing::debug!(%object, "Scheduled policy is gone"),
        // Watch and queue problems.
        other => warn!(error = %crate::error_chain(other), "Controller error"),
    }
}

type ControllerError = kube::runtime::controller::Error<reconcile::ReconcileError, watcher::Error>;

#[cfg(test)]
mod tests {
    use super::*;

    /// What a GitOps tool's server-side apply and kubectl's client-side
    /// apply add to a policy never reaches the cache; what the operator
    /// reads (spec, status, the reconcile request) does.
    #[test]
    fn the_cache_keeps_no_managed_fields_and_no_last_applied_copy() {
        let mut policy: GroupBanPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "groupban.dev/v1alpha1", "kind": "GroupBanPolicy",
            "metadata": {
                "name": "p", "namespace": "team",
                "annotations": {LAST_APPLIED: "{\"spec\": {}}", crate::crd::RECONCILE_REQUESTED_AT: "now"},
                "managedFields": [{"manager": "argocd-controller", "operation": "Apply", "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:spec": {"f:unbannedMembers": {}}}}],
            },
            "spec": {"groupId": "room", "unbannedMembers": ["a"]},
            "status": {"unbannedMembers": ["a"]},
        }))
        .unwrap();
        let before = policy.clone();
        trim_for_cache(&mut policy);
        assert_eq!(policy.metadata.managed_fields, None);
        let annotations = policy.annotations();
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert_eq!(annotations.get(crate::crd::RECONCILE_REQUESTED_AT).map(String::as_str), Some("now"));
        assert_eq!((policy.spec, policy.status), (before.spec, before.status));
    }

    #[test]
    fn a_cached_secret_keeps_only_its_namespace_and_name() {
        let mut secret: PartialObjectMeta<Secret> = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": "creds", "namespace": "team", "labels": {"a": "b"},
                "annotations": {LAST_APPLIED: "{\"stringData\": {\"secretKey\": \"hush\"}}"},
                "managedFields": [{"manager": "kubectl", "operation": "Update"}],
            },
        }))
        .unwrap();
        trim_secret_meta(&mut secret);
        assert_eq!((secret.name_any(), secret.namespace()), ("creds".to_string(), Some("team".to_string())));
        assert!(!serde_json::to_string(&secret).unwrap().contains("hush"));
        assert_eq!(secret.metadata.managed_fields, None);
    }
}
