//! Property-based tests of what a consumed Kafka message becomes
//! ([`check`]): an event, or a dead letter whose reason is one of the
//! documented `hxp-error` header values.

use super::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The `hxp-error` values the README documents.
const DOCUMENTED: [&str; 7] = [
    "malformed_json",
    "unknown_event_type",
    "invalid_event",
    "oversized",
    "empty",
    "disabled_type",
    "internal_error",
];

/// A minimal valid `data` object per kind, with `s` in a string field.
fn data(kind: EventKind, s: &str) -> String {
    let s = serde_json::to_string(if s.is_empty() { "x" } else { s }).unwrap();
    match kind {
        EventKind::LlmRequest => format!(r#"{{"model":{s}}}"#),
        EventKind::UserFeedback => format!(r#"{{"satisfaction":5,"comment":{s}}}"#),
        EventKind::SystemMetric => format!(r#"{{"service":{s}}}"#),
        EventKind::BusinessEvent => format!(r#"{{"name":{s},"value":1}}"#),
        EventKind::ErrorEvent => format!(r#"{{"service":{s},"error_type":"t"}}"#),
    }
}

fn kind() -> impl Strategy<Value = EventKind> {
    (0..5usize).prop_map(|i| EventKind::ALL[i])
}

/// What a payload is, so that its reason can be predicted.
#[derive(Debug, Clone)]
enum Payload {
    /// A valid event, with or without `event_type` / `event_id`.
    Event {
        kind: EventKind,
        typed: bool,
        id: Option<uuid::Uuid>,
    },
    /// Not JSON.
    Garbage,
    /// `event_type` names no type.
    Unknown,
    /// JSON, not a valid event (of this type, if it names one).
    Invalid(Option<EventKind>),
    /// Arbitrary bytes: any reason but `empty`/`oversized` (when it fits).
    Any,
}

fn payload() -> impl Strategy<Value = (Payload, Vec<u8>)> {
    let event = (
        kind(),
        any::<bool>(),
        prop::option::of(any::<u128>()),
        any::<String>(),
    )
        .prop_map(|(kind, typed, id, s)| {
            let id = id.map(uuid::Uuid::from_u128);
            let mut fields = vec![format!(r#""data":{}"#, data(kind, &s))];
            if typed {
                fields.push(format!(r#""event_type":"{}""#, kind.as_str()));
            }
            if let Some(id) = id {
                fields.push(format!(r#""event_id":"{id}""#));
            }
            let text = format!("{{{}}}", fields.join(","));
            (Payload::Event { kind, typed, id }, text.into_bytes())
        });
    prop_oneof![
        4 => event,
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(|mut b| {
            b.insert(0, b'#');
            (Payload::Garbage, b)
        }),
        1 => "[a-z_]{0,12}".prop_filter("not a type", |t| EventKind::parse(t).is_none())
            .prop_map(|t| (Payload::Unknown, format!(r#"{{"event_type":"{t}","data":{{}}}}"#).into_bytes())),
        1 => prop::sample::select(vec![
            (Some(EventKind::LlmRequest), r#"{"event_type":"llm_request","data":{}}"#),
            (Some(EventKind::UserFeedback), r#"{"event_type":"user_feedback","data":{"satisfaction":-1}}"#),
            (Some(EventKind::ErrorEvent), r#"{"event_type":"error_event","data":{"service":"s","error_type":"t"},"event_id":"x"}"#),
            (None, r#"[]"#),
            (None, r#"{"event_type":7,"data":{}}"#),
        ]).prop_map(|(k, t)| (Payload::Invalid(k), t.as_bytes().to_vec())),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(|b| (Payload::Any, b)),
    ]
}

fn msg(
    topic: &str,
    kind: Option<EventKind>,
    partition: i32,
    offset: i64,
    payload: Option<Vec<u8>>,
) -> Msg {
    Msg {
        topic: topic.into(),
        kind,
        partition,
        offset,
        key: None,
        payload,
    }
}

fn check_reason(r: &Result<ValidEvent, (DeadLetterReason, String)>) -> Result<(), TestCaseError> {
    if let Err((reason, message)) = r {
        prop_assert!(
            DOCUMENTED.contains(&reason.as_str()),
            "undocumented reason {}",
            reason.as_str()
        );
        prop_assert_ne!(
            *reason,
            DeadLetterReason::InternalError,
            "the validator panicked: {}",
            message
        );
        prop_assert!(!message.is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Any message: an event within the limits, or a documented reason
    /// predicted from what the payload is.
    #[test]
    fn every_message_gets_an_event_or_a_documented_reason(
        (what, bytes) in payload(),
        absent in prop::sample::select(vec![0u8, 1, 2, 2, 2, 2, 2, 2]),
        topic_kind in prop::option::of(kind()),
        topic in "[a-z.-]{1,12}",
        partition in any::<i32>(),
        offset in any::<i64>(),
        max_bytes in prop_oneof![0usize..200, Just(usize::MAX)],
        enabled in prop_oneof![Just([true; 5]), any::<[bool; 5]>()],
        now in any::<i64>(),
    ) {
        let payload = match absent {
            0 => None,
            1 => Some(Vec::new()),
            _ => Some(bytes.clone()),
        };
        let m = msg(&topic, topic_kind, partition, offset, payload);
        let r = check(&m, max_bytes, now, &Acceptance::types(enabled));
        check_reason(&r)?;
        let reason = r.as_ref().err().map(|(reason, _)| *reason);
        if absent < 2 {
            prop_assert_eq!(reason, Some(DeadLetterReason::Empty));
            return Ok(());
        }
        if bytes.len() > max_bytes {
            prop_assert_eq!(reason, Some(DeadLetterReason::Oversized));
            let (_, message) = r.unwrap_err();
            prop_assert!(message.contains(&bytes.len().to_string()), "{}", message);
            prop_assert!(message.contains(&max_bytes.to_string()), "{}", message);
            return Ok(());
        }
        match what {
            Payload::Event { kind, typed, id } => {
                // The data fits `kind`; another type's schema may refuse it.
                let fits = typed || topic_kind == Some(kind);
                let kind = if typed { Some(kind) } else { topic_kind };
                match kind {
                    None => {
                        prop_assert_eq!(reason, Some(DeadLetterReason::InvalidEvent));
                    }
                    Some(k) if !enabled[k.index()] => {
                        prop_assert_eq!(reason, Some(DeadLetterReason::DisabledType));
                    }
                    Some(_) if !fits && reason == Some(DeadLetterReason::InvalidEvent) => {}
                    Some(k) => {
                        let ev = r.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                        prop_assert_eq!(ev.kind, k);
                        let expected = id.map(|i| i.as_u128())
                            .unwrap_or_else(|| derived_id(&topic, partition, offset));
                        prop_assert_eq!(ev.typed.id, expected);
                        prop_assert_eq!(&ev.id, &uuid::Uuid::from_u128(expected).hyphenated().to_string());
                        prop_assert_eq!(ev.time_ms, now);
                    }
                }
            }
            Payload::Garbage => prop_assert_eq!(reason, Some(DeadLetterReason::MalformedJson)),
            Payload::Unknown => prop_assert_eq!(reason, Some(DeadLetterReason::UnknownEventType)),
            Payload::Invalid(Some(k)) if !enabled[k.index()] => {
                prop_assert_eq!(reason, Some(DeadLetterReason::DisabledType))
            }
            Payload::Invalid(_) => prop_assert_eq!(reason, Some(DeadLetterReason::InvalidEvent)),
            Payload::Any => prop_assert!(!matches!(
                reason,
                Some(DeadLetterReason::Empty | DeadLetterReason::Oversized)
            )),
        }
    }

    /// A message without `event_id` gets the id derived from its position:
    /// the same on every delivery, different at another offset (or
    /// partition, or topic).
    #[test]
    fn derived_ids_follow_the_position(
        k in kind(),
        s in any::<String>(),
        topic in "[a-z.-]{1,12}",
        partition in any::<i32>(),
        offset in any::<i64>(),
        other in any::<i64>(),
    ) {
        prop_assume!(other != offset);
        let text = format!(r#"{{"event_type":"{}","data":{}}}"#, k.as_str(), data(k, &s));
        let at = |topic: &str, partition: i32, offset: i64| {
            check(&msg(topic, None, partition, offset, Some(text.clone().into_bytes())), usize::MAX, 0, &Acceptance::ALL)
                .map(|e| e.id)
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))
        };
        let first = at(&topic, partition, offset)?;
        prop_assert_eq!(&first, &at(&topic, partition, offset)?);
        prop_assert_ne!(&first, &at(&topic, partition, other)?);
        prop_assert_ne!(&first, &at(&topic, partition.wrapping_add(1), offset)?);
        prop_assert_ne!(&first, &at(&format!("{topic}x"), partition, offset)?);
        prop_assert_eq!(uuid::Uuid::parse_str(&first).unwrap().get_version_num(), 8);
    }

    /// The topic's type fills in a missing `event_type`; a message's own
    /// type wins over it.
    #[test]
    fn the_messages_own_type_wins_over_the_topics(
        own in kind(),
        topic_kind in kind(),
        s in any::<String>(),
    ) {
        let untyped = format!(r#"{{"data":{}}}"#, data(topic_kind, &s));
        let e = check(&msg("t", Some(topic_kind), 0, 1, Some(untyped.into_bytes())), usize::MAX, 0, &Acceptance::ALL);
        prop_assert_eq!(e.map(|e| e.kind).map_err(|e| e.1), Ok(topic_kind));
        let typed = format!(r#"{{"event_type":"{}","data":{}}}"#, own.as_str(), data(own, &s));
        let e = check(&msg("t", Some(topic_kind), 0, 1, Some(typed.into_bytes())), usize::MAX, 0, &Acceptance::ALL);
        prop_assert_eq!(e.map(|e| e.kind).map_err(|e| e.1), Ok(own));
    }
}
