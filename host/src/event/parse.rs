//! One event from JSON text to a [`ValidEvent`]: the envelope and `data`
//! checked against the schemas, the type, id and time resolved, the typed
//! fields taken. Every input gives a result or an [`EventError`].

use super::schema::{schema_error, validators};
use super::{EventError, EventErrorKind, ValidEvent, consumer_key, typed};
use hxp_plugin_sdk::EventKind;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What a source accepts: the event types switched on
/// (`event_consumers`), and how far ahead of the host clock an event's
/// timestamp may be (`stream_processing.max_clock_skew_secs`): a year-9999
/// timestamp would otherwise hold event time, and every window, in the
/// future.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acceptance {
    /// In `EventKind` order.
    pub enabled: [bool; 5],
    pub max_ahead_ms: i64,
}

impl Acceptance {
    /// Every type, any timestamp: for recorded events replayed by tools,
    /// where "now" is the replay's own clock.
    pub const ALL: Acceptance = Acceptance::types([true; 5]);

    /// These types, any timestamp.
    pub const fn types(enabled: [bool; 5]) -> Acceptance {
        Acceptance {
            enabled,
            max_ahead_ms: i64::MAX,
        }
    }
}

/// Validate one event given as a JSON value.
pub fn validate(value: Value, now_ms: i64, accept: &Acceptance) -> Result<ValidEvent, EventError> {
    parse(
        &serde_json::to_vec(&value).expect("a Value serializes"),
        now_ms,
        accept,
    )
}

/// Parse and validate one event from JSON text. `now_ms` stamps events that
/// carry no timestamp and is the clock future timestamps are measured
/// against; `accept` says which types and timestamps are accepted.
///
/// The `data` object is kept as sent (its text is what is stored) and
/// parsed once, for validation and the typed fields.
pub fn parse(text: &[u8], now_ms: i64, accept: &Acceptance) -> Result<ValidEvent, EventError> {
    parse_with(text, now_ms, accept, &Defaults::default())
}

/// What a source fills in when an event does not say it (Kafka: the
/// topic's type, and an id derived from the message's position so that a
/// redelivery maps to the same event).
#[derive(Debug, Clone, Copy, Default)]
pub struct Defaults {
    pub kind: Option<EventKind>,
    pub id: Option<u128>,
}

/// [`parse`], with source defaults for `event_type` and `event_id`.
///
/// A panic in the validator (a bug: every input should give a result)
/// refuses this one event with an [`EventErrorKind::Internal`] error; the
/// source and its thread go on.
pub fn parse_with(
    text: &[u8],
    now_ms: i64,
    accept: &Acceptance,
    defaults: &Defaults,
) -> Result<ValidEvent, EventError> {
    crate::util::panic::catch(|| parse_unguarded(text, now_ms, accept, defaults))
        .unwrap_or_else(|panic| Err(EventError::internal(&panic)))
}

fn parse_unguarded(
    text: &[u8],
    now_ms: i64,
    accept: &Acceptance,
    defaults: &Defaults,
) -> Result<ValidEvent, EventError> {
    let fields = top_level(text)?;
    let kind = event_kind(&fields, defaults)?;
    if !accept.enabled[kind.index()] {
        return Err(EventError {
            kind: EventErrorKind::Disabled,
            message: format!(
                "event_type '{}' is disabled on this service (event_consumers.{}_enabled is false)",
                kind.as_str(),
                consumer_key(kind)
            ),
            field: Some("/event_type".into()),
        });
    }
    let envelope = envelope(&fields, kind)?;
    let vals = validators();
    if let Some(e) = schema_error(&vals.envelope, &envelope, "") {
        return Err(e);
    }
    let Some(data_raw) = fields.get("data") else {
        return Err(EventError::invalid(
            "missing required field 'data'".into(),
            Some("/data".into()),
        ));
    };
    let data = value(data_raw)?;
    if let Some(e) = schema_error(&vals.data[kind.index()], &data, "/data") {
        return Err(e);
    }
    let Value::Object(data) = data else {
        return Err(EventError::invalid(
            "data must be an object".into(),
            Some("/data".into()),
        ));
    };
    let event_uuid = event_id(&envelope, defaults)?;
    let time_ms = event_time(&envelope, now_ms)?;
    not_ahead(time_ms, now_ms, accept.max_ahead_ms)?;
    let typed = typed(kind, &data, event_uuid.as_u128(), time_ms);
    Ok(ValidEvent {
        kind,
        id: event_uuid.hyphenated().to_string(),
        time_ms,
        data: data_raw.get().to_string(),
        typed,
        lane: None,
    })
}

/// The top-level fields, each kept as its JSON text.
fn top_level(text: &[u8]) -> Result<BTreeMap<String, &RawValue>, EventError> {
    match serde_json::from_slice(text) {
        Ok(f) => Ok(f),
        Err(e) if e.is_data() => {
            // Valid JSON, but not an object: say what it is.
            let v: Value = serde_json::from_slice(text).map_err(|e| EventError::malformed(&e))?;
            Err(EventError::invalid(
                format!("an event must be a JSON object, not {}", json_type(&v)),
                None,
            ))
        }
        Err(e) => Err(EventError::malformed(&e)),
    }
}

/// A field's value. Its text is valid JSON, but parsing it can still fail:
/// nesting deeper than the parser's limit is refused as malformed.
fn value(raw: &RawValue) -> Result<Value, EventError> {
    serde_json::from_str(raw.get()).map_err(|e| EventError::malformed(&e))
}

/// `event_type`, else the source's default type.
fn event_kind(
    fields: &BTreeMap<String, &RawValue>,
    defaults: &Defaults,
) -> Result<EventKind, EventError> {
    let field = Some("/event_type".to_string());
    match fields.get("event_type").map(|r| value(r)).transpose()? {
        Some(Value::String(t)) => EventKind::parse(&t).ok_or_else(|| {
            EventError::unknown_type(
                format!(
                    "unknown event_type '{t}' (expected one of: {})",
                    EventKind::ALL.map(|k| k.as_str()).join(", ")
                ),
                field,
            )
        }),
        Some(other) => Err(EventError::invalid(
            format!("event_type must be a string, not {}", json_type(&other)),
            field,
        )),
        None => defaults.kind.ok_or_else(|| {
            EventError::invalid("missing required field 'event_type'".into(), field)
        }),
    }
}

/// The envelope to check against its schema, with `data` standing in as
/// `{}` when it is an object (it is checked against its own schema).
fn envelope(fields: &BTreeMap<String, &RawValue>, kind: EventKind) -> Result<Value, EventError> {
    let data_is_object = fields.get("data").is_some_and(|r| r.get().starts_with('{'));
    let mut envelope = Map::new();
    for (k, raw) in fields {
        let v = if k == "data" && data_is_object {
            Value::Object(Map::new())
        } else {
            value(raw)?
        };
        envelope.insert(k.clone(), v);
    }
    envelope
        .entry("event_type")
        .or_insert_with(|| Value::String(kind.as_str().into()));
    Ok(Value::Object(envelope))
}

/// `event_id`, else the source's derived id, else a new time-ordered
/// (version 7) id: the event_id index then grows at its end instead of
/// taking random inserts.
fn event_id(envelope: &Value, defaults: &Defaults) -> Result<uuid::Uuid, EventError> {
    match envelope.get("event_id") {
        Some(Value::String(s)) => uuid::Uuid::parse_str(s).map_err(|e| {
            EventError::invalid(
                format!("event_id is not a UUID: {e}"),
                Some("/event_id".into()),
            )
        }),
        _ => Ok(match defaults.id {
            Some(id) => uuid::Uuid::from_u128(id),
            None => uuid::Uuid::now_v7(),
        }),
    }
}

/// `timestamp` (RFC 3339), else the time of ingestion.
fn event_time(envelope: &Value, now_ms: i64) -> Result<i64, EventError> {
    match envelope.get("timestamp") {
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|e| {
                EventError::invalid(
                    format!("timestamp is not an RFC 3339 date-time: {e}"),
                    Some("/timestamp".into()),
                )
            }),
        _ => Ok(now_ms),
    }
}

/// Refuse a timestamp more than `max_ahead_ms` after `now_ms`.
fn not_ahead(time_ms: i64, now_ms: i64, max_ahead_ms: i64) -> Result<(), EventError> {
    let ahead = time_ms.saturating_sub(now_ms);
    if ahead <= max_ahead_ms {
        return Ok(());
    }
    Err(EventError::invalid(
        format!(
            "timestamp is {} s ahead of the service's clock, more than \
             stream_processing.max_clock_skew_secs ({} s): fix the producer's clock",
            ahead / 1000,
            max_ahead_ms / 1000
        ),
        Some("/timestamp".into()),
    ))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hxp_plugin_sdk::Health;

    const ALL: Acceptance = Acceptance::ALL;

    fn ok(text: &str) -> ValidEvent {
        parse(text.as_bytes(), 1_700_000_000_000, &ALL).unwrap()
    }

    fn err(text: &str) -> EventError {
        parse(text.as_bytes(), 0, &ALL).unwrap_err()
    }

    #[test]
    fn a_timestamp_too_far_ahead_of_the_clock_is_refused() {
        let now = 1_767_323_045_500; // 2026-01-02T03:04:05.5Z
        let accept = Acceptance {
            enabled: [true; 5],
            max_ahead_ms: 300_000,
        };
        let at = |t: &str| {
            let text = format!(
                r#"{{"event_type":"llm_request","timestamp":"{t}","data":{{"model":"m"}}}}"#
            );
            parse(text.as_bytes(), now, &accept)
        };
        assert!(
            at("2026-01-02T03:09:05.5Z").is_ok(),
            "300 s ahead is within"
        );
        assert!(
            at("2025-01-02T03:04:05Z").is_ok(),
            "the past is never refused here"
        );
        for t in ["2026-01-02T03:09:06Z", "9999-12-31T23:59:59Z"] {
            let e = at(t).unwrap_err();
            assert_eq!(e.kind, EventErrorKind::Invalid);
            assert_eq!(e.field.as_deref(), Some("/timestamp"));
            assert!(
                e.message.contains("max_clock_skew_secs (300 s)"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn the_requirements_example_is_valid() {
        let e = ok(r#"{"event_type": "llm_request", "data": {"model": "mixtral-8x7b"}}"#);
        assert_eq!(e.kind, EventKind::LlmRequest);
        assert_eq!(e.typed.model.as_deref(), Some("mixtral-8x7b"));
        assert_eq!(e.typed.success, Some(true));
        assert_eq!(e.time_ms, 1_700_000_000_000);
        assert!(uuid::Uuid::parse_str(&e.id).is_ok());
    }

    #[test]
    fn typed_fields() {
        let e = ok(
            r#"{"event_type":"llm_request","event_id":"6F9619FF-8B86-D011-B42D-00C04FC964FF","timestamp":"2026-01-02T03:04:05.5Z",
                "data":{"model":"m","latency_ms":120.5,"error":"boom","cost_usd":0.02,"user_id":"u1","service":"gw"}}"#,
        );
        assert_eq!(e.id, "6f9619ff-8b86-d011-b42d-00c04fc964ff");
        assert_eq!(e.time_ms, 1_767_323_045_500);
        assert_eq!(e.typed.latency_ms, Some(120.5));
        assert_eq!(e.typed.success, Some(false));
        assert_eq!(e.typed.cost, Some(0.02));
        assert_eq!(e.typed.user.as_deref(), Some("u1"));
        assert_eq!(e.typed.service.as_deref(), Some("gw"));
        let m = ok(r#"{"event_type":"system_metric","data":{"service":"vllm","health":"failed"}}"#);
        assert_eq!(m.typed.health, Some(Health::Failed));
        let f = ok(r#"{"event_type":"user_feedback","data":{"satisfaction":6.5}}"#);
        assert_eq!(f.typed.satisfaction, Some(6.5));
        let b = ok(r#"{"event_type":"business_event","data":{"name":"renewal","value":-12}}"#);
        assert_eq!(b.typed.business_value, Some(-12.0));
        let x =
            ok(r#"{"event_type":"error_event","data":{"service":"db","error_type":"timeout"}}"#);
        assert_eq!(x.typed.success, Some(false));
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(err("{").kind, EventErrorKind::MalformedJson);
        let e = err(r#"{"event_type":"llm_requests","data":{}}"#);
        assert!(
            e.message.contains("unknown event_type 'llm_requests'"),
            "{e}"
        );
        let e = err(r#"{"data":{}}"#);
        assert!(
            e.message.contains("missing required field 'event_type'"),
            "{e}"
        );
        let e = err(r#"{"event_type":"llm_request","data":{"model":"m","latency_ms":"fast"}}"#);
        assert_eq!(e.field.as_deref(), Some("/data/latency_ms"));
        assert!(e.message.contains("not of type \"number\""), "{e}");
        let e = err(r#"{"event_type":"llm_request","data":{}}"#);
        assert!(
            e.message.contains("\"model\" is a required property"),
            "{e}"
        );
        let e = err(r#"{"event_type":"user_feedback","data":{"satisfaction":11}}"#);
        assert!(e.message.contains("maximum of 10"), "{e}");
        let e = err(r#"{"event_type":"llm_request","data":{"model":"m"},"event_id":"nope"}"#);
        assert_eq!(e.field.as_deref(), Some("/event_id"));
        let e = err(r#"{"event_type":"llm_request","data":{"model":"m"},"extra":1}"#);
        assert!(e.message.contains("extra"), "{e}");
        let e = err(r#"[1,2]"#);
        assert!(e.message.contains("not an array"), "{e}");
        let deep = format!(
            r#"{{"event_type":"llm_request","data":{{"model":"m","x":{}{}}}}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        );
        let e = err(&deep);
        assert_eq!(e.kind, EventErrorKind::MalformedJson, "{e}");
        assert!(e.message.contains("recursion limit"), "{e}");
        let e = parse(
            br#"{"event_type":"error_event","data":{}}"#,
            0,
            &Acceptance::types([true, true, true, true, false]),
        )
        .unwrap_err();
        assert_eq!(e.kind, EventErrorKind::Disabled);
        assert!(
            e.message.contains("event_consumers.error_events_enabled"),
            "{e}"
        );
    }
}
