//! Values the chart accepts are values `run` accepts: `helm template` and
//! `run`'s own argument check agree at every edge of the schema, so a
//! `helm install` that succeeds never leaves a pod that crash-loops on its
//! flags. Each case that crash-looped before the schema said so has a row.
//!
//! `run` is started with the rendered Deployment's exact arguments and no
//! cluster to reach: refused flags exit 2 before anything else; accepted
//! ones get as far as looking for a kubeconfig (exit 1).

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/groupban-operator");
const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/groupban-operator/values.schema.json");
const BIN: &str = env!("CARGO_BIN_EXE_groupban-operator");

fn helm_available() -> bool {
    support::tool_available("helm", "version", "GROUPBAN_REQUIRE_HELM", ".ci/run installs a pinned one")
}

/// The operator container's args from `helm template --set ...`, or the
/// error helm printed.
fn rendered_args(sets: &[String]) -> Result<Vec<String>, String> {
    let mut helm = Command::new("helm");
    helm.args(["template", "release", CHART, "--namespace", "ops"]);
    for set in sets {
        helm.args(["--set-string", set]);
    }
    let output = helm.output().unwrap();
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let text = String::from_utf8(output.stdout).unwrap();
    let deployment: Value = yaml_serde::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|d: &Value| d["kind"] == "Deployment")
        .expect("a Deployment");
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].as_array().unwrap();
    Ok(args.iter().map(|a| a.as_str().unwrap().to_string()).collect())
}

/// Whether `run` accepts `args` (its own check); the message when not.
fn run_accepts(args: &[String]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    // Port 0: parallel tests must not compete for the chart's port.
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if a.starts_with("--metrics-bind-address=") {
                "--metrics-bind-address=127.0.0.1:0".into()
            } else {
                a.clone()
            }
        })
        .collect();
    let mut child = std::process::Command::new(BIN)
        .args(&args)
        .env_clear()
        .env("KUBECONFIG", dir.path().join("none"))
        .env("HOME", dir.path())
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "run neither refused nor failed to connect: {args:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    match status.code() {
        Some(2) => Err(stderr),
        Some(1) => Ok(()),
        other => panic!("run exited {other:?} for {args:?}: {stderr}"),
    }
}

/// The integer values that become `run` flags, at their schema bounds and
/// one past each: helm and run agree on every one.
#[test]
fn integer_values_agree_with_run_at_every_schema_edge() {
    if !helm_available() {
        return;
    }
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(SCHEMA).unwrap()).unwrap();
    let operator = &schema["properties"]["operator"]["properties"];
    let flags = [
        ("operator.maxCallsPerSecond", &operator["maxCallsPerSecond"], "--max-calls-per-second"),
        ("operator.concurrency", &operator["concurrency"], "--concurrency"),
        ("operator.maxAttempts", &operator["maxAttempts"], "--max-attempts"),
        ("operator.requestTimeoutSeconds", &operator["requestTimeoutSeconds"], "--request-timeout"),
    ];
    for (value, bounds, flag) in flags {
        let (min, max) = (bounds["minimum"].as_i64().unwrap(), bounds["maximum"].as_i64().unwrap());
        for (number, inside) in [(min - 1, false), (min, true), (max, true), (max + 1, false)] {
            // --set (not --set-string): the schema sees an integer.
            let mut helm = Command::new("helm");
            helm.args(["template", "release", CHART, "--set", &format!("{value}={number}")]);
            let helm_ok = helm.output().unwrap().status.success();
            assert_eq!(helm_ok, inside, "{value}={number}: the schema");
            let mut args = rendered_args(&[]).unwrap();
            for arg in args.iter_mut().filter(|a| a.starts_with(&format!("{flag}="))) {
                *arg = format!("{flag}={number}");
            }
            assert_eq!(run_accepts(&args).is_ok(), inside, "{flag}={number}: run");
        }
    }
}

/// Each value that passed the schema and crash-looped the pod before:
/// now refused when the chart renders, with a message naming the value,
/// and refused by run too.
#[test]
fn each_value_that_crash_looped_is_refused_by_helm() {
    if !helm_available() {
        return;
    }
    let cases: [(&[&str], &str, &[&str]); 7] = [
        (&["operator.progressInterval=500ms"], "progressInterval", &["--progress-interval=500ms"]),
        (&["operator.stalledRecheckInterval=0s"], "stalledRecheckInterval", &["--stalled-recheck-interval=0s"]),
        (&["operator.resyncInterval=8761h"], "resyncInterval", &["--resync-interval=8761h"]),
        (
            &["operator.leaderElection.renewDeadline=15s"],
            "retryPeriod (2s) < renewDeadline (15s) < leaseDuration (15s)",
            &["--leader-election-renew-deadline=15s"],
        ),
        (
            &["operator.leaderElection.retryPeriod=10s"],
            "retryPeriod (10s) < renewDeadline (10s)",
            &["--leader-election-retry-period=10s"],
        ),
        (
            &["operator.leaderElection.leaseDuration=1500ms", "operator.leaderElection.renewDeadline=1s"],
            "leaseDuration",
            &["--leader-election-lease-duration=1500ms", "--leader-election-renew-deadline=1s"],
        ),
        (&["operator.leaderElection.retryPeriod=500ms"], "retryPeriod", &["--leader-election-retry-period=500ms"]),
    ];
    for (sets, named, flags) in cases {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let error = rendered_args(&sets).expect_err(&format!("{sets:?} must be refused"));
        assert!(error.contains(named), "{sets:?}: {error}");
        let mut args = rendered_args(&[]).unwrap();
        for flag in flags {
            let name = flag.split('=').next().unwrap();
            args.retain(|a| !a.starts_with(&format!("{name}=")));
            args.push(flag.to_string());
        }
        assert!(run_accepts(&args).is_err(), "run refuses {flags:?} too");
    }
    // --set (an integer), so the schema refuses it for its size.
    let mut helm = Command::new("helm");
    helm.args(["template", "release", CHART, "--set", "operator.requestTimeoutSeconds=300"]);
    let output = helm.output().unwrap();
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && error.contains("maximum: got 300, want 15"), "{error}");
}

/// Duration texts around every edge: what the chart accepts, run accepts
/// with the same meaning (within the chart's grammar of whole h/m/s they
/// agree both ways; run alone also reads ms and fractions).
#[test]
fn durations_agree_with_run_at_every_edge() {
    if !helm_available() {
        return;
    }
    let texts = [
        "1s",
        "0s",
        "1m",
        "59s",
        "1h30m",
        "1h0m0s",
        "0h0m1s",
        "8760h",
        "8759h60m",
        "8760h1s",
        "525600m",
        "31536000s",
        "31536001s",
        "999999999h",
        "1500ms",
        "1.5s",
        "90s",
        "1m30s",
        "30m1h",
        "1s1s",
        "10",
        "s",
        "1d",
        " 1s",
        "-1s",
        "",
    ];
    let in_grammar = |text: &str| {
        let mut rest = text;
        let mut units = ["h", "m", "s"].into_iter();
        let mut any = false;
        while !rest.is_empty() {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 || digits > 9 {
                return false;
            }
            let unit = &rest[digits..digits + 1.min(rest.len() - digits)];
            if !units.by_ref().any(|u| u == unit) {
                return false;
            }
            rest = &rest[digits + 1..];
            any = true;
        }
        any
    };
    for text in texts {
        let helm = rendered_args(&[format!("operator.resyncInterval={text}")]);
        let run = helm.as_ref().ok().map(|args| run_accepts(args));
        let run_direct = {
            let mut args = rendered_args(&[]).unwrap();
            args.retain(|a| !a.starts_with("--resync-interval="));
            args.push(format!("--resync-interval={text}"));
            run_accepts(&args).is_ok()
        };
        if let Some(run) = run {
            assert!(run.is_ok(), "{text:?}: the chart accepts it, so run must: {run:?}");
        }
        if in_grammar(text) {
            assert_eq!(helm.is_ok(), run_direct, "{text:?}: in the chart's grammar both must agree; helm: {helm:?}");
        } else {
            assert!(helm.is_err(), "{text:?} is outside the chart's grammar");
        }
    }
}

/// Label selectors (`operator.selector`, `defaultCredentialsNamespaceSelector`):
/// the schema's pattern is the parser's own (one source), helm and run
/// agree on each text, and what they accept the API server accepts too
/// (real control plane), so no selector crash-loops the pod.
#[tokio::test(flavor = "multi_thread")]
async fn label_selectors_agree_with_run_and_the_api_server() {
    if !helm_available() {
        return;
    }
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(SCHEMA).unwrap()).unwrap();
    let operator = &schema["properties"]["operator"]["properties"];
    for value in ["selector", "defaultCredentialsNamespaceSelector"] {
        assert_eq!(
            operator[value]["pattern"].as_str(),
            Some(groupban_operator::label_selector::schema_pattern().as_str()),
            "{value}: the schema holds the parser's grammar"
        );
    }
    let texts = [
        "shard=a",
        "shard==a,tier!=canary",
        "env in (prod, staging)",
        "env notin (dev)",
        "count>3",
        "!legacy",
        "groupban.dev/shared-credentials=true",
        "shard=a,",
        "env in ()",
        "shard=a b",
        "x=-a",
        "Bad.Prefix/x=1",
    ];
    let plane = tokio::task::spawn_blocking(support::control_plane::shared).await.unwrap();
    for text in texts {
        // --set splits on commas unless they are escaped.
        let helm = rendered_args(&[format!("operator.selector={}", text.replace(',', "\\,"))]);
        let mut args = rendered_args(&[]).unwrap();
        args.push(format!("--selector={text}"));
        let run = run_accepts(&args);
        assert_eq!(helm.is_ok(), run.is_ok(), "{text:?}: helm {helm:?}, run {run:?}");
        if let (Ok(_), Some(plane)) = (&run, plane) {
            let listed = plane.kubectl_status(&["get", "namespaces", "-l", text, "-o", "name"]);
            assert!(listed.is_ok(), "{text:?}: the API server refuses what the chart and run accept: {listed:?}");
        }
    }
    let refused = rendered_args(&[
        "operator.defaultCredentialsSecret=im/shared".into(),
        "operator.defaultCredentialsNamespaceSelector=tier in ()".into(),
    ]);
    assert!(refused.is_err_and(|e| e.contains("defaultCredentialsNamespaceSelector")));
}
