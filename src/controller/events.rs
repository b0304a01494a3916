//! Events (events.k8s.io/v1) from the pure [`notices`](crate::engine::status::notices):
//! Normal when members were unbanned, Warning when a policy stalls. A state
//! that did not change makes no Event.

use kube::runtime::events::{Event, EventType};

use crate::engine::status::Notice;

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
