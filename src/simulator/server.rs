//! The simulator's HTTP surface: the IM REST commands under `/v4/...` and
//! its own JSON endpoints under `/simulator/...`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::debug;

use super::config::SimulatorConfig;
use super::gateway::{self, AppIdentity};
use super::groups::{Groups, MAX_MEMBERS_PER_CALL, ServiceAnswer};
use crate::im::window_counter::WindowCounter;

/// The query parameters the REST API documents.
const KNOWN_PARAMETERS: &[&str] = &["sdkappid", "identifier", "usersig", "random", "contenttype"];

/// The gateway counts calls per second.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// One request as the simulator saw it. Credentials are never kept.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggedRequest {
    pub seq: u64,
    /// Milliseconds since the simulator started.
    pub at_ms: u64,
    pub command: String,
    /// Names of the query parameters, in order (values are not kept: one is
    /// the UserSig).
    pub query_parameters: Vec<String>,
    /// The `random` parameter, to check that clients vary it.
    pub random: Option<String>,
    pub group_id: Option<String>,
    /// The first 20 members the request listed.
    pub members: Vec<String>,
    /// How many members the request listed.
    pub members_count: usize,
    /// The body's `Limit` (get_group_ban_member's page size), when it has one.
    pub limit: Option<u64>,
    /// `None` when the call got no IM answer (an injected HTTP 502).
    pub error_code: Option<i64>,
    pub http_status: u16,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Stats {
    requests: u64,
    by_error_code: BTreeMap<i64, u64>,
    http502: u64,
    /// The most requests that arrived in any 1-second window.
    peak_requests_in_window: usize,
    /// When the first and the latest request arrived, in milliseconds
    /// since the simulator started: how long a run took as the gateway saw it.
    first_request_ms: Option<u64>,
    last_request_ms: Option<u64>,
}

struct SimState {
    groups: Groups,
    admitted: WindowCounter,
    arrivals: WindowCounter,
    stats: Stats,
    log: VecDeque<LoggedRequest>,
    log_dropped: u64,
    next_seq: u64,
    rng: StdRng,
    verified_sigs: gateway::VerifiedSigs,
}

pub(super) struct Shared {
    config: SimulatorConfig,
    app: AppIdentity,
    started: Instant,
    state: Mutex<SimState>,
    /// The next answer's RequestId.
    request_ids: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub(super) fn new(config: SimulatorConfig) -> Self {
        let mut groups = Groups::from_seed(&config.seed, unix_now());
        groups.allow_any_group_type = config.allow_any_group_type;
        let state = SimState {
            groups,
            admitted: WindowCounter::new(RATE_WINDOW),
            arrivals: WindowCounter::new(RATE_WINDOW),
            stats: Stats::default(),
            log: VecDeque::new(),
            log_dropped: 0,
            next_seq: 1,
            rng: StdRng::seed_from_u64(config.faults.seed),
            verified_sigs: gateway::VerifiedSigs::default(),
        };
        let app = AppIdentity {
            sdkappid: config.sdkappid,
            identifier: config.identifier.clone(),
            secret_key: config.secret_key.clone(),
        };
        Self {
            config,
            app,
            started: Instant::now(),
            state: Mutex::new(state),
            request_ids: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v4/{service}/{command}", any(rest_call))
        .route("/simulator/state", get(read_state))
        .route("/simulator/requests", get(read_requests))
        .route("/simulator/stats", get(read_stats))
        .fallback(unknown_path)
        .with_state(shared)
}

/// Any other path: the gateway's "request resource error", as JSON.
async fn unknown_path(State(sim): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    count_arrival(&sim, Instant::now());
    let answer = ServiceAnswer::error(60009, "request resource error: check the request URL");
    record(&sim, "", query.as_deref(), None, 200, Some(answer.code));
    answer_body(&sim, answer).into_response()
}

/// Counts a request in the stats and the busiest-window figure.
fn count_arrival(sim: &Shared, now: Instant) {
    let mut state = sim.lock();
    state.stats.requests += 1;
    let in_window = state.arrivals.observe(now);
    state.stats.peak_requests_in_window = state.stats.peak_requests_in_window.max(in_window);
    let at_ms = now.saturating_duration_since(sim.started).as_millis() as u64;
    state.stats.first_request_ms.get_or_insert(at_ms);
    state.stats.last_request_ms = Some(at_ms);
}

/// Logged strings are cut to this many bytes: a request may carry
/// megabytes in one field, and the log must stay bounded.
const LOGGED_TEXT_MAX: usize = 64;

fn clip(text: &str) -> String {
    let mut end = text.len().min(LOGGED_TEXT_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What the gateway decided before answering.
enum Decision {
    BadGateway,
    Answer(ServiceAnswer),
}

/// Handles `POST /v4/<service>/<command>` like the real gateway. The body is
/// read whatever the Content-Type (real clients send none).
async fn rest_call(
    State(sim): State<Arc<Shared>>,
    method: Method,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // A path that is not valid text, or a body over the size limit, still
    // gets a documented answer: an unknown service (60009) or a body that
    // is not JSON (60003), after the usual gateway checks.
    let (service, command) = path.map(|Path(parts)| parts).unwrap_or_default();
    let body = body.unwrap_or_default();
    let latency = sim.config.faults.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let decision = decide(&sim, &method, &service, &command, query.as_deref(), parsed.as_ref());

    let (status, error_code, response) = match decision {
        Decision::BadGateway => {
            let page = "<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>";
            let response = (StatusCode::BAD_GATEWAY, [(header::CONTENT_TYPE, "text/html")], page).into_response();
            (502, None, response)
        }
        Decision::Answer(answer) => {
            let code = answer.code;
            (200, Some(code), answer_body(&sim, answer).into_response())
        }
    };
    record(&sim, &command, query.as_deref(), parsed.as_ref(), status, error_code);
    debug!(command = %command, status, error_code, "Simulator answered");
    response
}

/// Runs the gateway's checks and the command, under one short lock.
fn decide(
    sim: &Shared,
    method: &Method,
    service: &str,
    command: &str,
    query: Option<&str>,
    body: Option<&Value>,
) -> Decision {
    let now = Instant::now();
    count_arrival(sim, now);
    let mut state = sim.lock();

    let faults = sim.config.faults;
    if faults.fail_http502 > 0.0 && state.rng.random::<f64>() < faults.fail_http502 {
        state.stats.http502 += 1;
        return Decision::BadGateway;
    }
    if *method != Method::POST {
        // UNCONFIRMED: the documentation only says "POST only".
        return Decision::Answer(ServiceAnswer::error(60002, format!("method {method} is not allowed; use POST")));
    }
    let params = gateway::parse_query(query);
    if let Err(answer) = gateway::check_app(&params, &sim.app) {
        return Decision::Answer(answer);
    }
    if !state.admitted.try_admit(now, sim.config.rate_limit as usize) {
        return Decision::Answer(ServiceAnswer::error(
            60007,
            format!("REST API call frequency limit exceeded ({} calls per second)", sim.config.rate_limit),
        ));
    }
    if let Err(answer) = state.verified_sigs.check(&params, &sim.app, unix_now()) {
        return Decision::Answer(answer);
    }
    if service != "group_open_http_svc" {
        return Decision::Answer(ServiceAnswer::error(60009, format!("service {service} is not served here")));
    }
    let Some(body) = body else {
        return Decision::Answer(ServiceAnswer::error(60003, "request body is not valid JSON"));
    };
    if faults.fail_10002 > 0.0 && state.rng.random::<f64>() < faults.fail_10002 {
        return Decision::Answer(ServiceAnswer::error(10002, "internal server error (injected); retry"));
    }
    let unix = unix_now();
    Decision::Answer(match command {
        "unban_group_member" => state.groups.unban(body),
        "ban_group_member" => state.groups.ban(body, unix),
        "get_group_ban_member" => state.groups.ban_list(body, unix),
        other => ServiceAnswer::error(10003, format!("command {other} is not simulated")),
    })
}

fn answer_body(sim: &Shared, answer: ServiceAnswer) -> impl IntoResponse {
    let mut body = serde_json::Map::new();
    body.insert("ActionStatus".into(), json!(if answer.code == 0 { "OK" } else { "FAIL" }));
    body.insert("ErrorInfo".into(), json!(answer.info));
    body.insert("ErrorCode".into(), json!(answer.code));
    // Newer gateway answers carry a RequestId; clients must ignore it.
    // Unique per answer, as the gateway's are, even for answers built at once.
    let id = sim.request_ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    body.insert("RequestId".into(), json!(format!("Id-simulator-{id}")));
    body.extend(answer.extra);
    axum::Json(Value::Object(body))
}

fn record(
    sim: &Shared,
    command: &str,
    query: Option<&str>,
    body: Option<&Value>,
    http_status: u16,
    error_code: Option<i64>,
) {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    let mut state = sim.lock();
    if let Some(code) = error_code {
        *state.stats.by_error_code.entry(code).or_default() += 1;
    }
    let seq = state.next_seq;
    state.next_seq += 1;
    let listed = body.and_then(|b| b.get("Members_Account")).and_then(Value::as_array);
    // A request may list any number of members; the log keeps at most a
    // call's worth (and the count), so a flood cannot exhaust memory.
    let members: Vec<String> =
        listed.into_iter().flatten().filter_map(|m| m.as_str().map(str::to_owned)).take(MAX_MEMBERS_PER_CALL).collect();
    let members_count = listed.map_or(0, Vec::len);
    let entry = LoggedRequest {
        seq,
        at_ms: sim.started.elapsed().as_millis() as u64,
        command: command.to_string(),
        // Only the documented names: a garbled query could make a UserSig
        // itself a parameter name.
        query_parameters: pairs
            .iter()
            .map(|(name, _)| if KNOWN_PARAMETERS.contains(&name.as_str()) { name.clone() } else { "<other>".into() })
            .collect(),
        members_count,
        limit: body.and_then(|b| b.get("Limit")).and_then(Value::as_u64),
        random: pairs.iter().find(|(name, _)| name == "random").map(|(_, value)| clip(value)),
        group_id: body.and_then(|b| b.get("GroupId")).and_then(Value::as_str).map(clip),
        members,
        error_code,
        http_status,
    };
    if state.log.len() >= sim.config.request_log_limit {
        state.log.pop_front();
        state.log_dropped += 1;
    }
    state.log.push_back(entry);
}

async fn read_state(State(sim): State<Arc<Shared>>) -> impl IntoResponse {
    let now = unix_now();
    let state = sim.lock();
    let groups: Vec<Value> = state
        .groups
        .iter()
        .map(|(id, group)| {
            let banned: Vec<Value> = state
                .groups
                .active_bans(id, now)
                .into_iter()
                .map(|(member, until)| json!({"account": member, "bannedUntil": until}))
                .collect();
            json!({"groupId": id, "type": group.group_type, "banned": banned})
        })
        .collect();
    axum::Json(json!({"sdkappid": sim.config.sdkappid, "groups": groups}))
}

async fn read_requests(State(sim): State<Arc<Shared>>) -> impl IntoResponse {
    let state = sim.lock();
    axum::Json(json!({"requests": state.log, "dropped": state.log_dropped}))
}

async fn read_stats(State(sim): State<Arc<Shared>>) -> impl IntoResponse {
    let state = sim.lock();
    axum::Json(json!({
        "rateLimit": sim.config.rate_limit,
        "requests": state.stats.requests,
        "byErrorCode": state.stats.by_error_code,
        "http502": state.stats.http502,
        "peakRequestsInWindow": state.stats.peak_requests_in_window,
        "firstRequestAtMs": state.stats.first_request_ms,
        "lastRequestAtMs": state.stats.last_request_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shared() -> Shared {
        let mut config = SimulatorConfig::new(1400000000, "admin", "key");
        config.seed =
            crate::simulator::SeedFile::parse("groups: [{groupId: room, type: AVChatRoom, banned: [a]}]").unwrap();
        Shared::new(config)
    }

    proptest! {
        /// Whatever arrives, the gateway answers with an ErrorCode (or an
        /// injected 502) and never panics.
        #[test]
        fn arbitrary_requests_get_an_answer_not_a_panic(
            post in proptest::arbitrary::any::<bool>(),
            service in "[a-z_]{0,20}",
            command in prop_oneof![Just("unban_group_member".to_string()), Just("ban_group_member".to_string()), Just("get_group_ban_member".to_string()), "[a-z_]{0,20}"],
            query in prop_oneof![Just(None), ".{0,200}".prop_map(Some)],
            body in prop_oneof![
                Just(None),
                proptest::arbitrary::any::<Vec<u8>>().prop_map(|b| serde_json::from_slice::<Value>(&b).ok()),
                (".{0,60}", proptest::collection::vec(".{0,40}", 0..30), proptest::arbitrary::any::<i64>()).prop_map(|(g, m, n)| Some(json!({"GroupId": g, "Members_Account": m, "Duration": n, "Offset": n, "Limit": n}))),
            ],
        ) {
            let sim = shared();
            let method = if post { Method::POST } else { Method::GET };
            match decide(&sim, &method, &service, &command, query.as_deref(), body.as_ref()) {
                Decision::Answer(answer) => prop_assert!(answer.code != 0 || (post && service == "group_open_http_svc")),
                Decision::BadGateway => prop_assert!(false, "no 502 was configured"),
            }
        }
    }
}
