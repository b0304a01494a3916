//! The `simulate` and `usersig` commands as real processes.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use groupban_operator::im::usersig::{self, Expectation};
use serde_json::{Value, json};
use support::{ADMIN, KEY, SDKAPPID};

const BIN: &str = env!("CARGO_BIN_EXE_groupban-operator");

/// A simulator process, killed on drop.
struct SimProcess {
    child: Child,
    url: String,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_simulator(extra: &[&str]) -> SimProcess {
    let seed = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(seed.path(), "groups: [{groupId: room, type: AVChatRoom, banned: [alice, bob, carol, dave]}]")
        .unwrap();
    let sdkappid = SDKAPPID.to_string();
    let mut child = Command::new(BIN)
        .args(["simulate", "--listen", "127.0.0.1:0", "--sdkappid", &sdkappid, "--identifier", ADMIN])
        .args(["--secret-key", KEY, "--seed-file"])
        .arg(seed.path())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn simulator");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("simulator printed its address");
    let url = line.trim().strip_prefix("listening on ").expect("first line is `listening on URL`").to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    SimProcess { child, url }
}

fn query(identifier: &str, key: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let request = usersig::SigRequest { sdkappid: SDKAPPID, identifier, time: now, expire: 600, userbuf: None };
    let sig = usersig::generate(key, &request).unwrap();
    format!("sdkappid={SDKAPPID}&identifier={identifier}&usersig={sig}&random=42&contenttype=json")
}

fn post(url: &str, path: &str, query: &str, body: &str) -> (u16, Value) {
    let response = ureq_post(&format!("{url}/v4/{path}?{query}"), body);
    (response.0, serde_json::from_str(&response.1).unwrap_or(Value::Null))
}

/// A raw POST with no Content-Type header, as real third-party clients send.
fn ureq_post(url: &str, body: &str) -> (u16, String) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        groupban_operator::install_crypto_provider();
        let response = reqwest::Client::new().post(url).body(body.to_string()).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    })
}

#[test]
fn simulate_prints_its_address_first_and_serves_raw_requests() {
    let sim = spawn_simulator(&[]);
    let unban = "group_open_http_svc/unban_group_member";
    let body = json!({"GroupId": "room", "Members_Account": ["alice"]}).to_string();
    let (status, answer) = post(&sim.url, unban, &query(ADMIN, KEY), &body);
    assert_eq!(status, 200);
    assert_eq!(answer["ActionStatus"], "OK");
    assert_eq!(answer["ErrorCode"], 0);
    // Percent-encoded `*` and the same `random` again.
    let encoded = query(ADMIN, KEY).replace('*', "%2A");
    let body = json!({"GroupId": "room", "Members_Account": ["bob"]}).to_string();
    assert_eq!(post(&sim.url, unban, &encoded, &body).1["ErrorCode"], 0);
    // Business errors are HTTP 200 with a JSON body.
    let (status, answer) = post(&sim.url, unban, &query(ADMIN, KEY), "{not json");
    assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(60003)));
    assert_eq!(answer["ActionStatus"], "FAIL");
    let (_, answer) = post(&sim.url, unban, &query(ADMIN, "wrong-key"), &body);
    assert_eq!(answer["ErrorCode"], 70009);

    let state: Value = serde_json::from_str(&ureq_get(&format!("{}/simulator/state", sim.url))).unwrap();
    let banned: Vec<&str> =
        state["groups"][0]["banned"].as_array().unwrap().iter().map(|b| b["account"].as_str().unwrap()).collect();
    assert_eq!(banned, ["carol", "dave"]);
    let log: Value = serde_json::from_str(&ureq_get(&format!("{}/simulator/requests", sim.url))).unwrap();
    assert_eq!(log["requests"].as_array().unwrap().len(), 4);
    fn strings(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
            Value::Object(map) => map.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut logged = Vec::new();
    strings(&log, &mut logged);
    assert!(logged.iter().any(|s| s == "usersig"), "parameter names are logged");
    assert!(logged.iter().all(|s| usersig::decode(s).is_err()), "the request log must not keep a UserSig");
}

/// Whatever arrives, the answer is a documented ErrorCode in a JSON body.
#[test]
fn odd_requests_get_documented_codes_not_plain_http_errors() {
    let sim = spawn_simulator(&[]);
    let (status, answer) = (0, serde_json::from_str::<Value>(&ureq_get(&format!("{}/no/such/path", sim.url))).unwrap());
    assert_eq!((status, answer["ErrorCode"].as_i64()), (0, Some(60009)));
    let huge = format!("{{\"GroupId\":\"room\",\"Members_Account\":[\"{}\"]}}", "x".repeat(3 << 20));
    let (status, answer) = post(&sim.url, "group_open_http_svc/unban_group_member", &query(ADMIN, KEY), &huge);
    assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(60003)), "an over-large body");
    let many: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    let body = json!({"GroupId": "room", "Members_Account": many}).to_string();
    let garbled = format!("{}&eJyrStrayToken=1", query(ADMIN, KEY));
    let (_, answer) = post(&sim.url, "group_open_http_svc/unban_group_member", &garbled, &body);
    assert_eq!(answer["ErrorCode"], 10005);
    let log: Value = serde_json::from_str(&ureq_get(&format!("{}/simulator/requests", sim.url))).unwrap();
    let last = log["requests"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["membersCount"], 25);
    assert_eq!(last["members"].as_array().unwrap().len(), 20, "the log keeps a call's worth");
    assert_eq!(last["queryParameters"].as_array().unwrap().last().unwrap(), "<other>");
    let stats: Value = serde_json::from_str(&ureq_get(&format!("{}/simulator/stats", sim.url))).unwrap();
    assert_eq!(stats["requests"], 3, "every request counts, the unknown path included: {stats}");
    let answered: u64 = stats["byErrorCode"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(answered, 3);
}

fn ureq_get(url: &str) -> String {
    groupban_operator::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

/// Two independent clients from PyPI (tests/python/requirements.txt) get
/// the same answers as ours. Skipped with a notice when they are not
/// installed; CI installs them and sets GROUPBAN_REQUIRE_PYTHON_TESTS=1.
#[test]
fn third_party_python_clients_are_served() {
    if !support::python_modules_available(
        "third_party_python_clients_are_served",
        "timsdk, tencentcloud_im, TLSSigAPIv2",
    ) {
        return;
    }
    let sim = spawn_simulator(&[]);
    let output = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/third_party_clients.py"))
        .args([&sim.url, &SDKAPPID.to_string(), ADMIN, KEY])
        .output()
        .expect("run python3");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let results: Value = serde_json::from_slice(&output.stdout).expect("JSON from the script");
    for call in ["timsdk_unban", "timsdk_unban_same_random", "timsdk_ban_list", "tcim_unban"] {
        assert_eq!(results[call]["ErrorCode"], 0, "{call}: {}", results[call]);
    }
    assert_eq!(results["timsdk_wrong_key"]["ErrorCode"], 70009);
    assert_eq!(results["tcim_url_had_percent_2a"], true);
    let list = results["timsdk_ban_list"]["BannedAccountList"].as_array().unwrap();
    assert_eq!(list.len(), 2, "alice and bob were unbanned, carol and dave remained: {list:?}");
}

#[test]
fn simulate_rejects_bad_flags_and_seed_files_with_exit_2() {
    let seed = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(seed.path(), "groups: [{groupId: g, type: Chat}]").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--fail-10002".into(), "2".into()], "not a rate between 0 and 1"),
        (vec!["--rate-limit".into(), "0".into()], "rate-limit"),
        (vec!["--seed-file".into(), seed.path().display().to_string()], "type \"Chat\""),
        (vec!["--seed-file".into(), "/nonexistent/groups.yaml".into()], "/nonexistent/groups.yaml"),
    ];
    for (extra, expected) in cases {
        let output =
            Command::new(BIN).args(["simulate", "--sdkappid", "1", "--secret-key", "k"]).args(&extra).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
    }
}

#[test]
fn usersig_prints_a_signature_that_verifies() {
    let output = Command::new(BIN)
        .args(["usersig", "--sdkappid", "1400000000", "--identifier", "admin", "--expire", "600", "--userbuf", "abc"])
        .env("GROUPBAN_SECRET_KEY", KEY)
        .output()
        .unwrap();
    assert!(output.status.success());
    let sig = String::from_utf8(output.stdout).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expected = Expectation { sdkappid: SDKAPPID, identifier: "admin", userbuf: Some(b"abc"), now };
    let decoded = usersig::verify(KEY, sig.trim(), &expected).expect("verifies");
    assert_eq!(decoded.expire, 600);
}

#[test]
fn usersig_rejects_bad_input_with_exit_2() {
    for args in [
        vec!["usersig", "--sdkappid", "abc", "--identifier", "a", "--secret-key", "k"],
        vec!["usersig", "--sdkappid", "1", "--identifier", "", "--secret-key", "k"],
        vec!["usersig", "--sdkappid", "1", "--identifier", "a"],
    ] {
        let output = Command::new(BIN).args(&args).env_remove("GROUPBAN_SECRET_KEY").output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty());
    }
}

/// `groupban-operator crd | head -1` closes the pipe early; the command
/// must not panic (println! would).
#[test]
fn output_into_a_closed_pipe_does_not_panic() {
    for args in [vec!["crd"], vec!["demo"]] {
        let mut child = Command::new(BIN).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take()); // the reader goes away at once
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    }
}
