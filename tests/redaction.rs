//! Credentials never leak: a run full of failures, logged at TRACE level
//! (our crate, reqwest, hyper, everything), must not show the secret key,
//! any UserSig, or a URL carrying one, in logs, errors or outcomes.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use groupban_operator::im::usersig;
use support::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every run of UserSig-alphabet characters long enough to be one must not
/// decode as a UserSig.
pub fn assert_no_credentials(text: &str, secret_key: &str) {
    assert!(!text.contains(secret_key), "secret key leaked");
    assert!(!text.to_lowercase().contains("usersig="), "a URL with a usersig leaked");
    for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || "*-_%".contains(c))) {
        if token.len() >= 40 {
            let candidate = token.replace("%2A", "*");
            assert!(usersig::decode(&candidate).is_err(), "a UserSig leaked: {token}");
        }
    }
}

#[tokio::test]
async fn a_failing_run_logged_at_trace_level_shows_no_credentials() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .try_init()
        .expect("this test binary installs the only subscriber");

    let seed = "groups: [{groupId: room, type: AVChatRoom, banned: [alice]}]";
    let mut faulty = config(seed);
    faulty.faults.fail_http502 = 0.5;
    faulty.faults.fail_10002 = 0.5;
    let sim = start(faulty).await;
    let url = sim.base_url();

    let mut report = String::new();
    let one = vec!["alice".to_string()];
    // Wrong key, expired-looking fault mix, timeouts, and a closed port.
    let wrong_key = client_for(&url, credentials(ADMIN, "not-the-key"), quick_settings(), 200);
    report += &format!("{:?}\n", wrong_key.unban_group_member("room", &one).await);
    let flaky = admin_client(&sim);
    for _ in 0..5 {
        report += &format!("{:?}\n", flaky.unban_group_member("room", &one).await);
    }
    let mut slow = config(seed);
    slow.faults.latency = Duration::from_millis(300);
    let slow_sim = start(slow).await;
    let mut settings = quick_settings();
    settings.request_timeout = Duration::from_millis(50);
    let timing_out = client_for(&slow_sim.base_url(), credentials(ADMIN, KEY), settings, 200);
    let outcome = timing_out.unban_group_member("room", &one).await;
    if let Err(error) = &outcome.result {
        report += &format!("{error} / {error:?}\n");
    }
    sim.stop().await.unwrap();
    let refused = admin_client_at(&url);
    let outcome = refused.unban_group_member("room", &one).await;
    report += &format!("{:?}\n", outcome);
    if let Err(error) = &outcome.result {
        report += &format!("{error}\n");
    }

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("Retrying IM call"), "the run was not logged:\n{logs}");
    assert!(report.contains("HttpStatus") || report.contains("Connect"), "{report}");
    assert_no_credentials(&logs, KEY);
    assert_no_credentials(&report, KEY);
}

fn admin_client_at(url: &str) -> groupban_operator::im::ImClient {
    client_for(url, credentials(ADMIN, KEY), quick_settings(), 200)
}
