//! Files in the repository that are generated or shipped must match the code.

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `crds/groupbanpolicies.yaml` is exactly what `groupban-operator crd`
/// prints; users and Helm install that file, so drift would ship a schema
/// the operator does not implement.
#[test]
fn crds_file_is_exactly_the_crd_command_output() {
    let committed =
        std::fs::read_to_string(Path::new(ROOT).join("crds/groupbanpolicies.yaml")).unwrap();
    assert!(
        committed == groupban_operator::crd_yaml(),
        "crds/groupbanpolicies.yaml is stale: run `cargo run -- crd > crds/groupbanpolicies.yaml`"
    );
}

/// The examples users copy must load as the operator reads them.
#[test]
fn shipped_examples_load_and_validate() {
    let manifests =
        groupban_operator::manifests::load(&[Path::new(ROOT).join("examples")]).unwrap();
    assert_eq!(manifests.policies.len(), 3);
    assert_eq!(manifests.secrets.len(), 1);
}
