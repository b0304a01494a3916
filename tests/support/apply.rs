//! Helpers for tests that run `groupban-operator apply` as a process:
//! manifests written to a folder, the run, and what its output says.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use serde_json::Value;
use tokio::process::Command;

use super::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_groupban-operator");

pub fn secret_yaml(endpoint: &str, identifier: &str, key: &str, sdkappid: u64) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: groupban-credentials}}\nstringData:\n  sdkAppId: \"{sdkappid}\"\n  identifier: {identifier}\n  secretKey: {key}\n  endpoint: {endpoint}\n"
    )
}

pub fn policy_yaml(name: &str, group: &str, members: &[String]) -> String {
    let list = members.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "apiVersion: groupban.dev/v1alpha1\nkind: GroupBanPolicy\nmetadata: {{name: {name}}}\nspec:\n  groupId: \"{group}\"\n  unbannedMembers: [{list}]\n"
    )
}

/// Writes the documents into one file in a fresh folder.
pub fn manifests_dir(documents: &[String]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifests.yaml"), documents.join("---\n")).unwrap();
    dir
}

pub async fn run_apply(dir: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["apply", "-f"])
        .arg(dir)
        .args(["-o", "json"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run apply")
}

pub fn items(output: &Output) -> Vec<Value> {
    let list: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is a JSON List ({e}); stderr: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(list["kind"], "List");
    list["items"].as_array().unwrap().clone()
}

pub fn condition<'a>(item: &'a Value, kind: &str) -> (&'a str, &'a str, &'a str) {
    let c = item["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == kind).unwrap();
    (c["status"].as_str().unwrap(), c["reason"].as_str().unwrap(), c["message"].as_str().unwrap())
}

pub fn strings(value: &Value) -> BTreeSet<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
}

/// Members of `group` that the simulator answered 0 for, i.e. really unbanned.
pub async fn really_unbanned(sim_url: &str, group: &str) -> BTreeSet<String> {
    let log = get_json(sim_url, "/simulator/requests").await;
    log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["groupId"] == group && r["errorCode"] == 0 && r["command"] == "unban_group_member")
        .flat_map(|r| strings(&r["members"]))
        .collect()
}

pub fn seed_with_bans(groups: &[(&str, &str, usize)]) -> String {
    let entries: Vec<String> = groups
        .iter()
        .map(|(id, kind, n)| {
            let banned = members("m", *n).join(", ");
            format!("{{groupId: \"{id}\", type: {kind}, banned: [{banned}]}}")
        })
        .collect();
    format!("groups: [{}]", entries.join(", "))
}
