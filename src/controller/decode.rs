//! Reading watched policies one at a time, so one bad object cannot hide
//! the others.
//!
//! A typed watch fails as a whole when one object does not decode (a spec
//! that slipped past the schema, as happens when a CRD's schema changes
//! under stored objects): nothing would be reconciled at all, `/readyz`
//! would stay 503, and kube would log the whole list, every member of
//! every policy. The controller watches policies untyped instead and
//! decodes each here: a bad one is left out of the cache (and out of any
//! pass under way), named with the field that is wrong, and reported once
//! per generation by the caller; the rest go on.

use kube::api::DynamicObject;
use kube::runtime::watcher;

use crate::crd::{GroupBanPolicy, GroupBanPolicySpec, GroupBanPolicyStatus};

/// A policy that does not decode: which one, and what is wrong, naming the
/// field (never its value: a member list stays out of logs).
#[derive(Debug, Clone, PartialEq)]
pub struct Undecodable {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub resource_version: Option<String>,
    pub problem: String,
    /// The status as stored: `Ok(None)` when there is none, `Err` when it
    /// does not decode either (then no status is written: a write of what
    /// could be read would drop the rest).
    pub status: Result<Option<GroupBanPolicyStatus>, ()>,
}

/// Decodes one watched object. A status that does not decode is dropped
/// (the next pass rebuilds it; unbanning again is harmless), a spec that
/// does not decode makes the object [`Undecodable`].
pub fn decode(object: DynamicObject) -> Result<GroupBanPolicy, Box<Undecodable>> {
    let DynamicObject { metadata, mut data, .. } = object;
    let spec = data.get_mut("spec").map(serde_json::Value::take).unwrap_or(serde_json::Value::Null);
    let spec = serde_path_to_error::deserialize::<_, GroupBanPolicySpec>(spec);
    let status = match data.get_mut("status").map(serde_json::Value::take) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(status) => serde_path_to_error::deserialize::<_, GroupBanPolicyStatus>(status).map(Some),
    };
    let spec = match spec {
        Ok(spec) => spec,
        Err(error) => {
            return Err(Box::new(Undecodable {
                namespace: metadata.namespace.clone().unwrap_or_default(),
                name: metadata.name.clone().unwrap_or_default(),
                uid: metadata.uid.clone(),
                generation: metadata.generation,
                resource_version: metadata.resource_version.clone(),
                problem: describe(&error),
                status: status.map_err(|_| ()),
            }));
        }
    };
    let status = match status {
        Ok(status) => status,
        Err(error) => {
            // Rare (another writer, or an older operator's shape): the
            // next pass rebuilds the record, calling again for members
            // already unbanned. Said, since it costs calls.
            tracing::warn!(
                policy = %format!("{}/{}", metadata.namespace.as_deref().unwrap_or_default(), metadata.name.as_deref().unwrap_or_default()),
                problem = %without_values(&format!("status.{}: {}", error.path(), error.inner())),
                "Policy status cannot be read; the next pass starts from an empty record"
            );
            None
        }
    };
    Ok(GroupBanPolicy { metadata, spec, status })
}

/// "spec.FIELD: what is wrong", from serde's message without the input
/// (serde quotes the offending value only for scalars, cut anyway).
fn describe(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = error.path().to_string();
    let field = if path == "." { "spec".to_string() } else { format!("spec.{path}") };
    format!("{field}: {}", without_values(&crate::cut_text(&error.inner().to_string(), 200)))
}

/// serde's message with the strings it quotes taken out (`invalid type:
/// string "alice,bob"` names members): what is wrong stays, whose is gone.
/// Field names, in backticks (`missing field `groupId``), stay.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quote: Option<char> = None;
    for c in message.chars() {
        match quote {
            Some(q) if c == q => {
                out.push_str("...");
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None if c == '"' => {
                out.push(c);
                quote = Some(c);
            }
            None => out.push(c),
        }
    }
    out
}

/// A watch event of untyped objects as one of policies, and the objects it
/// could not decode. A bad object leaves the cache: an update that broke a
/// policy is a Delete for the controller (its pass under way stops).
pub fn decode_event(
    event: watcher::Event<DynamicObject>,
) -> (Option<watcher::Event<GroupBanPolicy>>, Option<Box<Undecodable>>) {
    match event {
        watcher::Event::Apply(object) => match decode(object) {
            Ok(policy) => (Some(watcher::Event::Apply(policy)), None),
            Err(bad) => (Some(watcher::Event::Delete(placeholder(&bad))), Some(bad)),
        },
        watcher::Event::InitApply(object) => match decode(object) {
            Ok(policy) => (Some(watcher::Event::InitApply(policy)), None),
            // The relist's InitDone replaces the cache: leaving it out is enough.
            Err(bad) => (None, Some(bad)),
        },
        watcher::Event::Delete(object) => {
            let policy = decode(object).unwrap_or_else(|bad| placeholder(&bad));
            (Some(watcher::Event::Delete(policy)), None)
        }
        watcher::Event::Init => (Some(watcher::Event::Init), None),
        watcher::Event::InitDone => (Some(watcher::Event::InitDone), None),
    }
}

/// A policy with only the bad object's identity: enough for the cache to
/// forget it.
fn placeholder(bad: &Undecodable) -> GroupBanPolicy {
    let mut policy = GroupBanPolicy::new(
        &bad.name,
        GroupBanPolicySpec {
            group_id: String::new(),
            unbanned_members: Vec::new(),
            credentials_secret_ref: None,
            suspend: None,
            drift_check_interval: None,
        },
    );
    policy.metadata.namespace = Some(bad.namespace.clone());
    policy.metadata.uid = bad.uid.clone();
    policy.metadata.generation = bad.generation;
    policy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "groupban.dev/v1alpha1", "kind": "GroupBanPolicy",
            "metadata": {"name": "p", "namespace": "team", "uid": "u", "generation": 3},
            "spec": spec,
            "status": {"unbannedMembers": ["secret-member"]},
        }))
        .unwrap()
    }

    #[test]
    fn a_good_object_decodes_with_its_status() {
        let policy = decode(object(serde_json::json!({"groupId": "room", "unbannedMembers": ["a"]}))).unwrap();
        assert_eq!(policy.spec.unbanned_members, ["a"]);
        assert_eq!(policy.status.unwrap().unbanned_members, ["secret-member"]);
    }

    /// The problem names the object's field and never carries a member.
    #[test]
    fn a_wrong_typed_field_is_named_without_the_members() {
        let bad = decode(object(serde_json::json!({"groupId": "room", "unbannedMembers": ["alice", 7]}))).unwrap_err();
        assert_eq!((bad.namespace.as_str(), bad.name.as_str(), bad.generation), ("team", "p", Some(3)));
        let kept = bad.status.as_ref().ok().and_then(Option::as_ref).map(|s| s.unbanned_members.clone());
        assert_eq!(kept, Some(vec!["secret-member".to_string()]), "the record is kept for the status write");
        assert!(bad.problem.starts_with("spec.unbannedMembers[1]: invalid type"), "{}", bad.problem);
        assert!(!bad.problem.contains("alice"), "{}", bad.problem);
        let scalar =
            decode(object(serde_json::json!({"groupId": "room", "unbannedMembers": "alice,bob"}))).unwrap_err();
        assert!(!scalar.problem.contains("alice"), "{}", scalar.problem);
        assert!(scalar.problem.starts_with("spec.unbannedMembers: invalid type: string"), "{}", scalar.problem);
        let missing = decode(object(serde_json::json!({"unbannedMembers": []}))).unwrap_err();
        assert!(missing.problem.contains("groupId"), "{}", missing.problem);
    }

    /// A policy broken by an update leaves the cache; broken in a relist it
    /// is left out; the other events pass.
    #[test]
    fn events_of_bad_objects_become_deletes_or_nothing() {
        let bad = || object(serde_json::json!({"groupId": 42, "unbannedMembers": []}));
        let (event, reported) = decode_event(watcher::Event::Apply(bad()));
        assert!(matches!(event, Some(watcher::Event::Delete(p)) if p.metadata.name.as_deref() == Some("p")));
        assert!(reported.is_some());
        let (event, reported) = decode_event(watcher::Event::InitApply(bad()));
        assert!(event.is_none() && reported.is_some());
        let (event, reported) = decode_event(watcher::Event::Delete(bad()));
        assert!(matches!(event, Some(watcher::Event::Delete(_))) && reported.is_none());
        assert!(matches!(decode_event(watcher::Event::InitDone).0, Some(watcher::Event::InitDone)));
    }
}
