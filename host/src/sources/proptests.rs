//! Property-based tests of bulk bodies (`validate::parse_bulk`): every
//! line (NDJSON) or element (JSON array) that is not blank is either a
//! valid event or an error carrying its own position; valid events keep
//! their order; a body that is not an array is one error.

use super::validate::{Parsed, parse_bulk, pool};
use crate::event::{Acceptance, EventErrorKind};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::sync::OnceLock;

const ALL: Acceptance = Acceptance::ALL;
const NOW: i64 = 1_700_000_000_000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Two validation threads, shared by every case.
fn threads() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| pool(2).expect("validation pool"))
}

/// One element of a body, and what it must give.
#[derive(Debug, Clone)]
enum Item {
    /// A valid event of this kind (its id is its position in the body).
    Valid(usize),
    /// JSON, but not a valid event: refused as invalid.
    Invalid(&'static str),
    /// Not JSON: refused as malformed.
    Garbage(Vec<u8>),
    /// Whitespace only (NDJSON: skipped, but its line is counted).
    Blank(Vec<u8>),
}

const VALID_DATA: [(&str, &str); 5] = [
    ("llm_request", r#"{"model":"m","latency_ms":12.5}"#),
    ("user_feedback", r#"{"satisfaction":7}"#),
    ("system_metric", r#"{"service":"db","health":"failed"}"#),
    ("business_event", r#"{"name":"renewal","value":-3}"#),
    ("error_event", r#"{"service":"api","error_type":"timeout"}"#),
];

const INVALID: [&str; 8] = [
    r#"{"event_type":"llm_request","data":{}}"#,
    r#"{"event_type":"llm_requests","data":{"model":"m"}}"#,
    r#"{"event_type":"user_feedback","data":{"satisfaction":11}}"#,
    r#"{"data":{"model":"m"}}"#,
    r#"{"event_type":"llm_request","data":{"model":"m"},"extra":1}"#,
    r#"[1,2]"#,
    r#""an event""#,
    "null",
];

/// The id of the valid event at position `i`.
fn id_at(i: usize) -> String {
    uuid::Uuid::from_u128(0x1000 + i as u128)
        .hyphenated()
        .to_string()
}

impl Item {
    fn text(&self, position: usize) -> Vec<u8> {
        match self {
            Item::Valid(k) => {
                let (t, data) = VALID_DATA[*k];
                format!(
                    r#"{{"event_type":"{t}", "event_id":"{}", "data":{data}}}"#,
                    id_at(position)
                )
                .into_bytes()
            }
            Item::Invalid(s) => s.as_bytes().to_vec(),
            Item::Garbage(b) | Item::Blank(b) => b.clone(),
        }
    }
}

/// Items for NDJSON lines: no `\n` inside; garbage starts with a byte that
/// is neither whitespace nor the start of JSON.
fn item() -> impl Strategy<Value = Item> {
    let garbage = (
        prop::sample::select(vec![b'#', b'x', 0x0b, 0xff, b'}', b']']),
        prop::collection::vec(
            any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
            0..12,
        ),
    )
        .prop_map(|(first, rest)| {
            let mut g = vec![first];
            g.extend(rest);
            Item::Garbage(g)
        });
    // `\r` included: a blank line may end in `\r`, and `\r\n` line ends
    // leave one.
    let blank = prop::collection::vec(prop::sample::select(vec![b' ', b'\t', b'\r', 0x0c]), 0..4)
        .prop_map(Item::Blank);
    prop_oneof![
        4 => (0..5usize).prop_map(Item::Valid),
        2 => prop::sample::select(INVALID.to_vec()).prop_map(Item::Invalid),
        2 => garbage,
        2 => blank,
    ]
}

/// Mostly small bodies; some past the size where validation goes parallel.
fn items() -> impl Strategy<Value = Vec<Item>> {
    prop_oneof![
        8 => prop::collection::vec(item(), 0..16),
        1 => prop::collection::vec(item(), 60..100),
    ]
}

/// The outcome `items` must give: valid ids in order, and the positions
/// and kinds of the errors.
fn check(items: &[Item], skip_blank: bool, parsed: &Parsed) -> Result<(), TestCaseError> {
    let expected_ids: Vec<String> = items
        .iter()
        .enumerate()
        .filter(|(_, it)| matches!(it, Item::Valid(_)))
        .map(|(i, _)| id_at(i))
        .collect();
    let expected_errors: Vec<(usize, bool)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| match it {
            Item::Invalid(_) => Some((i, false)),
            Item::Garbage(_) => Some((i, true)),
            Item::Blank(_) if !skip_blank => Some((i, true)),
            _ => None,
        })
        .collect();
    let ids: Vec<&str> = parsed.valid.iter().map(|e| e.id.as_str()).collect();
    prop_assert_eq!(
        ids,
        expected_ids.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let non_blank = items
        .iter()
        .filter(|it| !skip_blank || !matches!(it, Item::Blank(_)))
        .count();
    prop_assert_eq!(parsed.valid.len() + parsed.errors.len(), non_blank);
    let errors: Vec<usize> = parsed.errors.iter().map(|e| e.index).collect();
    prop_assert_eq!(
        errors,
        expected_errors.iter().map(|e| e.0).collect::<Vec<_>>()
    );
    for (e, (_, malformed)) in parsed.errors.iter().zip(&expected_errors) {
        prop_assert!(!e.error.message.is_empty());
        if *malformed {
            prop_assert_eq!(e.error.kind, EventErrorKind::MalformedJson, "{:?}", e);
        } else {
            prop_assert!(
                matches!(
                    e.error.kind,
                    EventErrorKind::Invalid | EventErrorKind::UnknownType
                ),
                "{:?}",
                e
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// NDJSON: `\n` or `\r\n` line ends, the last line ended or not; blank
    /// lines are skipped but keep the numbering.
    #[test]
    fn ndjson_lines_keep_their_numbers(
        items in items(),
        crlf in prop::collection::vec(any::<bool>(), 1..8),
        last_ended in any::<bool>(),
    ) {
        let mut body = Vec::new();
        for (i, it) in items.iter().enumerate() {
            if i > 0 {
                body.extend_from_slice(if crlf[i % crlf.len()] { b"\r\n" } else { b"\n" });
            }
            body.extend(it.text(i));
        }
        let mut items = items;
        if last_ended && !items.is_empty() {
            // A final line end leaves an empty last line.
            body.push(b'\n');
            items.push(Item::Blank(Vec::new()));
        }
        let parsed = parse_bulk(&body, true, NOW, &ALL, threads());
        prop_assert!(parsed.is_ok(), "NDJSON refused whole: {:?}", parsed.err());
        check(&items, true, &parsed.unwrap())?;
    }

    /// JSON array: errors by position in the array, whatever the spacing.
    #[test]
    fn array_elements_keep_their_positions(
        items in items(),
        ws in prop::collection::vec(prop::sample::select(vec!["", " ", "\n", "\r\n", "\t"]), 1..6),
    ) {
        // Blank and garbage elements would break the array: use other
        // refused values there (a nesting too deep, a number out of range).
        let items: Vec<Item> = items
            .into_iter()
            .enumerate()
            .map(|(i, it)| match it {
                Item::Garbage(_) | Item::Blank(_) if i % 2 == 0 => {
                    Item::Garbage(format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes())
                }
                Item::Garbage(_) | Item::Blank(_) => Item::Garbage(b"1e400".to_vec()),
                other => other,
            })
            .collect();
        let w = |i: usize| ws[i % ws.len()];
        let mut body = format!("{}[", w(0)).into_bytes();
        for (i, it) in items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend(w(i + 1).as_bytes());
            body.extend(it.text(i));
            body.extend(w(i + 2).as_bytes());
        }
        body.extend(format!("]{}", w(3)).as_bytes());
        let parsed = parse_bulk(&body, false, NOW, &ALL, threads());
        prop_assert!(parsed.is_ok(), "array refused whole: {:?}", parsed.err());
        check(&items, false, &parsed.unwrap())?;
    }

    /// A body that is not a JSON array is one error for the whole body:
    /// invalid when it is JSON, malformed when not.
    #[test]
    fn a_body_that_is_not_an_array_is_one_error(
        body in prop_oneof![
            prop::sample::select(vec![
                "{}", "1", "\"[]\"", "null", "{\"event_type\":\"llm_request\",\"data\":{\"model\":\"m\"}}",
            ]).prop_map(|s| (s.as_bytes().to_vec(), true)),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| (b, false)),
            items().prop_map(|items| {
                // An array cut short.
                let mut b = b"[".to_vec();
                for (i, it) in items.iter().enumerate() {
                    if let Item::Valid(_) = it {
                        b.extend(it.text(i));
                        b.push(b',');
                    }
                }
                (b, false)
            }),
        ],
    ) {
        let (body, is_json) = body;
        let value: Result<serde_json::Value, _> = serde_json::from_slice(&body);
        prop_assume!(!matches!(value, Ok(serde_json::Value::Array(_))));
        let r = parse_bulk(&body, false, NOW, &ALL, threads());
        let e = match r {
            Ok(p) => return Err(TestCaseError::fail(format!(
                "accepted: {} valid, {} errors", p.valid.len(), p.errors.len()
            ))),
            Err(e) => e,
        };
        prop_assert!(!e.message.is_empty());
        if value.is_ok() {
            prop_assert_eq!(e.kind, EventErrorKind::Invalid, "{:?}", e);
            prop_assert!(e.message.contains("JSON array"), "{:?}", e);
        } else {
            prop_assert!(!is_json);
            prop_assert_eq!(e.kind, EventErrorKind::MalformedJson, "{:?}", e);
        }
    }
}

/// A body that is not JSON at all is malformed (400), even when it starts
/// like a JSON value other than an array (serde's "invalid type" comes at
/// the first token; found by the property above).
#[test]
fn malformed_body_is_not_called_a_non_array() {
    for body in [&b"0:"[..], b"{", b"{\"a\":1} ]", b"true false"] {
        let e = parse_bulk(body, false, NOW, &ALL, threads()).unwrap_err();
        assert_eq!(
            e.kind,
            EventErrorKind::MalformedJson,
            "{:?}: {e:?}",
            String::from_utf8_lossy(body)
        );
    }
}
