//! An in-process fake Kubernetes API server for integration tests.
//!
//! It speaks the HTTP API that kube clients use (CRUD, the four PATCH types,
//! list paging, watches with bookmarks and 410 Gone, metadata-only answers,
//! discovery) closely enough that the operator can be tested end to end on
//! loopback. It keeps objects as JSON, one global resourceVersion counter (as
//! etcd does) and a history of watch events that `compact()` forgets.
//!
//! Known simplifications, each documented where it happens:
//! - Server-side apply keeps no `managedFields`. On `/status` the applied
//!   `status` replaces the stored one, which is exact when one manager owns
//!   the status (our case); on the main resource the applied object is
//!   deep-merged into the stored one, so fields a manager stops applying are
//!   not removed, and `force` is not needed because there are no conflicts.
//! - Strategic merge patches are applied as JSON merge patches.
//! - No schema validation or pruning of unknown fields; no admission; a
//!   namespace need not exist for objects to be created in it.
//! - Lists are served from the current state (`resourceVersion` other than
//!   the current one with `resourceVersionMatch=Exact` gets 410); later pages
//!   of a paged list come from a snapshot taken at the first page.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, Response, StatusCode, header};
use base64::Engine as _;
use rand::Rng as _;
use serde_json::{Map, Value, json};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest request body accepted (the real API server's limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Default quiet period after which a watch with `allowWatchBookmarks=true`
/// gets a BOOKMARK (real servers use about a minute).
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);
/// Paged lists whose continue tokens are kept at once; older ones expire (410).
const MAX_CONTINUATIONS: usize = 256;

/// One kind of object the server stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; "" for the core group (served under `/api/v1`).
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Has a `/status` subresource: writes to the main resource ignore
    /// `status`, writes to `/status` change only `status`.
    pub status_subresource: bool,
    pub short_names: &'static [&'static str],
    /// Built-in kinds accept a PUT without `metadata.resourceVersion`;
    /// custom resources refuse it (422).
    pub unconditional_update: bool,
}

impl ResourceType {
    #[allow(clippy::too_many_arguments)]
    pub const fn new(
        group: &'static str,
        version: &'static str,
        plural: &'static str,
        kind: &'static str,
        namespaced: bool,
        status_subresource: bool,
        short_names: &'static [&'static str],
        unconditional_update: bool,
    ) -> Self {
        Self { group, version, plural, kind, namespaced, status_subresource, short_names, unconditional_update }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `plural.group`, as error messages name the resource.
    fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }
}

/// The resources `FakeApiServer::start` registers. Add a kind in one line.
#[rustfmt::skip]
pub const RESOURCES: &[ResourceType] = &[
    //                group                  version     plural              kind              namespaced status short      unconditional update
    ResourceType::new("",                    "v1",       "namespaces",       "Namespace",      false, false, &["ns"],  true),
    ResourceType::new("",                    "v1",       "configmaps",       "ConfigMap",      true,  false, &["cm"],  true),
    ResourceType::new("",                    "v1",       "secrets",          "Secret",         true,  false, &[],      true),
    ResourceType::new("coordination.k8s.io", "v1",       "leases",           "Lease",          true,  false, &[],      true),
    ResourceType::new("events.k8s.io",       "v1",       "events",           "Event",          true,  false, &["ev"],  true),
    ResourceType::new("groupban.dev",        "v1alpha1", "groupbanpolicies", "GroupBanPolicy", true,  true,  &["gbp"], false),
];

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    /// The body parsed as JSON (or YAML for apply patches); Null when none or unparsable.
    pub body: Value,
    pub status: u16,
    /// True when the request changed a stored object (a new resourceVersion was assigned).
    pub changed: bool,
    /// When the request came in.
    pub at: std::time::Instant,
}

impl RecordedRequest {
    /// True for a watch request (`watch=true` or `watch=1`).
    pub fn is_watch(&self) -> bool {
        query_pairs(&self.query).iter().any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
    }

    /// The value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_pairs(&self.query).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// An in-process fake Kubernetes API server on 127.0.0.1.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts on 127.0.0.1:0 with the resources in [`RESOURCES`] registered.
    pub async fn start() -> FakeApiServer {
        Self::start_with_resources(RESOURCES).await
    }

    /// Starts with another resource table.
    pub async fn start_with_resources(resources: &[ResourceType]) -> FakeApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let (signal, _) = watch::channel(Signal::default());
        let shared = Arc::new(Shared {
            resources: resources.to_vec(),
            addr,
            signal,
            state: Mutex::new(State {
                rv: 1,
                objects: BTreeMap::new(),
                history: Vec::new(),
                compacted_rv: 0,
                requests: Vec::new(),
                failures: Vec::new(),
                hung_watches: Vec::new(),
                delays: Vec::new(),
                continuations: BTreeMap::new(),
                next_continuation: 1,
                bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
                max_body_bytes: MAX_BODY_BYTES,
                minor_version: "37",
            }),
        });
        let app = axum::Router::new().fallback(handle).with_state(shared.clone());
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = shutdown_rx.await;
                })
                .await;
        });
        FakeApiServer { shared, addr, shutdown: Some(shutdown), task: Some(task) }
    }

    /// Makes `/version` report Kubernetes 1.`minor`.
    pub fn set_minor_version(&self, minor: &'static str) {
        self.shared.lock().minor_version = minor;
    }

    /// "http://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig (cluster server = `url()`, context namespace
    /// "default", no credentials) to `path`.
    pub fn write_kubeconfig(&self, path: &Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\npreferences: {{}}\n",
            url = self.url()
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }

    /// A kube client for this server, built as `Config::infer` would build
    /// one (including kube's default retries of 429, 503 and 504 answers).
    pub fn client(&self) -> kube::Client {
        groupban_operator::install_crypto_provider();
        let config = kube::Config::new(self.url().parse().expect("server URL"));
        kube::Client::try_from(config).expect("kube client")
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Clears the request log.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// PATCH or PUT requests on a `/status` path that changed the object.
    pub fn status_writes(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| (r.method == "PATCH" || r.method == "PUT") && r.path.ends_with("/status") && r.changed)
            .count()
    }

    /// Requests that changed a stored object.
    pub fn writes(&self) -> usize {
        self.requests().iter().filter(|r| r.changed).count()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Sets the quiet period after which watches get a BOOKMARK.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.shared.lock().bookmark_interval = interval;
    }

    /// Forgets watch history up to now: a watch resuming from an older
    /// resourceVersion gets an ERROR event with a 410 Expired Status, and
    /// continue tokens of paged lists expire (410). A live watch that has not
    /// yet been sent events older than now also gets the 410.
    pub fn compact(&self) {
        let mut st = self.shared.lock();
        st.compacted_rv = st.rv;
        st.history.clear();
        st.continuations.clear();
        drop(st);
        self.shared.signal.send_modify(|s| s.compactions += 1);
    }

    /// Closes every open watch stream now (cleanly ends the chunked response,
    /// as when an API server restarts).
    pub fn drop_watches(&self) {
        self.shared.signal.send_modify(|s| s.drop_epoch += 1);
    }

    /// The next `count` requests whose path (with `?query` appended when
    /// there is one) contains `path_contains`, and whose method matches if
    /// `method` is Some, are answered with `status` and a Status body, without
    /// effect. Note that kube clients retry 429, 503 and 504 by themselves.
    pub fn fail_requests(&self, method: Option<&str>, path_contains: &str, status: u16, count: usize) {
        self.shared.lock().failures.push(Failure {
            method: method.map(str::to_ascii_uppercase),
            path_contains: path_contains.to_string(),
            status,
            remaining: count,
            retry_after: None,
        });
    }

    /// The next `count` matching requests are answered only after `delay`
    /// (then as usual): an overloaded API server.
    pub fn delay_requests(&self, method: Option<&str>, path_contains: &str, delay: Duration, count: usize) {
        let matcher = Failure {
            method: method.map(str::to_ascii_uppercase),
            path_contains: path_contains.to_string(),
            status: 0,
            remaining: count,
            retry_after: None,
        };
        self.shared.lock().delays.push((matcher, delay));
    }

    /// The next `count` matching requests are answered 429 with
    /// `Retry-After: retry_after_secs` (header and
    /// `details.retryAfterSeconds`), as API Priority and Fairness answers.
    pub fn throttle_requests(&self, method: Option<&str>, path_contains: &str, count: usize, retry_after_secs: u32) {
        self.shared.lock().failures.push(Failure {
            method: method.map(str::to_ascii_uppercase),
            path_contains: path_contains.to_string(),
            status: 429,
            remaining: count,
            retry_after: Some(retry_after_secs),
        });
    }

    /// The next `count` watch requests whose path contains `path_contains`
    /// are answered 200 with headers and then nothing, ever: a hung watch,
    /// as a broken proxy or an overloaded API server can leave one.
    pub fn hang_watches(&self, path_contains: &str, count: usize) {
        self.shared.lock().hung_watches.push(Failure {
            method: Some("GET".into()),
            path_contains: path_contains.to_string(),
            status: 200,
            remaining: count,
            retry_after: None,
        });
    }

    /// Forgets every pending injected failure.
    pub fn clear_failures(&self) {
        self.shared.lock().failures.clear();
    }

    /// A stored object as JSON; `namespace` is ignored for cluster-scoped resources.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let idx = self.shared.resources.iter().position(|r| r.plural == resource)?;
        let ns = if self.shared.resources[idx].namespaced { namespace.to_string() } else { String::new() };
        self.shared.lock().objects.get(&(idx, ns, name.to_string())).cloned()
    }

    /// Every stored object of a resource (all namespaces), in key order.
    pub fn objects(&self, resource: &str) -> Vec<Value> {
        let Some(idx) = self.shared.resources.iter().position(|r| r.plural == resource) else { return Vec::new() };
        self.shared.lock().objects.iter().filter(|((i, _, _), _)| *i == idx).map(|(_, v)| v.clone()).collect()
    }

    /// Stops the server: open watches end, then the listener closes.
    pub async fn stop(mut self) {
        self.shared.signal.send_modify(|s| s.stopped = true);
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.signal.send_modify(|s| s.stopped = true);
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

// ---------------------------------------------------------------------------
// State

struct Shared {
    resources: Vec<ResourceType>,
    addr: SocketAddr,
    signal: watch::Sender<Signal>,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What wakes watch streams.
#[derive(Debug, Clone, Copy, Default)]
struct Signal {
    rv: u64,
    compactions: u64,
    drop_epoch: u64,
    stopped: bool,
}

type Key = (usize, String, String);

struct State {
    /// The minor version `/version` reports.
    minor_version: &'static str,
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<HistoryEvent>,
    /// Watches from an older resourceVersion get 410.
    compacted_rv: u64,
    requests: Vec<RecordedRequest>,
    failures: Vec<Failure>,
    /// Watches to leave hanging (see [`FakeApiServer::hang_watches`]).
    hung_watches: Vec<Failure>,
    /// Requests to answer late (see [`FakeApiServer::delay_requests`]).
    delays: Vec<(Failure, Duration)>,
    continuations: BTreeMap<u64, Continuation>,
    next_continuation: u64,
    bookmark_interval: Duration,
    max_body_bytes: usize,
}

struct Failure {
    method: Option<String>,
    path_contains: String,
    status: u16,
    remaining: usize,
    /// Seconds for `Retry-After`, if the answer carries one.
    retry_after: Option<u32>,
}

struct Continuation {
    rv: u64,
    items: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

struct HistoryEvent {
    rv: u64,
    kind: EventType,
    resource: usize,
    /// The object before the change (None for ADDED).
    prev: Option<Value>,
    /// The object after the change; for DELETED its last state with the
    /// deletion's resourceVersion.
    obj: Value,
}

impl State {
    /// Assigns the next resourceVersion, stores (or removes) the object and
    /// appends the watch event. Returns the object as stored.
    fn commit(&mut self, key: Key, kind: EventType, prev: Option<Value>, mut obj: Value) -> Value {
        self.rv += 1;
        set_meta(&mut obj, "resourceVersion", Value::String(self.rv.to_string()));
        self.history.push(HistoryEvent { rv: self.rv, kind, resource: key.0, prev, obj: obj.clone() });
        if kind == EventType::Deleted {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, obj.clone());
        }
        obj
    }

    fn take_hung_watch(&mut self, target: &str) -> bool {
        let is_watch = target.contains("watch=true") || target.contains("watch=1");
        let Some(hang) = self.hung_watches.iter_mut().find(|h| h.remaining > 0 && target.contains(&h.path_contains))
        else {
            return false;
        };
        if !is_watch {
            return false;
        }
        hang.remaining -= 1;
        self.hung_watches.retain(|h| h.remaining > 0);
        true
    }

    fn take_delay(&mut self, method: &str, target: &str) -> Option<Duration> {
        let (matched, delay) = self.delays.iter_mut().find(|(f, _)| {
            f.remaining > 0
                && f.method.as_deref().is_none_or(|m| m == method)
                && target.contains(f.path_contains.as_str())
        })?;
        matched.remaining -= 1;
        let delay = *delay;
        self.delays.retain(|(f, _)| f.remaining > 0);
        Some(delay)
    }

    fn take_failure(&mut self, method: &str, target: &str) -> Option<(u16, Option<u32>)> {
        let failure = self.failures.iter_mut().find(|f| {
            f.remaining > 0
                && f.method.as_deref().is_none_or(|m| m == method)
                && target.contains(f.path_contains.as_str())
        })?;
        failure.remaining -= 1;
        let answer = (failure.status, failure.retry_after);
        self.failures.retain(|f| f.remaining > 0);
        Some(answer)
    }
}

// ---------------------------------------------------------------------------
// Errors

#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }

    fn with_details(mut self, rt: &ResourceType, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
        self
    }

    fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", rt.qualified())).with_details(rt, name)
    }

    fn path_not_found() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }

    fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", rt.qualified())).with_details(rt, name)
    }

    fn conflict(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                rt.qualified()
            ),
        )
        .with_details(rt, name)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    fn invalid(rt: &ResourceType, name: &str, message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", format!("{} \"{name}\" is invalid: {}", rt.qualified(), message.into()))
            .with_details(rt, name)
    }

    fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    fn method_not_allowed() -> Self {
        Self::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
    }

    fn from_code(code: u16) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            413 => "RequestEntityTooLarge",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "",
        };
        Self::new(code, reason, format!("injected failure: HTTP {code}"))
    }

    fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

// ---------------------------------------------------------------------------
// HTTP handling

enum Reply {
    Json(u16, Value),
    /// JSON with another Content-Type (aggregated discovery announces itself so).
    Typed(&'static str, Value),
    Watch(Box<WatchStream>),
    /// Headers, then nothing.
    Hung,
}

struct Ctx<'a> {
    method: &'a Method,
    query: Vec<(String, String)>,
    content_type: Option<&'a str>,
    accept: Option<&'a str>,
    body: &'a [u8],
}

impl Ctx<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("true" | "1"))
    }

    fn dry_run(&self) -> bool {
        self.param("dryRun") == Some("All")
    }
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

async fn handle(axum::extract::State(shared): axum::extract::State<Arc<Shared>>, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let header = |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_type = header(header::CONTENT_TYPE);
    let accept = header(header::ACCEPT);
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let max = shared.lock().max_body_bytes;
    let bytes = axum::body::to_bytes(body, max).await;

    let mut recorded = RecordedRequest {
        method: parts.method.as_str().to_string(),
        path: path.clone(),
        query: query.clone(),
        content_type: content_type.clone(),
        accept: accept.clone(),
        body: Value::Null,
        status: 0,
        changed: false,
        at: std::time::Instant::now(),
    };
    let mut retry_after: Option<u32> = None;
    let reply = match bytes {
        Err(_) => {
            let error = ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("the request body is larger than the limit of {max} bytes"),
            );
            let mut st = shared.lock();
            recorded.status = 413;
            st.requests.push(recorded);
            return json_response(413, &error.status());
        }
        Ok(bytes) => {
            recorded.body = parse_body(&bytes, content_type.as_deref());
            let ctx = Ctx {
                method: &parts.method,
                query: query_pairs(&query),
                content_type: content_type.as_deref(),
                accept: accept.as_deref(),
                body: &bytes,
            };
            let target = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
            // A slow API server: the answer waits, outside the lock.
            let delay = shared.lock().take_delay(parts.method.as_str(), &target);
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let mut st = shared.lock();
            let rv_before = st.rv;
            let result = if st.take_hung_watch(&target) {
                Ok(Reply::Hung)
            } else {
                match st.take_failure(parts.method.as_str(), &target) {
                    Some((code, None)) => Err(ApiError::from_code(code)),
                    Some((code, Some(seconds))) => {
                        retry_after = Some(seconds);
                        let mut error = ApiError::from_code(code);
                        error.details = Some(json!({"retryAfterSeconds": seconds}));
                        Err(error)
                    }
                    None => dispatch(&shared, &mut st, &path, &ctx),
                }
            };
            let reply = result.unwrap_or_else(|e| Reply::Json(e.code, e.status()));
            recorded.status = match &reply {
                Reply::Json(code, _) => *code,
                Reply::Typed(..) => 200,
                Reply::Watch(_) | Reply::Hung => 200,
            };
            recorded.changed = st.rv != rv_before;
            let rv = st.rv;
            st.requests.push(recorded);
            drop(st);
            if rv != rv_before {
                shared.signal.send_modify(|s| s.rv = rv);
            }
            reply
        }
    };
    match reply {
        Reply::Json(code, value) => {
            let mut response = json_response(code, &value);
            if let Some(seconds) = retry_after {
                response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
            }
            response
        }
        Reply::Typed(content_type, value) => {
            let mut response = json_response(200, &value);
            response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
            response
        }
        Reply::Hung => Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(futures::stream::pending::<Result<Bytes, Infallible>>()))
            .expect("hung watch response"),
        Reply::Watch(stream) => {
            let body = futures::stream::unfold(stream, |mut stream| async move {
                stream.next_line().await.map(|line| (Ok::<_, Infallible>(line), stream))
            });
            Response::builder()
                .status(200)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(body))
                .expect("watch response")
        }
    }
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(value).expect("JSON")))
        .expect("response")
}

fn parse_body(bytes: &[u8], content_type: Option<&str>) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    if content_type.is_some_and(|c| c.contains("yaml")) {
        parse_yaml(bytes).unwrap_or(Value::Null)
    } else {
        serde_json::from_slice(bytes).unwrap_or(Value::Null)
    }
}

/// A YAML body. Clients (kube-rs among them) send apply patches as JSON,
/// which is YAML too: reading JSON first gives the same value for a fraction
/// of the YAML parser's cost, which a 10,000-policy benchmark notices.
fn parse_yaml(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).or_else(|_| yaml_serde::from_slice(bytes).map_err(|e| e.to_string()))
}

/// A resource path, parsed.
struct Target {
    idx: usize,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn dispatch(shared: &Arc<Shared>, st: &mut State, path: &str, ctx: &Ctx) -> Result<Reply, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segments.as_slice() {
        ["version"] => return Ok(Reply::Json(200, version_info(st.minor_version))),
        ["api" | "apis"] if aggregated_discovery(ctx.accept).is_some() => {
            let version = aggregated_discovery(ctx.accept).unwrap_or("v2");
            let core = segments[0] == "api";
            return Ok(Reply::Typed(
                AGGREGATED_DISCOVERY_TYPES[usize::from(version != "v2")],
                discovery_list(shared, core, version),
            ));
        }
        ["api"] => return Ok(Reply::Json(200, core_versions(shared))),
        ["apis"] => return Ok(Reply::Json(200, api_group_list(shared))),
        ["apis", group] => return api_group(shared, group).map(|g| Reply::Json(200, g)),
        ["api", version] => return resource_list(shared, "", version).map(|l| Reply::Json(200, l)),
        ["apis", group, version] => return resource_list(shared, group, version).map(|l| Reply::Json(200, l)),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::path_not_found()),
    };
    let target = parse_target(shared, group, version, rest)?;
    let rt = shared.resources[target.idx];
    if rt.namespaced && target.name.is_some() && target.namespace.is_none() {
        return Err(ApiError::path_not_found());
    }
    match target.subresource.as_deref() {
        None => {}
        Some("status") if rt.status_subresource => {}
        Some(_) => return Err(ApiError::path_not_found()),
    }
    let status_sub = target.subresource.is_some();
    let ns = target.namespace.as_deref();
    match (ctx.method.clone(), target.name.as_deref()) {
        (Method::GET, None) if ctx.flag("watch") => start_watch(shared, st, target.idx, ns, ctx),
        (Method::GET, None) => list(shared, st, target.idx, ns, ctx).map(|v| Reply::Json(200, v)),
        (Method::GET, Some(name)) => {
            let key = (target.idx, ns.unwrap_or("").to_string(), name.to_string());
            let obj = st.objects.get(&key).ok_or_else(|| ApiError::not_found(&rt, name))?;
            Ok(Reply::Json(200, render(obj, metadata_only(ctx.accept))))
        }
        (Method::POST, None) if ns.is_some() || !rt.namespaced => {
            let body = parse_json(ctx.body)?;
            let created = create(shared, st, target.idx, ns, body, ctx.dry_run())?;
            Ok(Reply::Json(201, render(&created, metadata_only(ctx.accept))))
        }
        (Method::PUT, Some(name)) => {
            let body = parse_json(ctx.body)?;
            let updated = replace(shared, st, target.idx, ns, name, status_sub, body, ctx.dry_run())?;
            Ok(Reply::Json(200, render(&updated, metadata_only(ctx.accept))))
        }
        (Method::PATCH, Some(name)) => {
            let (code, patched) = patch(shared, st, target.idx, ns, name, status_sub, ctx)?;
            Ok(Reply::Json(code, render(&patched, metadata_only(ctx.accept))))
        }
        (Method::DELETE, Some(name)) if !status_sub => {
            let deleted = delete(shared, st, target.idx, ns, name, ctx)?;
            Ok(Reply::Json(200, render(&deleted, metadata_only(ctx.accept))))
        }
        (Method::DELETE, None) => delete_collection(shared, st, target.idx, ns, ctx).map(|v| Reply::Json(200, v)),
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn parse_target(shared: &Shared, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let find = |plural: &str| {
        shared.resources.iter().position(|r| r.group == group && r.version == version && r.plural == plural)
    };
    // `/namespaces/{ns}/{resource}...` unless it is a namespace's own subresource.
    if let ["namespaces", ns, resource, tail @ ..] = rest
        && !matches!(*resource, "status" | "finalize")
    {
        let idx = find(resource).ok_or_else(ApiError::path_not_found)?;
        if !shared.resources[idx].namespaced || tail.len() > 2 {
            return Err(ApiError::path_not_found());
        }
        return Ok(Target {
            idx,
            namespace: Some(ns.to_string()),
            name: tail.first().map(|s| s.to_string()),
            subresource: tail.get(1).map(|s| s.to_string()),
        });
    }
    let [resource, tail @ ..] = rest else { return Err(ApiError::path_not_found()) };
    let idx = find(resource).ok_or_else(ApiError::path_not_found)?;
    if tail.len() > 2 {
        return Err(ApiError::path_not_found());
    }
    Ok(Target {
        idx,
        namespace: None,
        name: tail.first().map(|s| s.to_string()),
        subresource: tail.get(1).map(|s| s.to_string()),
    })
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

// ---------------------------------------------------------------------------
// Discovery

fn version_info(minor: &str) -> Value {
    json!({
        "major": "1",
        "minor": minor,
        "emulationMajor": "1",
        "emulationMinor": "37",
        "gitVersion": format!("v1.{minor}.0-fake"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

fn core_versions(shared: &Shared) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}]
    })
}

/// Groups other than core, each with its versions in table order.
fn groups(shared: &Shared) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for rt in shared.resources.iter().filter(|r| !r.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == rt.group) {
            Some((_, versions)) if !versions.contains(&rt.version) => versions.push(rt.version),
            Some(_) => {}
            None => groups.push((rt.group, vec![rt.version])),
        }
    }
    groups
}

fn group_json(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
}

fn api_group_list(shared: &Shared) -> Value {
    let groups: Vec<Value> = groups(shared).iter().map(|(g, v)| group_json(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn api_group(shared: &Shared, group: &str) -> Result<Value, ApiError> {
    let groups = groups(shared);
    let (name, versions) = groups.iter().find(|(g, _)| *g == group).ok_or_else(ApiError::path_not_found)?;
    let mut value = group_json(name, versions);
    value["kind"] = json!("APIGroup");
    value["apiVersion"] = json!("v1");
    Ok(value)
}

fn resource_list(shared: &Shared, group: &str, version: &str) -> Result<Value, ApiError> {
    let matching: Vec<&ResourceType> =
        shared.resources.iter().filter(|r| r.group == group && r.version == version).collect();
    if matching.is_empty() {
        return Err(ApiError::path_not_found());
    }
    let verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
    let mut resources = Vec::new();
    for rt in matching {
        let mut resource = json!({
            "name": rt.plural,
            "singularName": rt.kind.to_ascii_lowercase(),
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": verbs,
        });
        if !rt.short_names.is_empty() {
            resource["shortNames"] = json!(rt.short_names);
        }
        resources.push(resource);
        if rt.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", rt.plural),
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Ok(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}))
}

const AGGREGATED_DISCOVERY_TYPES: [&str; 2] = [
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
];

/// The version of aggregated discovery the Accept header asks for first
/// (kubectl and kube's `Discovery::run_aggregated` ask for it on /api and /apis).
fn aggregated_discovery(accept: Option<&str>) -> Option<&'static str> {
    for range in accept?.split(',') {
        let params: Vec<(&str, &str)> = range.split(';').skip(1).filter_map(|p| p.trim().split_once('=')).collect();
        let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        if param("as") == Some("APIGroupDiscoveryList") && param("g") == Some("apidiscovery.k8s.io") {
            match param("v") {
                Some("v2") => return Some("v2"),
                Some("v2beta1") => return Some("v2beta1"),
                _ => continue,
            }
        }
        // A plain media range before any aggregated one: legacy discovery.
        param("as")?;
    }
    None
}

/// An `APIGroupDiscoveryList` for the core group (`core`) or the named groups.
fn discovery_list(shared: &Shared, core: bool, version: &str) -> Value {
    let verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
    let mut groups: Vec<(&str, Vec<&str>)> = groups(shared);
    if core {
        groups = vec![("", vec!["v1"])];
    }
    let items: Vec<Value> = groups
        .iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = shared
                        .resources
                        .iter()
                        .filter(|r| r.group == *group && r.version == *v)
                        .map(|rt| {
                            let kind = json!({"group": rt.group, "version": rt.version, "kind": rt.kind});
                            let mut resource = json!({
                                "resource": rt.plural,
                                "responseKind": kind,
                                "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": rt.kind.to_ascii_lowercase(),
                                "verbs": verbs,
                            });
                            if !rt.short_names.is_empty() {
                                resource["shortNames"] = json!(rt.short_names);
                            }
                            if rt.status_subresource {
                                resource["subresources"] = json!([{
                                    "subresource": "status",
                                    "responseKind": kind,
                                    "verbs": ["get", "patch", "update"],
                                }]);
                            }
                            resource
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

// ---------------------------------------------------------------------------
// Object helpers

fn meta(obj: &Value, field: &str) -> Option<Value> {
    obj.get("metadata").and_then(|m| m.get(field)).cloned()
}

fn meta_str(obj: &Value, field: &str) -> String {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str).unwrap_or("").to_string()
}

fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"][field] = value;
}

fn remove_meta(obj: &mut Value, field: &str) {
    if let Some(metadata) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove(field);
    }
}

/// The accept header asks for `PartialObjectMetadata` (or its list) before
/// any plain JSON.
fn metadata_only(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        match param("as") {
            None if media == "application/json" || media == "*/*" || media == "application/*" => return false,
            Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                if param("g") == Some("meta.k8s.io") && param("v") == Some("v1") =>
            {
                return true;
            }
            _ => {}
        }
    }
    false
}

fn render(obj: &Value, metadata: bool) -> Value {
    if metadata {
        json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })
    } else {
        obj.clone()
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn new_uid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Five characters from the alphabet the API server uses for generateName.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// True when two objects differ in what bumps `metadata.generation`:
/// anything but metadata and status. Compared in place: copying every
/// object twice per write showed in the 10,000-policy benchmark.
fn generation_part_differs(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a != b;
    };
    let counted = |key: &str| key != "metadata" && key != "status";
    let len = |map: &serde_json::Map<String, Value>| map.keys().filter(|key| counted(key)).count();
    len(a) != len(b) || a.iter().any(|(key, value)| counted(key) && b.get(key) != Some(value))
}

/// Secrets: `stringData` is folded into base64 `data`, as the API server does.
fn fold_string_data(rt: &ResourceType, obj: &mut Value) {
    if rt.group.is_empty()
        && rt.plural == "secrets"
        && let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
    {
        if !obj.get("data").is_some_and(Value::is_object) {
            obj["data"] = json!({});
        }
        for (key, value) in string_data {
            let text = value.as_str().unwrap_or("").as_bytes().to_vec();
            obj["data"][key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
}

fn check_type(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    };
    let api_version = rt.api_version();
    if let Some(given) = map.get("apiVersion").and_then(Value::as_str)
        && given != api_version
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({given}) does not match the expected API version ({api_version})"
        )));
    }
    if let Some(given) = map.get("kind").and_then(Value::as_str)
        && given != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({given}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    map.insert("apiVersion".into(), json!(api_version));
    map.insert("kind".into(), json!(rt.kind));
    if !map.get("metadata").is_some_and(Value::is_object) {
        map.insert("metadata".into(), json!({}));
    }
    Ok(())
}

fn check_namespace(rt: &ResourceType, obj: &mut Value, ns: Option<&str>) -> Result<(), ApiError> {
    if rt.namespaced {
        let given = meta_str(obj, "namespace");
        let ns = ns.unwrap_or("");
        if !given.is_empty() && given != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        set_meta(obj, "namespace", json!(ns));
    } else {
        remove_meta(obj, "namespace");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Writes

fn create(
    shared: &Shared,
    st: &mut State,
    idx: usize,
    ns: Option<&str>,
    mut obj: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let rt = shared.resources[idx];
    check_type(&rt, &mut obj)?;
    check_namespace(&rt, &mut obj, ns)?;
    if !meta_str(&obj, "resourceVersion").is_empty() {
        return Err(ApiError::new(500, "InternalError", "resourceVersion should not be set on objects to be created"));
    }
    let ns_key = ns.filter(|_| rt.namespaced).unwrap_or("").to_string();
    let mut name = meta_str(&obj, "name");
    if name.is_empty() {
        let prefix = meta_str(&obj, "generateName");
        if prefix.is_empty() {
            return Err(ApiError::invalid(&rt, "", "metadata.name: Required value: name or generateName is required"));
        }
        name = loop {
            let candidate = format!("{prefix}{}", random_suffix());
            if !st.objects.contains_key(&(idx, ns_key.clone(), candidate.clone())) {
                break candidate;
            }
        };
        set_meta(&mut obj, "name", json!(name));
    }
    let key = (idx, ns_key, name.clone());
    if st.objects.contains_key(&key) {
        return Err(ApiError::already_exists(&rt, &name));
    }
    if rt.status_subresource
        && let Some(map) = obj.as_object_mut()
    {
        map.remove("status");
    }
    fold_string_data(&rt, &mut obj);
    set_meta(&mut obj, "uid", json!(new_uid()));
    set_meta(&mut obj, "creationTimestamp", json!(now()));
    set_meta(&mut obj, "generation", json!(1));
    remove_meta(&mut obj, "deletionTimestamp");
    remove_meta(&mut obj, "deletionGracePeriodSeconds");
    if dry_run {
        return Ok(obj);
    }
    Ok(st.commit(key, EventType::Added, None, obj))
}

/// Turns `candidate` (the whole object as the client wants it) into the
/// stored object, honouring the status subresource and server-owned
/// metadata, and commits it unless nothing changed.
#[allow(clippy::too_many_arguments)]
fn update(
    shared: &Shared,
    st: &mut State,
    key: Key,
    old: Value,
    candidate: Value,
    status_sub: bool,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let rt = shared.resources[key.0];
    let mut new = if status_sub {
        let mut new = old.clone();
        let mut candidate = candidate;
        match candidate.get_mut("status").map(Value::take) {
            Some(status) => new["status"] = status,
            None => {
                if let Some(map) = new.as_object_mut() {
                    map.remove("status");
                }
            }
        }
        new
    } else {
        let mut new = candidate;
        check_type(&rt, &mut new)?;
        if rt.status_subresource {
            match old.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    if let Some(map) = new.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        }
        fold_string_data(&rt, &mut new);
        new
    };
    // Server-owned metadata keeps its stored value.
    const SERVER_OWNED: [&str; 8] = [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "generation",
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ];
    for field in SERVER_OWNED {
        match meta(&old, field) {
            Some(value) => set_meta(&mut new, field, value),
            None => remove_meta(&mut new, field),
        }
    }
    if generation_part_differs(&new, &old) {
        let generation = meta(&old, "generation").and_then(|g| g.as_i64()).unwrap_or(0);
        set_meta(&mut new, "generation", json!(generation + 1));
    }
    if new == old || dry_run {
        return Ok(new);
    }
    let finalizers_empty = meta(&new, "finalizers").and_then(|f| f.as_array().map(Vec::is_empty)).unwrap_or(true);
    if meta(&new, "deletionTimestamp").is_some() && finalizers_empty {
        return Ok(st.commit(key, EventType::Deleted, Some(old), new));
    }
    Ok(st.commit(key, EventType::Modified, Some(old), new))
}

/// The precondition a body's `metadata.resourceVersion` sets.
fn check_precondition(rt: &ResourceType, name: &str, body: &Value, old: &Value) -> Result<(), ApiError> {
    let wanted = meta_str(body, "resourceVersion");
    if !wanted.is_empty() && wanted != meta_str(old, "resourceVersion") {
        return Err(ApiError::conflict(rt, name));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn replace(
    shared: &Shared,
    st: &mut State,
    idx: usize,
    ns: Option<&str>,
    name: &str,
    status_sub: bool,
    mut body: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let rt = shared.resources[idx];
    check_type(&rt, &mut body)?;
    let body_name = meta_str(&body, "name");
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    check_namespace(&rt, &mut body, ns)?;
    let key = (idx, ns.filter(|_| rt.namespaced).unwrap_or("").to_string(), name.to_string());
    let old = st.objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(&rt, name))?;
    if meta_str(&body, "resourceVersion").is_empty() && !rt.unconditional_update {
        return Err(ApiError::invalid(
            &rt,
            name,
            "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
        ));
    }
    check_precondition(&rt, name, &body, &old)?;
    update(shared, st, key, old, body, status_sub, dry_run)
}

fn patch(
    shared: &Shared,
    st: &mut State,
    idx: usize,
    ns: Option<&str>,
    name: &str,
    status_sub: bool,
    ctx: &Ctx,
) -> Result<(u16, Value), ApiError> {
    let rt = shared.resources[idx];
    let key = (idx, ns.filter(|_| rt.namespaced).unwrap_or("").to_string(), name.to_string());
    let media = ctx.content_type.unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let old = st.objects.get(&key).cloned();
    match media.as_str() {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let patch = parse_json(ctx.body)?;
            let old = old.ok_or_else(|| ApiError::not_found(&rt, name))?;
            check_precondition(&rt, name, &patch, &old)?;
            let mut candidate = old.clone();
            merge_patch(&mut candidate, &patch);
            Ok((200, update(shared, st, key, old, candidate, status_sub, ctx.dry_run())?))
        }
        "application/json-patch+json" => {
            let ops = parse_json(ctx.body)?;
            let old = old.ok_or_else(|| ApiError::not_found(&rt, name))?;
            let mut candidate = old.clone();
            json_patch(&mut candidate, &ops).map_err(|e| ApiError::new(422, "Invalid", e))?;
            check_precondition(&rt, name, &candidate, &old)?;
            Ok((200, update(shared, st, key, old, candidate, status_sub, ctx.dry_run())?))
        }
        "application/apply-patch+yaml" => {
            if ctx.param("fieldManager").is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(
                    "PATCH /apply requests require a non-empty fieldManager query parameter",
                ));
            }
            let mut applied: Value =
                parse_yaml(ctx.body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            if applied.get("apiVersion").is_none() || applied.get("kind").is_none() {
                return Err(ApiError::bad_request("apiVersion and kind must be set in an applied configuration"));
            }
            check_type(&rt, &mut applied)?;
            let applied_name = meta_str(&applied, "name");
            if !applied_name.is_empty() && applied_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({applied_name}) does not match the name on the URL ({name})"
                )));
            }
            let Some(old) = old else {
                if status_sub {
                    return Err(ApiError::not_found(&rt, name));
                }
                set_meta(&mut applied, "name", json!(name));
                remove_meta(&mut applied, "resourceVersion");
                return Ok((201, create(shared, st, idx, ns, applied, ctx.dry_run())?));
            };
            check_precondition(&rt, name, &applied, &old)?;
            let candidate = if status_sub {
                // One manager owns the whole status: what it applies is the status.
                applied
            } else {
                // Deep merge: objects merge, arrays and scalars replace.
                let mut candidate = old.clone();
                if let Some(map) = applied.as_object_mut() {
                    if rt.status_subresource {
                        map.remove("status");
                    }
                    if let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                        metadata.remove("resourceVersion");
                        metadata.remove("managedFields");
                    }
                }
                merge_patch(&mut candidate, &applied);
                candidate
            };
            Ok((200, update(shared, st, key, old, candidate, status_sub, ctx.dry_run())?))
        }
        _ => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {media:?})"
            ),
        )),
    }
}

fn delete(
    shared: &Shared,
    st: &mut State,
    idx: usize,
    ns: Option<&str>,
    name: &str,
    ctx: &Ctx,
) -> Result<Value, ApiError> {
    let rt = shared.resources[idx];
    let key = (idx, ns.filter(|_| rt.namespaced).unwrap_or("").to_string(), name.to_string());
    let old = st.objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(&rt, name))?;
    let options: Value = if ctx.body.is_empty() { Value::Null } else { parse_json(ctx.body)? };
    if let Some(preconditions) = options.get("preconditions") {
        for (field, what) in [("resourceVersion", "ResourceVersion"), ("uid", "UID")] {
            if let Some(wanted) = preconditions.get(field).and_then(Value::as_str)
                && wanted != meta_str(&old, field)
            {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {what} in precondition: {wanted}, {what} in object meta: {}",
                        rt.qualified(),
                        meta_str(&old, field)
                    ),
                )
                .with_details(&rt, name));
            }
        }
    }
    delete_one(st, key, old, ctx.dry_run())
}

/// Deletes now, or marks for deletion when finalizers remain.
fn delete_one(st: &mut State, key: Key, old: Value, dry_run: bool) -> Result<Value, ApiError> {
    let has_finalizers = meta(&old, "finalizers").and_then(|f| f.as_array().map(|a| !a.is_empty())).unwrap_or(false);
    if has_finalizers {
        if meta(&old, "deletionTimestamp").is_some() || dry_run {
            return Ok(old);
        }
        let mut marked = old.clone();
        set_meta(&mut marked, "deletionTimestamp", json!(now()));
        set_meta(&mut marked, "deletionGracePeriodSeconds", json!(0));
        if let Some(generation) = meta(&old, "generation").and_then(|g| g.as_i64()) {
            set_meta(&mut marked, "generation", json!(generation + 1));
        }
        return Ok(st.commit(key, EventType::Modified, Some(old), marked));
    }
    if !dry_run {
        st.commit(key, EventType::Deleted, Some(old.clone()), old.clone());
    }
    // The answer carries the object as it was stored, as a real server's does.
    Ok(old)
}

fn delete_collection(
    shared: &Shared,
    st: &mut State,
    idx: usize,
    ns: Option<&str>,
    ctx: &Ctx,
) -> Result<Value, ApiError> {
    let rt = shared.resources[idx];
    let filter = Filter::new(&rt, idx, ns, ctx)?;
    let matching: Vec<(Key, Value)> =
        st.objects.iter().filter(|(_, obj)| filter.matches(idx, obj)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut items = Vec::new();
    for (key, old) in matching {
        items.push(delete_one(st, key, old, ctx.dry_run())?);
    }
    Ok(json!({
        "apiVersion": rt.api_version(),
        "kind": format!("{}List", rt.kind),
        "metadata": {"resourceVersion": st.rv.to_string()},
        "items": items,
    }))
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn pointer_tokens(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else { return Err(format!("invalid JSON pointer {pointer:?}")) };
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn pointer_parent<'a>(doc: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, String> {
    let mut current = doc;
    for token in tokens {
        current = match current {
            Value::Object(map) => map.get_mut(token).ok_or_else(|| format!("path element {token:?} does not exist"))?,
            Value::Array(items) => {
                let index: usize = token.parse().map_err(|_| format!("invalid array index {token:?}"))?;
                items.get_mut(index).ok_or_else(|| format!("array index {index} out of range"))?
            }
            _ => return Err(format!("path element {token:?} is not in an object or array")),
        };
    }
    Ok(current)
}

fn json_add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let tokens = pointer_tokens(path)?;
    let Some((last, parent)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match pointer_parent(doc, parent)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(items) => {
            if last == "-" {
                items.push(value);
            } else {
                let index: usize = last.parse().map_err(|_| format!("invalid array index {last:?}"))?;
                if index > items.len() {
                    return Err(format!("array index {index} out of range"));
                }
                items.insert(index, value);
            }
        }
        _ => return Err(format!("cannot add at {path:?}")),
    }
    Ok(())
}

fn json_remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let tokens = pointer_tokens(path)?;
    let Some((last, parent)) = tokens.split_last() else { return Err("cannot remove the whole document".into()) };
    match pointer_parent(doc, parent)? {
        Value::Object(map) => map.remove(last).ok_or_else(|| format!("{path:?} does not exist")),
        Value::Array(items) => {
            let index: usize = last.parse().map_err(|_| format!("invalid array index {last:?}"))?;
            if index >= items.len() {
                return Err(format!("array index {index} out of range"));
            }
            Ok(items.remove(index))
        }
        _ => Err(format!("cannot remove {path:?}")),
    }
}

/// RFC 6902 JSON patch: add, remove, replace, move, copy, test.
fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a JSON patch must be an array of operations")?;
    for op in ops {
        let path = op.get("path").and_then(Value::as_str).ok_or("an operation needs a path")?;
        let value = || op.get("value").cloned().ok_or_else(|| format!("operation on {path:?} needs a value"));
        let from = || op.get("from").and_then(Value::as_str).ok_or_else(|| format!("operation on {path:?} needs from"));
        match op.get("op").and_then(Value::as_str) {
            Some("add") => json_add(doc, path, value()?)?,
            Some("remove") => {
                json_remove(doc, path)?;
            }
            Some("replace") => {
                let tokens = pointer_tokens(path)?;
                *pointer_parent(doc, &tokens)? = value()?;
            }
            Some("move") => {
                let moved = json_remove(doc, from()?)?;
                json_add(doc, path, moved)?;
            }
            Some("copy") => {
                let copied = pointer_parent(doc, &pointer_tokens(from()?)?)?.clone();
                json_add(doc, path, copied)?;
            }
            Some("test") => {
                let actual = pointer_parent(doc, &pointer_tokens(path)?)?.clone();
                if actual != value()? {
                    return Err(format!("testing value {path:?} failed"));
                }
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Selectors

#[derive(Debug, Clone, PartialEq)]
pub enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn valid_value(value: &str) -> bool {
    value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Parses a label selector (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
/// `k notin (a,b)`, comma = AND).
pub fn parse_label_selector(selector: &str) -> Result<Vec<LabelRequirement>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut current) = (0i32, String::new());
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    let invalid = |part: &str| format!("unable to parse requirement: {part:?}");
    let mut requirements = Vec::new();
    for part in parts.iter().map(|p| p.trim()) {
        if part.is_empty() {
            if selector.trim().is_empty() {
                continue;
            }
            return Err(invalid(part));
        }
        let requirement = if let Some(key) = part.strip_prefix('!') {
            LabelRequirement::NotExists(key.trim().to_string())
        } else if let Some(open) = part.find('(') {
            let inner = part[open + 1..].strip_suffix(')').ok_or_else(|| invalid(part))?;
            let head: Vec<&str> = part[..open].split_whitespace().collect();
            let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
            if values.iter().any(|v| !valid_value(v)) {
                return Err(invalid(part));
            }
            match head.as_slice() {
                [key, "in"] => LabelRequirement::In(key.to_string(), values),
                [key, "notin"] => LabelRequirement::NotIn(key.to_string(), values),
                _ => return Err(invalid(part)),
            }
        } else if let Some((key, value)) = part.split_once("!=") {
            LabelRequirement::NotEquals(key.trim().to_string(), value.trim().to_string())
        } else if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
            LabelRequirement::Equals(key.trim().to_string(), value.trim().to_string())
        } else {
            LabelRequirement::Exists(part.to_string())
        };
        let (LabelRequirement::Equals(key, _)
        | LabelRequirement::NotEquals(key, _)
        | LabelRequirement::In(key, _)
        | LabelRequirement::NotIn(key, _)
        | LabelRequirement::Exists(key)
        | LabelRequirement::NotExists(key)) = &requirement;
        let value_ok = match &requirement {
            LabelRequirement::Equals(_, v) | LabelRequirement::NotEquals(_, v) => valid_value(v),
            _ => true,
        };
        if !valid_key(key) || !value_ok {
            return Err(invalid(part));
        }
        requirements.push(requirement);
    }
    Ok(requirements)
}

fn labels_match(requirements: &[LabelRequirement], obj: &Value) -> bool {
    let labels = obj.get("metadata").and_then(|m| m.get("labels")).and_then(Value::as_object);
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    requirements.iter().all(|r| match r {
        LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
        LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
        LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
        LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
        LabelRequirement::Exists(k) => label(k).is_some(),
        LabelRequirement::NotExists(k) => label(k).is_none(),
    })
}

/// Field selector terms: (field, wanted value, equal?).
fn parse_field_selector(rt: &ResourceType, selector: &str) -> Result<Vec<(String, String, bool)>, ApiError> {
    let mut terms = Vec::new();
    for part in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
            (f, v, false)
        } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            (f, v, true)
        } else {
            return Err(ApiError::bad_request(format!("invalid field selector: {part:?}")));
        };
        let field = field.trim();
        let supported = matches!(field, "metadata.name" | "metadata.namespace")
            || (rt.group.is_empty() && rt.plural == "secrets" && field == "type");
        if !supported {
            return Err(ApiError::bad_request(format!("field label not supported: {field}")));
        }
        terms.push((field.to_string(), value.trim().to_string(), equal));
    }
    Ok(terms)
}

fn field_value(obj: &Value, field: &str) -> String {
    let mut current = obj;
    for part in field.split('.') {
        match current.get(part) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    current.as_str().unwrap_or("").to_string()
}

/// Which objects a list or watch sees.
#[derive(Clone)]
struct Filter {
    idx: usize,
    namespace: Option<String>,
    labels: Vec<LabelRequirement>,
    fields: Vec<(String, String, bool)>,
}

impl Filter {
    fn new(rt: &ResourceType, idx: usize, ns: Option<&str>, ctx: &Ctx) -> Result<Self, ApiError> {
        let labels = parse_label_selector(ctx.param("labelSelector").unwrap_or("")).map_err(ApiError::bad_request)?;
        let fields = parse_field_selector(rt, ctx.param("fieldSelector").unwrap_or(""))?;
        Ok(Self { idx, namespace: ns.map(str::to_string), labels, fields })
    }

    fn matches(&self, idx: usize, obj: &Value) -> bool {
        idx == self.idx
            && self.namespace.as_deref().is_none_or(|ns| meta_str(obj, "namespace") == ns)
            && labels_match(&self.labels, obj)
            && self.fields.iter().all(|(field, value, equal)| (field_value(obj, field) == *value) == *equal)
    }
}

// ---------------------------------------------------------------------------
// List

fn list(shared: &Shared, st: &mut State, idx: usize, ns: Option<&str>, ctx: &Ctx) -> Result<Value, ApiError> {
    let rt = shared.resources[idx];
    let metadata = metadata_only(ctx.accept);
    let limit = ctx.param("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
    let (rv, mut items) = match ctx.param("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let expired = || {
                ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter.",
                )
            };
            let id: u64 = token.strip_prefix("fake-continue-").and_then(|t| t.parse().ok()).ok_or_else(expired)?;
            let continuation = st.continuations.remove(&id).ok_or_else(expired)?;
            (continuation.rv, continuation.items)
        }
        None => {
            if let Some(wanted) = ctx.param("resourceVersion").filter(|v| !v.is_empty() && *v != "0") {
                let wanted: u64 =
                    wanted.parse().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {wanted:?}")))?;
                if ctx.param("resourceVersionMatch") == Some("Exact") && wanted != st.rv {
                    return Err(ApiError::gone(format!("too old resource version: {wanted} ({})", st.rv)));
                }
                if wanted > st.rv {
                    return Err(ApiError::new(
                        504,
                        "Timeout",
                        format!("Too large resource version: {wanted}, current: {}", st.rv),
                    ));
                }
            }
            let filter = Filter::new(&rt, idx, ns, ctx)?;
            let items: Vec<Value> =
                st.objects.iter().filter(|((i, _, _), obj)| filter.matches(*i, obj)).map(|(_, v)| v.clone()).collect();
            (st.rv, items)
        }
    };
    let mut list_meta = json!({"resourceVersion": rv.to_string()});
    if let Some(limit) = limit
        && items.len() > limit
    {
        let rest = items.split_off(limit);
        list_meta["remainingItemCount"] = json!(rest.len());
        let id = st.next_continuation;
        st.next_continuation += 1;
        st.continuations.insert(id, Continuation { rv, items: rest });
        while st.continuations.len() > MAX_CONTINUATIONS {
            st.continuations.pop_first();
        }
        list_meta["continue"] = json!(format!("fake-continue-{id}"));
    }
    let items: Vec<Value> = items.iter().map(|obj| render(obj, metadata)).collect();
    let (api_version, kind) = if metadata {
        ("meta.k8s.io/v1".to_string(), "PartialObjectMetadataList".to_string())
    } else {
        (rt.api_version(), format!("{}List", rt.kind))
    };
    Ok(json!({"apiVersion": api_version, "kind": kind, "metadata": list_meta, "items": items}))
}

// ---------------------------------------------------------------------------
// Watch

fn start_watch(
    shared: &Arc<Shared>,
    st: &mut State,
    idx: usize,
    ns: Option<&str>,
    ctx: &Ctx,
) -> Result<Reply, ApiError> {
    let rt = shared.resources[idx];
    let filter = Filter::new(&rt, idx, ns, ctx)?;
    let metadata = metadata_only(ctx.accept);
    let mut rx = shared.signal.subscribe();
    let epoch = rx.borrow_and_update().drop_epoch;
    let timeout = ctx.param("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).filter(|t| *t > 0);
    let mut stream = WatchStream {
        shared: shared.clone(),
        filter,
        metadata,
        pos: st.rv,
        queue: VecDeque::new(),
        done: false,
        rx,
        epoch,
        deadline: timeout.map(|t| Instant::now() + Duration::from_secs(t)),
        bookmarks: ctx.flag("allowWatchBookmarks"),
        next_bookmark: Instant::now() + st.bookmark_interval,
    };
    let from = ctx.param("resourceVersion").filter(|v| !v.is_empty() && *v != "0");
    let initial_events = ctx.flag("sendInitialEvents");
    if let Some(from) = from {
        let from: u64 = from.parse().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {from:?}")))?;
        if from < st.compacted_rv {
            // A real server answers 200 and sends the 410 as an ERROR event.
            stream.expire(from, st.rv);
            return Ok(Reply::Watch(Box::new(stream)));
        }
        if !initial_events {
            stream.pos = from;
        }
    }
    if from.is_none() || initial_events {
        // Synthetic ADDED events for the current state, as real servers send.
        for (key, obj) in &st.objects {
            if stream.filter.matches(key.0, obj) {
                stream.push("ADDED", render(obj, metadata));
            }
        }
        if initial_events {
            let bookmark = stream.bookmark(st.rv, true);
            stream.queue.push_back(bookmark);
        }
    }
    Ok(Reply::Watch(Box::new(stream)))
}

struct WatchStream {
    shared: Arc<Shared>,
    filter: Filter,
    metadata: bool,
    /// Every event up to this resourceVersion has been considered.
    pos: u64,
    queue: VecDeque<Bytes>,
    done: bool,
    rx: watch::Receiver<Signal>,
    epoch: u64,
    deadline: Option<Instant>,
    bookmarks: bool,
    next_bookmark: Instant,
}

enum Wake {
    Signal(bool),
    Bookmark,
    Timeout,
}

/// One line of a watch stream, serialized from the stored object without
/// copying it (10,000 policies make that copy show in a profile).
fn event_line(kind: &str, object: &Value, metadata: bool) -> Bytes {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        object: &'a Value,
    }
    let rendered;
    let object = if metadata {
        rendered = render(object, true);
        &rendered
    } else {
        object
    };
    let mut line = serde_json::to_vec(&Line { kind, object }).expect("JSON");
    line.push(b'\n');
    Bytes::from(line)
}

impl WatchStream {
    fn push(&mut self, kind: &str, object: Value) {
        self.queue.push_back(event_line(kind, &object, false));
    }

    fn expire(&mut self, from: u64, current: u64) {
        let status = ApiError::gone(format!("too old resource version: {from} ({current})")).status();
        self.push("ERROR", status);
        self.done = true;
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Bytes {
        let rt = self.shared.resources[self.filter.idx];
        let (api_version, kind) = if self.metadata {
            ("meta.k8s.io/v1".to_string(), "PartialObjectMetadata")
        } else {
            (rt.api_version(), rt.kind)
        };
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({"apiVersion": api_version, "kind": kind, "metadata": metadata});
        event_line("BOOKMARK", &object, false)
    }

    /// Queues the events after `pos` that this watch sees.
    fn collect(&mut self) {
        let shared = self.shared.clone();
        let st = shared.lock();
        if st.rv <= self.pos {
            return;
        }
        if self.pos < st.compacted_rv {
            let current = st.rv;
            drop(st);
            self.expire(self.pos, current);
            return;
        }
        let start = st.history.partition_point(|e| e.rv <= self.pos);
        for event in &st.history[start..] {
            let now_matches = self.filter.matches(event.resource, &event.obj);
            let was_matching = event.prev.as_ref().is_some_and(|p| self.filter.matches(event.resource, p));
            let stopped_matching;
            let (kind, object) = match event.kind {
                EventType::Added if now_matches => ("ADDED", &event.obj),
                EventType::Modified if now_matches && was_matching => ("MODIFIED", &event.obj),
                EventType::Modified if now_matches => ("ADDED", &event.obj),
                EventType::Modified if was_matching => {
                    // Stopped matching: DELETED with the previous content at the new resourceVersion.
                    let mut prev = event.prev.clone().unwrap_or(Value::Null);
                    set_meta(&mut prev, "resourceVersion", json!(event.rv.to_string()));
                    stopped_matching = prev;
                    ("DELETED", &stopped_matching)
                }
                EventType::Deleted if was_matching => ("DELETED", &event.obj),
                _ => continue,
            };
            self.queue.push_back(event_line(kind, object, self.metadata));
        }
        self.pos = st.rv;
    }

    async fn next_line(&mut self) -> Option<Bytes> {
        loop {
            if let Some(line) = self.queue.pop_front() {
                let interval = self.shared.lock().bookmark_interval;
                self.next_bookmark = Instant::now() + interval;
                return Some(line);
            }
            if self.done {
                return None;
            }
            let signal = *self.rx.borrow_and_update();
            if signal.stopped || signal.drop_epoch != self.epoch {
                self.done = true;
                continue;
            }
            self.collect();
            if !self.queue.is_empty() || self.done {
                continue;
            }
            let far = Instant::now() + Duration::from_secs(86_400 * 365);
            let (bookmark_at, deadline) = (self.next_bookmark, self.deadline.unwrap_or(far));
            let wake = tokio::select! {
                changed = self.rx.changed() => Wake::Signal(changed.is_ok()),
                _ = tokio::time::sleep_until(bookmark_at), if self.bookmarks => Wake::Bookmark,
                _ = tokio::time::sleep_until(deadline) => Wake::Timeout,
            };
            match wake {
                Wake::Signal(true) => {}
                Wake::Signal(false) | Wake::Timeout => self.done = true,
                Wake::Bookmark => {
                    let bookmark = self.bookmark(self.pos, false);
                    self.queue.push_back(bookmark);
                }
            }
        }
    }
}
