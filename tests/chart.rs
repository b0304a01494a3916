//! The Helm chart: Helm lints and renders it with the default values and
//! with every option on (charts/groupban-operator/ci/namespaced-values.yaml);
//! what it renders validates strictly against the Kubernetes schemas, holds
//! the CRD exactly as crds/ has it, and asks for no more than the operator
//! uses. The examples validate against the CRD's schema. Helm and Python
//! checks skip (with a notice) when the tools are missing, except under
//! GROUPBAN_REQUIRE_HELM / GROUPBAN_REQUIRE_PYTHON_TESTS (set by CI).

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/groupban-operator");
const NON_DEFAULT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/groupban-operator/ci/namespaced-values.yaml");

fn helm() -> Option<Command> {
    support::tool_available("helm", "version", "GROUPBAN_REQUIRE_HELM", ".ci/run installs a pinned one")
        .then(|| Command::new("helm"))
}

fn run(mut command: Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The rendered manifests, and the documents in them.
fn render(values: Option<&str>) -> Option<(String, Vec<Value>)> {
    let mut helm = helm()?;
    helm.args(["template", "release", CHART, "--namespace", "ops"]);
    if let Some(values) = values {
        helm.args(["--values", values]);
    }
    let text = run(helm);
    let documents = yaml_serde::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|d: &Value| !d.is_null())
        .collect();
    Some((text, documents))
}

fn kinds(documents: &[Value]) -> Vec<&str> {
    documents.iter().map(|d| d["kind"].as_str().unwrap()).collect()
}

fn find<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn helm_lints_the_chart_strictly_with_both_value_sets() {
    for values in [None, Some(NON_DEFAULT)] {
        let Some(mut helm) = helm() else { return };
        helm.args(["lint", "--strict", CHART]);
        if let Some(values) = values {
            helm.args(["--values", values]);
        }
        run(helm);
    }
}

#[test]
fn default_values_install_the_crd_a_cluster_role_and_a_locked_down_pod() {
    let Some((text, documents)) = render(None) else { return };
    assert_eq!(
        kinds(&documents),
        [
            "ServiceAccount",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment"
        ]
    );
    // The CRD exactly as crds/ holds it, keep annotation included.
    let crd = std::fs::read_to_string(Path::new(ROOT).join("crds/groupbanpolicies.yaml")).unwrap();
    assert!(text.contains(&crd), "the rendered CRD differs from crds/groupbanpolicies.yaml");
    assert!(crd.contains("helm.sh/resource-policy: keep"));

    let rules = &find(&documents, "ClusterRole")["rules"];
    let verbs = |resource: &str| -> Vec<&str> {
        let rule = rules.as_array().unwrap().iter().find(|r| r["resources"][0] == resource).unwrap();
        rule["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect()
    };
    assert_eq!(verbs("groupbanpolicies"), ["get", "list", "watch"]);
    assert_eq!(verbs("groupbanpolicies/status"), ["get", "patch"]);
    assert_eq!(verbs("secrets"), ["get", "list", "watch"]);
    assert_eq!(verbs("events"), ["create", "patch"]);
    assert_eq!(rules.as_array().unwrap().len(), 4, "nothing else: {rules}");
    let lease_role = find(&documents, "Role");
    assert_eq!(lease_role["metadata"]["namespace"], "ops");
    assert_eq!(lease_role["rules"][0]["resources"][0], "leases");

    let pod = &find(&documents, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(find(&documents, "ServiceAccount")["automountServiceAccountToken"], false);
    let env: Vec<&str> = container["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"), "{env:?}");
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.contains(&"--leader-elect") && args.contains(&"--metrics-bind-address=:8080"), "{args:?}");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
}

#[test]
fn one_watched_namespace_gets_roles_and_every_option_renders() {
    let Some((_, documents)) = render(Some(NON_DEFAULT)) else { return };
    let kinds = kinds(&documents);
    // The one cluster-wide grant: reading namespace labels for
    // defaultCredentialsNamespaceSelector (namespaces are cluster-scoped).
    let cluster_roles: Vec<&Value> = documents.iter().filter(|d| d["kind"] == "ClusterRole").collect();
    assert_eq!(cluster_roles.len(), 1, "{kinds:?}");
    assert_eq!(cluster_roles[0]["metadata"]["name"], "release-groupban-operator-ops-namespaces");
    assert_eq!(
        cluster_roles[0]["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}])
    );
    assert!(!kinds.contains(&"CustomResourceDefinition"), "crds.install=false");
    for kind in ["PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }
    let roles: Vec<&Value> = documents.iter().filter(|d| d["kind"] == "Role").collect();
    let namespaces: Vec<&str> = roles.iter().map(|r| r["metadata"]["namespace"].as_str().unwrap()).collect();
    assert_eq!(namespaces, ["team-a", "ops", "im-system"], "watched, own (Lease), default Secret's");
    assert_eq!(roles[2]["rules"][0]["resourceNames"][0], "groupban-credentials");
    let deployment = find(&documents, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    for expected in [
        "--namespace=team-a",
        "--selector=shard=a",
        "--max-calls-per-second=150",
        "--default-credentials-namespace-selector=groupban.dev/shared-credentials=true",
    ] {
        assert!(args.contains(expected), "{expected}: {args}");
    }
    // A private CA: the ConfigMap mounted where SSL_CERT_DIR points (the
    // image's SSL_CERT_FILE keeps the public roots); tests/image.rs proves
    // the image trusts a CA handed over this way.
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env = container["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "SSL_CERT_DIR" && e["value"] == "/etc/groupban/ca"), "{env:?}");
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/etc/groupban/ca");
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "corp-root-ca");
    // Egress to the API server is to the endpoint behind the kubernetes
    // Service: 6443 on kubeadm and kind, 443 on most managed clusters.
    let egress = &find(&documents, "NetworkPolicy")["spec"]["egress"][1]["ports"];
    let ports: Vec<u64> = egress.as_array().unwrap().iter().map(|p| p["port"].as_u64().unwrap()).collect();
    assert_eq!(ports, [443, 6443], "the API server's ports and the IM gateway's 443, once each");
    let alerts = find(&documents, "PrometheusRule")["spec"]["groups"][0]["rules"].to_string();
    for alert in ["GroupBanPolicyStalled", "GroupBanRateLimited", "GroupBanNoLeader", "GroupBanOperatorRestarting"] {
        assert!(alerts.contains(alert), "{alert}");
    }
}

#[test]
fn rendered_manifests_validate_strictly_against_the_kubernetes_schemas() {
    if !support::python_modules_available("rendered_manifests_validate", "kubernetes_validate") {
        return;
    }
    for values in [None, Some(NON_DEFAULT)] {
        let Some((text, _)) = render(values) else { return };
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        let output = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "--quiet", "-k", "1.37.0"])
            .arg(file.path())
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success() && !report.contains("ERROR"), "{values:?}: {report}");
    }
}

#[test]
fn the_examples_validate_against_the_crd_schema_and_load() {
    let kubectl = Path::new(ROOT).join("examples/kubectl");
    let manifests = groupban_operator::oneshot::manifests::load(std::slice::from_ref(&kubectl)).unwrap();
    assert_eq!((manifests.policies.len(), manifests.secrets.len()), (3, 1));
    if !support::python_modules_available("the_examples_validate", "jsonschema, yaml") {
        return;
    }
    let mut files: Vec<_> = std::fs::read_dir(&kubectl).unwrap().map(|e| e.unwrap().path()).collect();
    files.push(Path::new(ROOT).join("examples/policies.yaml"));
    let output = Command::new("python3")
        .arg(Path::new(ROOT).join("tests/python/validate_examples.py"))
        .arg(Path::new(ROOT).join("crds/groupbanpolicies.yaml"))
        .args(&files)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("report: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(report["invalid"], serde_json::json!([]), "{report}");
    assert_eq!(report["valid"].as_array().unwrap().len(), 6, "{report}");
}

/// Combinations that would be unsafe are refused at render time, naming
/// the value to set.
#[test]
fn unsafe_value_combinations_are_refused() {
    for (sets, expected) in [
        (&["replicaCount=3", "operator.leaderElection.enabled=false"][..], "needs operator.leaderElection.enabled"),
        (&["serviceAccount.create=false"][..], "serviceAccount.name is required"),
        (&["operator.maxCallsPerSecond=0"][..], "maxCallsPerSecond"),
        (
            &["metrics.prometheusRule.enabled=true", "metrics.prometheusRule.runbookBaseUrl=https://x/README.md"][..],
            "needs metrics.serviceMonitor.enabled",
        ),
        (
            &["metrics.prometheusRule.enabled=true", "metrics.serviceMonitor.enabled=true"][..],
            "metrics.prometheusRule.runbookBaseUrl",
        ),
    ] {
        let Some(mut helm) = helm() else { return };
        helm.args(["template", "release", CHART]);
        for set in sets {
            helm.args(["--set", set]);
        }
        let output = helm.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(expected), "{sets:?}: {stderr}");
    }
}

/// `run` elects a leader unless told not to: the chart with leader
/// election off must say `--leader-elect=false`, not merely omit the flag.
#[test]
fn leader_election_off_in_the_chart_turns_it_off_in_run() {
    let Some(mut helm) = helm() else { return };
    helm.args(["template", "release", CHART, "--set", "operator.leaderElection.enabled=false"]);
    let text = run(helm);
    assert!(text.contains("- --leader-elect=false"), "{text}");
    assert!(!text.contains("- --leader-elect\n"), "{text}");
}

/// Two releases in one namespace: each PrometheusRule has its own name and
/// group, every expression selects only its own release's series, every
/// alert carries its release, and every runbook_url points at a section of
/// the README that exists.
#[test]
fn alerts_of_two_releases_stay_apart_and_link_their_runbooks() {
    let headings: Vec<String> = std::fs::read_to_string(Path::new(ROOT).join("README.md"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            // GitHub's anchors: lower case, spaces to dashes, other punctuation dropped.
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let mut seen_names = Vec::new();
    for (release, other) in [("one", "two"), ("two", "one")] {
        let Some(mut helm) = helm() else { return };
        helm.args(["template", release, CHART, "--namespace", "ops", "--set", "metrics.prometheusRule.enabled=true"]);
        helm.args(["--set", "metrics.serviceMonitor.enabled=true"]);
        helm.args([
            "--set",
            "metrics.prometheusRule.runbookBaseUrl=https://git.example.com/groupban-operator/README.md",
        ]);
        let text = run(helm);
        let documents: Vec<Value> = yaml_serde::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|d: &Value| !d.is_null())
            .collect();
        let rule = find(&documents, "PrometheusRule");
        let group = &rule["spec"]["groups"][0];
        seen_names.push((
            rule["metadata"]["name"].as_str().unwrap().to_string(),
            group["name"].as_str().unwrap().to_string(),
        ));
        let alerts = group["rules"].as_array().unwrap();
        let names: Vec<&str> = alerts.iter().map(|a| a["alert"].as_str().unwrap()).collect();
        for wanted in
            ["GroupBanOperatorDown", "GroupBanOperatorNotReady", "GroupBanOperatorRestarting", "GroupBanNoLeader"]
        {
            assert!(names.contains(&wanted), "{wanted}: {names:?}");
        }
        for alert in alerts {
            let expr = alert["expr"].as_str().unwrap();
            assert!(expr.contains(&format!("{release}-groupban-operator")), "{release}: {expr}");
            assert!(
                !expr.contains(&format!("{other}-groupban-operator")),
                "{release} selects {other}'s series: {expr}"
            );
            assert_eq!(alert["labels"]["release"], release);
            let url = alert["annotations"]["runbook_url"].as_str().unwrap();
            let anchor = url.split_once('#').map(|(_, a)| a).unwrap_or_default();
            assert!(headings.iter().any(|h| h == anchor), "{url}: no README section {anchor:?}");
        }
    }
    assert_ne!(seen_names[0], seen_names[1]);
    assert_ne!(seen_names[0].1, seen_names[1].1, "rule group names differ");
}
