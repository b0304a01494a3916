//! The chart's Grafana dashboard: off by default; when on, a ConfigMap
//! with the label Grafana's sidecar looks for, holding dashboard JSON whose
//! every query names metrics that a running `run` really exposes.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::{Cluster, Operator, is_ready};
use support::*;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/groupban-operator");

/// The chart rendered with `sets`; None (skipped) without helm.
fn render(sets: &[&str]) -> Option<Vec<Value>> {
    if !tool_available("helm", "version", "GROUPBAN_REQUIRE_HELM", ".ci/run installs a pinned one") {
        return None;
    }
    let mut helm = Command::new("helm");
    helm.args(["template", "release", CHART, "--namespace", "ops"]);
    for set in sets {
        helm.args(["--set", set]);
    }
    let output = helm.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    Some(
        yaml_serde::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|d: &Value| !d.is_null())
            .collect(),
    )
}

fn dashboard_configmap(documents: &[Value]) -> Option<&Value> {
    documents
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "release-groupban-operator-dashboard")
}

/// Every PromQL expression in the dashboard: panel targets and variables.
fn expressions(dashboard: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            found.push(target["expr"].as_str().expect("each target has an expr").to_string());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            found.push(query.to_string());
        }
    }
    found
}

/// The series selectors in PromQL: each metric name directly followed by
/// `{...}` (every query here selects with labels), with the exact-match
/// label pairs in the braces; and the name inside `label_values(NAME, ...)`.
fn selectors(expression: &str) -> Vec<(String, Vec<(String, String)>)> {
    let bytes = expression.as_bytes();
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut found = Vec::new();
    for (at, byte) in bytes.iter().enumerate() {
        let label_values = *byte == b','
            && expression[..at].ends_with(|c: char| is_name(c as u8))
            && expression[..at].contains("label_values(");
        if *byte != b'{' && !label_values {
            continue;
        }
        let start = (0..at).rev().take_while(|&i| is_name(bytes[i])).last().unwrap_or(at);
        let name = &expression[start..at];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let mut matchers = Vec::new();
        if *byte == b'{' {
            let end = expression[at..].find('}').map_or(expression.len(), |e| at + e);
            for pair in expression[at + 1..end].split(',') {
                // Exact matches only: `=~` takes dashboard variables.
                if let Some((label, value)) = pair.split_once('=')
                    && !value.starts_with('~')
                {
                    matchers.push((label.trim().to_string(), value.trim().trim_matches('"').to_string()));
                }
            }
        }
        found.push((name.to_string(), matchers));
    }
    found
}

/// True when the scrape has a sample of `name` carrying every one of
/// `matchers`.
fn exposed(scrape: &str, name: &str, matchers: &[(String, String)]) -> bool {
    scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .any(|line| matchers.iter().all(|(label, value)| line.contains(&format!("{label}=\"{value}\""))))
}

#[test]
fn the_dashboard_is_off_by_default_and_a_sidecar_configmap_when_on() {
    let Some(defaults) = render(&[]) else { return };
    assert!(dashboard_configmap(&defaults).is_none(), "off by default");
    let Some(on) = render(&["grafanaDashboard.enabled=true"]) else { return };
    let configmap = dashboard_configmap(&on).expect("a dashboard ConfigMap");
    assert_eq!(configmap["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(configmap["metadata"]["namespace"], "ops");
    let dashboard: Value =
        serde_json::from_str(configmap["data"]["groupban-operator.json"].as_str().unwrap()).expect("the JSON parses");
    assert_eq!(dashboard["uid"], "groupban-operator");
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let titles: Vec<&str> = panels.iter().map(|p| p["title"].as_str().unwrap()).collect();
    for wanted in ["unban_group_member calls per second by ErrorCode", "Rate-limiter wait", "Members by state"] {
        assert!(titles.contains(&wanted), "{wanted} in {titles:?}");
    }
    for wanted in ["Policies by condition", "Reconciles per second", "Leaders"] {
        assert!(titles.contains(&wanted), "{wanted} in {titles:?}");
    }
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}: the data source variable", panel["title"]);
    }
    let Some(moved) = render(&["grafanaDashboard.enabled=true", "grafanaDashboard.namespace=monitoring"]) else {
        return;
    };
    assert_eq!(dashboard_configmap(&moved).unwrap()["metadata"]["namespace"], "monitoring");
}

/// Each metric a query names is in a scrape of `run` after it reconciled
/// a policy.
#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_queries_is_exposed_by_run() {
    let Some(documents) = render(&["grafanaDashboard.enabled=true"]) else { return };
    let configmap = dashboard_configmap(&documents).expect("a dashboard ConfigMap");
    let dashboard: Value = serde_json::from_str(configmap["data"]["groupban-operator.json"].as_str().unwrap()).unwrap();
    let wanted: BTreeSet<(String, Vec<(String, String)>)> =
        expressions(&dashboard).iter().flat_map(|e| selectors(e)).collect();
    let names: BTreeSet<&String> = wanted.iter().map(|(name, _)| name).collect();
    assert!(names.len() >= 10, "the extraction finds the queries' metrics: {names:?}");

    let sim = start(config(&seed_banned(&[("room", 5)]))).await;
    let cluster = Cluster::start().await;
    cluster.put_secret("groupban-credentials", &sim.base_url(), KEY).await;
    let operator = Operator::start(&cluster, &["--metrics-bind-address", "127.0.0.1:0"]);
    // A drift check too, so the ban-list panel's series has samples.
    let spec = json!({"groupId": "room", "unbannedMembers": members("m", 5), "driftCheckInterval": "1s"});
    cluster.apply_policy("p", spec).await;
    cluster.wait_for("p", Duration::from_secs(30), |p| is_ready(p) && p.status.as_ref().unwrap().drift.is_some()).await;
    let scrape =
        reqwest::get(format!("{}/metrics", operator.metrics_base().await)).await.unwrap().text().await.unwrap();
    let missing: Vec<&(String, Vec<(String, String)>)> =
        wanted.iter().filter(|(name, matchers)| !exposed(&scrape, name, matchers)).collect();
    assert!(missing.is_empty(), "queried but not exposed: {missing:?}\n{scrape}");
    assert!(scrape.contains("groupban_rate_limit_calls_per_second 200"), "{scrape}");
    cluster.cleanup().await;
}

#[test]
fn selectors_are_read_with_their_exact_label_matches() {
    let found =
        selectors(r#"sum by (le) (rate(a_b_bucket{x="1", job=~"$job"}[5m])) / max(c:d{}) + label_values(e_f, job)"#);
    let pairs = |items: &[(&str, &str)]| items.iter().map(|(l, v)| (l.to_string(), v.to_string())).collect::<Vec<_>>();
    assert_eq!(
        found,
        [("a_b_bucket".to_string(), pairs(&[("x", "1")])), ("c:d".into(), vec![]), ("e_f".into(), vec![])]
    );
    let scrape = "# TYPE fam counter\nfam_total{api=\"x\"} 1\n";
    assert!(exposed(scrape, "fam_total", &pairs(&[("api", "x")])));
    assert!(!exposed(scrape, "fam_total", &pairs(&[("api", "y")])), "a label value no sample has");
    assert!(!exposed(scrape, "fam", &[]), "the family name is not a sample name");
    assert!(!exposed("# TYPE fam gauge\n", "fam_total", &[]), "a declared family without samples");
}
