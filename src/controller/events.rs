//! Events (events.k8s.io/v1) from the pure [`notices`](crate::engine::status::notices):
//! Normal when members were unbanned, Warning when a policy stalls. A state
//! that did not change makes no Event.

use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::engine::status::Notice;

/// kube's [`Recorder`] keeps the Events of the last six minutes to count
/// repeats, and walks that whole cache on every publish: with ten thousand
/// policies converging at once, publishing becomes quadratic (6% of the
/// operator's CPU in the 10,000-policy benchmark). The Events of one object
/// always go to the same shard, so each shard counts exactly the repeats one
/// recorder would, over a cache a [`RECORDER_SHARDS`]th the size.
pub struct EventRecorders {
    shards: Vec<Recorder>,
}

/// How many recorders Events are spread over.
pub const RECORDER_SHARDS: usize = 64;

impl EventRecorders {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { shards: (0..RECORDER_SHARDS).map(|_| Recorder::new(client.clone(), reporter.clone())).collect() }
    }

    /// The recorder for Events about `regarding`: the same for the same object.
    pub fn for_object(&self, regarding: &ObjectReference) -> &Recorder {
        &self.shards[shard_of(regarding)]
    }
}

fn shard_of(regarding: &ObjectReference) -> usize {
    let mut hasher = DefaultHasher::new();
    (&regarding.namespace, &regarding.name, &regarding.uid).hash(&mut hasher);
    (hasher.finish() % RECORDER_SHARDS as u64) as usize
}

/// Event messages are cut to this many bytes (the API's limit is 1 KiB).
pub const MAX_NOTE_BYTES: usize = 1024;

/// The Event reason for newly unbanned members.
pub const MEMBERS_UNBANNED: &str = "MembersUnbanned";

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
