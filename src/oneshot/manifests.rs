//! Reading `GroupBanPolicy` and `Secret` manifests from the files a user
//! would `kubectl apply`: files or folders of multi-document YAML (or
//! JSON), `List` documents, `-` for stdin. Namespace `default` when absent.
//!
//! Every error names the file, the document and the field. Other kinds are
//! skipped with a warning, as a folder of manifests usually holds more.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use serde_json::Value;
use tracing::warn;

use crate::crd::{GroupBanPolicy, validate_spec};

pub const DEFAULT_NAMESPACE: &str = "default";
const POLICY_API_VERSION: &str = "groupban.dev/v1alpha1";
const SPEC_FIELDS: &[&str] = &["groupId", "unbannedMembers", "credentialsSecretRef", "suspend", "driftCheckInterval"];

/// A policy and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    pub policy: GroupBanPolicy,
    pub namespace: String,
    pub name: String,
    /// "file F, document N", for messages.
    pub source: String,
}

impl LoadedPolicy {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Default)]
pub struct Manifests {
    pub policies: Vec<LoadedPolicy>,
    /// Keyed by (namespace, name).
    pub secrets: HashMap<(String, String), Secret>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

/// Loads every manifest under `paths`.
pub fn load(paths: &[PathBuf]) -> Result<Manifests, ManifestError> {
    let mut manifests = Manifests::default();
    let mut origins: BTreeMap<String, String> = BTreeMap::new();
    for path in paths {
        for file in expand(path)? {
            let text = read(&file)?;
            load_text(&text, &file.display().to_string(), &mut manifests, &mut origins)?;
        }
    }
    Ok(manifests)
}

/// Loads the documents of one text (exposed for the demo's embedded files).
pub fn load_text(
    text: &str,
    file: &str,
    manifests: &mut Manifests,
    origins: &mut BTreeMap<String, String>,
) -> Result<(), ManifestError> {
    for (index, document) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let at = format!("file {file}, document {}", index + 1);
        let value = Value::deserialize(document).map_err(|e| ManifestError(format!("{at}: invalid YAML: {e}")))?;
        add_document(value, &at, manifests, origins)?;
    }
    Ok(())
}

fn expand(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    if path == Path::new("-") {
        return Ok(vec![path.to_path_buf()]);
    }
    let metadata =
        std::fs::metadata(path).map_err(|e| ManifestError(format!("cannot read {}: {e}", path.display())))?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| ManifestError(format!("cannot list {}: {e}", path.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| {
            let extension = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
            p.is_file() && matches!(extension.as_deref(), Some("yaml" | "yml" | "json"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read(file: &Path) -> Result<String, ManifestError> {
    if file == Path::new("-") {
        return std::io::read_to_string(std::io::stdin()).map_err(|e| ManifestError(format!("cannot read stdin: {e}")));
    }
    std::fs::read_to_string(file).map_err(|e| ManifestError(format!("cannot read {}: {e}", file.display())))
}

fn add_document(
    value: Value,
    at: &str,
    manifests: &mut Manifests,
    origins: &mut BTreeMap<String, String>,
) -> Result<(), ManifestError> {
    if value.is_null() {
        return Ok(()); // an empty document, e.g. after a trailing `---`
    }
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
    match (kind.as_str(), api_version.as_str()) {
        ("", _) => Err(ManifestError(format!("{at}: the document has no kind"))),
        ("List", "v1") => {
            let items = value.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
            for (i, item) in items.into_iter().enumerate() {
                add_document(item, &format!("{at}, items[{i}]"), manifests, origins)?;
            }
            Ok(())
        }
        ("GroupBanPolicy", POLICY_API_VERSION) => {
            let loaded = parse_policy(value, at)?;
            if let Some(first) = origins.insert(loaded.key(), at.to_string()) {
                return Err(ManifestError(format!("{at}: GroupBanPolicy {} is also defined in {first}", loaded.key())));
            }
            manifests.policies.push(loaded);
            Ok(())
        }
        ("GroupBanPolicy", other) => {
            Err(ManifestError(format!("{at}: apiVersion {other:?} is not served; use {POLICY_API_VERSION}")))
        }
        ("Secret", "v1") => {
            let secret: Secret = typed(value, at, "Secret")?;
            let name = secret
                .metadata
                .name
                .clone()
                .ok_or_else(|| ManifestError(format!("{at}: Secret has no metadata.name")))?;
            let namespace = secret.metadata.namespace.clone().unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
            manifests.secrets.insert((namespace, name), secret);
            Ok(())
        }
        (kind, _) => {
            warn!(kind, source = %at, "Skipping a manifest that is neither a GroupBanPolicy nor a Secret");
            Ok(())
        }
    }
}

fn parse_policy(value: Value, at: &str) -> Result<LoadedPolicy, ManifestError> {
    // Unknown spec fields are an error, as kubectl's strict validation makes
    // them: a misspelt `suspend` must not silently keep calls going.
    if let Some(spec) = value.get("spec").and_then(Value::as_object)
        && let Some(unknown) = spec.keys().find(|k| !SPEC_FIELDS.contains(&k.as_str()))
    {
        return Err(ManifestError(format!("{at}: unknown field spec.{unknown} (known: {})", SPEC_FIELDS.join(", "))));
    }
    let policy: GroupBanPolicy = typed(value, at, "GroupBanPolicy")?;
    let name = policy
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ManifestError(format!("{at}: GroupBanPolicy has no metadata.name")))?;
    let namespace = policy.metadata.namespace.clone().unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let at = format!("{at} (GroupBanPolicy {namespace}/{name})");
    validate_spec(&policy.spec).map_err(|problem| ManifestError(format!("{at}: {problem}")))?;
    Ok(LoadedPolicy { policy, namespace, name, source: at })
}

/// Deserializes with the path of the failing field in the message.
fn typed<T: serde::de::DeserializeOwned>(value: Value, at: &str, kind: &str) -> Result<T, ManifestError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ManifestError(format!("{at}: {kind} field {path}: {}", e.into_inner()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Manifests, String> {
        let mut manifests = Manifests::default();
        load_text(text, "f.yaml", &mut manifests, &mut BTreeMap::new()).map_err(|e| e.0)?;
        Ok(manifests)
    }

    const POLICY: &str = "apiVersion: groupban.dev/v1alpha1\nkind: GroupBanPolicy\nmetadata: {name: p}\nspec: {groupId: g, unbannedMembers: [a, b]}\n";

    #[test]
    fn policies_and_secrets_load_with_the_default_namespace() {
        let text = format!(
            "{POLICY}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s, namespace: team}}\nstringData: {{sdkAppId: '1'}}\n---\n"
        );
        let manifests = load_str(&text).unwrap();
        assert_eq!(manifests.policies[0].key(), "default/p");
        assert!(manifests.secrets.contains_key(&("team".into(), "s".into())));
    }

    #[test]
    fn errors_name_file_document_and_field() {
        let bad_type = load_str(&POLICY.replace("unbannedMembers: [a, b]", "unbannedMembers: 7")).unwrap_err();
        assert!(
            bad_type.contains("file f.yaml, document 1") && bad_type.contains("spec.unbannedMembers"),
            "{bad_type}"
        );
        let duplicate = load_str(&POLICY.replace("[a, b]", "[a, a]")).unwrap_err();
        assert!(duplicate.contains("default/p") && duplicate.contains("spec.unbannedMembers[1]"), "{duplicate}");
        let typo = load_str(&POLICY.replace("groupId: g", "groupId: g, suspended: true")).unwrap_err();
        assert!(typo.contains("spec.suspended"), "{typo}");
        let second = load_str(&format!("{POLICY}---\n{}", POLICY.replace("groupId: g", "groupId: [x]"))).unwrap_err();
        assert!(second.contains("document 2") && second.contains("spec.groupId"), "{second}");
        let version = load_str(&POLICY.replace("v1alpha1", "v1")).unwrap_err();
        assert!(version.contains("not served"), "{version}");
        let syntax = load_str("kind: [").unwrap_err();
        assert!(syntax.contains("invalid YAML"), "{syntax}");
        let twice = load_str(&format!("{POLICY}---\n{POLICY}")).unwrap_err();
        assert!(twice.contains("also defined"), "{twice}");
    }

    #[test]
    fn lists_are_expanded_and_other_kinds_skipped() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: groupban.dev/v1alpha1, kind: GroupBanPolicy, metadata: {name: p}, spec: {groupId: g, unbannedMembers: []}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n";
        assert_eq!(load_str(text).unwrap().policies.len(), 1);
    }
}
