//! The Helm chart: Helm itself accepts and renders it (its CRD copy is
//! checked in tests/generated_files.rs). The Helm checks are skipped (with a notice) when
//! no `helm` is on PATH, except under GROUPBAN_REQUIRE_HELM (set by CI,
//! which installs a pinned Helm; see .ci/run).

use std::process::Command;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/groupban-operator");

fn helm() -> Option<Command> {
    if Command::new("helm").arg("version").output().is_ok_and(|o| o.status.success()) {
        return Some(Command::new("helm"));
    }
    assert!(std::env::var_os("GROUPBAN_REQUIRE_HELM").is_none(), "GROUPBAN_REQUIRE_HELM is set but no helm is on PATH");
    eprintln!("SKIPPED: no helm on PATH (.ci/run installs a pinned one)");
    None
}

#[test]
fn helm_lints_the_chart_strictly() {
    let Some(mut helm) = helm() else { return };
    let output = helm.args(["lint", "--strict", CHART]).output().unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn helm_renders_the_crd_and_the_notes() {
    let Some(mut helm) = helm() else { return };
    let output = helm.args(["template", "release", CHART, "--include-crds"]).output().unwrap();
    let rendered = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(rendered.contains("name: groupbanpolicies.groupban.dev"), "{rendered}");
}
