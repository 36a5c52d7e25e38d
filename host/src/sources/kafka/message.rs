//! One consumed message and what it becomes: a valid event, or the reason
//! it goes to the dead-letter topic. Pure: the consumer thread calls
//! [`check`] on the validation threads.

use super::dead_letter::DeadLetterReason;
use crate::event::{self, Acceptance, Defaults, EventError, ValidEvent, derived_id};
use hxp_plugin_sdk::EventKind;
use std::sync::Arc;

/// One consumed message, copied out of the client's buffer.
pub(super) struct Msg {
    pub(super) topic: Arc<str>,
    pub(super) kind: Option<EventKind>,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Option<Vec<u8>>,
}

/// A message's event, or why it is refused. `kind` (the topic's type, if
/// it carries one) fills in a missing `event_type`; an id derived from
/// topic, partition and offset fills in a missing `event_id`, so a
/// redelivery is a duplicate.
pub(super) fn check(
    m: &Msg,
    max_bytes: usize,
    now_ms: i64,
    accept: &Acceptance,
) -> Result<ValidEvent, (DeadLetterReason, String)> {
    let Some(payload) = m.payload.as_deref().filter(|p| !p.is_empty()) else {
        return Err((DeadLetterReason::Empty, "the message has no payload".into()));
    };
    if payload.len() > max_bytes {
        return Err((
            DeadLetterReason::Oversized,
            format!(
                "the message has {} bytes, more than kafka.max_message_bytes ({max_bytes})",
                payload.len()
            ),
        ));
    }
    let defaults = Defaults {
        kind: m.kind,
        id: Some(derived_id(&m.topic, m.partition, m.offset)),
    };
    event::parse_with(payload, now_ms, accept, &defaults)
        .map_err(|e: EventError| (DeadLetterReason::of(&e), e.message))
}

#[cfg(test)]
#[path = "message_proptests.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_type_fills_in_a_missing_event_type() {
        let enabled = Acceptance::ALL;
        let d = Defaults {
            kind: Some(EventKind::UserFeedback),
            id: Some(derived_id("user-feedback", 0, 1)),
        };
        let e = event::parse_with(br#"{"data": {"satisfaction": 8}}"#, 0, &enabled, &d).unwrap();
        assert_eq!(e.kind, EventKind::UserFeedback);
        assert_eq!(e.typed.id, d.id.unwrap());
        // The message's own type and id win.
        let e = event::parse_with(
            br#"{"event_type": "error_event", "event_id": "0190a0a0-0000-7000-8000-000000000001", "data": {"service": "api", "error_type": "timeout"}}"#,
            0,
            &enabled,
            &d,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::ErrorEvent);
        assert_eq!(e.id, "0190a0a0-0000-7000-8000-000000000001");
    }
}
