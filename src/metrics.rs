//! Prometheus metrics (OpenMetrics text on `/metrics`) and the probes
//! (`/healthz`, `/readyz`) of `run`.
//!
//! Names follow the controller-runtime operators, so existing dashboards and
//! alerts feel familiar: `controller_runtime_reconcile_total{controller,
//! result}`, `controller_runtime_reconcile_errors_total`,
//! `controller_runtime_reconcile_time_seconds` and
//! `leader_election_master_status{name}`. The operator's own are prefixed
//! `groupban_`: IM calls by API and ErrorCode and their duration, time
//! waited on the rate limiter, members by state, policies by condition,
//! policies retrying on their backoff, build info.
//!
//! `run` makes one [`Metrics`] and hands it to whatever records: the IM
//! client receives it as its [`CallObserver`], the controller through its
//! context. Nothing here is process-wide, so a test can make its own set
//! and see only what it recorded. Recording costs an atomic add when
//! nobody scrapes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::im::CallObserver;

/// The `controller` label of the controller-runtime metrics.
pub const CONTROLLER_LABEL: &str = "groupbanpolicy";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    /// `success` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub api: &'static str,
    /// The answer's ErrorCode, or `none` when no answer came (a transport error).
    pub error_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub condition: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    /// The Lease's name, as client-go labels it.
    pub name: String,
}

/// A request the API server refused: its verb and resource, from a fixed
/// set (never an object name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForbiddenLabels {
    pub verb: &'static str,
    /// `resource` or `resource/subresource`, with its API group.
    pub resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_errors: Family<ControllerLabels, Counter>,
    pub reconcile_time: Family<ControllerLabels, Histogram>,
    pub im_calls: Family<CallLabels, Counter>,
    pub im_call_time: Family<ApiLabels, Histogram>,
    /// Seconds callers spent waiting for the limiter (and their lane).
    pub limiter_wait: Family<ApiLabels, Counter<f64, AtomicU64>>,
    pub members: Family<StateLabels, Gauge>,
    pub policies: Family<ConditionLabels, Gauge>,
    pub leader: Family<NameLabels, Gauge>,
    /// Policies waiting to retry on their own backoff.
    pub retrying: Gauge,
    /// `--max-calls-per-second`: what the call rate is held to, per app
    /// and API (a dashboard draws it beside the calls).
    pub call_limit: Gauge,
    /// Requests the API server refused with 403: what RBAC does not allow.
    pub forbidden: Family<ForbiddenLabels, Counter>,
    build_info: Family<BuildLabels, Gauge>,
    /// The families above, registered once (they share their values).
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let seconds = || Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let mut metrics = Self {
            registry: Registry::default(),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_time: Family::new_with_constructor(seconds),
            im_calls: Family::default(),
            im_call_time: Family::new_with_constructor(seconds),
            limiter_wait: Family::default(),
            members: Family::default(),
            policies: Family::default(),
            leader: Family::default(),
            retrying: Gauge::default(),
            call_limit: Gauge::default(),
            forbidden: Family::default(),
            build_info: Family::default(),
        };
        metrics.build_info.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        // Series that exist from the start at 0, as controller-runtime
        // makes them: a query or alert on errors sees 0, not nothing, and
        // the first error is an increase.
        let controller = CONTROLLER_LABEL;
        for result in ["success", "error"] {
            let _ = metrics.reconciles.get_or_create(&ReconcileLabels { controller, result });
        }
        let _ = metrics.reconcile_errors.get_or_create(&ControllerLabels { controller });
        metrics.registry = metrics.build_registry();
        metrics
    }

    fn build_registry(&self) -> Registry {
        let mut registry = Registry::default();
        registry.register("controller_runtime_reconcile", "Reconciles by result", self.reconciles.clone());
        registry.register(
            "controller_runtime_reconcile_errors",
            "Reconciles that ended in an error",
            self.reconcile_errors.clone(),
        );
        registry.register_with_unit(
            "controller_runtime_reconcile_time",
            "Time a reconcile took",
            Unit::Seconds,
            self.reconcile_time.clone(),
        );
        registry.register("groupban_im_calls", "IM REST calls by API and ErrorCode", self.im_calls.clone());
        registry.register_with_unit(
            "groupban_im_call_duration",
            "Time an IM REST call took, answer included",
            Unit::Seconds,
            self.im_call_time.clone(),
        );
        registry.register_with_unit(
            "groupban_rate_limiter_wait",
            "Time calls waited for the per-app rate limiter",
            Unit::Seconds,
            self.limiter_wait.clone(),
        );
        registry.register(
            "groupban_members",
            "Members of the watched policies: desired, unbanned (recorded) and failed",
            self.members.clone(),
        );
        registry.register("groupban_policies", "Watched policies whose condition is True", self.policies.clone());
        registry.register(
            "groupban_policies_retrying",
            "Policies waiting to retry after a pass that failed or left work, each on its own backoff",
            self.retrying.clone(),
        );
        registry.register(
            "groupban_rate_limit_calls_per_second",
            "Calls per second the operator allows itself per app and API (--max-calls-per-second)",
            self.call_limit.clone(),
        );
        registry.register(
            "leader_election_master_status",
            "1 while this process holds the leader Lease",
            self.leader.clone(),
        );
        registry.register(
            "groupban_kubernetes_forbidden_requests",
            "Count of requests the API server refused as forbidden (RBAC), by verb and resource",
            self.forbidden.clone(),
        );
        registry.register("groupban_build_info", "The operator's version", self.build_info.clone());
        registry
    }

    /// Makes the forbidden-request series for `verb` on `resource` exist
    /// at 0 before any refusal (see [`Metrics::observe_forbidden`]).
    pub fn declare_forbidden(&self, verb: &'static str, resource: &'static str) {
        let _ = self.forbidden.get_or_create(&ForbiddenLabels { verb, resource });
    }

    /// Counts a request the API server refused with 403.
    pub fn observe_forbidden(&self, verb: &'static str, resource: &'static str) {
        self.forbidden.get_or_create(&ForbiddenLabels { verb, resource }).inc();
    }

    /// Records one IM call: its API, its ErrorCode (`None`: no answer) and
    /// how long it took.
    pub fn observe_call(&self, api: &'static str, error_code: Option<i64>, took: Duration) {
        let error_code = error_code.map_or_else(|| "none".to_string(), |code| code.to_string());
        self.im_calls.get_or_create(&CallLabels { api, error_code }).inc();
        self.im_call_time.get_or_create(&ApiLabels { api }).observe(took.as_secs_f64());
    }

    pub fn observe_limiter_wait(&self, api: &'static str, waited: Duration) {
        self.limiter_wait.get_or_create(&ApiLabels { api }).inc_by(waited.as_secs_f64());
    }

    pub fn observe_reconcile(&self, succeeded: bool, took: Duration) {
        let controller = CONTROLLER_LABEL;
        let result = if succeeded { "success" } else { "error" };
        self.reconciles.get_or_create(&ReconcileLabels { controller, result }).inc();
        if !succeeded {
            self.reconcile_errors.get_or_create(&ControllerLabels { controller }).inc();
        }
        self.reconcile_time.get_or_create(&ControllerLabels { controller }).observe(took.as_secs_f64());
    }

    /// `name`: the Lease's (the controller's name without an election).
    pub fn set_leader(&self, name: &str, leading: bool) {
        self.leader.get_or_create(&NameLabels { name: name.to_string() }).set(i64::from(leading));
    }

    /// Drops the member and policy gauges: a process that stopped leading
    /// no longer knows them, and stale values would keep alerts firing.
    pub fn forget_policies(&self) {
        self.members.clear();
        self.policies.clear();
        self.retrying.set(0);
    }
}

/// The IM client's attempts, by API and ErrorCode, and its waits.
impl CallObserver for Metrics {
    fn limiter_waited(&self, api: &'static str, waited: Duration) {
        self.observe_limiter_wait(api, waited);
    }

    fn attempt_ended(&self, api: &'static str, error_code: Option<i64>, took: Duration) {
        self.observe_call(api, error_code, took);
    }
}

/// Brings gauges up to date just before a scrape (the controller counts
/// the policies in its cache).
pub type ScrapeHook = Box<dyn Fn(&Metrics) + Send + Sync>;

/// What the probes and the scrape need to know about the controller.
#[derive(Default)]
pub struct Health {
    /// Set once this process can do its job: the standby once it has joined
    /// the election, the leader once its caches have synced.
    ready: AtomicBool,
    /// Run before each scrape: the leader counts its policies.
    before_scrape: Mutex<Option<ScrapeHook>>,
    /// What the process waits for while not ready, for `/readyz`'s body.
    waiting_for: Mutex<Option<String>>,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Says what the process is waiting for (`None`: nothing said).
    pub fn set_waiting_for(&self, what: Option<String>) {
        *self.waiting_for.lock().unwrap_or_else(|e| e.into_inner()) = what;
    }

    /// Sets (or, with `None`, drops) what runs before each scrape.
    pub fn set_before_scrape(&self, hook: Option<ScrapeHook>) {
        *self.before_scrape.lock().unwrap_or_else(|e| e.into_inner()) = hook;
    }
}

/// The OpenMetrics text of every metric.
pub fn render(metrics: &Metrics, health: &Health) -> String {
    if let Some(hook) = health.before_scrape.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        hook(metrics);
    }
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &metrics.registry);
    text
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the process
/// ends. Returns the address actually bound (`:0` picks a port). `[::]`
/// (what `:8080` means) falls back to `0.0.0.0` on a host without IPv6.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, health: Arc<Health>) -> std::io::Result<SocketAddr> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Err(_) if addr.ip() == std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) => {
            tokio::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, addr.port())).await?
        }
        bound => bound?,
    };
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(Served { metrics, health });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "The metrics and probe server stopped");
        }
    });
    Ok(bound)
}

/// What the server's routes read.
#[derive(Clone)]
struct Served {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

async fn scrape(State(served): State<Served>) -> impl IntoResponse {
    let text = render(&served.metrics, &served.health);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}

/// Not ready while something is waited for (it says what), whatever else
/// says ready (a leader election round, say); then ready as set.
async fn ready(State(Served { health, .. }): State<Served>) -> impl IntoResponse {
    let waiting = health.waiting_for.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match waiting {
        Some(what) => (StatusCode::SERVICE_UNAVAILABLE, what),
        None if health.ready.load(Ordering::SeqCst) => (StatusCode::OK, "ok".to_string()),
        None => (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_controller_runtime_names() {
        let metrics = Metrics::new();
        metrics.observe_call("unban_group_member", Some(0), Duration::from_millis(20));
        metrics.observe_call("unban_group_member", None, Duration::from_millis(20));
        metrics.observe_reconcile(false, Duration::from_millis(5));
        metrics.set_leader("groupban-operator", true);
        let text = render(&metrics, &Health::default());
        for expected in [
            "groupban_im_calls_total{api=\"unban_group_member\",error_code=\"0\"} ",
            "groupban_im_calls_total{api=\"unban_group_member\",error_code=\"none\"} ",
            "controller_runtime_reconcile_total{controller=\"groupbanpolicy\",result=\"error\"} ",
            "controller_runtime_reconcile_errors_total{controller=\"groupbanpolicy\"} ",
            "controller_runtime_reconcile_time_seconds_bucket{",
            "groupban_im_call_duration_seconds_count{api=\"unban_group_member\"} ",
            "leader_election_master_status{name=\"groupban-operator\"} 1",
            "groupban_build_info{version=",
            "groupban_policies_retrying ",
            "groupban_rate_limit_calls_per_second ",
            "# EOF",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
    }

    /// Each set counts only what was recorded into it, and a scrape runs
    /// the hook the controller set, with the set being scraped.
    #[test]
    fn sets_are_independent_and_the_scrape_hook_sees_its_own() {
        let (one, other) = (Metrics::new(), Metrics::new());
        one.attempt_ended("unban_group_member", Some(10010), Duration::from_millis(3));
        let health = Health::default();
        health.set_before_scrape(Some(Box::new(|metrics: &Metrics| {
            metrics.retrying.set(7);
        })));
        let (one_text, other_text) = (render(&one, &health), render(&other, &Health::default()));
        assert!(one_text.contains("error_code=\"10010\"} 1"), "{one_text}");
        assert!(!other_text.contains("10010"), "{other_text}");
        assert!(one_text.contains("groupban_policies_retrying 7"), "{one_text}");
        assert!(other_text.contains("groupban_policies_retrying 0"), "{other_text}");
    }
}
