//! Property-based tests of event parsing and validation.
//!
//! Every input gives a [`ValidEvent`] or an [`EventError`] (never a panic,
//! which `parse_with` would report as [`EventErrorKind::InternalError`],
//! nor a stack overflow); an accepted event keeps its promises (a UUID id,
//! its `data` text as sent, an enabled kind, the documented typed fields);
//! a refused one says why and, for a schema violation, where.

use super::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};

const ALL: [bool; 5] = [true; 5];

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// What every result must satisfy.

/// The promises of any result of `parse(text, now_ms, enabled)` (no
/// source defaults).
fn check_any(
    text: &[u8],
    now_ms: i64,
    enabled: &[bool; 5],
    r: &Result<ValidEvent, EventError>,
) -> Result<(), TestCaseError> {
    let as_value: Result<Value, _> = serde_json::from_slice(text);
    match r {
        Err(e) => {
            prop_assert_ne!(
                e.kind,
                EventErrorKind::InternalError,
                "the validator panicked: {}",
                e.message
            );
            prop_assert!(!e.message.is_empty(), "empty message: {e:?}");
            if let Some(f) = &e.field {
                prop_assert!(f.starts_with('/'), "field is not a JSON pointer: {e:?}");
            }
            // Text that parses as JSON is never "malformed", and text that
            // does not is never accepted (checked below).
            if e.kind == EventErrorKind::MalformedJson {
                prop_assert!(as_value.is_err(), "JSON called malformed: {e:?}");
            }
            if let Ok(v) = &as_value
                && !v.is_object()
            {
                prop_assert_eq!(e.kind, EventErrorKind::Invalid);
                prop_assert!(e.message.contains("must be a JSON object"), "{e:?}");
            }
        }
        Ok(ev) => {
            let Some(top) = fields_of(text) else {
                return Err(TestCaseError::fail(format!(
                    "accepted text that is not a JSON object: {:?}",
                    String::from_utf8_lossy(text)
                )));
            };
            check_ok(&top, now_ms, enabled, ev, None)?;
        }
    }
    Ok(())
}

/// The fields of a JSON object, each parsed on its own: the parser's
/// nesting limit applies to each field's value, not to the whole text (an
/// event whose `data` nests to the limit is valid).
fn fields_of(text: &[u8]) -> Option<Map<String, Value>> {
    let raw: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_slice(text).ok()?;
    raw.into_iter()
        .map(|(k, v)| Some((k, serde_json::from_str(v.get()).ok()?)))
        .collect()
}

/// The promises of an accepted event, given the object it came from.
/// `default_id`: the id a source fills in (else a new version 7 id).
fn check_ok(
    top: &Map<String, Value>,
    now_ms: i64,
    enabled: &[bool; 5],
    ev: &ValidEvent,
    default_id: Option<u128>,
) -> Result<(), TestCaseError> {
    prop_assert!(enabled[ev.kind.index()], "accepted a disabled kind");
    prop_assert_eq!(top.get("event_type"), Some(&json!(ev.kind.as_str())));
    let id = uuid::Uuid::parse_str(&ev.id);
    prop_assert!(id.is_ok(), "id {:?} is not a UUID", ev.id);
    let id = id.unwrap();
    prop_assert_eq!(&ev.id, &id.hyphenated().to_string(), "id not canonical");
    match top.get("event_id") {
        Some(Value::String(s)) => {
            prop_assert_eq!(Some(id), uuid::Uuid::parse_str(s).ok(), "event_id not kept")
        }
        _ => match default_id {
            Some(d) => prop_assert_eq!(id.as_u128(), d),
            None => prop_assert_eq!(id.get_version_num(), 7),
        },
    }
    match top.get("timestamp") {
        Some(Value::String(s)) => {
            let t = chrono::DateTime::parse_from_rfc3339(s).map(|t| t.timestamp_millis());
            prop_assert_eq!(Ok(ev.time_ms), t.map_err(|e| e.to_string()));
        }
        _ => prop_assert_eq!(ev.time_ms, now_ms),
    }
    // `data`: kept as sent, an object, the same value.
    let data: Result<Value, _> = serde_json::from_str(&ev.data);
    prop_assert!(data.is_ok(), "data text does not re-parse: {:?}", ev.data);
    let data = data.unwrap();
    prop_assert_eq!(Some(&data), top.get("data"));
    let Value::Object(data) = data else {
        return Err(TestCaseError::fail("data is not an object"));
    };
    prop_assert_eq!(
        &ev.typed,
        &expected_typed(ev.kind, &data, id.as_u128(), ev.time_ms)
    );
    // Read back from the stored text (replay, backtests): the same.
    prop_assert_eq!(
        &ev.typed,
        &super::typed_from_text(ev.kind, &ev.data, id.as_u128(), ev.time_ms)
    );
    Ok(())
}

/// The typed fields as `typed.rs` documents them (written from the docs,
/// not from the code).
fn expected_typed(kind: EventKind, data: &Map<String, Value>, id: u128, time_ms: i64) -> Event {
    use EventKind::*;
    let num = |k: &str| data.get(k).and_then(Value::as_f64);
    let text = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_string);
    let mut e = Event::new(0, kind, time_ms);
    e.id = id;
    e.latency_ms = matches!(kind, LlmRequest | SystemMetric)
        .then(|| num("latency_ms"))
        .flatten();
    e.success = match kind {
        LlmRequest => Some(match data.get("success") {
            Some(Value::Bool(b)) => *b,
            _ => !matches!(data.get("error"), Some(Value::String(s)) if !s.is_empty()),
        }),
        ErrorEvent => Some(false),
        _ => None,
    };
    e.satisfaction = (kind == UserFeedback)
        .then(|| num("satisfaction"))
        .flatten();
    e.business_value = (kind == BusinessEvent).then(|| num("value")).flatten();
    e.cost = matches!(kind, LlmRequest | BusinessEvent)
        .then(|| num("cost_usd"))
        .flatten();
    e.model = text("model");
    e.service = text("service");
    e.user = text("user_id");
    e.health = (kind == SystemMetric)
        .then(|| {
            text("health").and_then(|h| match h.as_str() {
                "healthy" => Some(hxp_plugin_sdk::Health::Healthy),
                "degraded" => Some(hxp_plugin_sdk::Health::Degraded),
                "failed" => Some(hxp_plugin_sdk::Health::Failed),
                _ => None,
            })
        })
        .flatten();
    e.seq = 0;
    e.payload = None;
    e
}

// ---------------------------------------------------------------------------
// The data schemas (`config/schemas/*.json`), as field descriptions.

#[derive(Debug, Clone, Copy)]
enum Ty {
    /// minLength, maxLength (characters).
    Str(usize, usize),
    /// minimum, maximum.
    Num(Option<f64>, Option<f64>),
    Int(i64, Option<i64>),
    Bool,
    Enum(&'static [&'static str]),
    /// `^[A-Z]{3}$`
    Currency,
}

struct Field {
    name: &'static str,
    ty: Ty,
    required: bool,
}

const fn f(name: &'static str, ty: Ty, required: bool) -> Field {
    Field { name, ty, required }
}

const NAME: Ty = Ty::Str(1, 200);
const TEXT: Ty = Ty::Str(0, 200);
const LONG: Ty = Ty::Str(0, 4000);
const NONNEG: Ty = Ty::Num(Some(0.0), None);
const PERCENT: Ty = Ty::Num(Some(0.0), Some(100.0));

const LLM_REQUEST: &[Field] = &[
    f("model", NAME, true),
    f("user_id", TEXT, false),
    f("service", NAME, false),
    f("request_id", TEXT, false),
    f("latency_ms", NONNEG, false),
    f("success", Ty::Bool, false),
    f("error", LONG, false),
    f("status_code", Ty::Int(100, Some(599)), false),
    f("prompt_tokens", Ty::Int(0, None), false),
    f("completion_tokens", Ty::Int(0, None), false),
    f("cost_usd", NONNEG, false),
];

const USER_FEEDBACK: &[Field] = &[
    f("satisfaction", Ty::Num(Some(0.0), Some(10.0)), true),
    f("user_id", TEXT, false),
    f("model", NAME, false),
    f("service", NAME, false),
    f("request_id", TEXT, false),
    f("comment", LONG, false),
];

const SYSTEM_METRIC: &[Field] = &[
    f("service", NAME, true),
    f(
        "health",
        Ty::Enum(&["healthy", "degraded", "failed"]),
        false,
    ),
    f("model", NAME, false),
    f("latency_ms", NONNEG, false),
    f("cpu_percent", PERCENT, false),
    f("memory_percent", PERCENT, false),
    f("gpu_percent", PERCENT, false),
    f("queue_depth", Ty::Int(0, None), false),
];

const BUSINESS_EVENT: &[Field] = &[
    f("name", NAME, true),
    f("value", Ty::Num(None, None), true),
    f("currency", Ty::Currency, false),
    f("user_id", TEXT, false),
    f("model", NAME, false),
    f("service", NAME, false),
    f("cost_usd", NONNEG, false),
];

const ERROR_EVENT: &[Field] = &[
    f("service", NAME, true),
    f("error_type", NAME, true),
    f("message", LONG, false),
    f(
        "severity",
        Ty::Enum(&["info", "warning", "error", "critical"]),
        false,
    ),
    f("model", NAME, false),
    f("user_id", TEXT, false),
    f("request_id", TEXT, false),
];

fn spec(kind: EventKind) -> &'static [Field] {
    match kind {
        EventKind::LlmRequest => LLM_REQUEST,
        EventKind::UserFeedback => USER_FEEDBACK,
        EventKind::SystemMetric => SYSTEM_METRIC,
        EventKind::BusinessEvent => BUSINESS_EVENT,
        EventKind::ErrorEvent => ERROR_EVENT,
    }
}

// ---------------------------------------------------------------------------
// Generators.

fn kind() -> impl Strategy<Value = EventKind> {
    (0..5usize).prop_map(|i| EventKind::ALL[i])
}

/// Any text of `min..=max` characters (control characters, quotes,
/// backslashes, astral planes), short mostly, sometimes exactly `max`.
fn text(min: usize, max: usize) -> BoxedStrategy<String> {
    let len = prop_oneof![4 => min..=max.min(min + 16), 1 => Just(max)];
    len.prop_flat_map(|n| prop::collection::vec(any::<char>(), n))
        .prop_map(|c| c.into_iter().collect())
        .boxed()
}

fn finite() -> BoxedStrategy<f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |x| x.is_finite()),
        (-1e6..1e6f64),
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(5e-324),
    ]
    .boxed()
}

/// A valid value of a field.
fn valid(ty: Ty) -> BoxedStrategy<Value> {
    match ty {
        Ty::Str(min, max) => text(min, max).prop_map(Value::String).boxed(),
        Ty::Num(min, max) => {
            let n = match (min, max) {
                (Some(a), Some(b)) => prop_oneof![a..=b, Just(a), Just(b), Just(-0.0)].boxed(),
                (Some(a), None) => prop_oneof![
                    finite().prop_map(f64::abs),
                    Just(a),
                    Just(-0.0),
                    (a..a + 1e4)
                ]
                .boxed(),
                (None, _) => finite(),
            };
            n.prop_map(|x| json!(x)).boxed()
        }
        Ty::Int(min, max) => {
            let hi = max.unwrap_or(i64::MAX);
            let mut s = prop_oneof![min..=hi, Just(min), Just(hi)]
                .prop_map(|x| json!(x))
                .boxed();
            if max.is_none() {
                s = prop_oneof![3 => s, 1 => any::<u64>().prop_map(|x| json!(x))].boxed();
            }
            s
        }
        Ty::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Ty::Enum(names) => prop::sample::select(names).prop_map(|s| json!(s)).boxed(),
        Ty::Currency => "[A-Z]{3}".prop_map(Value::String).boxed(),
    }
}

/// A value of the wrong JSON type for a field.
fn wrong(ty: Ty) -> BoxedStrategy<Value> {
    let pick = |v: Vec<Value>| prop::sample::select(v).boxed();
    match ty {
        Ty::Str(..) | Ty::Enum(_) | Ty::Currency => pick(vec![
            json!(1),
            json!(true),
            Value::Null,
            json!([]),
            json!({}),
        ]),
        Ty::Num(..) => pick(vec![
            json!("1"),
            json!(false),
            Value::Null,
            json!([1]),
            json!({}),
        ]),
        Ty::Int(..) => pick(vec![
            json!(1.5),
            json!("1"),
            json!(true),
            Value::Null,
            json!([]),
        ]),
        Ty::Bool => pick(vec![
            json!("true"),
            json!(1),
            Value::Null,
            json!([]),
            json!({}),
        ]),
    }
}

/// Small JSON values.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|x| json!(x)),
        any::<u64>().prop_map(|x| json!(x)),
        // NaN and the infinities become null.
        any::<f64>().prop_map(|x| json!(x)),
        prop::sample::select(vec![
            "llm_request",
            "user_feedback",
            "system_metric",
            "business_event",
            "error_event",
            "failed",
            "healthy",
            "",
            "6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "2026-01-02T03:04:05.5Z",
            "2026-13-02T03:04:05Z",
        ])
        .prop_map(|s| json!(s)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Object keys: mostly names the validator looks at.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "event_type", "data", "event_id", "timestamp", "source", "model", "service",
            "user_id", "latency_ms", "success", "error", "satisfaction", "value", "cost_usd",
            "health", "name", "error_type", "x",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

/// An object shaped like an event: the envelope's keys with plausible or
/// arbitrary values, so that most inputs get past the first checks.
fn event_like() -> impl Strategy<Value = Value> {
    let data = prop_oneof![
        3 => prop::collection::vec((key(), json_value()), 0..6)
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        1 => json_value(),
    ];
    let event_type = prop_oneof![
        3 => kind().prop_map(|k| json!(k.as_str())),
        1 => json_value(),
    ];
    (
        prop::option::weighted(0.9, event_type),
        prop::option::weighted(0.9, data),
        prop::option::of(prop_oneof![
            uuid_text().prop_map(|(_, s)| json!(s)),
            json_value()
        ]),
        prop::option::of(prop_oneof![
            timestamp().prop_map(|(s, _)| json!(s)),
            json_value()
        ]),
        prop::option::of(json_value()),
        prop::option::weighted(0.1, (key(), json_value())),
    )
        .prop_map(|(t, d, id, ts, src, extra)| {
            let mut m = Map::new();
            for (k, v) in [
                ("event_type", t),
                ("data", d),
                ("event_id", id),
                ("timestamp", ts),
                ("source", src),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            Value::Object(m)
        })
}

/// A UUID and its text (hyphenated, letters in mixed case).
fn uuid_text() -> impl Strategy<Value = (uuid::Uuid, String)> {
    (any::<u128>(), any::<u32>()).prop_map(|(n, case)| {
        let id = uuid::Uuid::from_u128(n);
        let s = id
            .hyphenated()
            .to_string()
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if case >> (i % 32) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        (id, s)
    })
}

/// An RFC 3339 date-time (years 1019 to 8307, 0 to 9 fraction digits, an
/// offset within a day) and its time in ms, computed independently.
fn timestamp() -> impl Strategy<Value = (String, i64)> {
    (
        -30_000_000_000i64..200_000_000_000,
        0u32..1_000_000_000,
        0usize..=9,
        -(23 * 60 + 59)..=(23 * 60 + 59i32),
        any::<bool>(),
    )
        .prop_map(|(secs, nanos, digits, offset_min, zulu)| {
            let frac = format!("{nanos:09}");
            let frac = &frac[..digits];
            let frac_ns: i64 = if digits == 0 {
                0
            } else {
                format!("{frac:0<9}").parse().unwrap()
            };
            let local = chrono::DateTime::from_timestamp(secs + offset_min as i64 * 60, 0)
                .unwrap()
                .naive_utc();
            let offset = if offset_min == 0 && zulu {
                "Z".to_string()
            } else {
                let sign = if offset_min < 0 { '-' } else { '+' };
                let m = offset_min.abs();
                format!("{sign}{:02}:{:02}", m / 60, m % 60)
            };
            let dot = if digits > 0 { "." } else { "" };
            let text = format!("{}{dot}{frac}{offset}", local.format("%Y-%m-%dT%H:%M:%S"));
            let ms = (secs as i128 * 1_000_000_000 + frac_ns as i128).div_euclid(1_000_000);
            (text, ms as i64)
        })
}

/// A well-formed event, as the parts its text is made of.
#[derive(Debug, Clone)]
struct Gen {
    kind: EventKind,
    /// `data`'s fields: the schema's and a few extra (allowed) ones.
    data: Vec<(String, Value)>,
    event_id: Option<(uuid::Uuid, String)>,
    timestamp: Option<(String, i64)>,
    source: Option<String>,
    /// Sort keys for the envelope's fields, and the whitespace between
    /// tokens.
    order: Vec<u8>,
    ws: Vec<&'static str>,
}

/// Fields a schema does not name: allowed in `data`, and some of them are
/// typed fields of other kinds (which must not leak into this one).
const EXTRA_KEYS: [&str; 9] = [
    "x",
    "user_id",
    "error",
    "success",
    "value",
    "health",
    "cost_usd",
    "latency_ms",
    "satisfaction",
];

fn data_of(kind: EventKind) -> impl Strategy<Value = Vec<(String, Value)>> {
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = spec(kind)
        .iter()
        .map(|f| {
            let name = f.name.to_string();
            let v = valid(f.ty).prop_map(move |v| (name.clone(), v));
            if f.required {
                v.prop_map(Some).boxed()
            } else {
                prop::option::of(v).boxed()
            }
        })
        .collect();
    let extras = prop::collection::vec(
        (prop::sample::select(EXTRA_KEYS.to_vec()), json_value()),
        0..3,
    );
    (fields, extras, any::<u64>()).prop_map(move |(fields, extras, seed)| {
        let mut data: Vec<(String, Value)> = fields.into_iter().flatten().collect();
        for (k, v) in extras {
            if !spec(kind).iter().any(|f| f.name == k) && !data.iter().any(|(n, _)| n == k) {
                data.push((k.to_string(), v));
            }
        }
        // Any order.
        data.sort_by_key(|(k, _)| (seed ^ k.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        data
    })
}

fn well_formed() -> impl Strategy<Value = Gen> {
    kind().prop_flat_map(|kind| {
        (
            data_of(kind),
            prop::option::of(uuid_text()),
            prop::option::of(timestamp()),
            prop::option::of(text(0, 200)),
            prop::collection::vec(any::<u8>(), 5),
            prop::collection::vec(
                prop::sample::select(vec!["", " ", "\n", "\t", "\r\n ", "  "]),
                16,
            ),
        )
            .prop_map(move |(data, event_id, timestamp, source, order, ws)| Gen {
                kind,
                data,
                event_id,
                timestamp,
                source,
                order,
                ws,
            })
    })
}

impl Gen {
    fn data_text(&self) -> String {
        let m: Vec<String> = self
            .data
            .iter()
            .map(|(k, v)| format!("{}:{}", json!(k), v))
            .collect();
        format!("{{{}}}", m.join(","))
    }

    /// The envelope's fields as (key, JSON text), in the generated order.
    fn fields(&self) -> Vec<(String, String)> {
        let mut out = vec![
            (
                "event_type".to_string(),
                json!(self.kind.as_str()).to_string(),
            ),
            ("data".to_string(), self.data_text()),
        ];
        if let Some((_, s)) = &self.event_id {
            out.push(("event_id".into(), json!(s).to_string()));
        }
        if let Some((s, _)) = &self.timestamp {
            out.push(("timestamp".into(), json!(s).to_string()));
        }
        if let Some(s) = &self.source {
            out.push(("source".into(), json!(s).to_string()));
        }
        out
    }

    fn text_of(&self, fields: &[(String, String)]) -> String {
        let mut fields: Vec<(u8, &(String, String))> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (self.order[i % self.order.len()], f))
            .collect();
        fields.sort_by_key(|(o, _)| *o);
        let ws = |i: usize| self.ws[i % self.ws.len()];
        let mut s = format!("{}{{", ws(0));
        for (i, (_, (k, v))) in fields.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "{}{}{}:{}{}",
                ws(i + 1),
                json!(k),
                ws(i + 2),
                ws(i + 3),
                v
            ));
        }
        s.push_str(&format!("{}}}{}", ws(7), ws(8)));
        s
    }

    fn text(&self) -> String {
        self.text_of(&self.fields())
    }
}

// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Any bytes (mostly not JSON, not even UTF-8).
    #[test]
    fn arbitrary_bytes(
        text in prop::collection::vec(any::<u8>(), 0..200),
        now in any::<i64>(),
        enabled in any::<[bool; 5]>(),
    ) {
        let r = parse(&text, now, &Acceptance::types(enabled));
        check_any(&text, now, &enabled, &r)?;
        // Almost never JSON: then always malformed.
        if serde_json::from_slice::<serde::de::IgnoredAny>(&text).is_err() {
            prop_assert_eq!(r.unwrap_err().kind, EventErrorKind::MalformedJson);
        }
    }

    /// Valid events with a few bytes inserted, removed or replaced
    /// (invalid UTF-8, quotes, brackets, digits...).
    #[test]
    fn corrupted_events(
        g in well_formed(),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), 0u8..3, prop::sample::select(vec![
                0xff, 0xc3, 0x80, 0xed, 0xa0, 0x00, b'"', b'\\', b'{', b'}', b'[', b']',
                b',', b':', b'0', b'e', b'-', b'.', b'u', b' ', b'\n',
            ])),
            1..4,
        ),
        now in any::<i64>(),
    ) {
        let mut text = g.text().into_bytes();
        for (at, op, b) in edits {
            let i = at.index(text.len() + 1);
            match op {
                0 => text.insert(i, b),
                1 if i < text.len() => { text.remove(i); }
                _ if i < text.len() => text[i] = b,
                _ => text.push(b),
            }
        }
        let r = parse(&text, now, &Acceptance::ALL);
        check_any(&text, now, &ALL, &r)?;
    }

    /// Arbitrary JSON values, and event-shaped ones, through `validate`.
    #[test]
    fn arbitrary_json_values(
        v in prop_oneof![json_value(), event_like()],
        now in any::<i64>(),
        enabled in prop_oneof![Just(ALL), any::<[bool; 5]>()],
    ) {
        let r = validate(v.clone(), now, &Acceptance::types(enabled));
        let text = serde_json::to_vec(&v).unwrap();
        check_any(&text, now, &enabled, &r)?;
        if let Value::Object(m) = &v {
            // An event needs a type, known and enabled, and a data object.
            let known = m.get("event_type").and_then(Value::as_str).and_then(EventKind::parse);
            match (&r, known) {
                (Ok(_), None) => prop_assert!(false, "accepted without a known event_type"),
                (Err(e), None) => prop_assert!(
                    matches!(e.kind, EventErrorKind::Invalid | EventErrorKind::UnknownType),
                    "{e:?}"
                ),
                (Err(e), Some(k)) if !enabled[k.index()] => {
                    prop_assert_eq!(e.kind, EventErrorKind::Disabled);
                    prop_assert_eq!(e.field.as_deref(), Some("/event_type"));
                }
                _ => {}
            }
            if r.is_ok() {
                prop_assert!(m.get("data").is_some_and(Value::is_object));
                prop_assert!(m.keys().all(|k| [
                    "event_type", "data", "event_id", "timestamp", "source"
                ].contains(&k.as_str())), "accepted an unknown envelope field");
            }
        }
    }

    /// Nesting up to 10,000 levels, anywhere in an event: refused as
    /// malformed JSON past the parser's limit (never a stack overflow),
    /// judged on its merits below it.
    #[test]
    fn deep_nesting(
        depth in prop_oneof![0usize..200, 0usize..=10_000],
        shape in 0u8..3,
        place in 0u8..5,
    ) {
        let levels: Vec<(&str, &str)> = (0..depth)
            .map(|i| match (shape, i % 2) {
                (0, _) | (2, 0) => ("[", "]"),
                _ => ("{\"a\":", "}"),
            })
            .collect();
        let open: String = levels.iter().map(|l| l.0).collect();
        let close: String = levels.iter().rev().map(|l| l.1).collect();
        let deep = format!("{open}1{close}");
        let text = match place {
            0 => deep.clone(),
            1 => format!(r#"{{"event_type":"llm_request","data":{{"model":"m","x":{deep}}}}}"#),
            2 => format!(r#"{{"event_type":"llm_request","data":{{"model":"m"}},"source":{deep}}}"#),
            3 => format!(r#"{{"event_type":{deep},"data":{{"model":"m"}}}}"#),
            _ => format!(r#"{{"event_type":"user_feedback","data":{{"satisfaction":1}},"zz":{deep}}}"#),
        };
        let r = parse(text.as_bytes(), 0, &Acceptance::ALL);
        check_any(text.as_bytes(), 0, &ALL, &r)?;
        if depth >= 130 && place == 0 && shape == 1 {
            // An object of objects: its first problem is the missing
            // event_type (the fields' values are looked at later).
            let e = r.unwrap_err();
            prop_assert_eq!(e.kind, EventErrorKind::Invalid, "{:?}", e);
            prop_assert!(e.message.contains("event_type"), "{:?}", e);
        } else if depth >= 130 {
            let e = r.unwrap_err();
            prop_assert_eq!(e.kind, EventErrorKind::MalformedJson, "{:?}", e);
            prop_assert!(e.message.contains("recursion limit"), "{:?}", e);
        } else if depth <= 120 {
            match (place, r) {
                (1, Ok(ev)) => prop_assert!(ev.data.contains(&deep)),
                (1, Err(e)) => prop_assert!(false, "refused: {e:?}"),
                (_, Ok(_)) => prop_assert!(false, "accepted: {text}"),
                (_, Err(e)) => {
                    prop_assert_eq!(e.kind, EventErrorKind::Invalid, "{:?}", e);
                }
            }
        }
    }

    /// Huge, tiny, negative-zero and very long numbers in number fields:
    /// the value as written (correctly rounded), or refused as out of
    /// range, or by the field's bounds; never a panic.
    #[test]
    fn odd_numbers(
        num in prop_oneof![
            prop::sample::select(vec![
                "1e400", "-1e400", "-0", "-0.0", "0e0", "-0e-0", "18446744073709551616",
                "18446744073709551615", "-9223372036854775809", "9223372036854775808",
                "1e-400", "4.9e-324", "2.2250738585072011e-308", "1.7976931348623157e308",
                "1.7976931348623158e308", "1.7976931348623159e308", "1E5", "1e+5", "0.1",
                "123456789012345678901234567890", "9007199254740993",
            ]).prop_map(str::to_string),
            "[1-9][0-9]{15,400}",
            "-?0\\.[0-9]{1,400}",
            "-?[1-9]\\.[0-9]{1,40}[eE][+-]?[0-9]{1,4}",
        ],
        field in prop::sample::select(vec![
            (EventKind::LlmRequest, "latency_ms"),
            (EventKind::UserFeedback, "satisfaction"),
            (EventKind::BusinessEvent, "value"),
            (EventKind::LlmRequest, "prompt_tokens"),
            (EventKind::SystemMetric, "x"),
        ]),
    ) {
        let (kind, name) = field;
        let required = match kind {
            EventKind::LlmRequest => r#""model":"m","#,
            EventKind::BusinessEvent => r#""name":"n","#,
            EventKind::SystemMetric => r#""service":"s","#,
            _ => "",
        };
        let data = format!("{{{required}\"{name}\":{num}}}");
        let text = format!(r#"{{"event_type":"{}","data":{data}}}"#, kind.as_str());
        let r = parse(text.as_bytes(), 0, &Acceptance::ALL);
        check_any(text.as_bytes(), 0, &ALL, &r)?;
        let x: f64 = num.parse().unwrap();
        let pointer = format!("/data/{name}");
        match r {
            Ok(ev) => {
                prop_assert!(x.is_finite(), "{num} accepted");
                prop_assert_eq!(&ev.data, &data, "data not stored as sent");
                let got = match name {
                    "latency_ms" => ev.typed.latency_ms,
                    "satisfaction" => ev.typed.satisfaction,
                    "value" => ev.typed.business_value,
                    _ => Some(x),
                };
                prop_assert_eq!(got, Some(x), "{} read as {:?}", num, got);
            }
            Err(e) if !x.is_finite() => {
                prop_assert_eq!(e.kind, EventErrorKind::MalformedJson, "{:?}", e);
                prop_assert!(e.message.contains("out of range"), "{:?}", e);
            }
            Err(e) => {
                // In range for f64: only the field's own bounds refuse it.
                prop_assert_eq!(e.kind, EventErrorKind::Invalid, "{} refused: {:?}", num, e);
                prop_assert_eq!(e.field.as_deref(), Some(pointer.as_str()), "{:?}", e);
                let out_of_bounds = match name {
                    "latency_ms" => x < 0.0,
                    "satisfaction" => !(0.0..=10.0).contains(&x),
                    "prompt_tokens" => x < 0.0 || x.fract() != 0.0,
                    _ => false,
                };
                prop_assert!(out_of_bounds, "{} refused: {:?}", num, e);
            }
        }
    }

    /// Well-formed events of each type are accepted, as documented.
    #[test]
    fn well_formed_events_are_accepted(
        g in well_formed(),
        now in any::<i64>(),
        enabled in prop_oneof![3 => Just(ALL), 1 => any::<[bool; 5]>()],
    ) {
        let text = g.text();
        let r = parse(text.as_bytes(), now, &Acceptance::types(enabled));
        check_any(text.as_bytes(), now, &enabled, &r)?;
        if !enabled[g.kind.index()] {
            let e = r.unwrap_err();
            prop_assert_eq!(e.kind, EventErrorKind::Disabled);
            prop_assert_eq!(e.field.as_deref(), Some("/event_type"));
            return Ok(());
        }
        let ev = match r {
            Ok(ev) => ev,
            Err(e) => return Err(TestCaseError::fail(format!("refused: {e:?}\n{text}"))),
        };
        prop_assert_eq!(ev.kind, g.kind);
        prop_assert_eq!(&ev.data, &g.data_text(), "data not stored as sent");
        match &g.event_id {
            Some((id, _)) => prop_assert_eq!(&ev.id, &id.hyphenated().to_string()),
            None => prop_assert_eq!(uuid::Uuid::parse_str(&ev.id).unwrap().get_version_num(), 7),
        }
        match &g.timestamp {
            Some((_, ms)) => prop_assert_eq!(ev.time_ms, *ms, "{:?}", g.timestamp),
            None => prop_assert_eq!(ev.time_ms, now),
        }
        // Source defaults change nothing the event says itself.
        let d = Defaults { kind: Some(EventKind::ErrorEvent), id: Some(7) };
        let again = parse_with(text.as_bytes(), now, &Acceptance::types(enabled), &d).unwrap();
        prop_assert_eq!(again.kind, ev.kind);
        prop_assert_eq!(again.time_ms, ev.time_ms);
        prop_assert_eq!(&again.data, &ev.data);
        if g.event_id.is_some() {
            prop_assert_eq!(&again.id, &ev.id);
        } else {
            prop_assert_eq!(again.typed.id, 7);
        }
    }

    /// The same events with one field of the wrong JSON type are refused
    /// as invalid, naming that field.
    #[test]
    fn one_wrong_field_is_refused_and_named(
        (g, target, bad) in well_formed().prop_flat_map(|g| {
            // (pointer, wrong value) candidates.
            let mut targets: Vec<(String, BoxedStrategy<Value>)> = vec![
                ("/event_type".into(), wrong(Ty::Str(0, 1))),
                ("/data".into(), prop::sample::select(vec![
                    json!("{}"), json!(1), json!(true), Value::Null, json!([]),
                ]).boxed()),
            ];
            if g.event_id.is_some() {
                targets.push(("/event_id".into(), wrong(Ty::Str(0, 1))));
            }
            if g.timestamp.is_some() {
                targets.push(("/timestamp".into(), wrong(Ty::Str(0, 1))));
            }
            if g.source.is_some() {
                targets.push(("/source".into(), wrong(Ty::Str(0, 1))));
            }
            for fl in spec(g.kind) {
                if g.data.iter().any(|(k, _)| k == fl.name) {
                    targets.push((format!("/data/{}", fl.name), wrong(fl.ty)));
                }
            }
            let (names, values): (Vec<String>, Vec<BoxedStrategy<Value>>) =
                targets.into_iter().unzip();
            (Just(g), any::<prop::sample::Index>(), values).prop_map(move |(g, i, vals)| {
                let i = i.index(names.len());
                (g, names[i].clone(), vals[i].clone())
            })
        }),
    ) {
        let mut fields = g.fields();
        if let Some(name) = target.strip_prefix("/data/") {
            let mut g2 = g.clone();
            for (k, v) in &mut g2.data {
                if k == name {
                    *v = bad.clone();
                }
            }
            fields[1].1 = g2.data_text();
        } else {
            let key = &target[1..];
            for (k, v) in &mut fields {
                if k == key {
                    *v = bad.to_string();
                }
            }
        }
        let text = g.text_of(&fields);
        let r = parse(text.as_bytes(), 0, &Acceptance::ALL);
        check_any(text.as_bytes(), 0, &ALL, &r)?;
        let e = match r {
            Ok(_) => return Err(TestCaseError::fail(format!("accepted {target} = {bad}:\n{text}"))),
            Err(e) => e,
        };
        prop_assert_eq!(e.kind, EventErrorKind::Invalid, "{:?}", e);
        prop_assert_eq!(e.field.as_deref(), Some(target.as_str()), "{:?}", e);
    }
}
