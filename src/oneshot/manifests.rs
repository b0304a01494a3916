//! Reading `GroupBanPolicy` and `Secret` manifests from the files a user
//! would `kubectl apply`: files or folders of multi-document YAML (or
//! JSON), `List` documents, `-` for stdin. Namespace `default` when absent.
//!
//! Every error names the file, the document and the field. Other kinds are
//! skipped with a warning, as a folder of manifests usually holds more.
//!
//! Reading is strict, as kubectl's strict field validation: a key twice in a
//! mapping, a field the GroupBanPolicy schema does not have, or an object
//! declared twice is an error, never a silent guess (see [`strict_yaml`]).
//! Files are read up to [`MAX_MANIFEST_BYTES`], and flow collections nested
//! too deep are refused before parsing, so any input is accepted or refused
//! quickly.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;
use tracing::warn;

use super::strict_yaml::{self, MAX_DEPTH, TooDeep};
use crate::crd::{GroupBanPolicy, SpecError, validate_spec};

pub const DEFAULT_NAMESPACE: &str = "default";
const POLICY_API_VERSION: &str = "groupban.dev/v1alpha1";

/// The largest manifest file (or stdin) read: a policy of 100,000 members
/// is about 2 MiB.
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// The kind of `apply --state` files: one kept in a manifests folder is
/// skipped without a warning.
const STATE_FILE_KIND: &str = "GroupBanPolicyState";

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

/// Why the manifests cannot be loaded; each names the file and document.
/// No message shows a Secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("file {file}, line {line}: collections are nested more than {MAX_DEPTH} levels deep")]
    TooDeep { file: String, line: usize },
    #[error("{at}: invalid YAML: {message}")]
    InvalidYaml { at: String, message: String },
    #[error("{at}: invalid YAML at {path}: {message}")]
    InvalidYamlAt { at: String, path: String, message: String },
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("cannot list {path}: {error}")]
    List { path: String, error: std::io::Error },
    #[error("{name} is larger than {} MiB", MAX_MANIFEST_BYTES >> 20)]
    TooLarge { name: String },
    #[error("{name} is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { name: String, offset: usize },
    #[error("{at}: the document has no kind")]
    NoKind { at: String },
    #[error("{at}: {object} is also defined in {first}")]
    Duplicate { at: String, object: String, first: String },
    #[error("{at}: apiVersion {version:?} is not served; use {POLICY_API_VERSION}")]
    ApiVersion { at: String, version: String },
    #[error("{at}: unknown field {fields}")]
    UnknownFields { at: String, fields: String },
    #[error("{at}: {kind} has no metadata.name")]
    NoName { at: String, kind: &'static str },
    #[error("{at}: {problem}")]
    Spec { at: String, problem: SpecError },
    #[error(
        "{at}: Secret field {path} is {found}, which is not valid there (Secret values are not shown; \
         stringData values must be strings, so quote numbers; data values must be base64)"
    )]
    SecretField { at: String, path: String, found: &'static str },
    #[error("{at}: {kind} field {path}: {message}")]
    Field { at: String, kind: &'static str, path: String, message: String },
    #[error("the GroupBanPolicy schema cannot be read from its CRD: {0}")]
    Schema(String),
}

impl ManifestError {
    /// A bounded label for logs.
    pub fn category(&self) -> &'static str {
        match self {
            ManifestError::TooDeep { .. } => "TooDeep",
            ManifestError::InvalidYaml { .. } | ManifestError::InvalidYamlAt { .. } => "InvalidYaml",
            ManifestError::Read { .. } | ManifestError::List { .. } => "Read",
            ManifestError::TooLarge { .. } => "TooLarge",
            ManifestError::NotUtf8 { .. } => "NotUtf8",
            ManifestError::NoKind { .. } => "NoKind",
            ManifestError::Duplicate { .. } => "Duplicate",
            ManifestError::ApiVersion { .. } => "ApiVersion",
            ManifestError::UnknownFields { .. } => "UnknownFields",
            ManifestError::NoName { .. } => "NoName",
            ManifestError::Spec { .. } => "Spec",
            ManifestError::SecretField { .. } | ManifestError::Field { .. } => "Field",
            ManifestError::Schema(_) => "Schema",
        }
    }
}

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
    if let Err(TooDeep { line }) = strict_yaml::check_nesting(text, MAX_DEPTH) {
        return Err(ManifestError::TooDeep { file: file.to_string(), line });
    }
    for (index, document) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let at = format!("file {file}, document {}", index + 1);
        let value = strict_yaml::read_document(document).map_err(|(path, message)| {
            let message = without_values(&message);
            match path.as_str() {
                "." => ManifestError::InvalidYaml { at: at.clone(), message },
                _ => ManifestError::InvalidYamlAt { at: at.clone(), path, message },
            }
        })?;
        add_document(value, &at, manifests, origins)?;
    }
    Ok(())
}

fn expand(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    if path == Path::new("-") {
        return Ok(vec![path.to_path_buf()]);
    }
    let metadata =
        std::fs::metadata(path).map_err(|error| ManifestError::Read { path: path.display().to_string(), error })?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries =
        std::fs::read_dir(path).map_err(|error| ManifestError::List { path: path.display().to_string(), error })?;
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
    let (name, source): (String, Box<dyn Read>) = if file == Path::new("-") {
        ("stdin".into(), Box::new(std::io::stdin()))
    } else {
        let opened = std::fs::File::open(file)
            .map_err(|error| ManifestError::Read { path: file.display().to_string(), error })?;
        (file.display().to_string(), Box::new(opened))
    };
    let mut bytes = Vec::new();
    source
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| ManifestError::Read { path: name.clone(), error })?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge { name });
    }
    String::from_utf8(bytes).map_err(|e| ManifestError::NotUtf8 { name, offset: e.utf8_error().valid_up_to() })
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
        ("", _) => Err(ManifestError::NoKind { at: at.to_string() }),
        ("List", "v1") => {
            let items = value.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
            for (i, item) in items.into_iter().enumerate() {
                add_document(item, &format!("{at}, items[{i}]"), manifests, origins)?;
            }
            Ok(())
        }
        ("GroupBanPolicy", POLICY_API_VERSION) => {
            let loaded = parse_policy(value, at)?;
            if let Some(first) = origins.insert(format!("GroupBanPolicy {}", loaded.key()), at.to_string()) {
                let object = format!("GroupBanPolicy {}", loaded.key());
                return Err(ManifestError::Duplicate { at: at.to_string(), object, first });
            }
            manifests.policies.push(loaded);
            Ok(())
        }
        ("GroupBanPolicy", other) => Err(ManifestError::ApiVersion { at: at.to_string(), version: other.to_string() }),
        ("Secret", "v1") => {
            let secret = parse_secret(value, at)?;
            let name = secret
                .metadata
                .name
                .clone()
                .ok_or_else(|| ManifestError::NoName { at: at.to_string(), kind: "Secret" })?;
            let namespace = secret.metadata.namespace.clone().unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
            let origin = format!("Secret {namespace}/{name}");
            if let Some(first) = origins.insert(origin.clone(), at.to_string()) {
                return Err(ManifestError::Duplicate { at: at.to_string(), object: origin, first });
            }
            manifests.secrets.insert((namespace, name), secret);
            Ok(())
        }
        (STATE_FILE_KIND, POLICY_API_VERSION) => {
            tracing::debug!(source = %at, "Skipping an apply state file");
            Ok(())
        }
        (kind, _) => {
            warn!(kind, source = %at, "Skipping a manifest that is neither a GroupBanPolicy nor a Secret");
            Ok(())
        }
    }
}

/// The OpenAPI schema of a GroupBanPolicy, as the CRD declares it. Fails
/// (on every call) if the CRD cannot give it, which would be a bug: an
/// empty schema would let every unknown field through.
fn policy_schema() -> Result<&'static Value, ManifestError> {
    static SCHEMA: OnceLock<Result<Value, String>> = OnceLock::new();
    let schema = SCHEMA.get_or_init(|| {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(GroupBanPolicy::crd()).map_err(|e| e.to_string())?;
        crd.pointer("/spec/versions/0/schema/openAPIV3Schema")
            .filter(|schema| schema.get("properties").is_some())
            .cloned()
            .ok_or_else(|| "the CRD has no openAPIV3Schema with properties".to_string())
    });
    schema.as_ref().map_err(|problem| ManifestError::Schema(problem.clone()))
}

fn parse_policy(value: Value, at: &str) -> Result<LoadedPolicy, ManifestError> {
    // Unknown fields are an error, as kubectl's strict validation makes
    // them: a misspelt `suspend` must not silently keep calls going.
    let unknown = strict_yaml::unknown_fields(&value, policy_schema()?);
    if !unknown.is_empty() {
        let listed: Vec<String> = unknown.iter().map(|path| format!("{path:?}")).collect();
        return Err(ManifestError::UnknownFields { at: at.to_string(), fields: listed.join(", ") });
    }
    let policy: GroupBanPolicy = typed(value, at, "GroupBanPolicy")?;
    let name = policy
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ManifestError::NoName { at: at.to_string(), kind: "GroupBanPolicy" })?;
    let namespace = policy.metadata.namespace.clone().unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let at = format!("{at} (GroupBanPolicy {namespace}/{name})");
    validate_spec(&policy.spec).map_err(|problem| ManifestError::Spec { at: at.clone(), problem })?;
    Ok(LoadedPolicy { policy, namespace, name, source: at })
}

/// A parse error without the value it is about: yaml_serde quotes a tagged
/// scalar that does not fit its tag (`secretKey: !!int s3cr3t` gives
/// `invalid value: string "s3cr3t", expected an integer`), and the document
/// may be a Secret.
fn without_values(message: &str) -> String {
    if message.contains("invalid value:") || message.contains("invalid type:") {
        let position = message.find(" at line ").map_or("", |at| &message[at..]);
        return format!("a value does not fit its tag or type (values are not shown){position}");
    }
    message.to_string()
}

/// A Secret, with errors that never show a value: `secretKey: 12345`
/// (a number, unquoted) must not echo the key.
fn parse_secret(value: Value, at: &str) -> Result<Secret, ManifestError> {
    serde_path_to_error::deserialize::<_, Secret>(&value).map_err(|e| {
        let path = e.path().to_string();
        let found = match lookup(&value, e.path()) {
            Some(Value::Null) => "null",
            Some(Value::Bool(_)) => "a boolean",
            Some(Value::Number(_)) => "a number",
            Some(Value::String(_)) => "a string",
            Some(Value::Array(_)) => "a list",
            Some(Value::Object(_)) => "a mapping",
            None => "missing or invalid",
        };
        ManifestError::SecretField { at: at.to_string(), path, found }
    })
}

/// The value at a serde path, for messages that describe it without
/// showing it.
fn lookup<'a>(value: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a Value> {
    path.iter().try_fold(value, |current, segment| match segment {
        serde_path_to_error::Segment::Map { key } => current.get(key),
        serde_path_to_error::Segment::Seq { index } => current.get(index),
        _ => None,
    })
}

/// Deserializes with the path of the failing field in the message.
fn typed<T: serde::de::DeserializeOwned>(value: Value, at: &str, kind: &'static str) -> Result<T, ManifestError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ManifestError::Field { at: at.to_string(), kind, path, message: e.into_inner().to_string() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Manifests, String> {
        let mut manifests = Manifests::default();
        load_text(text, "f.yaml", &mut manifests, &mut BTreeMap::new()).map_err(|e| e.to_string())?;
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

    /// What kubectl's strict validation refuses is refused here, naming the
    /// field: each of these made calls the user did not mean.
    #[test]
    fn duplicate_keys_unknown_fields_and_second_declarations_are_errors() {
        let flipped = load_str(&POLICY.replace("spec: {", "spec: {suspend: true, suspend: false, ")).unwrap_err();
        assert!(
            flipped.contains("document 1") && flipped.contains("spec") && flipped.contains("\"suspend\""),
            "{flipped}"
        );
        let pasted = load_str(&format!("{POLICY}{}", POLICY.replace("name: p", "name: q"))).unwrap_err();
        assert!(pasted.contains("duplicate key \"apiVersion\""), "{pasted}");
        let misplaced =
            load_str(&POLICY.replace("metadata: {name: p}", "metadata: {name: p, namespce: x}\nsuspend: true"))
                .unwrap_err();
        assert!(misplaced.contains("\"metadata.namespce\"") && misplaced.contains("\"suspend\""), "{misplaced}");
        let nested = load_str(&POLICY.replace("groupId: g", "groupId: g, credentialsSecretRef: {name: s, nmae: t}"))
            .unwrap_err();
        assert!(nested.contains("spec.credentialsSecretRef.nmae"), "{nested}");
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {sdkAppId: '1'}\n";
        let twice = load_str(&format!("{secret}---\n{secret}")).unwrap_err();
        assert!(twice.contains("Secret default/s is also defined in file f.yaml, document 1"), "{twice}");
        // Labels, annotations and the status are the user's to fill.
        let annotated = POLICY.replace("metadata: {name: p}", "metadata: {name: p, labels: {any: x}}");
        assert!(load_str(&format!("{annotated}status: {{observedGeneration: 1}}\n")).is_ok());
    }

    #[test]
    fn a_secret_value_is_never_echoed() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {secretKey: 918273645546372819}\n";
        let error = load_str(text).unwrap_err();
        assert!(!error.contains("918273645546372819") && error.contains("stringData.secretKey is a number"), "{error}");
        for tagged in ["!!int s3cr3t-value", "!!bool s3cr3t-value", "!!float s3cr3t-value", "!!null s3cr3t-value"] {
            let text =
                format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: {{secretKey: {tagged}}}\n");
            let error = load_str(&text).unwrap_err();
            assert!(!error.contains("s3cr3t") && error.contains("stringData.secretKey"), "{error}");
        }
        let data = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {secretKey: 'not*base64-secret'}\n";
        let error = load_str(data).unwrap_err();
        assert!(!error.contains("not*base64") && error.contains("data.secretKey"), "{error}");
    }

    #[test]
    fn deep_nesting_is_refused_quickly_and_state_files_skipped_quietly() {
        let deep = format!("a: {}{}\n", "[".repeat(400_000), "]".repeat(400_000));
        let started = std::time::Instant::now();
        let error = load_str(&deep).unwrap_err();
        assert!(error.contains("line 1") && error.contains("nested more than 64"), "{error}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
        let state = r#"{"apiVersion":"groupban.dev/v1alpha1","kind":"GroupBanPolicyState","policies":{}}"#;
        assert!(load_str(&format!("{POLICY}---\n{state}\n")).is_ok());
    }

    #[test]
    fn lists_are_expanded_and_other_kinds_skipped() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: groupban.dev/v1alpha1, kind: GroupBanPolicy, metadata: {name: p}, spec: {groupId: g, unbannedMembers: []}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n";
        assert_eq!(load_str(text).unwrap().policies.len(), 1);
    }

    fn yaml_like() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let pieces = prop_oneof![
            Just("apiVersion: groupban.dev/v1alpha1\n"),
            Just("kind: GroupBanPolicy\n"),
            Just("kind: Secret\napiVersion: v1\n"),
            Just("metadata: {name: p}\n"),
            Just("spec:\n  groupId: g\n  unbannedMembers: [a, b]\n"),
            Just("  suspend: true\n"),
            Just("---\n"),
            Just("- "),
            Just("[{"),
            Just("]}"),
            Just("&a "),
            Just("*a\n"),
            Just("'q"),
            Just("|\n"),
            Just(": "),
            Just("\t"),
            Just("stringData: {secretKey: 7}\n"),
        ];
        proptest::collection::vec(pieces, 0..24).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        /// Any bytes: loaded, or refused with a message naming the file.
        #[test]
        fn any_bytes_are_loaded_or_refused_with_a_message(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("m.yaml");
            std::fs::write(&path, &bytes).unwrap();
            if let Err(error) = load(std::slice::from_ref(&path)) {
                proptest::prop_assert!(error.to_string().contains("m.yaml"), "{}", error);
            }
        }

        /// Text shaped like manifests, cut and pasted at random.
        #[test]
        fn any_yaml_is_loaded_or_refused_with_a_message(text in yaml_like()) {
            if let Err(error) = load_str(&text) {
                proptest::prop_assert!(error.contains("f.yaml"), "{}", error);
            }
        }
    }
}
