//! The IM client against the simulator over loopback, one test per class of
//! answer the code table distinguishes.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use groupban_operator::im::client::RetryNotice;
use groupban_operator::im::client::system_clock;
use groupban_operator::im::{CallControl, ClientSettings, Command, ImClient, TransportError};
use groupban_operator::simulator::RunningSimulator;
use support::*;

const ROOM: &str = "groups: [{groupId: room, type: AVChatRoom, banned: [alice, bob, carol]}, {groupId: pub, type: Public}, {groupId: locked, type: AVChatRoom, failWith: {errorCode: 10007, errorInfo: no permission}}, {groupId: odd, type: AVChatRoom, failWith: {errorCode: 12345, errorInfo: something new}}, {groupId: revoked, type: AVChatRoom, failWith: {errorCode: 70052, errorInfo: usersig invalidated}}]";

async fn banned_in_room(sim_url: &str) -> Vec<String> {
    let state = get_json(sim_url, "/simulator/state").await;
    let room = state["groups"].as_array().unwrap().iter().find(|g| g["groupId"] == "room").unwrap().clone();
    room["banned"].as_array().unwrap().iter().map(|b| b["account"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn unban_succeeds_and_the_simulator_forgets_the_ban() {
    let sim = start(config(ROOM)).await;
    let outcome = admin_client(&sim).unban_group_member("room", &["alice".into(), "bob".into()]).await;
    assert_eq!(outcome.error_code(), Some(0));
    assert_eq!(outcome.attempts, 1);
    assert_eq!(banned_in_room(&sim.base_url()).await, ["carol"]);
}

/// Each call carries exactly the five documented query parameters and a
/// fresh `random`.
#[tokio::test]
async fn every_call_sends_the_documented_query_with_a_fresh_random() {
    let sim = start(config(ROOM)).await;
    let client = admin_client(&sim);
    for member in ["alice", "bob", "carol", "dave", "erin"] {
        assert_eq!(client.unban_group_member("room", &[member.to_string()]).await.error_code(), Some(0));
    }
    let log = get_json(&sim.base_url(), "/simulator/requests").await;
    let requests = log["requests"].as_array().unwrap();
    let randoms: std::collections::BTreeSet<&str> = requests.iter().map(|r| r["random"].as_str().unwrap()).collect();
    assert_eq!(randoms.len(), 5, "random must change per call: {randoms:?}");
    for request in requests {
        assert_eq!(
            request["queryParameters"],
            serde_json::json!(["sdkappid", "identifier", "usersig", "random", "contenttype"])
        );
        assert!(request["random"].as_str().unwrap().parse::<u32>().is_ok());
    }
}

/// A passing internal error is retried until the call goes through; the
/// member is unbanned exactly by the successful attempt.
#[tokio::test]
async fn answer_10002_is_retried_until_success() {
    let mut config = config(ROOM);
    config.faults.fail_10002 = 0.5;
    config.faults.seed = 7;
    let sim = start(config).await;
    let mut settings = quick_settings();
    settings.retry.max_attempts = 30;
    let client = client_for(&sim.base_url(), credentials(ADMIN, KEY), settings, 200);
    let mut total_attempts = 0;
    for member in ["alice", "bob", "carol"] {
        let outcome = client.unban_group_member("room", &[member.to_string()]).await;
        assert_eq!(outcome.error_code(), Some(0), "{member}");
        total_attempts += outcome.attempts;
    }
    let codes = logged_codes(&sim.base_url()).await;
    assert!(codes.contains(&Some(10002)), "fault injection produced no 10002: {codes:?}");
    assert_eq!(total_attempts as usize, codes.len());
    assert!(banned_in_room(&sim.base_url()).await.is_empty());
}

#[tokio::test]
async fn persistent_10002_gives_up_after_max_attempts() {
    let mut config = config(ROOM);
    config.faults.fail_10002 = 1.0;
    let sim = start(config).await;
    let outcome = admin_client(&sim).unban_group_member("room", &["alice".into()]).await;
    assert_eq!(outcome.error_code(), Some(10002));
    assert_eq!(outcome.attempts, quick_settings().retry.max_attempts);
    assert_eq!(banned_in_room(&sim.base_url()).await, ["alice", "bob", "carol"]);
}

#[tokio::test]
async fn http_502_is_a_retryable_transport_error() {
    let mut config = config(ROOM);
    config.faults.fail_http502 = 1.0;
    let sim = start(config).await;
    let outcome = admin_client(&sim).unban_group_member("room", &["alice".into()]).await;
    assert_eq!(outcome.result.unwrap_err(), TransportError::HttpStatus { status: 502 });
    assert_eq!(outcome.attempts, quick_settings().retry.max_attempts);
}

#[tokio::test]
async fn a_slow_gateway_times_out_as_a_transport_error() {
    let mut config = config(ROOM);
    config.faults.latency = Duration::from_millis(800);
    let sim = start(config).await;
    let mut settings = quick_settings();
    settings.request_timeout = Duration::from_millis(150);
    settings.retry.max_attempts = 2;
    let client = client_for(&sim.base_url(), credentials(ADMIN, KEY), settings, 200);
    let outcome = client.unban_group_member("room", &["alice".into()]).await;
    assert_eq!(outcome.result.unwrap_err(), TransportError::Timeout(Duration::from_millis(150)));
    assert_eq!(outcome.attempts, 2);
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let sim = start(config(ROOM)).await;
    let url = sim.base_url();
    sim.stop().await.unwrap();
    let mut settings = quick_settings();
    settings.retry.max_attempts = 2;
    let outcome =
        client_for(&url, credentials(ADMIN, KEY), settings, 200).unban_group_member("room", &["a".into()]).await;
    assert!(matches!(outcome.result, Err(TransportError::Connect(_))), "{:?}", outcome.result);
}

/// A client whose own limit is set above the app's real quota gets 60007,
/// cools the whole app down and still gets every call through.
#[tokio::test]
async fn answer_60007_cools_down_and_then_succeeds() {
    let mut config = config(ROOM);
    config.rate_limit = 5;
    let sim = start(config).await;
    let mut settings = quick_settings();
    settings.retry.max_attempts = 20;
    let client = Arc::new(client_for(&sim.base_url(), credentials(ADMIN, KEY), settings, 100));
    let calls: Vec<_> = (0..12)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.unban_group_member("room", &[format!("m{i}")]).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().error_code(), Some(0));
    }
    let codes = logged_codes(&sim.base_url()).await;
    assert!(codes.contains(&Some(60007)), "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == Some(0)).count(), 12);
}

/// A 60007 on the last attempt the policy allows still pauses every
/// caller of the app: the next call waits out the cool-down, although the
/// answer was not retried.
#[tokio::test]
async fn a_final_60007_still_pauses_the_app() {
    let mut config = config(ROOM);
    config.rate_limit = 1;
    let sim = start(config).await;
    let mut settings = quick_settings();
    settings.retry.max_attempts = 1;
    let cooldown = settings.retry.rate_limit_cooldown;
    let client = client_for(&sim.base_url(), credentials(ADMIN, KEY), settings, 200);
    assert_eq!(client.unban_group_member("room", &["alice".into()]).await.error_code(), Some(0));
    let refused = client.unban_group_member("room", &["bob".into()]).await;
    assert_eq!((refused.error_code(), refused.attempts), (Some(60007), 1));
    let answered = tokio::time::Instant::now();
    drop(client.limiter(Command::UnbanGroupMember).acquire().await);
    assert!(answered.elapsed() >= cooldown * 9 / 10, "waited {:?}, not the {cooldown:?} cool-down", answered.elapsed());
}

fn stop_control(stop: tokio::sync::watch::Receiver<bool>) -> CallControl<'static> {
    CallControl { stop: Some(stop), ..CallControl::default() }
}

/// Calls `unban_group_member` for alice and returns its final ErrorCode and
/// every retry notice the caller was given.
async fn unban_alice_noting_retries(client: &ImClient) -> (Option<i64>, Vec<RetryNotice>) {
    let notices = std::sync::Mutex::new(Vec::new());
    let note = |notice: &RetryNotice| notices.lock().unwrap().push(notice.clone());
    let control = CallControl { on_retry: Some(&note), ..CallControl::default() };
    let outcome = client.unban_group_member_until("room", &["alice".into()], control).await.expect("no stop signal");
    (outcome.error_code(), notices.into_inner().unwrap())
}

/// A caller is told of each failed attempt that will be retried (so it can
/// show the cause before the call ends), with the answer or the transport
/// error; not of the final attempt, and not of a routine re-sign.
#[tokio::test]
async fn the_caller_is_told_of_each_attempt_that_is_retried() {
    let mut failing = config(ROOM);
    failing.faults.fail_10002 = 1.0;
    let sim = start(failing).await;
    let (code, notices) = unban_alice_noting_retries(&admin_client(&sim)).await;
    assert_eq!(code, Some(10002));
    assert_eq!(
        notices.iter().map(|n| (n.attempt, n.error_code)).collect::<Vec<_>>(),
        [(1, Some(10002)), (2, Some(10002)), (3, Some(10002))]
    );
    assert!(notices.iter().all(|n| !n.detail.is_empty() && !n.retry_in.is_zero()), "{notices:?}");

    // No answer at all: the transport error is the detail.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let client = client_for(&url, credentials(ADMIN, KEY), quick_settings(), 200);
    let (code, notices) = unban_alice_noting_retries(&client).await;
    assert_eq!((code, notices.len()), (None, 3));
    assert!(notices.iter().all(|n| n.error_code.is_none() && n.detail.contains("connect")), "{notices:?}");

    // A UserSig past its time is signed anew without a notice.
    let sim = start(config(ROOM)).await;
    let real = system_clock();
    let signed = Arc::new(AtomicU32::new(0));
    let settings = ClientSettings {
        clock: Arc::new(move || if signed.fetch_add(1, Ordering::SeqCst) == 0 { real() - 2 * 86400 } else { real() }),
        ..quick_settings()
    };
    let client = client_for(&sim.base_url(), credentials(ADMIN, KEY), settings, 200);
    assert_eq!(unban_alice_noting_retries(&client).await, (Some(0), vec![]));
}

/// An expired UserSig (here: signed by a clock that lagged two days) is
/// replaced by a fresh one and the call retried once, transparently.
#[tokio::test]
async fn answer_70001_regenerates_the_usersig_and_retries_once() {
    let sim = start(config(ROOM)).await;
    let signings = Arc::new(AtomicU32::new(0));
    let real = system_clock();
    let counter = signings.clone();
    let settings = ClientSettings {
        usersig_ttl: Duration::from_secs(3600),
        clock: Arc::new(move || {
            // The first signature is made by a lagging clock.
            if counter.fetch_add(1, Ordering::SeqCst) == 0 { real() - 2 * 86400 } else { real() }
        }),
        ..quick_settings()
    };
    let client = client_for(&sim.base_url(), credentials(ADMIN, KEY), settings, 200);
    let outcome = client.unban_group_member("room", &["alice".into()]).await;
    assert_eq!(outcome.error_code(), Some(0));
    assert_eq!(logged_codes(&sim.base_url()).await, [Some(70001), Some(0)]);
}

/// If a fresh signature is refused as expired too (a skewed clock), the
/// client stops after one re-sign instead of looping.
#[tokio::test]
async fn answer_70001_twice_is_final() {
    let sim = start(config(ROOM)).await;
    let real = system_clock();
    let settings = ClientSettings { clock: Arc::new(move || real() - 400 * 86400), ..quick_settings() };
    let client = client_for(&sim.base_url(), credentials(ADMIN, KEY), settings, 200);
    let outcome = client.unban_group_member("room", &["alice".into()]).await;
    assert_eq!(outcome.error_code(), Some(70001));
    assert_eq!(logged_codes(&sim.base_url()).await, [Some(70001), Some(70001)]);
}

/// Terminal answers are not retried: one request each, and the documented code.
#[tokio::test]
async fn each_terminal_code_the_simulator_produces_is_final_after_one_call() {
    let sim = start(config(ROOM)).await;
    let url = sim.base_url();
    let admin = admin_client(&sim);
    let one = vec!["alice".to_string()];
    let cases: Vec<(&str, groupban_operator::im::Outcome<()>)> = vec![
        ("10004 non-AVChatRoom group", admin.unban_group_member("pub", &one).await),
        ("10005 21 members", admin.unban_group_member("room", &members("m", 21)).await),
        ("10007 no permission", admin.unban_group_member("locked", &one).await),
        ("10010 no such group", admin.unban_group_member("gone", &one).await),
        ("10015 malformed group", admin.unban_group_member(&"x".repeat(49), &one).await),
        (
            "70009 wrong key",
            client_for(&url, credentials(ADMIN, "wrong"), quick_settings(), 200).unban_group_member("room", &one).await,
        ),
        (
            "60010 not admin",
            client_for(&url, credentials("bob", KEY), quick_settings(), 200).unban_group_member("room", &one).await,
        ),
    ];
    for (label, outcome) in cases {
        let expected: i64 = label[..5].parse().unwrap();
        assert_eq!(outcome.error_code(), Some(expected), "{label}");
        assert_eq!(outcome.attempts, 1, "{label} was retried");
    }
    let mut other_app = credentials(ADMIN, KEY);
    other_app.sdkappid += 1;
    let outcome = client_for(&url, other_app, quick_settings(), 200).unban_group_member("room", &one).await;
    assert_eq!(outcome.error_code(), Some(60006));
    assert_eq!(banned_in_room(&url).await, ["alice", "bob", "carol"]);
}

/// An undocumented code is retried (slowly) to the end of the budget and
/// reported as it came, with the UnknownErrorCode reason.
#[tokio::test]
async fn an_undocumented_code_is_retried_slowly_then_reported() {
    let sim = start(config(ROOM)).await;
    let started = std::time::Instant::now();
    let outcome = admin_client(&sim).unban_group_member("odd", &["a".into()]).await;
    assert_eq!(outcome.error_code(), Some(12345));
    assert_eq!(outcome.attempts, quick_settings().retry.max_attempts);
    assert_eq!(groupban_operator::im::codes::lookup(12345).reason, "UnknownErrorCode");
    // Three backoffs of at least half of 5 ms, 10 ms, 20 ms, slowed down twice.
    assert!(started.elapsed() >= Duration::from_millis(35), "{:?}", started.elapsed());
}

/// 70052 (invalidated UserSig) also signs anew and retries once.
#[tokio::test]
async fn answer_70052_signs_anew_and_retries_once() {
    let sim = start(config(ROOM)).await;
    let outcome = admin_client(&sim).unban_group_member("revoked", &["a".into()]).await;
    assert_eq!(outcome.error_code(), Some(70052));
    assert_eq!(outcome.attempts, 2);
    assert_eq!(logged_codes(&sim.base_url()).await, [Some(70052), Some(70052)]);
}

#[tokio::test]
async fn ban_list_is_read_page_by_page_to_the_end() {
    let sim = start(config(ROOM)).await;
    let client = admin_client(&sim);
    for chunk in members("m", 230).chunks(20) {
        assert_eq!(client.ban_group_member("room", chunk, 3600).await.error_code(), Some(0));
    }
    let outcome = client.get_group_ban_members("room").await;
    let (_, banned) = outcome.result.unwrap();
    assert_eq!(banned.len(), 233);
    assert_eq!(outcome.attempts, 3, "233 entries take three pages of 100");
}

/// A paged read adds up its pages: every attempt, and every answer that
/// the app's budget was spent (a gateway that admits two calls a second
/// refuses the third page at first).
#[tokio::test]
async fn a_paged_read_counts_the_attempts_and_budget_answers_of_every_page() {
    let (sim, client) = throttled_ban_list(30).await;
    let outcome = client.get_group_ban_members("room").await;
    let requests = logged_codes(&sim.base_url()).await;
    let refused = requests.iter().filter(|code| **code == Some(60007)).count();
    assert_eq!(outcome.result.as_ref().map(|(_, banned)| banned.len()).ok(), Some(230));
    assert!(refused >= 1, "{requests:?}");
    assert_eq!(outcome.attempts as usize, requests.len(), "every request is an attempt");
    assert_eq!(outcome.budget_answers as usize, refused);
}

/// A policy-level stop reaches calls only while they wait. One that lands
/// while a retry waits for the limiter reports the previous answer (it may
/// have taken effect); one that lands before the first request reports none.
#[tokio::test]
async fn a_stop_while_waiting_reports_the_last_answer_and_never_drops_one() {
    let mut config = config(ROOM);
    config.faults.fail_10002 = 1.0;
    let sim = start(config).await;
    // One call per second: the retry waits about a second at the limiter.
    let client = Arc::new(client_for(&sim.base_url(), credentials(ADMIN, KEY), quick_settings(), 1));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let retrying = {
        let client = client.clone();
        tokio::spawn(
            async move { client.unban_group_member_until("room", &["alice".into()], stop_control(stop_rx)).await },
        )
    };
    // A second caller queues behind the first at the limiter.
    let (stop_queued, queued_rx) = tokio::sync::watch::channel(false);
    let queued = {
        let client = client.clone();
        tokio::spawn(
            async move { client.unban_group_member_until("room", &["bob".into()], stop_control(queued_rx)).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send_replace(true);
    stop_queued.send_replace(true);
    let outcome = retrying.await.unwrap().expect("the first attempt's answer is reported");
    assert_eq!((outcome.error_code(), outcome.attempts), (Some(10002), 1));
    assert!(queued.await.unwrap().is_none(), "stopped before its first request");
    assert_eq!(logged_codes(&sim.base_url()).await, [Some(10002)]);
}

/// The client records every attempt into the observer it was given, and
/// only there: a second set of metrics sees nothing of it.
#[tokio::test]
async fn attempts_are_recorded_into_the_injected_metrics_only() {
    use groupban_operator::metrics::{Health, Metrics, render};
    let sim = start(config(ROOM)).await;
    let (ours, other) = (Arc::new(Metrics::new()), Metrics::new());
    let settings = ClientSettings { observer: ours.clone(), ..quick_settings() };
    let client = client_for(&sim.base_url(), credentials(ADMIN, KEY), settings, 200);
    assert_eq!(client.unban_group_member("room", &["alice".into()]).await.error_code(), Some(0));
    assert_eq!(client.unban_group_member("pub", &["alice".into()]).await.error_code(), Some(10004));
    let text = render(&ours, &Health::default());
    for expected in [
        "groupban_im_calls_total{api=\"unban_group_member\",error_code=\"0\"} 1",
        "groupban_im_calls_total{api=\"unban_group_member\",error_code=\"10004\"} 1",
        "groupban_im_call_duration_seconds_count{api=\"unban_group_member\"} 2",
        "groupban_rate_limiter_wait_seconds_total{api=\"unban_group_member\"} ",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    assert!(!render(&other, &Health::default()).contains("groupban_im_calls_total{"), "another set saw the calls");
}

/// A gateway that answers with a redirect is not followed: the URL carries
/// the UserSig, and following would hand it to wherever the redirect
/// points. The call fails on the 302 itself; the target never hears of it.
#[tokio::test]
async fn a_redirect_is_refused_not_followed() {
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_addr = gateway.local_addr().unwrap();
    serve_always(
        gateway,
        format!(
            "HTTP/1.1 302 Found\r\nLocation: http://{target_addr}/stolen\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    let mut settings = quick_settings();
    settings.retry.max_attempts = 1;
    let client = client_for(&format!("http://{gateway_addr}"), credentials(ADMIN, KEY), settings, 200);
    let outcome = client.unban_group_member("room", &["alice".into()]).await;
    assert!(matches!(outcome.result, Err(TransportError::HttpStatus { status: 302 })), "{:?}", outcome.result);
    let followed = tokio::time::timeout(Duration::from_millis(300), target.accept()).await;
    assert!(followed.is_err(), "the redirect was followed");
}

/// Answers every request on `listener` with `response` (a whole HTTP
/// answer), one connection per request, and counts the requests.
fn serve_always(listener: tokio::net::TcpListener, response: String) -> Arc<AtomicU32> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let requests = Arc::new(AtomicU32::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let mut request = vec![0u8; 64 * 1024];
            let _ = stream.read(&mut request).await;
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    requests
}

/// [`serve_always`] with `body` as HTTP 200 JSON.
fn answer_always(listener: tokio::net::TcpListener, body: &str) -> Arc<AtomicU32> {
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    serve_always(listener, response)
}

/// A simulator that admits two calls a second and holds 230 banned members
/// in `room` (three pages), and a client that tries each call
/// `max_attempts` times: the third page meets 60007 at first.
async fn throttled_ban_list(max_attempts: u32) -> (RunningSimulator, ImClient) {
    let mut config = config(&seed_banned(&[("room", 230)]));
    config.rate_limit = 2;
    let sim = start(config).await;
    let mut settings = quick_settings();
    settings.retry.max_attempts = max_attempts;
    let client = client_for(&sim.base_url(), credentials(ADMIN, KEY), settings, 200);
    (sim, client)
}

/// A gateway whose NextOffset does not advance cannot keep a paged read
/// going for ever: the read stops at the page that repeats the offset.
#[tokio::test]
async fn a_next_offset_that_does_not_advance_ends_the_read() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = answer_always(
        listener,
        r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","BannedAccountList":[{"Member_Account":"x","BannedUntil":1}],"NextOffset":5}"#,
    );
    let client = client_for(&url, credentials(ADMIN, KEY), quick_settings(), 200);
    let outcome = tokio::time::timeout(Duration::from_secs(10), client.get_group_ban_members("room")).await;
    let outcome = outcome.expect("the read ends");
    assert_eq!(outcome.result.map(|(_, banned)| banned.len()).ok(), Some(2), "offset 0, then offset 5 once");
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

/// A page that fails for good ends the read with that answer and no
/// list: the pages read before it are not passed off as the whole list.
#[tokio::test]
async fn a_page_that_fails_for_good_returns_no_partial_list() {
    let (_sim, client) = throttled_ban_list(1).await;
    let outcome = client.get_group_ban_members("room").await;
    let (answer, banned) = outcome.result.unwrap();
    assert_eq!((answer.error_code, banned.len()), (60007, 0), "the third page was refused");
}

/// An answer of exactly the size bound is read; one byte more is refused
/// without being read whole.
#[tokio::test]
async fn answers_are_read_up_to_the_bound_and_no_further() {
    use groupban_operator::im::client::MAX_ANSWER_BYTES;
    let envelope = |size: usize| -> String {
        let head = r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""#;
        let tail = r#""}"#;
        format!("{head}{}{tail}", "x".repeat(size - head.len() - tail.len()))
    };
    for (size, fits) in [(MAX_ANSWER_BYTES, true), (MAX_ANSWER_BYTES + 1, false)] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        answer_always(listener, &envelope(size));
        let mut settings = quick_settings();
        settings.retry.max_attempts = 1;
        let client = client_for(&url, credentials(ADMIN, KEY), settings, 200);
        let outcome = client.unban_group_member("room", &["alice".into()]).await;
        match (fits, &outcome.result) {
            (true, Ok((answer, _))) => assert!(answer.error_info.len() <= 1024 + 16, "ErrorInfo is cut"),
            (false, Err(TransportError::InvalidBody(why))) => assert!(why.contains("larger than"), "{why}"),
            (_, other) => panic!("{size} bytes: {other:?}"),
        }
    }
}
