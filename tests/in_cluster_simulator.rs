//! `examples/in-cluster-simulator/simulator.yaml`, the README's way to try
//! the operator in a cluster without a Tencent account: the API server
//! accepts every object in it (server-side dry run, real control plane);
//! the simulator started with the Deployment's exact arguments, seed and
//! key serves the operator, which makes the file's policy Ready with the
//! file's Secret (only the Service's address swapped for the loopback one).

mod support;

use std::time::Duration;

use groupban_operator::crd::GroupBanPolicy;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use support::cluster::{BIN, Cluster, Operator, is_ready};
use support::*;
use tokio::io::AsyncBufReadExt;

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/in-cluster-simulator/simulator.yaml");

fn documents() -> Vec<Value> {
    let text = std::fs::read_to_string(FILE).unwrap();
    yaml_serde::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|d: &Value| !d.is_null())
        .collect()
}

fn find<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_in_cluster_simulator_example_serves_its_policy() {
    let documents = documents();
    let secret = find(&documents, "Secret")["stringData"].clone();
    let seed = find(&documents, "ConfigMap")["data"]["seed.yaml"].as_str().unwrap().to_string();
    let container = &find(&documents, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let key_env = &container["env"][0];
    assert_eq!(key_env["name"], "GROUPBAN_SECRET_KEY");
    assert_eq!(
        key_env["valueFrom"]["secretKeyRef"]["key"], "secretKey",
        "the simulator checks the key the operator signs with"
    );
    assert_eq!(
        secret["endpoint"], "http://groupban-simulator.groupban-demo.svc:8080",
        "the Service's address and port"
    );

    // The simulator as the Deployment runs it; only where it listens and
    // where the seed file is differ.
    let dir = tempfile::tempdir().unwrap();
    let seed_path = dir.path().join("seed.yaml");
    std::fs::write(&seed_path, &seed).unwrap();
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .map(|a| match a.split_once('=') {
            Some(("--listen", _)) => "--listen=127.0.0.1:0".to_string(),
            Some(("--seed-file", _)) => format!("--seed-file={}", seed_path.display()),
            _ => a,
        })
        .collect();
    let mut simulator = tokio::process::Command::new(BIN)
        .args(&args)
        .env("GROUPBAN_SECRET_KEY", secret["secretKey"].as_str().unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut stdout = tokio::io::BufReader::new(simulator.stdout.take().unwrap());
    tokio::time::timeout(Duration::from_secs(20), stdout.read_line(&mut first)).await.unwrap().unwrap();
    let url = first.trim().strip_prefix("listening on ").expect("the simulator's first line").to_string();

    let cluster = Cluster::start().await;
    if let Some(plane) = cluster.plane {
        // Every object as written (its own namespace), accepted by the API server.
        let _ = plane.kubectl_status(&["create", "namespace", "groupban-demo"]);
        let dry_run = plane.kubectl_status(&["apply", "--dry-run=server", "-f", FILE]);
        assert!(dry_run.is_ok(), "{dry_run:?}");
    }
    // The file's Secret and policy, in the test's namespace, pointed at the
    // loopback simulator.
    let mut string_data = secret.clone();
    string_data["endpoint"] = json!(url);
    let credentials = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "groupban-credentials"}, "stringData": string_data});
    cluster
        .secrets()
        .patch("groupban-credentials", &PatchParams::apply("e2e-test").force(), &Patch::Apply(credentials))
        .await
        .unwrap();
    let policy = find(&documents, "GroupBanPolicy");
    cluster.apply_policy("demo-room", policy["spec"].clone()).await;
    let _operator = Operator::start(&cluster, &[]);
    let ready: GroupBanPolicy = cluster.wait_for("demo-room", Duration::from_secs(30), is_ready).await;
    assert_eq!(ready.status.unwrap().unbanned_members, ["alice", "bob"]);
    let state = get_json(&url, "/simulator/state").await;
    let banned = &state["groups"][0]["banned"];
    assert_eq!(banned.as_array().unwrap().len(), 1, "carol stays banned: {state}");
    cluster.cleanup().await;
}
