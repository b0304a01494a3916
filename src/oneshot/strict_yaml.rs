//! Reading YAML the way kubectl's strict field validation does, and within
//! a bounded time whatever the input.
//!
//! - [`read_document`] reads a JSON value from YAML and refuses a mapping
//!   with a key twice: `suspend: true` then `suspend: false` must not
//!   silently become `false`, and two documents pasted together without
//!   `---` (every key twice) must not silently merge.
//! - [`unknown_fields`] finds fields a GroupBanPolicy's schema does not
//!   have, such as `metadata.namespce` or a top-level `suspend`.
//! - [`check_nesting`] refuses deep nesting (`[[[[...`) before any value is
//!   built: libyaml's scanner spends time proportional to the depth on every
//!   token, so a 1 MB file of brackets took minutes before the
//!   deserializer's depth limit refused it.
//! - [`read_document`] also refuses a document whose aliases expand to more
//!   than [`MAX_VALUES`] values (the "billion laughs").

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Collections nested deeper than this are refused. A GroupBanPolicy needs
/// 4; yaml_serde itself refuses 128 levels.
pub const MAX_DEPTH: usize = 64;

/// The most values one document may hold once its aliases are expanded:
/// `&a [x, x, ...]` then `[*a, *a, ...]` would otherwise build billions.
/// A GroupBanPolicy of 100,000 members holds about as many.
pub const MAX_VALUES: usize = 2_000_000;

/// Reads one document strictly, within [`MAX_VALUES`]; on error, the path
/// of the value at fault (`spec.suspend`, or `.` for the document) and what
/// is wrong.
pub fn read_document<'de, D: de::Deserializer<'de>>(document: D) -> Result<Value, (String, String)> {
    let budget = Cell::new(MAX_VALUES);
    let mut track = serde_path_to_error::Track::new();
    let result =
        StrictSeed { budget: &budget }.deserialize(serde_path_to_error::Deserializer::new(document, &mut track));
    result.map_err(|error| (track.path().to_string(), error.to_string()))
}

/// Builds values while the shared budget lasts.
#[derive(Clone, Copy)]
struct StrictSeed<'a> {
    budget: &'a Cell<usize>,
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        let left = self.budget.get();
        if left == 0 {
            return Err(de::Error::custom(format!(
                "the document holds more than {MAX_VALUES} values (aliases expanding?)"
            )));
        }
        self.budget.set(left - 1);
        deserializer.deserialize_any(StrictVisitor { budget: self.budget })
    }
}

struct StrictVisitor<'a> {
    budget: &'a Cell<usize>,
}

impl<'de> Visitor<'de> for StrictVisitor<'_> {
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
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("NaN and infinity are not valid here"))
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
        StrictSeed { budget: self.budget }.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictSeed { budget: self.budget })? {
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
            let value = map.next_value_seed(StrictSeed { budget: self.budget })?;
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

/// Where a YAML text nests collections too deep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooDeep {
    pub line: usize,
}

/// Refuses collections nested deeper than `max_depth`, before any value is
/// built. It runs libyaml's own parser (the one yaml_serde uses) and counts
/// the depth of its events, so it sees exactly what the deserializer would,
/// whatever the quoting, comments, block scalars or line breaks; and it
/// stops at the first collection too deep, before the scanner's cost, which
/// grows with the depth on every token, adds up. A syntax error is left for
/// the deserializer to report.
#[allow(unsafe_code)]
pub fn check_nesting(text: &str, max_depth: usize) -> Result<(), TooDeep> {
    use libyaml_rs as sys;
    use std::mem::MaybeUninit;

    // Boxed: libyaml's parser must not move once initialized.
    let mut storage: Box<MaybeUninit<sys::yaml_parser_t>> = Box::new(MaybeUninit::uninit());
    let parser = storage.as_mut_ptr();
    // SAFETY: `parser` points to writable memory for a yaml_parser_t, which
    // yaml_parser_initialize fills; the input stays borrowed (and alive)
    // until yaml_parser_delete below. This is how yaml_serde drives it.
    unsafe {
        if sys::yaml_parser_initialize(parser).fail {
            return Ok(());
        }
        sys::yaml_parser_set_encoding(parser, sys::YAML_UTF8_ENCODING);
        sys::yaml_parser_set_input_string(parser, text.as_ptr(), text.len() as u64);
    }
    let mut depth = 0usize;
    let outcome = loop {
        let mut event = MaybeUninit::<sys::yaml_event_t>::uninit();
        let event = event.as_mut_ptr();
        // SAFETY: the parser was initialized above; a successful
        // yaml_parser_parse initializes `event`, which is read and then
        // deleted once; a failed one leaves nothing to delete.
        let (kind, line) = unsafe {
            if sys::yaml_parser_parse(parser, event).fail {
                break Ok(());
            }
            let seen = ((*event).type_, (*event).start_mark.line as usize + 1);
            sys::yaml_event_delete(event);
            seen
        };
        match kind {
            sys::YAML_SEQUENCE_START_EVENT | sys::YAML_MAPPING_START_EVENT => {
                depth += 1;
                if depth > max_depth {
                    break Err(TooDeep { line });
                }
            }
            sys::YAML_SEQUENCE_END_EVENT | sys::YAML_MAPPING_END_EVENT => depth = depth.saturating_sub(1),
            sys::YAML_STREAM_END_EVENT => break Ok(()),
            _ => {}
        }
    };
    // SAFETY: initialized above and not used after this.
    unsafe { sys::yaml_parser_delete(parser) };
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn strict(text: &str) -> Result<Value, String> {
        let document = yaml_serde::Deserializer::from_str(text).next().unwrap();
        read_document(document).map_err(|(_, message)| message)
    }

    #[test]
    fn aliases_cannot_expand_past_the_value_budget() {
        let text = format!("a: &a [{}]\nb: [{}]\n", vec!["x"; 1000].join(", "), vec!["*a"; 5000].join(", "));
        let document = yaml_serde::Deserializer::from_str(&text).next().unwrap();
        let (_, error) = read_document(document).unwrap_err();
        assert!(error.contains("more than 2000000 values"), "{error}");
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

    /// The nesting depth of a JSON value.
    fn depth_of(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(depth_of).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn nested_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i32>().prop_map(Value::from),
            "[a-z\\[\\]{}\"', #:|>-]{0,8}".prop_map(Value::from),
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
        /// Written as JSON (YAML's flow style) or as block YAML, a value's
        /// nesting is measured exactly: brackets in strings do not count,
        /// none is missed. The document itself is depth 1 when it is a
        /// collection, as for the deserializer.
        #[test]
        fn nesting_is_measured_exactly(value in nested_json()) {
            let depth = depth_of(&value) + 1;
            for text in [format!("key: {value}\n"), yaml_serde::to_string(&json!({"key": value})).unwrap()] {
                prop_assert!(check_nesting(&text, depth).is_ok(), "{}", text);
                prop_assert!(check_nesting(&text, depth - 1).is_err(), "{}", text);
            }
        }
    }

    /// The shapes a review found slipping past a hand-written scanner, and
    /// the plain ones: each is refused, fast, at any size.
    #[test]
    fn deep_nesting_is_refused_whatever_surrounds_it() {
        let n = 200_000;
        let (open, close) = ("[".repeat(n), "]".repeat(n));
        for text in [
            format!("a: 1\nb: {open}{close}\n"),
            format!("--- {open}{close}"),
            format!("\u{feff}{open}{close}"),
            format!("# c\ra: {open}{close}"),
            format!("x: [a:'b, {open}{close}, a:'c]"),
            format!("- a: |\n  ? {open}{close}"),
            format!("b: &x !!seq {open}{close}\n"),
            format!("{}{}", "{a: ".repeat(n), "}".repeat(n)),
        ] {
            let started = std::time::Instant::now();
            assert!(check_nesting(&text, MAX_DEPTH).is_err(), "{}", &text[..40]);
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "{:?} for {}",
                started.elapsed(),
                &text[..40]
            );
        }
        let quoted = format!("b: \"{}\" # {}\nc: |\n  {}\n", "[".repeat(100), "{".repeat(100), "[".repeat(100));
        assert!(check_nesting(&quoted, MAX_DEPTH).is_ok());
        assert_eq!(
            check_nesting(&format!("a: 1\nb: {}{}\n", "[".repeat(65), "]".repeat(65)), 64),
            Err(TooDeep { line: 2 })
        );
        assert!(check_nesting("a: [unclosed", 64).is_ok(), "syntax errors are the deserializer's to report");
    }
}
