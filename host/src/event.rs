//! Events as producers send them, validated against the published JSON
//! Schemas (`config/schemas/`, compiled into the binary), and typed for the
//! plugins.
//!
//! The typed fields come from `data` as documented in
//! `config/schemas/README.md`:
//! - `latency_ms` ← `latency_ms` (llm_request, system_metric)
//! - `success` ← llm_request `success`, else false when `error` is a
//!   non-empty string, else true; error_event always false
//! - `satisfaction` ← user_feedback `satisfaction`
//! - `business_value` ← business_event `value`
//! - `cost` ← `cost_usd` (llm_request, business_event)
//! - `model`, `service`, `user` ← `model`, `service`, `user_id`
//! - `health` ← system_metric `health`

use hxp_plugin_sdk::{Event, EventKind, Health};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The published schemas: (file name, text). The envelope first.
pub const SCHEMAS: [(&str, &str); 6] = [
    (
        "event.json",
        include_str!("../../config/schemas/event.json"),
    ),
    (
        "llm_request.json",
        include_str!("../../config/schemas/llm_request.json"),
    ),
    (
        "user_feedback.json",
        include_str!("../../config/schemas/user_feedback.json"),
    ),
    (
        "system_metric.json",
        include_str!("../../config/schemas/system_metric.json"),
    ),
    (
        "business_event.json",
        include_str!("../../config/schemas/business_event.json"),
    ),
    (
        "error_event.json",
        include_str!("../../config/schemas/error_event.json"),
    ),
];

/// Why an event was refused. The message names the problem; `field` names
/// where (a JSON pointer such as `/data/latency_ms`) when there is one.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, utoipa::ToSchema)]
#[error("{message}")]
pub struct EventError {
    pub kind: EventErrorKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventErrorKind {
    /// Not JSON at all (HTTP 400).
    MalformedJson,
    /// JSON, but not an event: wrong shape, unknown type, schema violation (422).
    Invalid,
    /// The event type is switched off in `event_consumers` (422).
    Disabled,
}

impl EventError {
    fn invalid(message: String, field: Option<String>) -> EventError {
        EventError {
            kind: EventErrorKind::Invalid,
            message,
            field,
        }
    }

    pub fn malformed(e: &serde_json::Error) -> EventError {
        EventError {
            kind: EventErrorKind::MalformedJson,
            message: format!("malformed JSON: {e}"),
            field: None,
        }
    }
}

/// A validated event, ready for the pipeline.
#[derive(Debug, Clone)]
pub struct ValidEvent {
    pub kind: EventKind,
    /// UUID text.
    pub id: String,
    pub time_ms: i64,
    /// The `data` object as JSON text (stored as sent, re-serialized).
    pub data: String,
    /// Typed fields for the plugins (`seq` and `payload` are filled later).
    pub typed: Event,
}

struct Validators {
    envelope: jsonschema::Validator,
    data: Vec<jsonschema::Validator>,
}

fn validators() -> &'static Validators {
    static V: OnceLock<Validators> = OnceLock::new();
    V.get_or_init(|| {
        let build = |text: &str| {
            let schema: Value = serde_json::from_str(text).expect("bundled schema is JSON");
            jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .expect("bundled schema compiles")
        };
        Validators {
            envelope: build(SCHEMAS[0].1),
            data: SCHEMAS[1..].iter().map(|(_, t)| build(t)).collect(),
        }
    })
}

/// Schema text of one event type's `data`.
pub fn data_schema(kind: EventKind) -> &'static str {
    SCHEMAS[1 + kind.index()].1
}

/// First schema violation as an error naming the field (valid input takes
/// the fast path that builds no error).
fn schema_error(v: &jsonschema::Validator, instance: &Value, prefix: &str) -> Option<EventError> {
    if v.is_valid(instance) {
        return None;
    }
    let e = v.iter_errors(instance).next()?;
    let path = format!("{prefix}{}", e.instance_path());
    let field = if path.is_empty() {
        None
    } else {
        Some(path.clone())
    };
    let at = if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    };
    Some(EventError::invalid(format!("{at}{e}"), field))
}

/// Validate one event given as a JSON value.
pub fn validate(value: Value, now_ms: i64, enabled: &[bool; 5]) -> Result<ValidEvent, EventError> {
    parse(
        &serde_json::to_vec(&value).expect("a Value serializes"),
        now_ms,
        enabled,
    )
}

/// Parse and validate one event from JSON text. `now_ms` stamps events that
/// carry no timestamp; `enabled` says which types are accepted.
///
/// The `data` object is kept as sent (its text is what is stored) and
/// parsed once, for validation and the typed fields.
pub fn parse(text: &[u8], now_ms: i64, enabled: &[bool; 5]) -> Result<ValidEvent, EventError> {
    parse_with(text, now_ms, enabled, &Defaults::default())
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
pub fn parse_with(
    text: &[u8],
    now_ms: i64,
    enabled: &[bool; 5],
    defaults: &Defaults,
) -> Result<ValidEvent, EventError> {
    let fields: BTreeMap<String, &RawValue> = match serde_json::from_slice(text) {
        Ok(f) => f,
        Err(e) if e.is_data() => {
            // Valid JSON, but not an object: say what it is.
            let v: Value = serde_json::from_slice(text).map_err(|e| EventError::malformed(&e))?;
            return Err(EventError::invalid(
                format!("an event must be a JSON object, not {}", json_type(&v)),
                None,
            ));
        }
        Err(e) => return Err(EventError::malformed(&e)),
    };
    let small = |raw: &RawValue| {
        serde_json::from_str::<Value>(raw.get()).expect("RawValue holds valid JSON")
    };
    let kind = match fields.get("event_type").map(|r| small(r)) {
        Some(Value::String(t)) => EventKind::parse(&t).ok_or_else(|| {
            EventError::invalid(
                format!(
                    "unknown event_type '{t}' (expected one of: {})",
                    EventKind::ALL.map(|k| k.as_str()).join(", ")
                ),
                Some("/event_type".into()),
            )
        })?,
        Some(other) => {
            return Err(EventError::invalid(
                format!("event_type must be a string, not {}", json_type(&other)),
                Some("/event_type".into()),
            ));
        }
        None if defaults.kind.is_some() => defaults.kind.expect("checked"),
        None => {
            return Err(EventError::invalid(
                "missing required field 'event_type'".into(),
                Some("/event_type".into()),
            ));
        }
    };
    if !enabled[kind.index()] {
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
    // The envelope, with `data` standing in as `{}` when it is an object (it
    // is checked against its own schema below).
    let data_raw = fields.get("data").copied();
    let data_is_object = data_raw.is_some_and(|r| r.get().starts_with('{'));
    let mut envelope: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(k, raw)| {
            let v = if k == "data" && data_is_object {
                Value::Object(Map::new())
            } else {
                small(raw)
            };
            (k.clone(), v)
        })
        .collect();
    envelope
        .entry("event_type")
        .or_insert_with(|| Value::String(kind.as_str().into()));
    let envelope = Value::Object(envelope);
    let vals = validators();
    if let Some(e) = schema_error(&vals.envelope, &envelope, "") {
        return Err(e);
    }
    let data_raw = data_raw.expect("schema requires data");
    let data: Value = serde_json::from_str(data_raw.get()).expect("RawValue holds valid JSON");
    if let Some(e) = schema_error(&vals.data[kind.index()], &data, "/data") {
        return Err(e);
    }
    let event_uuid = match envelope.get("event_id") {
        Some(Value::String(s)) => uuid::Uuid::parse_str(s).map_err(|e| {
            EventError::invalid(
                format!("event_id is not a UUID: {e}"),
                Some("/event_id".into()),
            )
        })?,
        // Time-ordered (version 7): the event_id index then grows at its
        // end instead of taking random inserts.
        _ => match defaults.id {
            Some(id) => uuid::Uuid::from_u128(id),
            None => uuid::Uuid::now_v7(),
        },
    };
    let time_ms = match envelope.get("timestamp") {
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| {
                EventError::invalid(
                    format!("timestamp is not an RFC 3339 date-time: {e}"),
                    Some("/timestamp".into()),
                )
            })?
            .timestamp_millis(),
        _ => now_ms,
    };
    let Value::Object(data) = data else {
        unreachable!("schema requires an object")
    };
    let typed = typed(kind, &data, event_uuid.as_u128(), time_ms);
    Ok(ValidEvent {
        kind,
        id: event_uuid.hyphenated().to_string(),
        time_ms,
        data: data_raw.get().to_string(),
        typed,
    })
}

/// The `event_consumers` key of a type (`llm_requests`, ...).
pub fn consumer_key(kind: EventKind) -> &'static str {
    match kind {
        EventKind::LlmRequest => "llm_requests",
        EventKind::UserFeedback => "user_feedback",
        EventKind::SystemMetric => "system_metrics",
        EventKind::BusinessEvent => "business_events",
        EventKind::ErrorEvent => "error_events",
    }
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

/// The typed fields the plugins get (see the module docs).
pub fn typed(kind: EventKind, data: &Map<String, Value>, id: u128, time_ms: i64) -> Event {
    let num = |k: &str| data.get(k).and_then(Value::as_f64);
    let text = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_string);
    let (latency_ms, success, satisfaction, business_value, cost) = match kind {
        EventKind::LlmRequest => {
            let failed_msg = data
                .get("error")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            let success = data
                .get("success")
                .and_then(Value::as_bool)
                .unwrap_or(!failed_msg);
            (
                num("latency_ms"),
                Some(success),
                None,
                None,
                num("cost_usd"),
            )
        }
        EventKind::UserFeedback => (None, None, num("satisfaction"), None, None),
        EventKind::SystemMetric => (num("latency_ms"), None, None, None, None),
        EventKind::BusinessEvent => (None, None, None, num("value"), num("cost_usd")),
        EventKind::ErrorEvent => (None, Some(false), None, None, None),
    };
    let health = match kind {
        EventKind::SystemMetric => data
            .get("health")
            .and_then(Value::as_str)
            .and_then(Health::parse),
        _ => None,
    };
    Event {
        seq: 0,
        kind,
        id,
        time_ms,
        latency_ms,
        success,
        satisfaction,
        business_value,
        cost,
        model: text("model"),
        service: text("service"),
        user: text("user_id"),
        health,
        payload: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [bool; 5] = [true; 5];

    fn ok(text: &str) -> ValidEvent {
        parse(text.as_bytes(), 1_700_000_000_000, &ALL).unwrap()
    }

    fn err(text: &str) -> EventError {
        parse(text.as_bytes(), 0, &ALL).unwrap_err()
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
        let e = parse(
            br#"{"event_type":"error_event","data":{}}"#,
            0,
            &[true, true, true, true, false],
        )
        .unwrap_err();
        assert_eq!(e.kind, EventErrorKind::Disabled);
        assert!(
            e.message.contains("event_consumers.error_events_enabled"),
            "{e}"
        );
    }
}
