//! Reading YAML the way kubectl's strict field validation does, and within
//! a bounded time whatever the input.
//!
//! - [`StrictValue`] is a JSON value read from YAML that refuses a mapping
//!   with a key twice: `suspend: true` then `suspend: false` must not
//!   silently become `false`, and two documents pasted together without
//!   `---` (every key twice) must not silently merge.
//! - [`unknown_fields`] finds fields a GroupBanPolicy's schema does not
//!   have, such as `metadata.namespce` or a top-level `suspend`.
//! - [`check_flow_nesting`] refuses deeply nested flow collections
//!   (`[[[[...`) before the YAML parser sees them: its scanner spends time
//!   proportional to the nesting depth on every token, so a 1 MB file of
//!   brackets takes minutes before the deserializer's depth limit refuses
//!   it. Block nesting needs no check: its depth costs indentation, so a
//!   1 MB file cannot nest deeper than about 1,400 levels, which parses fast.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Flow collections nested deeper than this are refused. A GroupBanPolicy
/// needs 3; yaml_serde itself refuses 128 levels of any kind.
pub const MAX_FLOW_DEPTH: usize = 64;

/// A JSON value read from YAML with duplicate keys refused.
#[derive(Debug, Clone, PartialEq)]
pub struct StrictValue(pub Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // JSON has no NaN or infinity; YAML's `.nan` and `.inf` are refused.
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom(format!("{v} is not a number JSON can hold")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(deserializer).map(|v| v.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate key {key:?} (two documents without `---` between them?)"
                )));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The fields of `metadata` (ObjectMeta) a manifest may carry.
const OBJECT_META_FIELDS: &[&str] = &[
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

/// The top-level fields of a custom resource.
const RESOURCE_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// The paths of fields in `document` that `schema` (the CRD's OpenAPI v3
/// schema of the whole resource) does not declare, as kubectl's strict
/// validation reports them: `metadata.namespce`, `spec.suspended`.
pub fn unknown_fields(document: &Value, schema: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    let Some(object) = document.as_object() else {
        return unknown;
    };
    for (key, value) in object {
        match key.as_str() {
            "metadata" => {
                if let Some(meta) = value.as_object() {
                    let extra = meta.keys().filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str()));
                    unknown.extend(extra.map(|k| format!("metadata.{k}")));
                }
            }
            "apiVersion" | "kind" => {}
            known if RESOURCE_FIELDS.contains(&known) => {
                if let Some(part) = schema.pointer(&format!("/properties/{known}")) {
                    walk(value, part, known, &mut unknown);
                }
            }
            other => unknown.push(other.to_string()),
        }
    }
    unknown
}

fn walk(value: &Value, schema: &Value, path: &str, unknown: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            let open = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (key, child) in object {
                    match properties.get(key) {
                        Some(child_schema) => walk(child, child_schema, &format!("{path}.{key}"), unknown),
                        None if !open => unknown.push(format!("{path}.{key}")),
                        None => {}
                    }
                }
            } else if let Some(values) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (key, child) in object {
                    walk(child, values, &format!("{path}.{key}"), unknown);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    walk(item, item_schema, &format!("{path}[{index}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// Where a YAML text nests flow collections too deep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooDeep {
    pub line: usize,
}

/// Refuses flow collections (`[...]`, `{...}`) nested deeper than
/// `max_depth`, in time linear in the text.
///
/// It must never count less than the YAML scanner will see, and should
/// count no more in real manifests. So: brackets in comments, in quoted
/// scalars and in block scalars (`|`, `>`) are skipped; inside a flow
/// collection every other bracket counts (plain scalars cannot hold one
/// there); in block context a bracket counts where a value may begin. A
/// quoted scalar in block context is skipped only to the end of its line: if
/// it goes on, the next lines are scanned as if unquoted, which can only
/// count more.
pub fn check_flow_nesting(text: &str, max_depth: usize) -> Result<(), TooDeep> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut line = 1;
    // Whether a value may begin here: at the start of a line's content, or
    // after `- `, `: `, `? `, an anchor or a tag, or (in flow) `[{,:`.
    let mut at_value_start = true;
    let mut line_indent = 0;
    let mut at_line_start = true;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if at_line_start && byte == b' ' {
            line_indent += 1;
            index += 1;
            continue;
        }
        at_line_start = false;
        match byte {
            b'\n' => {
                line += 1;
                line_indent = 0;
                at_line_start = true;
                if depth == 0 {
                    at_value_start = true;
                }
            }
            b' ' | b'\t' | b'\r' => {}
            b'#' if index == 0 || matches!(bytes[index - 1], b' ' | b'\t' | b'\n' | b'\r') => {
                index = end_of_line(bytes, index);
                continue;
            }
            b'"' | b'\'' if at_value_start => {
                let limit = if depth > 0 { bytes.len() } else { end_of_line(bytes, index) };
                index = skip_quoted(bytes, index, limit, &mut line);
                at_value_start = false;
                continue;
            }
            b'|' | b'>' if at_value_start && depth == 0 => {
                index = skip_block_scalar(bytes, index, line_indent, &mut line);
                line_indent = 0;
                at_line_start = true;
                continue;
            }
            b'[' | b'{' if at_value_start || depth > 0 => {
                depth += 1;
                if depth > max_depth {
                    return Err(TooDeep { line });
                }
                at_value_start = true;
            }
            b']' | b'}' if depth > 0 => {
                depth -= 1;
                at_value_start = false;
            }
            b',' if depth > 0 => at_value_start = true,
            // `- ` and `? ` are indicators only where a node begins; inside a
            // plain scalar (`a - b`) they are text.
            b'-' | b'?' if at_value_start && followed_by_space(bytes, index) => {}
            b':' if depth > 0 || followed_by_space(bytes, index) => at_value_start = true,
            b'&' | b'!' if at_value_start => {
                // An anchor or tag: the value follows it.
                while index < bytes.len() && !bytes[index].is_ascii_whitespace() {
                    if depth > 0 && matches!(bytes[index], b',' | b'[' | b']' | b'{' | b'}') {
                        break;
                    }
                    index += 1;
                }
                continue;
            }
            _ => at_value_start = false,
        }
        index += 1;
    }
    Ok(())
}

fn followed_by_space(bytes: &[u8], index: usize) -> bool {
    bytes.get(index + 1).is_none_or(|next| next.is_ascii_whitespace())
}

/// The index of the newline ending the line at `index` (or the end).
fn end_of_line(bytes: &[u8], index: usize) -> usize {
    bytes[index..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |offset| index + offset)
}

/// The index just past the quoted scalar that starts at `start`, or
/// `limit` if it does not end before it.
fn skip_quoted(bytes: &[u8], start: usize, limit: usize, line: &mut usize) -> usize {
    let quote = bytes[start];
    let mut index = start + 1;
    while index < limit {
        match bytes[index] {
            b'\n' => *line += 1,
            b'\\' if quote == b'"' => index += 1,
            b'\'' if quote == b'\'' && bytes.get(index + 1) == Some(&b'\'') => index += 1,
            b if b == quote => return index + 1,
            _ => {}
        }
        index += 1;
    }
    limit.min(bytes.len())
}

/// Skips a block scalar whose indicator (`|` or `>`) is at `start` on a
/// line indented `parent_indent`: the rest of that line, then blank lines
/// and lines indented at least as deep as its first non-blank line, if that
/// is deeper than the parent. Returns the index of the first line after it.
fn skip_block_scalar(bytes: &[u8], start: usize, parent_indent: usize, line: &mut usize) -> usize {
    let mut index = end_of_line(bytes, start);
    let mut content_indent = None;
    while index < bytes.len() {
        // `index` is at a newline: look at the next line.
        *line += 1;
        let next = index + 1;
        let indent = bytes[next..].iter().take_while(|&&b| b == b' ').count();
        let rest = next + indent;
        let blank = rest >= bytes.len() || matches!(bytes[rest], b'\n' | b'\r');
        if !blank {
            let needed = *content_indent.get_or_insert(indent);
            if indent <= parent_indent || indent < needed {
                return next;
            }
        }
        index = end_of_line(bytes, rest.min(bytes.len()));
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strict(text: &str) -> Result<Value, String> {
        let document = yaml_serde::Deserializer::from_str(text).next().unwrap();
        StrictValue::deserialize(document).map(|v| v.0).map_err(|e| e.to_string())
    }

    #[test]
    fn a_key_twice_is_refused_at_any_depth() {
        assert!(strict("spec: {suspend: true, suspend: false}").unwrap_err().contains("duplicate key \"suspend\""));
        assert!(strict("a: 1\nb: [{x: 1, x: 2}]\n").unwrap_err().contains("\"x\""));
        assert_eq!(
            strict("a: [1, {b: null}]\nc: 1.5\n").unwrap(),
            serde_json::json!({"a": [1, {"b": null}], "c": 1.5})
        );
    }

    /// The true depth of flow nesting of a JSON value written as JSON (which
    /// is YAML flow style).
    fn flow_depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(flow_depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(flow_depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn nested_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i32>().prop_map(Value::from),
            "[a-z\\[\\]{}\"', #:-]{0,8}".prop_map(Value::from),
            Just(Value::Null),
        ];
        leaf.prop_recursive(12, 64, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z\\[#]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// On JSON text, which is YAML flow style, the check finds the exact
        /// depth: brackets inside strings do not count, none is missed.
        #[test]
        fn flow_depth_is_measured_exactly_on_json(value in nested_json()) {
            let text = format!("key: {value}\n");
            let depth = flow_depth(&value);
            prop_assert!(check_flow_nesting(&text, depth).is_ok(), "{}", text);
            if depth > 0 {
                prop_assert!(check_flow_nesting(&text, depth - 1).is_err(), "{}", text);
            }
        }

        /// Block style (as yaml_serde writes YAML) nests no flow collection
        /// beyond the empty `[]` and `{}`.
        #[test]
        fn block_yaml_passes(value in nested_json()) {
            let text = yaml_serde::to_string(&value).unwrap();
            prop_assert!(check_flow_nesting(&text, 1).is_ok(), "{}", text);
        }
    }

    #[test]
    fn deep_brackets_are_refused_with_their_line() {
        let deep = format!("a: 1\nb: {}{}\n", "[".repeat(65), "]".repeat(65));
        assert_eq!(check_flow_nesting(&deep, MAX_FLOW_DEPTH), Err(TooDeep { line: 2 }));
        let anchored = format!("b: &x !!seq {}\n", "[".repeat(65));
        assert!(check_flow_nesting(&anchored, MAX_FLOW_DEPTH).is_err());
        let quoted = format!("b: \"{}\" # {}\n", "[".repeat(100), "{".repeat(100));
        assert!(check_flow_nesting(&quoted, MAX_FLOW_DEPTH).is_ok());
        let plain = format!("members:\n{}", "- x[\n".repeat(1000));
        assert!(check_flow_nesting(&plain, MAX_FLOW_DEPTH).is_ok(), "brackets inside plain scalars");
        let block = format!("a: |\n  {}\n  \"\nb: ok\n", "[".repeat(100));
        assert!(check_flow_nesting(&block, MAX_FLOW_DEPTH).is_ok(), "brackets inside a block scalar");
        // A quote that goes on past its line cannot hide what follows.
        let hidden = format!("a: foo\n  \"bar\nb: {}\n", "[".repeat(65));
        assert_eq!(check_flow_nesting(&hidden, MAX_FLOW_DEPTH), Err(TooDeep { line: 3 }));
        let after_block = format!("a: |\n  \"\nb: {}\n", "[".repeat(65));
        assert_eq!(check_flow_nesting(&after_block, MAX_FLOW_DEPTH), Err(TooDeep { line: 3 }));
    }
}
