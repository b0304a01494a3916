//! Events (events.k8s.io/v1) from the pure [`notices`](crate::engine::changes::notices):
//! Normal when members were unbanned, Warning when a policy stalls. A state
//! that did not change makes no Event.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Api, Client};

use crate::engine::changes::Notice;

/// The resource Events are written to, and the verbs used on it, for
/// [`crate::metrics::Metrics::observe_forbidden`].
pub const EVENTS_RESOURCE: &str = "events.events.k8s.io";
pub const EVENT_VERBS: [&str; 2] = ["create", "patch"];

/// Publishes Events (events.k8s.io/v1) as kube's `Recorder` does, a repeat
/// within [`SERIES_WINDOW`] becoming a count on the first Event rather than
/// a new object, with two differences:
///
/// - **Names that fit.** kube names an Event `<object name>.<nanoseconds in
///   hex>`, which the API server refuses for an object name over 236
///   characters (names are at most 253): such a policy would get no Event
///   at all. [`event_name`] cuts the object's name to make room.
/// - **Sharded cache.** kube's recorder walks its whole six-minute cache on
///   every publish: with ten thousand policies converging at once that is
///   quadratic (6% of the operator's CPU in the 10,000-policy benchmark).
///   The Events of one object always go to the same shard, so each shard
///   counts exactly the repeats one cache would, over a
///   [`RECORDER_SHARDS`]th of the entries.
pub struct EventRecorders {
    client: Client,
    reporter: Reporter,
    shards: Vec<Mutex<HashMap<EventKey, K8sEvent>>>,
}

/// How many caches Events are spread over.
pub const RECORDER_SHARDS: usize = 64;

/// Repeats within this window are counted on the first Event (kube's and
/// client-go's six minutes).
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// What makes two Events repeats of each other (kube's key: the note may
/// differ).
#[derive(Clone, PartialEq, Eq, Hash)]
struct EventKey {
    warning: bool,
    action: String,
    reason: String,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

impl EventRecorders {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter, shards: (0..RECORDER_SHARDS).map(|_| Mutex::default()).collect() }
    }

    /// Creates the Event, or counts a repeat on the one already published.
    pub async fn publish(&self, event: &Event, regarding: &ObjectReference) -> Result<(), PublishError> {
        let now = Timestamp::now();
        let key = EventKey {
            warning: event.type_ == EventType::Warning,
            action: event.action.clone(),
            reason: event.reason.clone(),
            namespace: regarding.namespace.clone(),
            name: regarding.name.clone(),
            uid: regarding.uid.clone(),
        };
        let shard = &self.shards[shard_of(regarding)];
        let previous = {
            let mut cache = shard.lock().unwrap_or_else(|e| e.into_inner());
            cache.retain(|_, published| last_seen(published).is_some_and(|seen| seen + SERIES_WINDOW > now));
            cache.get(&key).cloned()
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let published = match previous {
            Some(mut repeat) => {
                let count = repeat.series.as_ref().map_or(2, |series| series.count + 1);
                repeat.series = Some(EventSeries { count, last_observed_time: MicroTime(now) });
                let name = repeat.metadata.name.clone().unwrap_or_default();
                events
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&repeat))
                    .await
                    .map_err(|source| PublishError { verb: "patch", source })?;
                repeat
            }
            None => {
                let new = self.new_event(event, regarding, now);
                events
                    .create(&PostParams::default(), &new)
                    .await
                    .map_err(|source| PublishError { verb: "create", source })?;
                new
            }
        };
        shard.lock().unwrap_or_else(|e| e.into_inner()).insert(key, published);
        Ok(())
    }

    fn new_event(&self, event: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let object = regarding.name.as_deref().unwrap_or(&self.reporter.controller);
        K8sEvent {
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(event_name(object, now.as_nanosecond())),
                ..Default::default()
            },
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter.instance.clone().unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(if event.type_ == EventType::Warning { "Warning" } else { "Normal" }.into()),
            ..Default::default()
        }
    }
}

/// An Event the API server did not take, and the request that asked.
#[derive(Debug, thiserror::Error)]
#[error("failed to {verb} an Event")]
pub struct PublishError {
    /// `create` for a new Event, `patch` for a repeat's count.
    pub verb: &'static str,
    #[source]
    pub source: kube::Error,
}

fn last_seen(event: &K8sEvent) -> Option<Timestamp> {
    match (&event.series, &event.event_time) {
        (Some(series), _) => Some(series.last_observed_time.0),
        (None, Some(time)) => Some(time.0),
        (None, None) => None,
    }
}

fn shard_of(regarding: &ObjectReference) -> usize {
    let mut hasher = DefaultHasher::new();
    (&regarding.namespace, &regarding.name, &regarding.uid).hash(&mut hasher);
    (hasher.finish() % RECORDER_SHARDS as u64) as usize
}

/// Longest object name Kubernetes accepts (a DNS subdomain).
pub const MAX_NAME_BYTES: usize = 253;

/// An Event's name, `<object>.<time in hex>` as kube and client-go write
/// it, with the object's part cut so the whole stays a valid name of at
/// most [`MAX_NAME_BYTES`]: a cut never leaves a `.` or `-` before the
/// time (a DNS label must end in a letter or digit).
pub fn event_name(object: &str, nanos: i128) -> String {
    let suffix = format!(".{:x}", nanos.max(0));
    let room = MAX_NAME_BYTES.saturating_sub(suffix.len());
    let mut end = object.len().min(room);
    while !object.is_char_boundary(end) {
        end -= 1;
    }
    let prefix = object[..end].trim_end_matches(['.', '-']);
    let prefix = if prefix.is_empty() { "event" } else { prefix };
    format!("{prefix}{suffix}")
}

/// Event messages are cut to this many bytes (the API's limit is 1 KiB).
pub const MAX_NOTE_BYTES: usize = 1024;

/// The Event reason for newly unbanned members.
pub const MEMBERS_UNBANNED: &str = "MembersUnbanned";
/// Warning: the app's budget is spent by someone else (see
/// [`crate::engine::changes::Notice::BudgetShared`]).
pub const BUDGET_SHARED: &str = "RateLimitedByGateway";

/// The Event a notice becomes.
pub fn event_for(notice: &Notice) -> Event {
    match notice {
        Notice::Unbanned { members, calls } => Event {
            type_: EventType::Normal,
            reason: MEMBERS_UNBANNED.into(),
            note: Some(format!("Unbanned {members} member(s) in {calls} call(s)")),
            action: "Unban".into(),
            secondary: None,
        },
        Notice::BudgetShared { answers, app_answers_lately } => Event {
            type_: EventType::Warning,
            reason: BUDGET_SHARED.into(),
            note: Some(format!(
                "The IM gateway answered {answers} of this pass's calls that the app's budget was spent \
                 (60007/60011), {app_answers_lately} time(s) in the last minute for this app, although this \
                 process kept under --max-calls-per-second: another client (or a second operator without \
                 leader election) is likely spending this app's budget; the calls were retried"
            )),
            action: "Unban".into(),
            secondary: None,
        },
        Notice::Stalled { reason, message } => Event {
            type_: EventType::Warning,
            reason: crate::cut_text(reason, 128),
            note: Some(crate::cut_text(message, MAX_NOTE_BYTES)),
            action: "Unban".into(),
            secondary: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One object's Events always meet the same recorder (so its repeats
    /// are counted), and a fleet's spread over all of them.
    #[test]
    fn an_object_always_maps_to_one_shard_and_a_fleet_to_all() {
        let reference = |name: String| k8s_openapi::api::core::v1::ObjectReference {
            namespace: Some("team".into()),
            name: Some(name),
            uid: Some("u".into()),
            ..Default::default()
        };
        let shards: std::collections::BTreeSet<usize> =
            (0..2000).map(|i| shard_of(&reference(format!("room{i}")))).collect();
        assert_eq!(shards.len(), RECORDER_SHARDS);
        assert!(shards.iter().all(|&s| s < RECORDER_SHARDS));
        for i in 0..50 {
            assert_eq!(shard_of(&reference(format!("room{i}"))), shard_of(&reference(format!("room{i}"))));
        }
    }

    /// Kubernetes' DNS-subdomain rule for object names.
    fn is_dns_subdomain(name: &str) -> bool {
        name.len() <= MAX_NAME_BYTES
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    /// A policy may have the longest name Kubernetes allows; its Events
    /// must still be accepted (the API server refuses names over 253).
    #[test]
    fn a_253_character_policy_gets_an_event_name_within_the_limit() {
        let name = "a".repeat(253);
        let event = event_name(&name, 1_765_000_000_000_000_000);
        assert_eq!(event.len(), 253);
        assert!(event.ends_with(".187e8a260c908000"), "{event}");
        assert!(is_dns_subdomain(&event));
        assert_eq!(event_name("room", 255), "room.ff", "short names are kept whole");
    }

    proptest::proptest! {
        /// For any valid policy name and any time, the Event's name is a
        /// valid object name: never too long, never a bad label end.
        #[test]
        fn event_names_are_always_valid_object_names(
            labels in proptest::collection::vec("[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", 1..20),
            nanos in 0i128..=i128::from(u64::MAX),
        ) {
            let object = labels.join(".");
            proptest::prop_assume!(object.len() <= MAX_NAME_BYTES);
            let name = event_name(&object, nanos);
            proptest::prop_assert!(is_dns_subdomain(&name), "{name}");
            if object.len() + 17 <= MAX_NAME_BYTES {
                let whole = format!("{object}.");
                proptest::prop_assert!(name.starts_with(&whole), "{} lost part of {}", name, object);
            }
        }
    }

    #[test]
    fn unbanned_members_are_a_normal_event_with_the_counts() {
        let event = event_for(&Notice::Unbanned { members: 45, calls: 3 });
        assert_eq!(event.type_, EventType::Normal);
        assert_eq!(event.reason, "MembersUnbanned");
        assert_eq!(event.note.as_deref(), Some("Unbanned 45 member(s) in 3 call(s)"));
    }

    /// A Warning carries the reason and the ErrorCode/ErrorInfo, within
    /// the API's 1 KiB even when a gateway sends a huge ErrorInfo.
    #[test]
    fn a_stall_is_a_warning_cut_to_one_kib() {
        let message = format!("ErrorCode 10010 (GroupNotFound): {}", "x".repeat(5000));
        let event = event_for(&Notice::Stalled { reason: "GroupNotFound".into(), message });
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, "GroupNotFound");
        let note = event.note.unwrap();
        assert!(note.len() <= MAX_NOTE_BYTES && note.starts_with("ErrorCode 10010"), "{}", note.len());
    }
}
