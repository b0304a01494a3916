//! The README's "Chart values" table is generated from the `# --`
//! comments in charts/groupban-operator/values.yaml (the helm-docs
//! convention external-secrets uses): this test fails when the two drift
//! apart. `GROUPBAN_WRITE_VALUES_TABLE=1 cargo test --test values_table`
//! rewrites the table between its markers.

use std::path::Path;

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const START: &str = "<!-- values-table:start (generated from values.yaml; see tests/values_table.rs) -->";
const END: &str = "<!-- values-table:end -->";

/// One documented key: its dotted path and its description.
fn documented_keys(values_yaml: &str) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    // The key path by indentation: (indent, key) of each open map.
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut comment: Option<Vec<String>> = None;
    for line in values_yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if let Some(rest) = text.strip_prefix("# --") {
            comment = Some(vec![rest.trim().to_string()]);
            continue;
        }
        if let Some(rest) = text.strip_prefix('#') {
            if let Some(lines) = comment.as_mut() {
                lines.push(rest.trim().to_string());
            }
            continue;
        }
        if text.is_empty() {
            comment = None;
            continue;
        }
        let Some((key, _)) = text.split_once(':') else { continue };
        while path.last().is_some_and(|(open, _)| *open >= indent) {
            path.pop();
        }
        path.push((indent, key.trim().to_string()));
        if let Some(lines) = comment.take() {
            let dotted: Vec<&str> = path.iter().map(|(_, k)| k.as_str()).collect();
            rows.push((dotted.join("."), lines.join(" ")));
        }
    }
    rows
}

/// A default as the table shows it: compact JSON, strings quoted.
fn shown_default(values: &Value, dotted: &str) -> String {
    let mut value = values;
    for key in dotted.split('.') {
        value = &value[key];
    }
    let text = serde_json::to_string(value).unwrap();
    format!("`{}`", text.replace('|', "\\|"))
}

fn table(values_yaml: &str) -> String {
    let values: Value = yaml_serde::from_str(values_yaml).unwrap();
    let mut text = String::from("| value | default | meaning |\n|---|---|---|\n");
    for (key, description) in documented_keys(values_yaml) {
        let default = shown_default(&values, &key);
        text.push_str(&format!("| `{key}` | {default} | {} |\n", description.replace('|', "\\|")));
    }
    text
}

#[test]
fn the_readme_values_table_is_generated_from_values_yaml() {
    let values_yaml = std::fs::read_to_string(Path::new(ROOT).join("charts/groupban-operator/values.yaml")).unwrap();
    let readme_path = Path::new(ROOT).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let (Some(start), Some(end)) = (readme.find(START), readme.find(END)) else {
        panic!("README.md lacks the markers {START} ... {END}");
    };
    let generated = format!("{START}\n{}{END}", table(&values_yaml));
    let current = &readme[start..end + END.len()];
    if current == generated {
        return;
    }
    if std::env::var_os("GROUPBAN_WRITE_VALUES_TABLE").is_some() {
        let rewritten = format!("{}{generated}{}", &readme[..start], &readme[end + END.len()..]);
        std::fs::write(&readme_path, rewritten).unwrap();
        return;
    }
    panic!("the README's values table is stale: GROUPBAN_WRITE_VALUES_TABLE=1 cargo test --test values_table");
}

/// Every leaf value a user can set is documented (a `# --` on it or on a
/// map above it), so a new value cannot ship without a row.
#[test]
fn every_value_is_documented() {
    let values_yaml = std::fs::read_to_string(Path::new(ROOT).join("charts/groupban-operator/values.yaml")).unwrap();
    let values: Value = yaml_serde::from_str(&values_yaml).unwrap();
    let documented: Vec<String> = documented_keys(&values_yaml).into_iter().map(|(key, _)| key).collect();
    fn leaves(value: &Value, prefix: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    leaves(child, &path, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let mut all = Vec::new();
    leaves(&values, "", &mut all);
    let undocumented: Vec<&String> = all
        .iter()
        .filter(|leaf| !documented.iter().any(|d| *leaf == d || leaf.starts_with(&format!("{d}."))))
        .collect();
    assert!(undocumented.is_empty(), "values without a `# --` comment: {undocumented:?}");
}

#[test]
fn the_generator_reads_paths_comments_and_defaults() {
    let yaml = "# not documented\na:\n  # -- first\n  # line two\n  b: 1\n  c: x\n# -- top\nd: [1]\n";
    assert_eq!(
        documented_keys(yaml),
        [("a.b".to_string(), "first line two".to_string()), ("d".to_string(), "top".to_string())]
    );
    assert!(table(yaml).contains("| `a.b` | `1` | first line two |"));
}
