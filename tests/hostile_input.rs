//! `apply` and `simulate` as processes against hostile input: planted
//! links, proxies, endless and oversized answers, signals, half-sent
//! requests. Each test is a finding of the adversarial pass (issue #7); each
//! failed on the code before its fix.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use groupban_operator::simulator::RunningSimulator;
use serde_json::Value;
use support::apply::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

/// A listener that records what clients send, answers nothing and closes.
struct Recorder {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<u8>>>,
}

async fn recorder() -> Recorder {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(Mutex::new(Vec::new()));
    let (count, log) = (connections.clone(), received.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut buffer = vec![0; 64 * 1024];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer)).await {
                log.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        }
    });
    Recorder { addr, connections, received }
}

/// Reads one HTTP request (head and a Content-Length body); returns the head.
async fn read_request(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buffer = [0; 8192];
    while let Ok(n) = stream.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return text[..end].to_string();
            }
        }
    }
    String::from_utf8_lossy(&data).to_string()
}

/// The `usersig` query parameter of a request head.
fn usersig_of(head: &str) -> String {
    let target = head.split_whitespace().nth(1).unwrap_or_default();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "usersig").map(|(_, v)| v.into_owned()).unwrap()
}

/// A gateway that answers every request with `answer(head)` written raw,
/// then closes. Counts the bytes it managed to send.
async fn raw_gateway<F, Fut>(answer: F) -> (String, Arc<AtomicU64>)
where
    F: Fn(String, TcpStream, Arc<AtomicU64>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (answer, counter) = (answer.clone(), counter.clone());
            tokio::spawn(async move {
                let head = read_request(&mut stream).await;
                answer(head, stream, counter).await;
            });
        }
    });
    (format!("http://{addr}"), sent)
}

fn only_policy(dir: &Path, endpoint: &str, members: usize) {
    let documents =
        [secret_yaml(endpoint, ADMIN, KEY, SDKAPPID), policy_yaml("p", "room", &support::members("m", members))];
    std::fs::write(dir.join("manifests.yaml"), documents.join("---\n")).unwrap();
}

/// Every piece of `secret` of 12 characters, for "is any of it in here".
fn pieces(secret: &str) -> Vec<String> {
    let chars: Vec<char> = secret.chars().collect();
    chars.windows(12).map(|w| w.iter().collect()).collect()
}

async fn requests_made(sim_url: &str) -> u64 {
    get_json(sim_url, "/simulator/stats").await["requests"].as_u64().unwrap()
}

// 1 and 2: the state file in a shared folder.

#[tokio::test(flavor = "multi_thread")]
async fn planted_links_beside_the_state_file_are_never_followed() {
    let sim = start(config(&seed_banned(&[("room", 3)]))).await;
    let manifests = tempfile::tempdir().unwrap();
    only_policy(manifests.path(), &sim.base_url(), 3);
    let shared = tempfile::tempdir().unwrap();
    let victim = shared.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    // The temp name the old code used, planted in advance.
    std::os::unix::fs::symlink(&victim, shared.path().join(".st.json.tmp")).unwrap();
    let state = shared.path().join("st.json");

    let output = run_apply(manifests.path(), &["--state", state.to_str().unwrap()]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let metadata = std::fs::symlink_metadata(&state).unwrap();
    assert!(metadata.file_type().is_file());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600, "a new state file is private");

    // A planted lock link: refused, nothing written through it, no call.
    let other = shared.path().join("other.json");
    std::os::unix::fs::symlink(&victim, shared.path().join(".other.json.lock")).unwrap();
    let before = requests_made(&sim.base_url()).await;
    let output = run_apply(manifests.path(), &["--state", other.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("symbolic link"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(requests_made(&sim.base_url()).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_path_that_is_a_link_exits_2_and_stays_a_link() {
    let sim = start(config(&seed_banned(&[("room", 3)]))).await;
    let manifests = tempfile::tempdir().unwrap();
    only_policy(manifests.path(), &sim.base_url(), 3);
    let shared = tempfile::tempdir().unwrap();
    let real = shared.path().join("real.json");
    let link = shared.path().join("link.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();

    let output = run_apply(manifests.path(), &["--state", link.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("link.json is a symbolic link"), "{stderr}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(!real.exists());
    assert_eq!(requests_made(&sim.base_url()).await, 0);
}

// 3: proxies.

#[tokio::test(flavor = "multi_thread")]
async fn a_loopback_endpoint_never_goes_through_http_proxy() {
    let sim = start(config(&seed_banned(&[("room", 3)]))).await;
    let proxy = recorder().await;
    let manifests = tempfile::tempdir().unwrap();
    only_policy(manifests.path(), &sim.base_url(), 3);
    let proxy_url = format!("http://{}", proxy.addr);
    let output = Command::new(BIN)
        .args(["apply", "-f"])
        .arg(manifests.path())
        .env("HTTP_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 0, "the proxy saw the UserSig");
}

#[tokio::test(flavor = "multi_thread")]
async fn https_goes_through_https_proxy_by_connect_and_no_proxy_is_honoured() {
    let proxy = recorder().await;
    let proxy_url = format!("http://{}", proxy.addr);
    let manifests = tempfile::tempdir().unwrap();
    only_policy(manifests.path(), "https://im.example.test", 1);
    let output = Command::new(BIN)
        .args(["apply", "-f"])
        .arg(manifests.path())
        .args(["--max-attempts", "1", "--request-timeout", "4"])
        .env("HTTPS_PROXY", &proxy_url)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "the proxy closes: no answer");
    let seen = String::from_utf8_lossy(&proxy.received.lock().unwrap()).to_string();
    assert!(seen.starts_with("CONNECT im.example.test:443 "), "{seen}");
    assert!(!seen.to_lowercase().contains("usersig"), "{seen}");

    // NO_PROXY names the host: no connection to the proxy at all.
    let before = proxy.connections.load(Ordering::SeqCst);
    let output = Command::new(BIN)
        .args(["apply", "-f"])
        .arg(manifests.path())
        .args(["--max-attempts", "1", "--request-timeout", "4"])
        .env("HTTPS_PROXY", &proxy_url)
        .env("NO_PROXY", "example.test")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(proxy.connections.load(Ordering::SeqCst), before);
}

// 5 and 6: answers that are too large or carry the UserSig.

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_answer_is_cut_off_after_one_mib() {
    let (endpoint, sent) = raw_gateway(|_head, mut stream: TcpStream, sent: Arc<AtomicU64>| async move {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b' '; 64 * 1024];
        let _ = stream.write_all(b"{\"ErrorInfo\":\"").await;
        while stream.write_all(&chunk).await.is_ok() {
            sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            if sent.load(Ordering::SeqCst) > 1 << 30 {
                break;
            }
        }
    })
    .await;
    let manifests = tempfile::tempdir().unwrap();
    only_policy(manifests.path(), &endpoint, 1);
    let output = run_apply(manifests.path(), &["--max-attempts", "1", "--request-timeout", "30"]).await;
    assert_eq!(output.status.code(), Some(1));
    let item = &items(&output)[0];
    let failure = item["status"]["failures"][0]["errorInfo"].as_str().unwrap_or_default().to_string();
    let message = condition(item, "Ready").2.to_string();
    assert!(message.contains("larger than 1024 KiB") || failure.contains("larger than 1024 KiB"), "{item}");
    let bytes = sent.load(Ordering::SeqCst);
    assert!(bytes < 64 << 20, "the client read on: {bytes} bytes sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_error_info_is_capped_and_an_echoed_usersig_hidden() {
    let seen_usersig = Arc::new(Mutex::new(String::new()));
    let keep = seen_usersig.clone();
    let (endpoint, _) = raw_gateway(move |head, mut stream: TcpStream, _| {
        let keep = keep.clone();
        async move {
            let usersig = usersig_of(&head);
            *keep.lock().unwrap() = usersig.clone();
            // Echoed strictly percent-encoded and cut short, then 900 KB.
            let encoded: String = usersig
                .bytes()
                .take(60)
                .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
                .collect();
            let info = format!("bad request usersig={encoded}&x {}", "x".repeat(900_000));
            let body = serde_json::json!({"ActionStatus": "FAIL", "ErrorCode": 10007, "ErrorInfo": info}).to_string();
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    })
    .await;
    let manifests = tempfile::tempdir().unwrap();
    only_policy(manifests.path(), &endpoint, 25);
    let state = manifests.path().join("state.json");
    let output = run_apply(manifests.path(), &["--state", state.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(1));
    let state_size = std::fs::metadata(&state).unwrap().len();
    assert!(state_size < 32 * 1024, "state file of {state_size} bytes");
    let listed = items(&output);
    let (_, reason, message) = condition(&listed[0], "Stalled");
    assert_eq!(reason, "PermissionDenied");
    assert!(message.len() < 1400 && message.contains("(cut)"), "{message}");

    let usersig = seen_usersig.lock().unwrap().clone();
    let everything = format!(
        "{}{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(&state).unwrap()
    );
    assert!(everything.contains("usersig=<redacted>"), "{message}");
    let encoded: String = url::form_urlencoded::byte_serialize(usersig.as_bytes()).collect();
    for piece in pieces(&usersig).iter().chain(&pieces(&encoded)) {
        assert!(!everything.contains(piece.as_str()), "a piece of the UserSig escaped: {piece}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_numeric_secret_key_is_not_echoed() {
    let manifests = tempfile::tempdir().unwrap();
    let secret = secret_yaml("http://127.0.0.1:9", ADMIN, "918273645546372819", SDKAPPID);
    let documents = [secret, policy_yaml("p", "room", &members("m", 1))];
    std::fs::write(manifests.path().join("m.yaml"), documents.join("---\n")).unwrap();
    let output = run_apply(manifests.path(), &[]).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stringData.secretKey is a number"), "{stderr}");
    assert!(!stderr.contains("918273645546372819") && output.stdout.is_empty(), "{stderr}");
}

// 4: loose manifests.

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_key_or_unknown_field_exits_2_with_no_call() {
    let sim = start(config(&seed_banned(&[("room", 3)]))).await;
    let secret = secret_yaml(&sim.base_url(), ADMIN, KEY, SDKAPPID);
    let policy = policy_yaml("p", "room", &members("m", 3));
    let flipped = policy.replace("spec:\n", "spec:\n  suspend: true\n  suspend: false\n");
    let misplaced = policy.replace("metadata: {name: p}", "metadata: {name: p, namespce: team}");
    let pasted = format!("{policy}{}", policy.replace("name: p", "name: q"));
    for (text, expected) in [
        (flipped, "duplicate key \"suspend\""),
        (misplaced, "unknown field \"metadata.namespce\""),
        (pasted, "duplicate key \"apiVersion\""),
    ] {
        let dir = manifests_dir(&[secret.clone(), text]);
        let output = run_apply(dir.path(), &[]).await;
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected) && stderr.contains("manifests.yaml, document 2"), "{stderr}");
    }
    assert_eq!(requests_made(&sim.base_url()).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_megabyte_of_nesting_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let half = 500_000;
    std::fs::write(dir.path().join("deep.yaml"), format!("a: {}{}\n", "[".repeat(half), "]".repeat(half))).unwrap();
    let started = Instant::now();
    let output = run_apply(dir.path(), &[]).await;
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nested more than 64 levels"));
    // Minutes before; a generous bound for a loaded machine.
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

// 7: signals and the time budget.

/// A simulator that answers slowly, and a policy of 2,000 members (100
/// calls) at 20 calls/s: a run of about 5 s to interrupt.
async fn slow_run(latency_ms: u64) -> (RunningSimulator, tempfile::TempDir) {
    let mut config = config(&seed_banned(&[("room", 2000)]));
    config.faults.latency = Duration::from_millis(latency_ms);
    let sim = start(config).await;
    let manifests = tempfile::tempdir().unwrap();
    only_policy(manifests.path(), &sim.base_url(), 2000);
    (sim, manifests)
}

fn spawn_apply(dir: &Path, extra: &[&str]) -> tokio::process::Child {
    Command::new(BIN)
        .args(["apply", "-f"])
        .arg(dir)
        .args(["-o", "json", "--max-calls-per-second", "20"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-s", name, &pid]).status().unwrap().success());
}

fn recorded(state: &Path) -> BTreeSet<String> {
    let contents: Value = serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    strings(&contents["policies"]["default/p"]["unbannedMembers"])
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_and_sigint_save_print_and_exit_3() {
    for name in ["TERM", "INT"] {
        let (sim, manifests) = slow_run(0).await;
        let state = manifests.path().join("state.json");
        let child = spawn_apply(manifests.path(), &["--state", state.to_str().unwrap()]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        signal(&child, name);
        let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await.unwrap().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "SIG{name}: {stderr}");
        assert!(
            stderr.contains(&format!("interrupted: SIG{name} received")) && stderr.contains("summary:"),
            "{stderr}"
        );
        let printed = strings(&items(&output)[0]["status"]["unbannedMembers"]);
        let confirmed = really_unbanned(&sim.base_url(), "room").await;
        assert!(!confirmed.is_empty() && confirmed.len() < 2000, "SIG{name} came mid-run: {}", confirmed.len());
        assert_eq!(printed, confirmed, "SIG{name}: every confirmed answer is printed");
        assert_eq!(recorded(&state), confirmed, "SIG{name}: and saved");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_timeout_budget_ends_a_run_like_a_signal() {
    let (sim, manifests) = slow_run(0).await;
    let state = manifests.path().join("state.json");
    let child = spawn_apply(manifests.path(), &["--state", state.to_str().unwrap(), "--timeout", "2s"]);
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("--timeout budget of 2s ran out"), "{stderr}");
    let confirmed = really_unbanned(&sim.base_url(), "room").await;
    assert!(confirmed.len() < 2000);
    assert_eq!(recorded(&state), confirmed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_exits_at_once() {
    // Each answer takes 3 s: the first signal waits for the calls in flight.
    let (_sim, manifests) = slow_run(3000).await;
    let child = spawn_apply(manifests.path(), &[]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    signal(&child, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = Instant::now();
    signal(&child, "TERM");
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(second.elapsed() < Duration::from_millis(2500), "waited {:?} after the second signal", second.elapsed());
}

// 8: the simulator cannot be held open.

async fn spawn_simulator() -> (tokio::process::Child, SocketAddr) {
    use tokio::io::AsyncBufReadExt;
    let mut child = Command::new(BIN)
        .args(["simulate", "--listen", "127.0.0.1:0", "--sdkappid", &SDKAPPID.to_string(), "--identifier", ADMIN])
        .args(["--secret-key", KEY])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let addr = first.trim_start_matches("listening on http://").parse().unwrap();
    (child, addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn half_a_request_header_neither_holds_a_connection_nor_a_shutdown() {
    let (mut child, addr) = spawn_simulator().await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"POST /v4/group_open_http_svc/unban_group_member HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Both are closed once the header-read timeout (10 s) passes: the one
    // that sent half a header, and the one that never sent a byte.
    let (mut a, mut b) = ([0; 1024], [0; 1024]);
    let (idle_closed, silent_closed) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(20), idle.read(&mut a)),
        tokio::time::timeout(Duration::from_secs(20), silent.read(&mut b)),
    );
    assert!(matches!(idle_closed, Ok(Ok(_)) | Ok(Err(_))), "the half-sent request held its connection for 20 s");
    assert!(matches!(silent_closed, Ok(Ok(0)) | Ok(Err(_))), "a silent connection was held for 20 s");

    let mut held = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"POST /v4/x HTTP/1.1\r\nHost:").await.unwrap();
        held.push(stream);
    }
    signal(&child, "TERM");
    let stopped = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.unwrap().unwrap();
    assert!(status.success());
    assert!(stopped.elapsed() < Duration::from_secs(12), "took {:?} to stop", stopped.elapsed());
}

// 10: small ones.

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_unique_even_for_answers_at_the_same_moment() {
    let sim = start(config(&seed_banned(&[("room", 1)]))).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v4/group_open_http_svc/unban_group_member", sim.base_url());
    let answers = futures::future::join_all(
        (0..64).map(|_| client.post(&url).body("{}").send()).map(|r| async { r.await.unwrap().json::<Value>().await }),
    )
    .await;
    let ids: BTreeSet<String> =
        answers.into_iter().map(|a| a.unwrap()["RequestId"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 64);
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_have_no_colour_codes_off_a_terminal_and_a_state_file_in_the_folder_is_quiet() {
    let sim = start(config(&seed_banned(&[("room", 3)]))).await;
    let manifests = tempfile::tempdir().unwrap();
    only_policy(manifests.path(), &sim.base_url(), 3);
    std::fs::write(manifests.path().join("notes.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
        .unwrap();
    let state = manifests.path().join("state.json");
    for _ in 0..2 {
        let output = Command::new(BIN)
            .args(["apply", "-f"])
            .arg(manifests.path())
            .args(["--state", state.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .output()
            .await
            .unwrap();
        assert!(output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains('\u{1b}'), "escape codes in a pipe: {stderr:?}");
        // The ConfigMap draws its warning; the state file draws none.
        assert_eq!(stderr.matches("Skipping a manifest").count(), 1, "{stderr}");
    }
}
