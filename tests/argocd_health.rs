//! The Argo CD health check (gitops/argocd/health.lua) run by a real Lua 5.4
//! interpreter over the fixtures in gitops/argocd/health_test.yaml, the way
//! Argo CD runs it: the object in the global `obj`, the returned table's
//! `status` and `message` as the health. Skipped (with a notice) without
//! `lua5.4`, except under GROUPBAN_REQUIRE_LUA (set by CI).

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/gitops/argocd");

fn lua() -> Option<Command> {
    support::tool_available("lua5.4", "-v", "GROUPBAN_REQUIRE_LUA", "apt-get install lua5.4")
        .then(|| Command::new("lua5.4"))
}

/// A Lua table literal for a JSON value.
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => {
            let fields: Vec<String> = map.iter().map(|(k, v)| format!("[{k:?}] = {}", lua_literal(v))).collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

fn yaml(path: &Path) -> Value {
    yaml_serde::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_fixture_gets_its_health() {
    let Some(_) = lua() else { return };
    let script = std::fs::read_to_string(Path::new(DIR).join("health.lua")).unwrap();
    let cases = yaml(&Path::new(DIR).join("health_test.yaml"));
    let cases = cases["tests"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let input = case["inputPath"].as_str().unwrap();
        let object = yaml(&Path::new(DIR).join(input));
        let program = format!(
            "obj = {}\nlocal hs = (function()\n{script}\nend)()\nio.write(hs.status, \"\\n\", hs.message or \"\")",
            lua_literal(&object)
        );
        let output = lua().unwrap().args(["-e", &program]).output().unwrap();
        assert!(output.status.success(), "{input}: {}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8(output.stdout).unwrap();
        let (status, message) = text.split_once('\n').unwrap();
        assert_eq!(status, case["healthStatus"]["status"].as_str().unwrap(), "{input}");
        assert_eq!(message, case["healthStatus"]["message"].as_str().unwrap(), "{input}");
    }
}

/// The ConfigMap patch users apply carries exactly the tested script.
#[test]
fn the_argocd_cm_patch_embeds_the_tested_script() {
    let patch = yaml(&Path::new(DIR).join("argocd-cm-patch.yaml"));
    let embedded = patch["data"]["resource.customizations.health.groupban.dev_GroupBanPolicy"].as_str().unwrap();
    let script = std::fs::read_to_string(Path::new(DIR).join("health.lua")).unwrap();
    assert_eq!(embedded, script, "regenerate: see gitops/argocd/README.md");
}
