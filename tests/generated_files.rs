//! Files in the repository that are generated or shipped must match the code.

mod support;

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Both copies of the CRD, `crds/` (for kubectl) and the chart's `files/`
/// (which Helm installs), are exactly what `groupban-operator crd` prints:
/// drift would ship a schema the operator does not implement.
#[test]
fn crd_files_are_exactly_the_crd_command_output() {
    for copy in ["crds/groupbanpolicies.yaml", "charts/groupban-operator/files/groupbanpolicies.yaml"] {
        let committed = std::fs::read_to_string(Path::new(ROOT).join(copy)).unwrap();
        assert!(
            committed == groupban_operator::crd::render_yaml().unwrap(),
            "{copy} is stale: run `cargo run -q -- crd | tee crds/groupbanpolicies.yaml > charts/groupban-operator/files/groupbanpolicies.yaml`"
        );
    }
}

/// The examples users copy must load as the operator reads them.
#[test]
fn shipped_examples_load_and_validate() {
    let manifests = groupban_operator::oneshot::manifests::load(&[Path::new(ROOT).join("examples")]).unwrap();
    assert_eq!(manifests.policies.len(), 3);
    assert_eq!(manifests.secrets.len(), 1);
}

/// The examples, and the status `apply` really writes for them (success,
/// retries, and a Stalled policy), validate against the CRD's own
/// openAPIV3Schema; specs that break its rules are rejected by it. A real
/// API server would refuse or prune anything else.
#[tokio::test(flavor = "multi_thread")]
async fn crd_schema_accepts_what_apply_writes_and_rejects_broken_specs() {
    if !support::python_modules_available("crd_schema_accepts_what_apply_writes", "jsonschema, yaml") {
        return;
    }
    let mut config = support::config(
        "groups: [{groupId: \"@TGS#aDemoStream\", type: AVChatRoom}, {groupId: \"@TGS#aVipLounge\", type: AVChatRoom}]",
    );
    config.sdkappid = 1_400_000_000;
    config.identifier = "administrator".into();
    config.secret_key = groupban_operator::secret::Redacted::new("demo-secret-key-not-for-production".into());
    config.faults.fail_10002 = 0.3;
    let sim = support::start(config).await;

    let mut manifests = groupban_operator::oneshot::manifests::load(&[Path::new(ROOT).join("examples")]).unwrap();
    for secret in manifests.secrets.values_mut() {
        secret.string_data.get_or_insert_with(Default::default).insert("endpoint".into(), sim.base_url());
    }
    let options = groupban_operator::oneshot::apply::ApplyOptions {
        state: None,
        output: groupban_operator::oneshot::apply::OutputFormat::Json,
        max_calls_per_second: 200,
        client: support::quick_settings(),
        stop: None,
    };
    let result = groupban_operator::oneshot::apply::apply_manifests(manifests, &options)
        .await
        .unwrap_or_else(|_| panic!("apply ran"));
    let list = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(list.path(), serde_json::to_vec(&result.list).unwrap()).unwrap();

    let output = std::process::Command::new("python3")
        .arg(Path::new(ROOT).join("tests/python/validate_crd_schema.py"))
        .arg(Path::new(ROOT).join("crds/groupbanpolicies.yaml"))
        .arg(list.path())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("validator report: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(report["unexpected"], serde_json::json!([]), "{report}");
    assert_eq!(report["valid"].as_array().unwrap().len(), 3);
    assert_eq!(report["rejected"].as_array().unwrap().len(), 11);
    assert!(output.status.success());
}
