//! The watches behind the controller: policies (untyped, decoded one at a
//! time, trimmed before the cache keeps them, waking a policy only on a
//! spec or reconcile-request change) and Secret metadata (waking the
//! policies that use a Secret). Also what each policy event keeps in step,
//! and readiness while a failed watch recovers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ApiResource, DynamicObject, ListParams, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::watch;
use tracing::warn;

use super::config::RunOptions;
use super::context::Context;
use super::decode;
use super::memory::policy_key;
use super::passes::PassFor;
use super::tenancy;
use super::triggers::{self, SecretKey, policies_using};
use super::trim::{trim_for_cache, trim_secret_meta};
use crate::crd::GroupBanPolicy;
use crate::metrics::Health;

/// The controller over the watched policies, woken by the Secrets they
/// use; the policy cache is `reader`, filled through `writer`. Its watches
/// start when the controller runs.
pub fn controller(
    client: &Client,
    options: &RunOptions,
    ctx: &Arc<Context>,
    reader: &reflector::Store<GroupBanPolicy>,
    writer: reflector::store::Writer<GroupBanPolicy>,
    namespaces: Option<reflector::store::Writer<PartialObjectMeta<Namespace>>>,
    stopped: watch::Receiver<bool>,
) -> Controller<GroupBanPolicy> {
    let mut policy_watch = watch_config(options);
    if let Some(selector) = &options.selector {
        policy_watch = policy_watch.labels(selector);
    }
    // The store sees every change; only spec and reconcile-request changes
    // wake a policy (our own status writes do not).
    // Ready once the first list is in the cache (the watcher's InitDone).
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
                            reporting.readable_again(uid);
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
    // A namespace entering or leaving --default-credentials-namespace-selector
    // wakes its policies that rely on the default credentials.
    if let (Some(writer), Some(selector)) = (namespaces, &options.default_credentials_namespace_selector) {
        let store = reader.clone();
        let changes = tenancy::namespace_changes(client, selector, writer);
        controller = controller
            .watches_stream(changes, move |namespace| tenancy::policies_in(&namespace.name_any(), &store.state()));
    }
    controller
}

/// What the controller keeps in step with each policy event: echoes of
/// our writes, passes under way, what it remembers of deleted policies,
/// and readiness once a (re)list is in.
fn on_policy_event(
    event: &watcher::Event<GroupBanPolicy>,
    ctx: &Context,
    cache: &reflector::Store<GroupBanPolicy>,
    health: &Health,
    recovery: &WatchRecovery,
) {
    match event {
        watcher::Event::Apply(policy) => {
            let key = policy_key(policy);
            tracing::debug!(policy = %key, version = ?policy.resource_version(), "Watched a policy change");
            ctx.memory.seen(&key, policy.resource_version().as_deref());
            ctx.passes.seen(&key, &PassFor::of(policy));
        }
        watcher::Event::Delete(policy) => {
            let key = policy_key(policy);
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
                cache.get(&ObjectRef::new(name).within(namespace)).map(|p| PassFor::of(&p))
            });
            // A relist fills the cache only now (InitApply goes to a
            // buffer): echoes it brought are seen now, others time out;
            // and it brings no Delete for what went during the gap.
            let mut live = std::collections::HashSet::new();
            for policy in cache.state() {
                let key = policy_key(&policy);
                ctx.memory.seen(&key, policy.resource_version().as_deref());
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
    health: Arc<Health>,
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
pub fn watched<K>(client: &Client, namespace: Option<&str>) -> Api<K>
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
